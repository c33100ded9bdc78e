/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "manifest.h"
#include "output.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_apply;

/*
 * The request body: every service of every file as one YAML stream, one document per line
 * ("--- {canonical JSON}"), so the apply is one transaction on the server (all or nothing across
 * files). The manifests were validated here first, with the user's file names and positions; the
 * server validates again with the same code. Should it still object (a newer server, say), the
 * line of its error is the index of the document, which leads back to the service's own file and
 * position.
 */
/* Appends JSON text to a YAML stream. YAML reads NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR as
 * line breaks, which fold inside a quoted scalar, where JSON keeps them as characters: written as
 * \u escapes they stay what they are (they only occur inside strings). */
static void put_json_as_yaml(struct orch_buf *b, const char *json)
{
        for (const char *p = json; *p; p++) {
                if ((unsigned char)p[0] == 0xc2 && (unsigned char)p[1] == 0x85) {
                        orch_buf_puts(b, "\\u0085");
                        p++;
                } else if ((unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 &&
                           ((unsigned char)p[2] == 0xa8 || (unsigned char)p[2] == 0xa9)) {
                        orch_buf_puts(b, (unsigned char)p[2] == 0xa8 ? "\\u2028" : "\\u2029");
                        p += 2;
                } else
                        orch_buf_putc(b, *p);
        }
}

static int build_body(const struct orch_manifest *m, struct orch_buf *ret)
{
        for (size_t i = 0; i < m->n_services; i++) {
                _cleanup_json_ json_t *j = NULL;
                _cleanup_(freep) char *text = NULL;
                int r = orch_service_to_json(m->services[i], &j);

                if (r < 0)
                        return r;
                text = orch_json_dumps_canonical(j);
                if (!text)
                        return -ENOMEM;
                orch_buf_puts(ret, "--- ");
                put_json_as_yaml(ret, text);
                orch_buf_putc(ret, '\n');
        }
        return ret->oom ? -ENOMEM : 0;
}

/* A 400 from the server: its diagnostics with the local file and position of the service each one
 * is about; "orch: ERROR" when it gave none that can be placed. */
static void print_rejection(const struct orch_manifest *m, const struct orch_http_response *resp)
{
        _cleanup_json_ json_t *j = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
        json_t *errors = json_object_get(j, "errors"), *e;
        size_t i, printed = 0;

        json_array_foreach (errors, i, e) {
                const char *msg = orch_json_str(e, "message");
                json_int_t line = json_integer_value(json_object_get(e, "line"));
                const struct orch_service *s;

                if (!msg)
                        continue;
                if (line < 1 || (size_t)line > m->n_services) {
                        fprintf(stderr, "orch: %s\n", msg);
                        printed++;
                        continue;
                }
                s = m->services[line - 1];
                fprintf(stderr, "%s:%u:%u: error: %s\n", s->source_file ? s->source_file : "<stdin>",
                        s->source_line, s->source_column, msg);
                printed++;
        }
        if (printed == 0)
                orch_client_print_error(resp);
}

/* "would place 2 instances on node-a" / "would leave 1 instance pending: no nodes are registered",
 * identical placements counted together, in the order the server gave them. */
static void print_placements(const json_t *placements)
{
        size_t n = json_array_size(placements);
        _cleanup_(freep) bool *done = calloc(n + 1, sizeof *done);

        if (!done)
                return;
        for (size_t i = 0; i < n; i++) {
                const json_t *p = json_array_get(placements, i);
                const char *node = orch_json_str(p, "node"), *pending = orch_json_str(p, "pending");
                size_t count = 0;

                if (done[i])
                        continue;
                for (size_t k = i; k < n; k++) {
                        const json_t *q = json_array_get(placements, k);
                        if (!done[k] && streq_ptr(node, orch_json_str(q, "node")) &&
                            streq_ptr(pending, orch_json_str(q, "pending"))) {
                                done[k] = true;
                                count++;
                        }
                }
                if (node)
                        printf("  would place %zu instance%s on %s\n", count, count == 1 ? "" : "s", node);
                else
                        printf("  would leave %zu instance%s pending: %s\n", count, count == 1 ? "" : "s",
                               pending ? pending : "no reason given");
        }
}

static void print_dry_run_details(const json_t *res)
{
        json_t *fields = json_object_get(res, "changed_fields"), *f;
        const char *change = orch_json_str(res, "change");
        size_t i;

        if (json_array_size(fields) > 0) {
                fputs("  changed:", stdout);
                json_array_foreach (fields, i, f)
                        printf("%s %s", i ? "," : "", json_string_value(f));
                fputc('\n', stdout);
        }
        if (json_is_true(json_object_get(res, "rolls")))
                printf("  rolling update to revision %s\n", strna(orch_json_str(res, "revision")));
        else if (change && streq(change, "created"))
                printf("  revision %s\n", strna(orch_json_str(res, "revision")));
        if (change && streq(change, "deleted"))
                fputs("  would stop all its instances\n", stdout);
        print_placements(json_object_get(res, "placements"));
}

static int apply_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"filename", required_argument, NULL, 'f'},
                {"dry-run", no_argument, NULL, 'n'},
                {"prune", no_argument, NULL, 'p'},
                {"output", required_argument, NULL, 'o'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_strv_freep) char **paths = NULL;
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = NULL;
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_(orch_http_response_release) struct orch_http_response resp = {0};
        _cleanup_json_ json_t *answer = NULL;
        struct orch_buf body = {0};
        enum orch_output_format format = ORCH_OUTPUT_TABLE;
        bool dry_run = false, prune = false;
        char target[64];
        json_t *results, *res;
        size_t i;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_apply, argc, argv, ":f:o:", options)) >= 0) {
                switch (c) {
                case 'f':
                        if (orch_strv_push(&paths, optarg) < 0)
                                return orch_cli_fail("out of memory");
                        break;
                case 'n':
                        dry_run = true;
                        break;
                case 'p':
                        prune = true;
                        break;
                case 'o':
                        if (orch_output_format_from_string(optarg, &format) < 0 ||
                            (format != ORCH_OUTPUT_TABLE && format != ORCH_OUTPUT_JSON))
                                return orch_cli_usage_error(&orch_cmd_apply,
                                                            "-o: expected table or json, not '%s'", optarg);
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        /* `orch apply PATH` works as `orch validate PATH` does */
        for (; optind < argc; optind++)
                if (orch_strv_push(&paths, argv[optind]) < 0)
                        return orch_cli_fail("out of memory");
        if (!paths)
                return orch_cli_usage_error(&orch_cmd_apply, "no manifest given (-f PATH)");

        if (orch_cli_load_manifests(paths, &m) < 0)
                return ORCH_EXIT_FAILURE;
        if (m->n_services == 0)
                /* with --prune an empty set would delete everything: never by accident */
                return orch_cli_fail("the manifests hold no services: nothing to apply");
        r = build_body(m, &body);
        if (r < 0) {
                orch_buf_release(&body);
                return orch_cli_fail("cannot encode the manifests: %s", strerror(-r));
        }
        orch_snprintf(target, sizeof target, "/v1/apply%s%s", dry_run ? "?dry_run=1" : "",
                      prune ? (dry_run ? "&prune=1" : "?prune=1") : "");
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK) {
                orch_buf_release(&body);
                return r;
        }
        r = orch_client_request(client, "POST", target, "application/yaml", body.data, body.len, &resp);
        orch_buf_release(&body);
        if (r < 0)
                return ORCH_EXIT_FAILURE;
        if (resp.status == 400) {
                fflush(stdout);
                print_rejection(m, &resp);
                return ORCH_EXIT_FAILURE;
        }
        if (resp.status / 100 != 2) {
                orch_client_print_error(&resp);
                return ORCH_EXIT_FAILURE;
        }
        answer = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, NULL);
        results = json_object_get(answer, "services");
        if (!json_is_array(results))
                return orch_cli_fail("orchd at %s answered the apply without a list of services",
                                     orch_client_addr(client));
        if (format == ORCH_OUTPUT_JSON)
                return orch_output_json(answer, stdout) < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;

        json_array_foreach (results, i, res) {
                printf("%s %s\n", strna(orch_json_str(res, "name")), strna(orch_json_str(res, "change")));
                if (dry_run)
                        print_dry_run_details(res);
        }
        if (dry_run)
                fputs("dry run: nothing was changed\n", stdout);
        return ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_apply = {
        .name = "apply",
        .usage = "apply -f PATH... [--dry-run] [--prune] [-o table|json]",
        .summary = "Create or update services from manifests, all or nothing.",
        .help = "Options:\n"
                "  -f, --filename PATH  a manifest file, or a directory of *.yaml/*.yml files\n"
                "                       (repeatable; '-' reads standard input)\n"
                "      --dry-run        show what would change and where instances would be placed;\n"
                "                       change nothing\n"
                "      --prune          also delete the services that the manifests do not name\n"
                "  -o, --output FORMAT  table (default): one line per service; json: orchd's answer\n"
                "      --addr URL       orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "The manifests are validated locally first (errors as FILE:LINE:COLUMN: error: MESSAGE),\n"
                "then applied in one transaction: if any document is invalid, nothing changes.\n"
                "Prints one line per service: NAME created|updated|unchanged|deleted. With --dry-run,\n"
                "each line is followed by the fields that change, whether instances are replaced by a\n"
                "rolling update, and the placements orchd would make (a node, or pending: REASON).\n"
                "\n"
                "Examples:\n"
                "  orch apply -f manifests/\n"
                "  orch apply -f web.yaml --dry-run\n"
                "  cat web.yaml | orch apply -f -\n",
        .run = apply_run,
};
