/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "json.h"
#include "manifest.h"
#include "util.h"
#include "banned.h"

/*
 * libFuzzer target of the manifest parser. Beyond "no crash, no leak, no UB" it checks the
 * properties the rest of orch relies on, for every input the parser accepts: the canonical form
 * reads back into an equal service (from_json(to_json(s)) == s), the canonical text is a fixed
 * point, and the revision is stable across the round trip. It also feeds the input to the JSON
 * path (orch_service_from_json) when it is a JSON object, as API bodies arrive.
 */

static void check_round_trip(const struct orch_service *s)
{
        _cleanup_json_ json_t *j = NULL;
        _cleanup_(orch_service_freep) struct orch_service *back = NULL;
        _cleanup_(freep) char *a = NULL, *b = NULL;
        _cleanup_json_ json_t *j2 = NULL;
        char r1[ORCH_REVISION_LEN + 1], r2[ORCH_REVISION_LEN + 1];
        struct orch_diags d = {0};

        if (orch_service_to_json(s, &j) < 0)
                abort();
        if (orch_service_from_json(j, "canonical", &back, &d) < 0) {
                orch_diags_print(&d, stderr);
                abort(); /* the canonical form of a valid service must be valid */
        }
        orch_diags_release(&d);
        if (orch_service_to_json(back, &j2) < 0)
                abort();
        a = orch_json_dumps_canonical(j);
        b = orch_json_dumps_canonical(j2);
        if (!a || !b || !streq(a, b))
                abort();
        if (orch_service_revision(s, r1) < 0 || orch_service_revision(back, r2) < 0 || !streq(r1, r2))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        struct orch_diags d = {0};
        json_error_t err;
        json_t *j;

        if (!m)
                return 0;
        if (orch_manifest_parse_buffer(m, "fuzz.yaml", (const char *)data, size, &d) == 0) {
                if (d.n > 0)
                        abort(); /* success with errors would be a lie */
                for (size_t i = 0; i < m->n_services; i++)
                        check_round_trip(m->services[i]);
        } else if (d.n == 0 && !d.truncated)
                abort(); /* every rejection says why */
        orch_diags_release(&d);

        j = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &err);
        if (j && json_is_object(j)) {
                struct orch_service *s = NULL;
                if (orch_service_from_json(j, "fuzz.json", &s, &d) == 0) {
                        check_round_trip(s);
                        orch_service_free(s);
                }
                orch_diags_release(&d);
        }
        json_decref(j);
        return 0;
}
