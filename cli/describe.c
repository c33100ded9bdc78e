/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "resource.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_describe;

/* How many of the most recent events about the object are shown. */
#define RECENT_EVENTS 10

/* --- values -------------------------------------------------------------------------------------- */

/* A word of a command line as a shell would need it: bare when safe, else in single quotes. */
static void put_shell_word(struct orch_buf *b, const char *w)
{
        bool plain = *w != '\0';

        for (const char *p = w; *p && plain; p++)
                plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                        strchr("-_./=:,+@%${}", *p);
        if (plain) {
                orch_buf_puts(b, w);
                return;
        }
        orch_buf_putc(b, '\'');
        for (const char *p = w; *p; p++)
                if (*p == '\'')
                        orch_buf_puts(b, "'\\''");
                else
                        orch_buf_putc(b, *p);
        orch_buf_putc(b, '\'');
}

/* One value of the canonical spec on one line: scalars as they are, lists joined, objects as
 * key=value pairs (nested keys dotted). */
static void put_value(struct orch_buf *b, const json_t *v, const char *prefix)
{
        const char *k;
        json_t *x;
        size_t i;

        switch (json_typeof(v)) {
        case JSON_STRING:
                orch_buf_puts(b, json_string_value(v));
                break;
        case JSON_INTEGER:
                orch_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                break;
        case JSON_REAL:
                orch_buf_printf(b, "%g", json_real_value(v));
                break;
        case JSON_TRUE:
        case JSON_FALSE:
                orch_buf_puts(b, json_is_true(v) ? "true" : "false");
                break;
        case JSON_NULL:
                orch_buf_puts(b, "-");
                break;
        case JSON_ARRAY:
                json_array_foreach ((json_t *)v, i, x) {
                        if (i)
                                orch_buf_puts(b, ", ");
                        /* a list of objects with a name (ports): the names say enough */
                        if (json_is_object(x) && json_object_size(x) == 1 && orch_json_str(x, "name"))
                                orch_buf_puts(b, orch_json_str(x, "name"));
                        else if (json_is_object(x)) {
                                orch_buf_putc(b, '{');
                                put_value(b, x, "");
                                orch_buf_putc(b, '}');
                        } else
                                put_value(b, x, "");
                }
                break;
        case JSON_OBJECT: {
                bool first = true;

                json_object_foreach ((json_t *)v, k, x) {
                        /* an empty list or map says nothing ("constraints: none" is the default) */
                        if ((json_is_array(x) && json_array_size(x) == 0) ||
                            (json_is_object(x) && json_object_size(x) == 0))
                                continue;
                        if (json_is_object(x)) {
                                _cleanup_(freep) char *p = orch_strdup_printf("%s%s.", prefix, k);
                                if (!first)
                                        orch_buf_putc(b, ' ');
                                put_value(b, x, p ? p : "");
                        } else {
                                orch_buf_printf(b, "%s%s%s=", first ? "" : " ", prefix, k);
                                put_value(b, x, "");
                        }
                        first = false;
                }
                break;
        }
        }
}

static void print_spec(const json_t *spec)
{
        const char *k;
        json_t *v;

        if (!json_is_object(spec))
                return;
        fputs("Spec:\n", stdout);
        json_object_foreach ((json_t *)spec, k, v) {
                struct orch_buf b = {0};
                size_t i;
                json_t *w;

                /* shown above, or the same for every service */
                if (streq(k, "kind") || streq(k, "name") || streq(k, "replicas"))
                        continue;
                if ((json_is_object(v) || json_is_array(v)) &&
                    (json_is_object(v) ? json_object_size(v) : json_array_size(v)) == 0)
                        continue;
                if (streq(k, "command") && json_is_array(v))
                        json_array_foreach (v, i, w) {
                                if (i)
                                        orch_buf_putc(&b, ' ');
                                put_shell_word(&b, strempty(json_string_value(w)));
                        }
                else
                        put_value(&b, v, "");
                orch_kv(stdout, 2, k, "%s", b.oom || !b.data ? "" : b.data);
                orch_buf_release(&b);
        }
}

/* "2026-11-26T11:41:01.258Z (3m12s ago)" or "-". */
static void time_text(const json_t *t, char *buf, size_t size)
{
        char age[32];

        if (!json_is_string(t)) {
                orch_strlcpy(buf, "-", size);
                return;
        }
        orch_format_age_json(t, age, sizeof age);
        orch_snprintf(buf, size, "%s (%s ago)", json_string_value(t), age);
}

/* --- events -------------------------------------------------------------------------------------- */

struct recent {
        const char *service, *instance, *node;
        json_t *instance_ids; /* for a node: events about its instances count too */
        json_t *ring[RECENT_EVENTS];
        size_t n;
};

static int recent_event(json_t *ev, const char *line, size_t len, void *userdata)
{
        struct recent *r = userdata;
        const char *inst = orch_json_str(ev, "instance");
        bool match = (r->service && streq_ptr(orch_json_str(ev, "service"), r->service)) ||
                     (r->instance && streq_ptr(inst, r->instance)) ||
                     (r->node && streq_ptr(orch_json_str(ev, "node"), r->node)) ||
                     (r->instance_ids && inst && json_object_get(r->instance_ids, inst));

        if (!match)
                return 0;
        json_decref(r->ring[r->n % RECENT_EVENTS]);
        r->ring[r->n % RECENT_EVENTS] = json_incref(ev);
        r->n++;
        return 0;
}

static void print_events(struct orch_client *client, struct recent *r)
{
        size_t first, count;

        fputs("Events:", stdout);
        if (orch_client_events(client, 0, recent_event, r) < 0) {
                fputs(" (could not be read)\n", stdout);
                goto out;
        }
        if (r->n == 0) {
                fputs(" none\n", stdout);
                goto out;
        }
        fputc('\n', stdout);
        count = MIN(r->n, (size_t)RECENT_EVENTS);
        first = r->n - count;
        for (size_t i = first; i < r->n; i++)
                orch_output_event(r->ring[i % RECENT_EVENTS], stdout, 2);
out:
        for (size_t i = 0; i < RECENT_EVENTS; i++)
                json_decref(r->ring[i]);
}

/* --- instances as a sub-table ------------------------------------------------------------------ */

static int print_instances(const json_t *list, bool with_node)
{
        static const char *const headers[] = {"ID", "NODE", "STATE", "HEALTH", "RESTARTS", "AGE", "REASON"};
        static const char *const headers_svc[] = {"ID",       "SERVICE", "STATE", "HEALTH",
                                                  "RESTARTS", "AGE",     "REASON"};
        _cleanup_(orch_table_freep) struct orch_table *t =
                orch_table_new(ELEMENTSOF(headers), with_node ? headers : headers_svc);
        const json_t *inst;
        size_t i;

        if (!t)
                return -ENOMEM;
        orch_table_colour_column(t, 2);
        orch_table_colour_column(t, 3);
        json_array_foreach (list, i, inst) {
                char restarts[24], age[32];

                orch_json_int_text(inst, "restarts", restarts, sizeof restarts);
                orch_format_age_json(json_object_get(inst, "created_at"), age, sizeof age);
                if (orch_table_add_row(
                            t, (const char *[]){orch_json_str(inst, "id"),
                                                orch_json_str(inst, with_node ? "node" : "service"),
                                                orch_json_str(inst, "state"), orch_json_str(inst, "health"),
                                                restarts, age, orch_json_str(inst, "reason")}) < 0)
                        return -ENOMEM;
        }
        if (orch_table_rows(t) == 0) {
                fputs("Instances: none\n", stdout);
                return 0;
        }
        printf("Instances (%zu):\n", orch_table_rows(t));
        orch_table_print(t, stdout, 2);
        return 0;
}

/* --- the three kinds ------------------------------------------------------------------------- */

static int get_json(struct orch_client *client, enum orch_resource kind, const char *name,
                    const char *service, const char *node, const char *suffix, json_t **ret)
{
        _cleanup_(freep) char *target = NULL, *full = NULL;

        if (orch_resource_target(kind, name, service, node, &target) < 0 ||
            !(full = orch_strdup_printf("%s%s", target, suffix))) {
                orch_cli_fail("out of memory");
                return -ENOMEM;
        }
        return orch_client_json(client, "GET", full, NULL, ret, NULL);
}

static int describe_service(struct orch_client *client, const char *name)
{
        _cleanup_json_ json_t *svc = NULL, *ro = NULL, *insts = NULL;
        struct recent recent = {.service = name};
        char replicas[24], ready[24], t[96], counts[256] = "";
        const json_t *route, *revs, *rev;
        const char *k, *current;
        json_t *v;
        size_t i;

        if (get_json(client, ORCH_RESOURCE_SERVICES, name, NULL, NULL, "", &svc) < 0 ||
            get_json(client, ORCH_RESOURCE_SERVICES, name, NULL, NULL, "/rollout", &ro) < 0 ||
            get_json(client, ORCH_RESOURCE_INSTANCES, NULL, name, NULL, "", &insts) < 0)
                return ORCH_EXIT_FAILURE;

        current = orch_json_str(svc, "revision");
        orch_json_int_text(svc, "replicas", replicas, sizeof replicas);
        orch_json_int_text(svc, "ready", ready, sizeof ready);
        json_object_foreach (json_object_get(svc, "instances"), k, v) {
                size_t l = strlen(counts);
                orch_snprintf(counts + l, sizeof counts - l, "%s%" JSON_INTEGER_FORMAT " %s", l ? ", " : "",
                              json_integer_value(v), k);
        }
        orch_kv(stdout, 0, "Name", "%s", strna(orch_json_str(svc, "name")));
        orch_kv(stdout, 0, "Revision", "%s", strna(current));
        orch_kv(stdout, 0, "Replicas", "%s desired, %s ready%s%s%s", replicas, ready, *counts ? " (" : "",
                counts, *counts ? ")" : "");
        if (json_is_true(json_object_get(svc, "deleting")))
                orch_kv_state(stdout, 0, "Status", "stopping",
                              "(deleted: the service goes when its instances have stopped)");
        route = json_object_get(svc, "route");
        if (json_is_object(route))
                orch_kv(stdout, 0, "Route", "%s%s -> port %s%s", strempty(orch_json_str(route, "host")),
                        strempty(orch_json_str(route, "path")), strna(orch_json_str(route, "port")),
                        json_is_true(json_object_get(route, "strip_prefix")) ? " (prefix stripped)" : "");
        else
                orch_kv(stdout, 0, "Route", "none");
        time_text(json_object_get(svc, "created_at"), t, sizeof t);
        orch_kv(stdout, 0, "Created", "%s", t);
        time_text(json_object_get(svc, "updated_at"), t, sizeof t);
        orch_kv(stdout, 0, "Updated", "%s", t);
        print_spec(json_object_get(svc, "spec"));

        fputs("Rollout:\n", stdout);
        orch_kv_state(stdout, 2, "State", orch_json_str(ro, "state"),
                      json_is_true(json_object_get(ro, "reverting")) ? "(an automatic rollback)" : NULL);
        if (orch_json_str(ro, "from") && *orch_json_str(ro, "from"))
                orch_kv(stdout, 2, "From", "%s", orch_json_str(ro, "from"));
        {
                char n_new[24], old[24], healthy[24];
                orch_json_int_text(ro, "new", n_new, sizeof n_new);
                orch_json_int_text(ro, "old", old, sizeof old);
                orch_json_int_text(ro, "healthy", healthy, sizeof healthy);
                orch_kv(stdout, 2, "Instances", "%s new (%s healthy), %s old", n_new, healthy, old);
        }
        if (orch_json_str(ro, "message"))
                orch_kv(stdout, 2, "Message", "%s", orch_json_str(ro, "message"));
        if (orch_json_str(ro, "deadline"))
                orch_kv(stdout, 2, "Deadline", "%s", orch_json_str(ro, "deadline"));

        revs = json_object_get(svc, "revisions");
        if (json_array_size(revs) > 0) {
                fputs("Revisions:\n", stdout);
                json_array_foreach (revs, i, rev) {
                        const char *r = strempty(orch_json_str(rev, "revision"));
                        time_text(json_object_get(rev, "created_at"), t, sizeof t);
                        printf("  %s  %s%s\n", r, t, current && streq(r, current) ? "  (current)" : "");
                }
        }
        if (print_instances(insts, true) < 0)
                return orch_cli_fail("out of memory");
        print_events(client, &recent);
        return ORCH_EXIT_OK;
}

static int describe_instance(struct orch_client *client, const char *id)
{
        _cleanup_json_ json_t *inst = NULL;
        struct recent recent = {.instance = id};
        const json_t *exit_info;
        char pid[24], restarts[24], generation[24], ports[256] = "", t[96];
        const char *k;
        json_t *v;

        if (get_json(client, ORCH_RESOURCE_INSTANCES, id, NULL, NULL, "", &inst) < 0)
                return ORCH_EXIT_FAILURE;
        orch_json_int_text(inst, "pid", pid, sizeof pid);
        orch_json_int_text(inst, "restarts", restarts, sizeof restarts);
        orch_json_int_text(inst, "generation", generation, sizeof generation);
        json_object_foreach (json_object_get(inst, "ports"), k, v) {
                size_t l = strlen(ports);
                orch_snprintf(ports + l, sizeof ports - l, "%s%s=%" JSON_INTEGER_FORMAT, l ? ", " : "", k,
                              json_integer_value(v));
        }
        orch_kv(stdout, 0, "ID", "%s", strna(orch_json_str(inst, "id")));
        orch_kv(stdout, 0, "Service", "%s", strna(orch_json_str(inst, "service")));
        orch_kv(stdout, 0, "Revision", "%s", strna(orch_json_str(inst, "revision")));
        orch_kv(stdout, 0, "Node", "%s",
                orch_json_str(inst, "node") ? orch_json_str(inst, "node") : "- (not placed)");
        orch_kv_state(stdout, 0, "State", orch_json_str(inst, "state"), NULL);
        if (orch_json_str(inst, "reason"))
                orch_kv(stdout, 0, "Reason", "%s", orch_json_str(inst, "reason"));
        orch_kv_state(stdout, 0, "Health", orch_json_str(inst, "health"), NULL);
        orch_kv(stdout, 0, "Desired", "%s", strna(orch_json_str(inst, "desired")));
        orch_kv(stdout, 0, "PID", "%s", pid);
        orch_kv(stdout, 0, "Address", "%s",
                orch_json_str(inst, "address") ? orch_json_str(inst, "address") : "-");
        orch_kv(stdout, 0, "Ports", "%s", *ports ? ports : "none");
        orch_kv(stdout, 0, "Restarts", "%s", restarts);
        exit_info = json_object_get(inst, "exit");
        if (json_is_object(exit_info)) {
                char code[24], sig[24];
                orch_json_int_text(exit_info, "code", code, sizeof code);
                orch_json_int_text(exit_info, "signal", sig, sizeof sig);
                orch_kv(stdout, 0, "Last exit", "code %s, signal %s%s", code, sig,
                        json_is_true(json_object_get(exit_info, "oom")) ? ", killed for lack of memory (OOM)"
                                                                        : "");
        } else
                orch_kv(stdout, 0, "Last exit", "-");
        time_text(json_object_get(inst, "created_at"), t, sizeof t);
        orch_kv(stdout, 0, "Created", "%s", t);
        time_text(json_object_get(inst, "started_at"), t, sizeof t);
        orch_kv(stdout, 0, "Started", "%s", t);
        orch_kv(stdout, 0, "Generation", "%s", generation);
        orch_kv(stdout, 0, "Cgroup", "%s",
                orch_json_str(inst, "cgroup") ? orch_json_str(inst, "cgroup") : "-");
        print_events(client, &recent);
        return ORCH_EXIT_OK;
}

static int describe_node(struct orch_client *client, const char *name)
{
        _cleanup_json_ json_t *node = NULL, *insts = NULL, *ids = json_object();
        struct recent recent = {.node = name};
        const json_t *cap, *alloc, *inst, *d;
        char labels[512] = "", drivers[256] = "", t[96], a[32], c[32];
        const char *k;
        json_t *v;
        size_t i;

        if (!ids)
                return orch_cli_fail("out of memory");
        if (get_json(client, ORCH_RESOURCE_NODES, name, NULL, NULL, "", &node) < 0 ||
            get_json(client, ORCH_RESOURCE_INSTANCES, NULL, NULL, name, "", &insts) < 0)
                return ORCH_EXIT_FAILURE;
        json_array_foreach (insts, i, inst)
                if (orch_json_str(inst, "id"))
                        json_object_set(ids, orch_json_str(inst, "id"), json_true());
        recent.instance_ids = ids;

        json_object_foreach (json_object_get(node, "labels"), k, v) {
                size_t l = strlen(labels);
                orch_snprintf(labels + l, sizeof labels - l, "%s%s=%s", l ? ", " : "", k,
                              strempty(json_string_value(v)));
        }
        json_array_foreach (json_object_get(node, "drivers"), i, d) {
                size_t l = strlen(drivers);
                orch_snprintf(drivers + l, sizeof drivers - l, "%s%s", l ? ", " : "",
                              strempty(json_string_value(d)));
        }
        cap = json_object_get(node, "capacity");
        alloc = json_object_get(node, "allocated");

        orch_kv(stdout, 0, "Name", "%s", strna(orch_json_str(node, "name")));
        orch_kv_state(stdout, 0, "State", orch_json_str(node, "state"),
                      json_is_false(json_object_get(node, "connected")) ? "(agent not connected)" : NULL);
        orch_kv(stdout, 0, "Address", "%s",
                orch_json_str(node, "address") ? orch_json_str(node, "address") : "-");
        orch_kv(stdout, 0, "Labels", "%s", *labels ? labels : "none");
        orch_format_cores(json_number_value(json_object_get(cap, "cpu")), c, sizeof c);
        orch_format_bytes((uint64_t)json_number_value(json_object_get(cap, "memory")), a, sizeof a);
        orch_kv(stdout, 0, "Capacity", "cpu %s, memory %s", c, a);
        {
                double cpu_cap = json_number_value(json_object_get(cap, "cpu"));
                double mem_cap = json_number_value(json_object_get(cap, "memory"));
                double cpu = json_number_value(json_object_get(alloc, "cpu"));
                double mem = json_number_value(json_object_get(alloc, "memory"));

                orch_format_cores(cpu, c, sizeof c);
                orch_format_bytes((uint64_t)mem, a, sizeof a);
                orch_kv(stdout, 0, "Allocated", "cpu %s (%.0f%%), memory %s (%.0f%%)", c,
                        cpu_cap > 0 ? cpu * 100 / cpu_cap : 0.0, a, mem_cap > 0 ? mem * 100 / mem_cap : 0.0);
        }
        orch_kv(stdout, 0, "Drivers", "%s", *drivers ? drivers : "-");
        orch_kv(stdout, 0, "Version", "%s",
                orch_json_str(node, "version") ? orch_json_str(node, "version") : "-");
        time_text(json_object_get(node, "last_seen"), t, sizeof t);
        orch_kv(stdout, 0, "Last seen", "%s", t);
        if (print_instances(insts, false) < 0)
                return orch_cli_fail("out of memory");
        print_events(client, &recent);
        return ORCH_EXIT_OK;
}

static int describe_run(int argc, char **argv)
{
        static const struct option options[] = {
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        enum orch_resource kind;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_describe, argc, argv, ":", options)) >= 0)
                ;
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_describe,
                                            "what to describe: service, instance or node");
        if (orch_resource_from_string(argv[optind], &kind) < 0)
                return orch_cli_usage_error(&orch_cmd_describe,
                                            "unknown kind '%s': expected service, instance or node",
                                            argv[optind]);
        if (optind + 1 >= argc)
                return orch_cli_usage_error(&orch_cmd_describe, "no %s given", orch_resource_singular(kind));
        if (optind + 2 < argc)
                return orch_cli_usage_error(&orch_cmd_describe, "unexpected argument '%s'",
                                            argv[optind + 2]);

        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        switch (kind) {
        case ORCH_RESOURCE_SERVICES:
                return describe_service(client, argv[optind + 1]);
        case ORCH_RESOURCE_INSTANCES:
                return describe_instance(client, argv[optind + 1]);
        case ORCH_RESOURCE_NODES:
                return describe_node(client, argv[optind + 1]);
        default:
                return ORCH_EXIT_FAILURE;
        }
}

const struct orch_cmd orch_cmd_describe = {
        .name = "describe",
        .usage = "describe service|instance|node NAME",
        .summary = "Show one service, instance or node in detail, with recent events.",
        .help = "Kinds: service (services, svc), instance (instances, inst), node (nodes, no).\n"
                "\n"
                "Options:\n"
                "  --addr URL  orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "service: replicas, route, the spec, the rollout (state, progress, deadline), the\n"
                "  revision history and every instance with its node, state and health;\n"
                "instance: every field, with the reason it is pending or failed and its last exit;\n"
                "node: labels, capacity and what is allocated, its instances.\n"
                "Each ends with the last 10 events about the object.\n"
                "\n"
                "Examples:\n"
                "  orch describe service web\n"
                "  orch describe instance web-3f9a1c2e\n",
        .run = describe_run,
};
