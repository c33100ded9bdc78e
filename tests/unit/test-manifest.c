/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "json.h"
#include "manifest.h"
#include "testing.h"
#include "units.h"
#include "util.h"
#include "yaml-tree.h"
#include "banned.h"

#define FIXTURES "tests/fixtures/manifests"

/* Parses a buffer; returns the manifest (never NULL) and leaves the diagnostics in *d. */
static struct orch_manifest *parse(const char *text, struct orch_diags *d, int *ret_r)
{
        struct orch_manifest *m = calloc(1, sizeof *m);
        int r;

        ck_assert_ptr_nonnull(m);
        r = orch_manifest_parse_buffer(m, "test.yaml", text, strlen(text), d);
        if (ret_r)
                *ret_r = r;
        return m;
}

static struct orch_service *parse_one(const char *text)
{
        struct orch_diags d = {0};
        struct orch_manifest *m;
        struct orch_service *s;
        int r;

        m = parse(text, &d, &r);
        if (r < 0 || d.n > 0)
                orch_diags_print(&d, stderr);
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(d.n, 0);
        ck_assert_uint_eq(m->n_services, 1);
        s = TAKE_PTR(m->services[0]);
        m->n_services = 0;
        orch_manifest_free(m);
        orch_diags_release(&d);
        return s;
}

/* The one error a broken buffer gives, as "LINE:COLUMN: MESSAGE". */
static char *first_error(const char *text, size_t len)
{
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        struct orch_diags d = {0};
        char *e;

        ck_assert_int_lt(orch_manifest_parse_buffer(m, "t.yaml", text, len, &d), 0);
        ck_assert_uint_ge(d.n, 1);
        ck_assert_uint_eq(m->n_services, 0);
        e = orch_strdup_printf("%u:%u: %s", d.items[0].line, d.items[0].column, d.items[0].message);
        orch_diags_release(&d);
        return e;
}

static char *canonical(const struct orch_service *s)
{
        _cleanup_json_ json_t *j = NULL;

        ck_assert_int_eq(orch_service_to_json(s, &j), 0);
        return orch_json_dumps_canonical(j);
}

/* to_json -> from_json gives back the same service, and the canonical text is a fixed point. */
static void assert_round_trip(const struct orch_service *s)
{
        _cleanup_json_ json_t *j = NULL;
        _cleanup_(orch_service_freep) struct orch_service *back = NULL;
        _cleanup_(freep) char *a = NULL, *b = NULL;
        char r1[ORCH_REVISION_LEN + 1], r2[ORCH_REVISION_LEN + 1];
        struct orch_diags d = {0};

        ck_assert_int_eq(orch_service_to_json(s, &j), 0);
        ck_assert_int_eq(orch_service_from_json(j, "json", &back, &d), 0);
        ck_assert_uint_eq(d.n, 0);
        a = canonical(s);
        b = canonical(back);
        ck_assert_str_eq(a, b);
        ck_assert(orch_service_equal(s, back));
        ck_assert_int_eq(orch_service_revision(s, r1), 0);
        ck_assert_int_eq(orch_service_revision(back, r2), 0);
        ck_assert_str_eq(r1, r2);
        ck_assert_uint_eq(strlen(r1), ORCH_REVISION_LEN);
        orch_diags_release(&d);
}

static char **list_fixtures(const char *sub)
{
        _cleanup_(freep) char *dir = orch_strdup_printf("%s/%s/%s", orch_test_srcdir(), FIXTURES, sub);
        char **files = NULL;
        char *paths[] = {dir};
        struct orch_diags d = {0};

        ck_assert_int_eq(orch_manifest_expand_paths(paths, 1, &files, &d), 0);
        ck_assert_uint_ge(orch_strv_length(files), 5);
        return files;
}

START_TEST(test_valid_fixtures)
{
        _cleanup_(orch_strv_freep) char **files = list_fixtures("valid");

        for (size_t i = 0; files[i]; i++) {
                _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
                struct orch_diags d = {0};
                int r = orch_manifest_parse_file(m, files[i], &d);

                if (r < 0)
                        orch_diags_print(&d, stderr);
                ck_assert_msg(r == 0 && d.n == 0, "%s rejected", files[i]);
                ck_assert_msg(m->n_services >= 1, "%s: no services", files[i]);
                for (size_t k = 0; k < m->n_services; k++) {
                        ck_assert_str_eq(m->services[k]->source_file, files[i]);
                        ck_assert_uint_gt(m->services[k]->source_line, 0);
                        assert_round_trip(m->services[k]);
                }
                orch_diags_release(&d);
        }
}
END_TEST

/* Each invalid fixture lists the errors it must give, in order, as "# expect: LINE:COL: MESSAGE"
 * lines; the file name in messages is the fixture's base name. */
START_TEST(test_invalid_fixtures)
{
        _cleanup_(orch_strv_freep) char **files = list_fixtures("invalid");

        for (size_t i = 0; files[i]; i++) {
                _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
                _cleanup_(orch_strv_freep) char **expected = NULL;
                _cleanup_(freep) char *buf = NULL;
                const char *base = strrchr(files[i], '/') + 1;
                struct orch_diags d = {0};
                size_t len;

                ck_assert_int_eq(orch_read_file(files[i], ORCH_MANIFEST_MAX_BYTES, &buf, &len), 0);
                for (const char *line = buf; line && *line;) {
                        const char *end = strchr(line, '\n');
                        const char *rest = startswith(line, "# expect: ");
                        if (rest) {
                                _cleanup_(freep) char *e =
                                        strndup(rest, end ? (size_t)(end - rest) : strlen(rest));
                                ck_assert_int_eq(orch_strv_push(&expected, e), 0);
                        }
                        line = end ? end + 1 : NULL;
                }
                ck_assert_msg(expected, "%s: no '# expect:' line", files[i]);
                ck_assert_msg(orch_manifest_parse_buffer(m, base, buf, len, &d) == -EINVAL, "%s accepted",
                              files[i]);
                ck_assert_uint_eq(m->n_services, 0);
                for (size_t k = 0; k < d.n; k++) {
                        _cleanup_(freep) char *got = orch_strdup_printf(
                                "%u:%u: %s", d.items[k].line, d.items[k].column, d.items[k].message);
                        ck_assert_msg(k < orch_strv_length(expected), "%s: unexpected error %s", base, got);
                        ck_assert_msg(streq(got, expected[k]), "%s: got '%s', expected '%s'", base, got,
                                      expected[k]);
                        ck_assert_str_eq(d.items[k].file, base);
                }
                ck_assert_msg(d.n == orch_strv_length(expected), "%s: %zu errors, expected %zu", base, d.n,
                              orch_strv_length(expected));
                orch_diags_release(&d);
        }
}
END_TEST

START_TEST(test_defaults)
{
        _cleanup_(orch_service_freep) struct orch_service *s =
                parse_one("kind: service\nname: hello\ncommand: echo hi\n");

        ck_assert_str_eq(s->name, "hello");
        ck_assert_uint_eq(s->replicas, 1);
        ck_assert(s->command_is_shell);
        ck_assert_str_eq(s->command[0], "/bin/sh");
        ck_assert_str_eq(s->command[1], "-c");
        ck_assert_str_eq(s->command[2], "echo hi");
        ck_assert_ptr_null(s->command[3]);
        ck_assert_uint_eq(s->n_env, 0);
        ck_assert_ptr_null(s->workdir);
        ck_assert_str_eq(s->user, "nobody");
        ck_assert_ptr_null(s->group);
        ck_assert_uint_eq(s->resources.cpu_millis, 0);
        ck_assert_uint_eq(s->resources.memory, 0);
        ck_assert_uint_eq(s->resources.pids, 0);
        ck_assert_uint_eq(s->n_ports, 0);
        ck_assert_int_eq(s->health.type, ORCH_HEALTH_NONE);
        ck_assert_uint_eq(s->health.interval_ms, 2000);
        ck_assert_uint_eq(s->health.timeout_ms, 1000);
        ck_assert_uint_eq(s->health.grace_ms, 5000);
        ck_assert_uint_eq(s->health.unhealthy_threshold, 3);
        ck_assert_uint_eq(s->health.healthy_threshold, 1);
        ck_assert_int_eq(s->health.on_unhealthy, ORCH_ON_UNHEALTHY_RESTART);
        ck_assert_int_eq(s->restart.policy, ORCH_RESTART_ALWAYS);
        ck_assert_uint_eq(s->restart.backoff_ms, 100);
        ck_assert_uint_eq(s->restart.max_backoff_ms, 30000);
        ck_assert_uint_eq(s->restart.reset_after_ms, 60000);
        ck_assert_int_eq(s->stop.signal, SIGTERM);
        ck_assert_uint_eq(s->stop.timeout_ms, 10000);
        ck_assert_uint_eq(s->placement.n_constraints, 0);
        ck_assert_int_eq(s->placement.strategy, ORCH_STRATEGY_SPREAD);
        ck_assert_uint_eq(s->update.max_surge, 1);
        ck_assert_uint_eq(s->update.max_unavailable, 0);
        ck_assert_uint_eq(s->update.min_healthy_ms, 5000);
        ck_assert_uint_eq(s->update.progress_deadline_ms, 120000);
        ck_assert(s->update.auto_revert);
        ck_assert(!s->route.enabled);
        ck_assert_uint_eq(s->logs.max_size, 10 << 20);
        ck_assert_uint_eq(s->logs.max_files, 5);
        ck_assert(s->sandbox.no_new_privileges);
        ck_assert(!s->sandbox.private_tmp && !s->sandbox.protect_system && !s->sandbox.dynamic_user);
        ck_assert_int_eq(s->driver, ORCH_DRIVER_DEFAULT);
        ck_assert_str_eq(s->source_file, "test.yaml");
        ck_assert_uint_eq(s->source_line, 2);
        ck_assert_uint_eq(s->source_column, 7);
}
END_TEST

START_TEST(test_every_field)
{
        _cleanup_(freep) char *path =
                orch_strdup_printf("%s/%s/valid/spec-example.yaml", orch_test_srcdir(), FIXTURES);
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        struct orch_diags d = {0};
        const struct orch_service *s;

        ck_assert_int_eq(orch_manifest_parse_file(m, path, &d), 0);
        s = m->services[0];
        ck_assert_str_eq(s->name, "web");
        ck_assert_uint_eq(s->replicas, 3);
        ck_assert(!s->command_is_shell);
        ck_assert_uint_eq(orch_strv_length(s->command), 4);
        ck_assert_str_eq(s->command[3], "${PORT}");
        ck_assert_uint_eq(s->n_env, 1);
        ck_assert_str_eq(s->env[0].name, "GREETING");
        ck_assert_str_eq(s->env[0].value, "hello");
        ck_assert_str_eq(s->workdir, "/srv/web");
        ck_assert_str_eq(s->group, "nogroup");
        ck_assert_uint_eq(s->resources.cpu_millis, 500);
        ck_assert_uint_eq(s->resources.memory, 128 << 20);
        ck_assert_uint_eq(s->resources.pids, 64);
        ck_assert_uint_eq(s->n_ports, 1);
        ck_assert_int_eq(orch_service_port_index(s, "http"), 0);
        ck_assert_int_eq(orch_service_port_index(s, "nope"), -1);
        ck_assert_ptr_eq(orch_service_find_port(s, "http"), &s->ports[0]);
        ck_assert_int_eq(s->health.type, ORCH_HEALTH_HTTP);
        ck_assert_str_eq(s->health.port, "http");
        ck_assert_str_eq(s->health.path, "/healthz");
        ck_assert_uint_eq(s->placement.n_constraints, 2);
        ck_assert_str_eq(s->placement.constraints[0].key, "zone");
        ck_assert_str_eq(s->placement.constraints[0].value, "eu-1");
        ck_assert(!s->placement.constraints[0].negate);
        ck_assert_str_eq(s->placement.constraints[1].key, "disk");
        ck_assert(s->placement.constraints[1].negate);
        ck_assert(s->route.enabled);
        ck_assert_str_eq(s->route.path, "/web");
        ck_assert_str_eq(s->route.host, "example.com");
        ck_assert(s->route.strip_prefix);
        ck_assert_str_eq(s->route.port, "http");
        ck_assert_uint_eq(s->route.rate_count, 100);
        ck_assert_uint_eq(s->route.rate_period_ms, 1000);
        ck_assert_uint_eq(s->route.rate_burst, 100);
        ck_assert_int_eq(s->route.auth, ORCH_ROUTE_AUTH_NONE);
        ck_assert_uint_eq(s->route.max_body, 1 << 20);
        ck_assert_uint_eq(s->route.timeout_ms, 60000);
        ck_assert_int_eq(s->driver, ORCH_DRIVER_EXEC);
        ck_assert_uint_eq(s->source_line, 3);
        orch_diags_release(&d);
}
END_TEST

/* The canonical form is a contract (the store keeps it, revisions hash it): pin it. */
START_TEST(test_canonical_form)
{
        _cleanup_(orch_service_freep) struct orch_service *s = parse_one(
                "kind: service\nname: web\ncommand: [/bin/web, --port, '${PORT}']\nports: [{name: http}]\n"
                "resources: {cpu: 1.5, memory: 1073741824}\nenv: {B: 2, A: x}\n"
                "health: {type: http, timeout: 1500ms}\nroute: {host: Example.COM, rate_limit: 60/m}\n");
        _cleanup_(freep) char *text = canonical(s);
        _cleanup_json_ json_t *j = NULL;
        _cleanup_(freep) char *template = NULL;
        unsigned char md[EVP_MAX_MD_SIZE];
        char rev[ORCH_REVISION_LEN + 1], hex[65], spec[65];
        unsigned n;

        ck_assert_str_eq(
                text,
                "{\"command\":[\"/bin/web\",\"--port\",\"${PORT}\"],\"env\":{\"A\":\"x\",\"B\":\"2\"},"
                "\"health\":{\"grace\":\"5s\",\"healthy_threshold\":1,\"interval\":\"2s\","
                "\"on_unhealthy\":\"restart\",\"path\":\"/\",\"port\":\"http\",\"timeout\":\"1500ms\","
                "\"type\":\"http\",\"unhealthy_threshold\":3},\"kind\":\"service\",\"logs\":{\"max_files\":"
                "5,"
                "\"max_size\":\"10Mi\"},\"name\":\"web\",\"placement\":{\"constraints\":[],\"strategy\":"
                "\"spread\"},\"ports\":[{\"name\":\"http\"}],\"replicas\":1,\"resources\":{\"cpu\":"
                "\"1500m\",\"memory\":\"1Gi\"},\"restart\":{\"backoff\":\"100ms\",\"max_backoff\":\"30s\","
                "\"policy\":\"always\",\"reset_after\":\"1m\"},\"route\":{\"auth\":\"none\",\"host\":"
                "\"example.com\",\"max_body\":\"1Mi\",\"path\":\"/\",\"port\":\"http\",\"rate_burst\":60,"
                "\"rate_limit\":\"60/m\",\"strip_prefix\":false,\"timeout\":\"1m\"},\"sandbox\":{"
                "\"dynamic_user\":false,\"no_new_privileges\":true,\"private_tmp\":false,\"protect_system\":"
                "false},\"stop\":{\"signal\":\"TERM\",\"timeout\":\"10s\"},\"update\":{\"auto_revert\":true,"
                "\"max_surge\":1,\"max_unavailable\":0,\"min_healthy\":\"5s\",\"progress_deadline\":\"2m\"},"
                "\"user\":\"nobody\"}");

        /* The revision is SHA-256 over the same text without replicas, update and route. */
        ck_assert_int_eq(orch_service_to_json(s, &j), 0);
        json_object_del(j, "replicas");
        json_object_del(j, "update");
        json_object_del(j, "route");
        template = orch_json_dumps_canonical(j);
        ck_assert(EVP_Digest(template, strlen(template), md, &n, EVP_sha256(), NULL));
        for (unsigned i = 0; i < 32; i++)
                ck_assert_int_eq(orch_snprintf(hex + 2 * i, 3, "%02x", md[i]), 2);
        ck_assert_int_eq(orch_service_revision(s, rev), 0);
        ck_assert_int_eq(strncmp(rev, hex, ORCH_REVISION_LEN), 0);
        ck_assert_uint_eq(strlen(rev), ORCH_REVISION_LEN);
        ck_assert_int_eq(orch_service_spec_hash(s, spec), 0);
        ck_assert_uint_eq(strlen(spec), 64);
        ck_assert_str_ne(spec, hex);
}
END_TEST

static void revision_of(const char *text, char ret[ORCH_REVISION_LEN + 1], char spec[65])
{
        _cleanup_(orch_service_freep) struct orch_service *s = parse_one(text);

        ck_assert_int_eq(orch_service_revision(s, ret), 0);
        ck_assert_int_eq(orch_service_spec_hash(s, spec), 0);
}

START_TEST(test_revision_stability)
{
        static const char base[] = "kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                                   "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\n";
        static const struct {
                const char *text;
                bool same_revision, same_spec;
        } cases[] = {
                /* reordered keys, comments, flow vs block style, other unit spellings: same */
                {"# a comment\nresources:\n  memory: 134217728 # bytes\nenv:\n  B: \"2\"\n  A: 1\n"
                 "ports:\n- name: http\ncommand:\n- /bin/web\nname: web\nkind: service\n",
                 true, true},
                {"{\"kind\":\"service\",\"name\":\"web\",\"command\":[\"/bin/"
                 "web\"],\"ports\":[{\"name\":\"http\"}],"
                 "\"env\":{\"B\":\"2\",\"A\":\"1\"},\"resources\":{\"memory\":\"0.125Gi\"}}",
                 true, true},
                /* defaults written out: same */
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\nreplicas: 1\nuser: nobody\n"
                 "restart: {policy: always, backoff: 100ms}\nstop: {signal: SIGTERM}\n",
                 true, true},
                /* scale, update strategy and route: same revision, different spec */
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\nreplicas: 5\n",
                 true, false},
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\nupdate: {max_surge: 2}\nroute: {path: "
                 "/w}\n",
                 true, false},
                /* anything an instance runs with: new revision */
                {"kind: service\nname: web\ncommand: [/bin/web, -v]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\n",
                 false, false},
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '3'}\nresources: {memory: 128Mi}\n",
                 false, false},
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 256Mi}\n",
                 false, false},
                {"kind: service\nname: web\ncommand: /bin/web\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\n",
                 false, false},
                {"kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
                 "env: {A: '1', B: '2'}\nresources: {memory: 128Mi}\nstop: {timeout: 11s}\n",
                 false, false},
        };
        char r0[ORCH_REVISION_LEN + 1], s0[65];

        revision_of(base, r0, s0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char r[ORCH_REVISION_LEN + 1], s[65];

                revision_of(cases[i].text, r, s);
                ck_assert_msg(streq(r, r0) == cases[i].same_revision, "case %zu: revision %s vs %s", i, r,
                              r0);
                ck_assert_msg(streq(s, s0) == cases[i].same_spec, "case %zu: spec hash", i);
        }
}
END_TEST

/* SPEC §2's example lists `path` and `command` under `type: http`: the keys of the other check types
 * are validated, then dropped, so they change neither the struct nor the revision. */
START_TEST(test_health_keys_of_other_types)
{
#define SVC "kind: service\nname: web\ncommand: [/bin/web]\nports: [{name: http}]\n"
        static const struct {
                const char *plain, *with_others;
        } cases[] = {
                {SVC "health: {type: http, path: /h}\n",
                 SVC "health: {type: http, path: /h, command: [/bin/true]}\n"},
                {SVC "health: {type: tcp, port: http}\n",
                 SVC "health: {type: tcp, port: http, path: /h, command: [/bin/true]}\n"},
                {SVC "health: {type: exec, command: [/bin/true]}\n",
                 SVC "health: {type: exec, command: [/bin/true], port: http, path: /h}\n"},
        };
        _cleanup_(orch_service_freep) struct orch_service *s =
                parse_one(SVC "health: {type: tcp, path: /h, command: [/bin/true]}\n");
        _cleanup_(freep) char *e1 = NULL, *e2 = NULL;
        static const char bad_path[] = SVC "health: {type: tcp, path: nope}\n";
        static const char bad_command[] = SVC "health: {type: http, command: []}\n";

        ck_assert_ptr_null(s->health.path);
        ck_assert_ptr_null(s->health.command);
        ck_assert_str_eq(s->health.port, "http");
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char r1[ORCH_REVISION_LEN + 1], r2[ORCH_REVISION_LEN + 1], s1[65], s2[65];

                revision_of(cases[i].plain, r1, s1);
                revision_of(cases[i].with_others, r2, s2);
                ck_assert_msg(streq(r1, r2) && streq(s1, s2), "case %zu: the revision changed", i);
        }
        /* still validated: a bad value is an error whatever the type */
        e1 = first_error(bad_path, sizeof bad_path - 1);
        e2 = first_error(bad_command, sizeof bad_command - 1);
        ck_assert_ptr_nonnull(e1);
        ck_assert_ptr_nonnull(strstr(e1, "health.path"));
        ck_assert_ptr_nonnull(e2);
        ck_assert_ptr_nonnull(strstr(e2, "health.command"));
#undef SVC
}
END_TEST

/* A document that is a list holds services: the JSON form of several, as /v1/apply takes it. */
START_TEST(test_list_document)
{
        static const char json[] = "[{\"kind\":\"service\",\"name\":\"a\",\"command\":\"sleep 1\"},"
                                   "{\"kind\":\"service\",\"name\":\"b\",\"command\":[\"/bin/b\"]}]";
        static const char bad_item[] = "- kind: service\n  name: a\n  command: x\n- 5\n";
        static const char dup[] = "- {kind: service, name: a, command: x}\n---\nkind: service\nname: a\ncommand: y\n";
        _cleanup_(freep) char *e1 = NULL, *e2 = NULL;
        struct orch_diags d = {0};
        struct orch_manifest *m;
        int r;

        m = parse(json, &d, &r);
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(m->n_services, 2);
        ck_assert_str_eq(m->services[0]->name, "a");
        ck_assert_str_eq(m->services[1]->name, "b");
        ck_assert_uint_eq(m->services[1]->source_line, 1);
        orch_manifest_free(m);
        orch_diags_release(&d);
        /* each item is a document: its errors have its position, and names are unique across all */
        e1 = first_error(bad_item, sizeof bad_item - 1);
        ck_assert_str_eq(e1, "4:3: a manifest document must be a mapping (kind: service, name: ...), got an integer");
        e2 = first_error(dup, sizeof dup - 1);
        ck_assert_ptr_nonnull(strstr(e2, "duplicate"));
}
END_TEST

START_TEST(test_units_canonical)
{
        _cleanup_(freep) char *path =
                orch_strdup_printf("%s/%s/valid/units.yaml", orch_test_srcdir(), FIXTURES);
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        _cleanup_json_ json_t *j = NULL;
        struct orch_diags d = {0};
        const struct orch_service *s;
        const char *str;

        ck_assert_int_eq(orch_manifest_parse_file(m, path, &d), 0);
        s = m->services[0];
        ck_assert_uint_eq(s->resources.cpu_millis, 500);
        ck_assert_uint_eq(s->resources.memory, 1ULL << 30);
        ck_assert_uint_eq(s->health.interval_ms, 90000);
        ck_assert_uint_eq(s->health.timeout_ms, 1500);
        ck_assert_uint_eq(s->restart.max_backoff_ms, 1800000);
        ck_assert_int_eq(s->stop.signal, SIGINT);
        ck_assert_uint_eq(s->logs.max_size, 1000000000);
        ck_assert_uint_eq(s->route.rate_count, 6000);
        ck_assert_uint_eq(s->route.rate_period_ms, 60000);
        ck_assert_uint_eq(s->route.rate_burst, 50);
        ck_assert_uint_eq(s->route.max_body, 0);
        ck_assert_int_eq(s->route.auth, ORCH_ROUTE_AUTH_API_KEY);
        ck_assert_str_eq(s->route.path, "/");
        ck_assert_str_eq(s->route.port, "web");
        ck_assert(!s->update.auto_revert);

        ck_assert_int_eq(orch_service_to_json(s, &j), 0);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "resources"), "cpu")), "500m");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "resources"), "memory")),
                         "1Gi");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "health"), "interval")),
                         "90s");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "health"), "timeout")),
                         "1500ms");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "restart"), "max_backoff")),
                         "30m");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "stop"), "signal")), "INT");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "logs"), "max_size")), "1G");
        ck_assert_int_eq(orch_json_get_string(json_object_get(j, "health"), "command", &str), -EINVAL);
        orch_diags_release(&d);
}
END_TEST

START_TEST(test_multi_document_atomic)
{
        struct orch_diags d = {0};
        struct orch_manifest *m;
        int r;

        m = parse("kind: service\nname: a\ncommand: x\n---\nkind: service\nname: b\ncommand: y\n", &d, &r);
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(m->n_services, 2);
        ck_assert_str_eq(m->services[1]->name, "b");
        ck_assert_uint_eq(m->services[1]->source_line, 6);
        /* one bad document: nothing of the buffer is added, the earlier services stay */
        ck_assert_int_eq(
                orch_manifest_parse_buffer(
                        m, "t2.yaml", "kind: service\nname: c\ncommand: x\n---\nkind: service\n", 51, &d),
                -EINVAL);
        ck_assert_uint_eq(m->n_services, 2);
        ck_assert_uint_eq(d.n, 2);
        ck_assert_str_eq(d.items[0].file, "t2.yaml");
        ck_assert_uint_eq(d.items[0].line, 5);
        ck_assert_str_eq(d.items[0].message, "missing required key 'name'");
        orch_diags_release(&d);
        /* an empty buffer, and one of comments only, declare nothing and are fine */
        ck_assert_int_eq(orch_manifest_parse_buffer(m, "e", "", 0, &d), 0);
        ck_assert_int_eq(orch_manifest_parse_buffer(m, "e", "# nothing\n---\n", 14, &d), 0);
        ck_assert_uint_eq(m->n_services, 2);
        ck_assert_uint_eq(d.n, 0);
        orch_manifest_free(m);
}
END_TEST

START_TEST(test_hostile_input)
{
        _cleanup_(freep) char *big = NULL, *deep = NULL, *wide = NULL;
        struct orch_buf b = {0};
        uint64_t start;
        char *e;

        /* NUL bytes and invalid UTF-8: a position, never a crash */
        e = first_error("kind: service\nname: w\0b\n", 24);
        ck_assert_str_eq(e, "2:8: NUL byte in the input");
        free(e);
        e = first_error("kind: service\nname: \xc3\xa9\xff\n", 24);
        ck_assert_str_eq(e, "2:8: invalid UTF-8 (byte 0xff)");
        free(e);
        e = first_error("kind: service\nname: \"a\\0b\"\n", 27);
        ck_assert_str_eq(e, "2:7: a NUL character (\\0) is not allowed in a value");
        free(e);
        e = first_error("kind: service\nname: \x01\n", 21);
        ck_assert_str_eq(e, "2:7: control characters are not allowed");
        free(e);

        /* a byte-order mark and CRLF line ends (a Windows editor) are fine, positions unchanged */
        e = first_error("\xef\xbb\xbfkind: service\r\nname: web\r\ncommand: x\r\nreplicas: -2\r\n", 55);
        ck_assert_str_eq(e, "4:11: replicas: must not be negative (got -2)");
        free(e);

        /* billion laughs: rejected fast (the expansion is counted, never built) */
        orch_buf_puts(&b, "a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (char c = 'b'; c <= 'z'; c++)
                orch_buf_printf(&b, "%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", c, c,
                                c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
        start = orch_now_msec();
        e = first_error(b.data, b.len);
        ck_assert_uint_lt(orch_now_msec() - start, 1000);
        ck_assert_ptr_nonnull(strstr(e, "expands the document beyond 200000 nodes"));
        free(e);
        orch_buf_release(&b);

        /* "${" a million times, closed once at the end: linear, not quadratic */
        orch_buf_puts(&b, "kind: service\nname: x\nports: [{name: p}]\ncommand: \"");
        for (size_t i = 0; i < 1000000; i++)
                orch_buf_puts(&b, "${");
        orch_buf_puts(&b, "PORT_Q}\"\n");
        start = orch_now_msec();
        e = first_error(b.data, b.len);
        ck_assert_uint_lt(orch_now_msec() - start, 2000);
        ck_assert_str_eq(e, "4:10: command: ${PORT_Q} refers to an undeclared port (declared: p)");
        free(e);
        orch_buf_release(&b);

        /* aliases that point nowhere, or into their own definition */
        e = first_error("kind: service\nname: *nope\n", 25);
        ck_assert_str_eq(e, "2:7: unknown anchor 'nope'");
        free(e);
        e = first_error("a: &x [1, *x]\n", 14);
        ck_assert_str_eq(e, "1:11: unknown anchor 'x'");
        free(e);

        /* nesting depth */
        deep = calloc(1, 2 * 100 + 1);
        memset(deep, '[', 100);
        memset(deep + 100, ']', 100);
        e = first_error(deep, 200);
        ck_assert_str_eq(e, "1:65: nested too deeply (the limit is 64 levels)");
        free(e);

        /* too many nodes without any alias */
        for (size_t i = 0; i < 210000; i++)
                orch_buf_puts(&b, "- 1\n");
        e = first_error(b.data, b.len);
        ck_assert_ptr_nonnull(strstr(e, "too many nodes"));
        free(e);
        orch_buf_release(&b);

        /* size */
        big = calloc(1, ORCH_MANIFEST_MAX_BYTES + 2);
        memset(big, ' ', ORCH_MANIFEST_MAX_BYTES + 1);
        e = first_error(big, ORCH_MANIFEST_MAX_BYTES + 1);
        ck_assert_str_eq(e, "0:0: too large (4194305 bytes; the limit is 4 MiB)");
        free(e);

        /* a value of 10,000 characters is cut in the message */
        wide = calloc(1, 10100);
        memcpy(wide, "kind: service\ncommand: x\nname: ", 31);
        memset(wide + 31, 'k', 10000);
        {
                _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
                struct orch_diags d = {0};

                ck_assert_int_lt(orch_manifest_parse_buffer(m, "w", wide, strlen(wide), &d), 0);
                ck_assert_uint_eq(d.n, 1);
                ck_assert_str_eq(d.items[0].message,
                                 "name: invalid name \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...\" "
                                 "(lower-case letters, "
                                 "digits and '-', starting with a letter, at most 63 characters)");
                orch_diags_release(&d);
        }
}
END_TEST

START_TEST(test_errors_are_all_reported)
{
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        struct orch_diags d = {0};
        struct orch_buf b = {0};

        /* 150 bad keys: capped at orch_diags' limit, flagged as truncated */
        orch_buf_puts(&b, "kind: service\nname: x\ncommand: y\n");
        for (int i = 0; i < 150; i++)
                orch_buf_printf(&b, "bad%d: 1\n", i);
        ck_assert_int_eq(orch_manifest_parse_buffer(m, "t", b.data, b.len, &d), -EINVAL);
        ck_assert_uint_eq(d.n, 100);
        ck_assert(d.truncated);
        ck_assert_str_eq(d.items[0].message, "unknown key 'bad0'");
        ck_assert_uint_eq(d.items[99].line, 103);
        orch_diags_release(&d);
        orch_buf_release(&b);
}
END_TEST

START_TEST(test_from_json)
{
        _cleanup_(orch_service_freep) struct orch_service *s = NULL;
        struct orch_diags d = {0};
        json_error_t err;
        json_t *j;

        j = json_loads("{\"kind\":\"service\",\"name\":\"api\",\"command\":\"run\",\"replicas\":-1,"
                       "\"resources\":{\"memory\":\"12Q\"},\"env\":{\"X\":\"a\\u0000b\"}}",
                       JSON_ALLOW_NUL, &err);
        ck_assert_ptr_nonnull(j);
        ck_assert_int_eq(orch_service_from_json(j, "body", &s, &d), -EINVAL);
        ck_assert_ptr_null(s);
        ck_assert_uint_eq(d.n, 1);
        ck_assert_str_eq(d.items[0].message, "env.X: a NUL character (\\u0000) is not allowed in a value");
        orch_diags_release(&d);
        json_object_del(j, "env");
        ck_assert_int_eq(orch_service_from_json(j, "body", &s, &d), -EINVAL);
        ck_assert_uint_eq(d.n, 2);
        ck_assert_uint_eq(d.items[0].line, 0);
        ck_assert_str_eq(d.items[0].message, "replicas: must not be negative (got -1)");
        ck_assert_str_eq(d.items[1].message, "resources.memory: bad size \"12Q\" (use a number with Ki, Mi, "
                                             "Gi, K, M or G, or plain bytes)");
        orch_diags_release(&d);
        json_object_set_new(j, "replicas", json_integer(2));
        json_object_set_new(j, "resources", json_pack("{s:f}", "cpu", 0.25));
        ck_assert_int_eq(orch_service_from_json(j, "body", &s, &d), 0);
        ck_assert_uint_eq(s->replicas, 2);
        ck_assert_uint_eq(s->resources.cpu_millis, 250);
        ck_assert_str_eq(s->source_file, "body");
        ck_assert_uint_eq(s->source_line, 0);
        json_decref(j);
        ck_assert_int_eq(orch_service_from_json(NULL, "body", &s, &d), -EINVAL);
}
END_TEST

START_TEST(test_dup_equal)
{
        _cleanup_(orch_service_freep) struct orch_service *a =
                parse_one("kind: service\nname: a\ncommand: [x]\nports: [{name: p}]\nhealth: {type: exec, "
                          "command: 'true'}\n"
                          "placement: {constraints: [a=b]}\nroute: {}\n");
        _cleanup_(orch_service_freep) struct orch_service *b = NULL;

        ck_assert_int_eq(orch_service_dup(a, &b), 0);
        ck_assert(orch_service_equal(a, b));
        ck_assert_str_eq(b->source_file, "test.yaml");
        ck_assert_uint_eq(b->source_line, a->source_line);
        ck_assert_str_eq(b->health.command[2], "true");
        ck_assert_str_eq(b->route.port, "p");
        b->replicas = 7;
        ck_assert(!orch_service_equal(a, b));
}
END_TEST

START_TEST(test_load_directory)
{
        char dir[] = "/tmp/test-manifest-XXXXXX";
        _cleanup_(freep) char *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL, *sub = NULL;
        struct orch_manifest *m = NULL;
        struct orch_diags d = {0};
        char *paths[1];
        char **files = NULL;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        p1 = orch_strdup_printf("%s/b.yaml", dir);
        p2 = orch_strdup_printf("%s/a.yml", dir);
        p3 = orch_strdup_printf("%s/notes.txt", dir);
        p4 = orch_strdup_printf("%s/.hidden.yaml", dir);
        sub = orch_strdup_printf("%s/sub.yaml", dir);
        ck_assert_int_eq(orch_write_file_atomic(p1, "kind: service\nname: b\ncommand: x\n", 33, 0644), 0);
        ck_assert_int_eq(orch_write_file_atomic(p2, "kind: service\nname: a\ncommand: x\n", 33, 0644), 0);
        ck_assert_int_eq(orch_write_file_atomic(p3, "not yaml: [", 11, 0644), 0);
        ck_assert_int_eq(orch_write_file_atomic(p4, "not yaml: [", 11, 0644), 0);
        ck_assert_int_eq(mkdir(sub, 0755), 0);
        paths[0] = dir;

        ck_assert_int_eq(orch_manifest_expand_paths(paths, 1, &files, &d), 0);
        ck_assert_uint_eq(orch_strv_length(files), 2);
        ck_assert_str_eq(files[0], p2);
        ck_assert_str_eq(files[1], p1);
        files = orch_strv_free(files);

        ck_assert_int_eq(orch_manifest_load(paths, 1, &m, &d), 0);
        ck_assert_uint_eq(m->n_services, 2);
        ck_assert_str_eq(m->services[0]->name, "a");
        m = orch_manifest_free(m);

        /* the same name in two files: an error at the second, naming the first */
        ck_assert_int_eq(orch_write_file_atomic(p1, "kind: service\nname: a\ncommand: x\n", 33, 0644), 0);
        ck_assert_int_eq(orch_manifest_load(paths, 1, &m, &d), -EINVAL);
        ck_assert_ptr_null(m);
        ck_assert_uint_eq(d.n, 1);
        ck_assert_str_eq(d.items[0].file, p1);
        ck_assert_uint_eq(d.items[0].line, 2);
        ck_assert_uint_eq(d.items[0].column, 7);
        ck_assert_ptr_nonnull(strstr(d.items[0].message, "duplicate service name 'a' (first declared at "));
        orch_diags_release(&d);

        /* missing paths and empty directories are errors, reported per path */
        paths[0] = sub;
        ck_assert_int_eq(orch_manifest_expand_paths(paths, 1, &files, &d), -EINVAL);
        ck_assert_str_eq(d.items[0].message, "no *.yaml or *.yml files in this directory");
        orch_diags_release(&d);
        paths[0] = (char *)"/nonexistent/x.yaml";
        ck_assert_int_eq(orch_manifest_load(paths, 1, &m, &d), -ENOENT);
        ck_assert_str_eq(d.items[0].message, "cannot read: No such file or directory");
        orch_diags_release(&d);

        unlink(p1);
        unlink(p2);
        unlink(p3);
        unlink(p4);
        rmdir(sub);
        rmdir(dir);
}
END_TEST

START_TEST(test_tables)
{
        int sig;
        enum orch_driver drv;

        ck_assert_int_eq(orch_signal_from_string("TERM", &sig), 0);
        ck_assert_int_eq(sig, SIGTERM);
        ck_assert_int_eq(orch_signal_from_string("SIGHUP", &sig), 0);
        ck_assert_int_eq(sig, SIGHUP);
        ck_assert_int_eq(orch_signal_from_string("usr1", &sig), 0);
        ck_assert_int_eq(sig, SIGUSR1);
        ck_assert_int_eq(orch_signal_from_string("9", &sig), 0);
        ck_assert_int_eq(sig, SIGKILL);
        ck_assert_int_eq(orch_signal_from_string("SEGV", &sig), -EINVAL);
        ck_assert_int_eq(orch_signal_from_string("99", &sig), -EINVAL);
        ck_assert_int_eq(orch_signal_from_string("", &sig), -EINVAL);
        ck_assert_str_eq(orch_signal_to_string(SIGTERM), "TERM");
        ck_assert_ptr_null(orch_signal_to_string(0));
        ck_assert_int_eq(orch_driver_from_string("systemd", &drv), 0);
        ck_assert_int_eq(drv, ORCH_DRIVER_SYSTEMD);
        ck_assert_int_eq(orch_driver_from_string("docker", &drv), -EINVAL);
        ck_assert_str_eq(orch_restart_policy_to_string(ORCH_RESTART_ON_FAILURE), "on-failure");
        ck_assert_str_eq(orch_health_type_to_string(ORCH_HEALTH_TCP), "tcp");
        ck_assert_str_eq(orch_strategy_to_string(ORCH_STRATEGY_BINPACK), "binpack");
        ck_assert_str_eq(orch_route_auth_to_string(ORCH_ROUTE_AUTH_API_KEY), "api-key");
        ck_assert_ptr_null(orch_strategy_to_string(_ORCH_STRATEGY_MAX));

        ck_assert(orch_service_name_valid("a"));
        ck_assert(orch_service_name_valid("web-2"));
        ck_assert(
                orch_service_name_valid("a23456789012345678901234567890123456789012345678901234567890123"));
        ck_assert(!orch_service_name_valid(
                "a234567890123456789012345678901234567890123456789012345678901234"));
        ck_assert(!orch_service_name_valid("2web"));
        ck_assert(!orch_service_name_valid("Web"));
        ck_assert(!orch_service_name_valid(""));
        ck_assert(orch_port_name_valid("admin-ui"));
        ck_assert(!orch_port_name_valid("admin_ui"));
        ck_assert(!orch_port_name_valid("a2345678901234567890123456789012"));
}
END_TEST

/* Scalars resolve as YAML 1.2 core: what YAML 1.1 would turn into booleans stays a string. */
START_TEST(test_scalar_resolution)
{
        _cleanup_(orch_ytree_freep) struct orch_ytree *t = NULL;
        struct orch_diags d = {0};
        static const char text[] =
                "[yes, no, on, ~, null, '', True, 0x1F, 0o17, -3, 1.5, .inf, 1e3, '12', !!str 5, "
                "!!int '7', 2001-12-14]";
        static const enum orch_yscalar_kind kinds[] = {
                ORCH_YSCALAR_STRING, ORCH_YSCALAR_STRING, ORCH_YSCALAR_STRING, ORCH_YSCALAR_NULL,
                ORCH_YSCALAR_NULL,   ORCH_YSCALAR_STRING, ORCH_YSCALAR_BOOL,   ORCH_YSCALAR_INT,
                ORCH_YSCALAR_INT,    ORCH_YSCALAR_INT,    ORCH_YSCALAR_FLOAT,  ORCH_YSCALAR_FLOAT,
                ORCH_YSCALAR_FLOAT,  ORCH_YSCALAR_STRING, ORCH_YSCALAR_STRING, ORCH_YSCALAR_INT,
                ORCH_YSCALAR_STRING,
        };
        const struct orch_ynode *root;

        ck_assert_int_eq(orch_ytree_parse("t", text, strlen(text), &t, &d), 0);
        root = t->docs[0].root;
        ck_assert_uint_eq(root->n_items, ELEMENTSOF(kinds));
        for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
                ck_assert_msg(root->items[i]->kind == kinds[i], "item %zu (%s)", i, root->items[i]->value);
        ck_assert_uint_eq(root->items[1]->line, 1);
        ck_assert_uint_eq(root->items[1]->column, 7);
        orch_ytree_free(TAKE_PTR(t));

        ck_assert_int_eq(orch_ytree_parse("t", "!!int x", 7, &t, &d), -EINVAL);
        ck_assert_str_eq(d.items[0].message, "'x' is not a valid value for the tag 'tag:yaml.org,2002:int'");
        orch_diags_release(&d);
        ck_assert_int_eq(orch_ytree_parse("t", "? [a]\n: b\n", 10, &t, &d), -EINVAL);
        ck_assert_str_eq(d.items[0].message, "a mapping key must be a plain value, not a list");
        orch_diags_release(&d);
}
END_TEST

static Suite *manifest_suite(void)
{
        Suite *s = suite_create("manifest");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_valid_fixtures);
        tcase_add_test(tc, test_invalid_fixtures);
        tcase_add_test(tc, test_defaults);
        tcase_add_test(tc, test_every_field);
        tcase_add_test(tc, test_canonical_form);
        tcase_add_test(tc, test_revision_stability);
        tcase_add_test(tc, test_units_canonical);
        tcase_add_test(tc, test_multi_document_atomic);
        tcase_add_test(tc, test_hostile_input);
        tcase_add_test(tc, test_errors_are_all_reported);
        tcase_add_test(tc, test_from_json);
        tcase_add_test(tc, test_dup_equal);
        tcase_add_test(tc, test_load_directory);
        tcase_add_test(tc, test_tables);
        tcase_add_test(tc, test_scalar_resolution);
        tcase_add_test(tc, test_health_keys_of_other_types);
        tcase_add_test(tc, test_list_document);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(manifest_suite)
