/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "resource.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_get;

/* "web.example.com/api" or "/api"; NULL without a route. */
static void route_text(const json_t *route, char *buf, size_t size)
{
        if (!json_is_object(route)) {
                *buf = '\0';
                return;
        }
        orch_snprintf(buf, size, "%s%s", strempty(orch_json_str(route, "host")),
                      strempty(orch_json_str(route, "path")));
}

/* "running=2 pending=1" from {"running": 2, "pending": 1}. */
static void counts_text(const json_t *counts, char *buf, size_t size)
{
        struct orch_buf b = {0};
        const char *k;
        json_t *v;

        json_object_foreach ((json_t *)counts, k, v)
                orch_buf_printf(&b, "%s%s=%" JSON_INTEGER_FORMAT, b.len ? " " : "", k,
                                json_integer_value(v));
        orch_strlcpy(buf, b.oom || !b.data ? "" : b.data, size);
        orch_buf_release(&b);
}

/* "k=v,k=v" from an object of strings or integers. */
static void pairs_text(const json_t *o, const char *sep, char *buf, size_t size)
{
        struct orch_buf b = {0};
        const char *k;
        json_t *v;

        json_object_foreach ((json_t *)o, k, v) {
                if (json_is_integer(v))
                        orch_buf_printf(&b, "%s%s=%" JSON_INTEGER_FORMAT, b.len ? sep : "", k,
                                        json_integer_value(v));
                else
                        orch_buf_printf(&b, "%s%s=%s", b.len ? sep : "", k, strempty(json_string_value(v)));
        }
        orch_strlcpy(buf, b.oom || !b.data ? "" : b.data, size);
        orch_buf_release(&b);
}

static int add_service(struct orch_table *t, const json_t *s, bool wide)
{
        char replicas[24], ready[24], route[512], age[32], rollout[32], counts[256], updated[32];
        const json_t *ro = json_object_get(s, "rollout");

        orch_json_int_text(s, "replicas", replicas, sizeof replicas);
        orch_json_int_text(s, "ready", ready, sizeof ready);
        route_text(json_object_get(s, "route"), route, sizeof route);
        orch_format_age_json(json_object_get(s, "created_at"), age, sizeof age);
        if (!wide)
                return orch_table_add_row(t, (const char *[]){orch_json_str(s, "name"), replicas, ready,
                                                              orch_json_str(s, "revision"), route, age});
        orch_strlcpy(rollout,
                     json_is_true(json_object_get(s, "deleting")) ? "deleting"
                                                                  : strempty(orch_json_str(ro, "state")),
                     sizeof rollout);
        counts_text(json_object_get(s, "instances"), counts, sizeof counts);
        orch_format_age_json(json_object_get(s, "updated_at"), updated, sizeof updated);
        return orch_table_add_row(t, (const char *[]){orch_json_str(s, "name"), replicas, ready,
                                                      orch_json_str(s, "revision"), route, age, rollout,
                                                      counts, updated});
}

static int add_instance(struct orch_table *t, const json_t *i, bool wide)
{
        char restarts[24], age[32], pid[24], ports[256];

        orch_json_int_text(i, "restarts", restarts, sizeof restarts);
        orch_format_age_json(json_object_get(i, "created_at"), age, sizeof age);
        if (!wide)
                return orch_table_add_row(
                        t, (const char *[]){orch_json_str(i, "id"), orch_json_str(i, "service"),
                                            orch_json_str(i, "node"), orch_json_str(i, "state"),
                                            orch_json_str(i, "health"), restarts,
                                            orch_json_str(i, "address"), age});
        orch_json_int_text(i, "pid", pid, sizeof pid);
        pairs_text(json_object_get(i, "ports"), ",", ports, sizeof ports);
        return orch_table_add_row(
                t, (const char *[]){orch_json_str(i, "id"), orch_json_str(i, "service"),
                                    orch_json_str(i, "node"), orch_json_str(i, "state"),
                                    orch_json_str(i, "health"), restarts, orch_json_str(i, "address"), age,
                                    orch_json_str(i, "revision"), pid, ports, orch_json_str(i, "cgroup"),
                                    orch_json_str(i, "reason")});
}

/* "0.5/4 (12%)": allocated of capacity. */
static void alloc_text(double alloc, double cap, bool bytes, char *buf, size_t size)
{
        char a[32], c[32];

        if (bytes) {
                orch_format_bytes((uint64_t)alloc, a, sizeof a);
                orch_format_bytes((uint64_t)cap, c, sizeof c);
        } else {
                orch_format_cores(alloc, a, sizeof a);
                orch_format_cores(cap, c, sizeof c);
        }
        if (cap > 0)
                orch_snprintf(buf, size, "%s/%s (%.0f%%)", a, c, alloc * 100 / cap);
        else
                orch_snprintf(buf, size, "%s/%s", a, c);
}

static int add_node(struct orch_table *t, const json_t *n, bool wide)
{
        const json_t *cap = json_object_get(n, "capacity"), *alloc = json_object_get(n, "allocated");
        char instances[24], cpu[32], memory[32], labels[512], seen[32], cpu_alloc[64], mem_alloc[64],
                drivers[128] = "";
        const json_t *d;
        size_t k;

        orch_json_int_text(n, "instances", instances, sizeof instances);
        orch_format_cores(json_number_value(json_object_get(cap, "cpu")), cpu, sizeof cpu);
        orch_format_bytes((uint64_t)json_number_value(json_object_get(cap, "memory")), memory,
                          sizeof memory);
        pairs_text(json_object_get(n, "labels"), ",", labels, sizeof labels);
        orch_format_age_json(json_object_get(n, "last_seen"), seen, sizeof seen);
        if (!wide)
                return orch_table_add_row(t, (const char *[]){orch_json_str(n, "name"),
                                                              orch_json_str(n, "state"),
                                                              orch_json_str(n, "address"), instances, cpu,
                                                              memory, labels, seen});
        alloc_text(json_number_value(json_object_get(alloc, "cpu")),
                   json_number_value(json_object_get(cap, "cpu")), false, cpu_alloc, sizeof cpu_alloc);
        alloc_text(json_number_value(json_object_get(alloc, "memory")),
                   json_number_value(json_object_get(cap, "memory")), true, mem_alloc, sizeof mem_alloc);
        json_array_foreach (json_object_get(n, "drivers"), k, d) {
                size_t l = strlen(drivers);
                orch_snprintf(drivers + l, sizeof drivers - l, "%s%s", k ? "," : "",
                              strempty(json_string_value(d)));
        }
        return orch_table_add_row(t, (const char *[]){orch_json_str(n, "name"), orch_json_str(n, "state"),
                                                      orch_json_str(n, "address"), instances, cpu, memory,
                                                      labels, seen, cpu_alloc, mem_alloc, drivers,
                                                      orch_json_str(n, "version")});
}

static const struct {
        const char *headers[13];
        size_t n, n_wide;
        size_t colour[2];
        int (*add)(struct orch_table *t, const json_t *item, bool wide);
        const char *key; /* what -o name prints */
} tables[_ORCH_RESOURCE_MAX] = {
        [ORCH_RESOURCE_SERVICES] = {{"NAME", "REPLICAS", "READY", "REVISION", "ROUTE", "AGE", "ROLLOUT",
                                     "INSTANCES", "UPDATED"},
                                    6,
                                    9,
                                    {6, 6},
                                    add_service,
                                    "name"},
        [ORCH_RESOURCE_INSTANCES] = {{"ID", "SERVICE", "NODE", "STATE", "HEALTH", "RESTARTS", "ADDRESS",
                                      "AGE", "REVISION", "PID", "PORTS", "CGROUP", "REASON"},
                                     8,
                                     13,
                                     {3, 4},
                                     add_instance,
                                     "id"},
        [ORCH_RESOURCE_NODES] = {{"NAME", "STATE", "ADDRESS", "INSTANCES", "CPU", "MEMORY", "LABELS",
                                  "LAST-SEEN", "CPU-ALLOCATED", "MEMORY-ALLOCATED", "DRIVERS", "VERSION"},
                                 8,
                                 12,
                                 {1, 1},
                                 add_node,
                                 "name"},
};

static int print_items(enum orch_resource kind, const json_t *items, enum orch_output_format format)
{
        bool wide = format == ORCH_OUTPUT_WIDE;
        size_t n = wide ? tables[kind].n_wide : tables[kind].n;
        _cleanup_(orch_table_freep) struct orch_table *t = orch_table_new(n, tables[kind].headers);
        const json_t *item;
        size_t i;

        if (format == ORCH_OUTPUT_NAME) {
                json_array_foreach (items, i, item)
                        printf("%s\n", strempty(orch_json_str(item, tables[kind].key)));
                return ORCH_EXIT_OK;
        }
        if (!t)
                return orch_cli_fail("out of memory");
        for (size_t k = 0; k < ELEMENTSOF(tables[kind].colour); k++)
                orch_table_colour_column(t, tables[kind].colour[k]);
        json_array_foreach (items, i, item)
                if (tables[kind].add(t, item, wide) < 0)
                        return orch_cli_fail("out of memory");
        if (orch_table_rows(t) == 0) {
                fprintf(stderr, "No %s found.\n", orch_resource_plural(kind));
                return ORCH_EXIT_OK;
        }
        orch_table_print(t, stdout, 0);
        return ORCH_EXIT_OK;
}

static int get_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"output", required_argument, NULL, 'o'},
                {"service", required_argument, NULL, 's'},
                {"node", required_argument, NULL, 'N'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_json_ json_t *answer = NULL, *list = NULL;
        _cleanup_(freep) char *target = NULL;
        enum orch_output_format format = ORCH_OUTPUT_TABLE;
        enum orch_resource kind;
        const char *service = NULL, *node = NULL, *name;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_get, argc, argv, ":o:", options)) >= 0) {
                switch (c) {
                case 'o':
                        if (orch_output_format_from_string(optarg, &format) < 0)
                                return orch_cli_usage_error(
                                        &orch_cmd_get, "-o: expected table, wide, json or name, not '%s'",
                                        optarg);
                        break;
                case 's':
                        service = optarg;
                        break;
                case 'N':
                        node = optarg;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_get, "what to get: services, instances or nodes");
        if (orch_resource_from_string(argv[optind], &kind) < 0)
                return orch_cli_usage_error(&orch_cmd_get,
                                            "unknown kind '%s': expected services, instances or nodes",
                                            argv[optind]);
        name = optind + 1 < argc ? argv[optind + 1] : NULL;
        if (optind + 2 < argc)
                return orch_cli_usage_error(&orch_cmd_get, "unexpected argument '%s'", argv[optind + 2]);
        if ((service || node) && kind != ORCH_RESOURCE_INSTANCES)
                return orch_cli_usage_error(&orch_cmd_get, "--service and --node filter instances only");
        if ((service || node) && name)
                return orch_cli_usage_error(&orch_cmd_get,
                                            "--service and --node filter the list: not with an instance ID");

        r = orch_resource_target(kind, name, service, node, &target);
        if (r < 0)
                return orch_cli_fail("out of memory");
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (orch_client_json(client, "GET", target, NULL, &answer, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        if (format == ORCH_OUTPUT_JSON)
                return orch_output_json(answer, stdout) < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
        if (name) {
                list = json_array();
                if (!list || json_array_append(list, answer) < 0)
                        return orch_cli_fail("out of memory");
        } else if (!json_is_array(answer))
                return orch_cli_fail("orchd at %s answered GET %s with something other than a list",
                                     orch_client_addr(client), target);
        return print_items(kind, list ? list : answer, format);
}

const struct orch_cmd orch_cmd_get = {
        .name = "get",
        .usage = "get services|instances|nodes [NAME] [-o table|wide|json|name] [--service S] [--node N]",
        .summary = "List services, instances or nodes, or show one.",
        .help = "Kinds: services (service, svc), instances (instance, inst), nodes (node, no).\n"
                "\n"
                "Options:\n"
                "  -o, --output FORMAT  table (default), wide (more columns), json (orchd's objects\n"
                "                       exactly: an array, or one object for a NAME), name (one per line)\n"
                "      --service NAME   instances: only those of this service\n"
                "      --node NAME      instances: only those on this node\n"
                "      --addr URL       orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "Columns:\n"
                "  services   NAME REPLICAS READY REVISION ROUTE AGE (wide: ROLLOUT INSTANCES UPDATED)\n"
                "  instances  ID SERVICE NODE STATE HEALTH RESTARTS ADDRESS AGE\n"
                "             (wide: REVISION PID PORTS CGROUP REASON)\n"
                "  nodes      NAME STATE ADDRESS INSTANCES CPU MEMORY LABELS LAST-SEEN\n"
                "             (wide: CPU-ALLOCATED MEMORY-ALLOCATED DRIVERS VERSION)\n"
                "\n"
                "Examples:\n"
                "  orch get services\n"
                "  orch get instances --service web -o wide\n"
                "  orch get node node-1 -o json\n",
        .run = get_run,
};
