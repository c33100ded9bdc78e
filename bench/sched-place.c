/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "scheduler.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/*
 * Placement throughput at the scale of the control-plane issue: 1,000,000 instances of 200
 * services with mixed sizes and constraints onto 5,000 nodes of two sizes, once with spread and
 * once with binpack, filling the cluster to about 90%. The services are placed in rounds of
 * batches, as a reconciler working through many dirty services does, so the figures per round
 * show what a placement costs as the cluster fills up. Then: churn on the full cluster (release
 * one instance, place one), the cost of a placement that fails (the reason is built from every
 * node) and scale-down selection.
 *
 *   bench/sched-place [NODES [INSTANCES [SERVICES [FILL%]]]]     defaults 5000 1000000 200 90
 */

#define ROUNDS   10
#define CHURN    100000
#define FAILURES 200

/* Instance sizes, CPU and memory, with 0.5 to 2 GiB per core as services commonly have. A mix
 * whose ratios span much more (100m with 1Gi beside 1 core with 128Mi) strands capacity under
 * binpack, which fills a node until one resource runs out: docs/scheduler.md has the figures. */
static const struct {
        uint32_t cpu;
        uint64_t mem;
} sizes[] = {
        {100, 128 << 20}, {100, 256 << 20},  {250, 256 << 20},   {250, 512 << 20},
        {500, 512 << 20}, {500, 1024 << 20}, {1000, 1024 << 20}, {1000, 2048ULL << 20},
};
static const char *const zones[] = {"eu-1", "eu-2", "eu-3"};

struct service {
        char name[32];
        struct orch_constraint constraint;
        struct orch_sched_request req;
};

struct bench {
        uint32_t n_nodes, n_services, per_service;
        size_t n_instances;
        struct service *services;
        uint32_t *inst_node; /* by instance: service-major, per_service each */
        size_t *victims;
        struct orch_sched_victim *victim_input;
        uint32_t node_cpu;
        uint64_t node_mem;
        double fill; /* of the cluster's capacity, once every instance is placed */
};

/* CPU time of this thread: the machine is shared, and time spent waiting for a core is not the
 * scheduler's cost. */
static double now_sec(void)
{
        struct timespec ts;

        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
                return (double)orch_now_usec() / 1e6;
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib(void)
{
        _cleanup_(fclosep) FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long kib = -1;

        while (f && fgets(line, sizeof line, f)) {
                const char *v = startswith(line, "VmRSS:");
                uint64_t n;
                char num[32];
                size_t len = 0;

                if (!v)
                        continue;
                while (*v == ' ' || *v == '\t')
                        v++;
                while (v[len] >= '0' && v[len] <= '9' && len < sizeof num - 1)
                        len++;
                memcpy(num, v, len);
                num[len] = '\0';
                if (orch_parse_u64(num, &n) >= 0)
                        kib = (long)n;
        }
        return kib;
}

static uint64_t xorshift(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

static int setup(struct bench *b)
{
        double cpu = 0, mem = 0;

        b->services = calloc(b->n_services, sizeof *b->services);
        b->inst_node = calloc(b->n_instances, sizeof *b->inst_node);
        b->victims = calloc(b->per_service, sizeof *b->victims);
        b->victim_input = calloc(b->per_service, sizeof *b->victim_input);
        if (!b->services || !b->inst_node || !b->victims || !b->victim_input)
                return -ENOMEM;
        /* Touched now, so that the RSS baseline already holds the bench's own arrays. */
        memset(b->inst_node, 0xff, b->n_instances * sizeof *b->inst_node);
        for (uint32_t i = 0; i < b->n_services; i++) {
                struct service *s = &b->services[i];

                if (orch_snprintf(s->name, sizeof s->name, "svc-%03u", i) < 0)
                        return -ENOBUFS;
                s->req = (struct orch_sched_request){
                        .service = s->name,
                        .cpu_millis = sizes[i % ELEMENTSOF(sizes)].cpu,
                        .memory = sizes[i % ELEMENTSOF(sizes)].mem,
                };
                /* A tenth of the services is pinned to a zone, another tenth avoids hdd nodes. */
                if (i % 10 == 0)
                        s->constraint = (struct orch_constraint){"zone", (char *)zones[(i / 10) % 3], false};
                else if (i % 10 == 5)
                        s->constraint = (struct orch_constraint){"disk", "hdd", true};
                if (s->constraint.key) {
                        s->req.constraints = &s->constraint;
                        s->req.n_constraints = 1;
                }
                cpu += (double)s->req.cpu_millis * b->per_service;
                mem += (double)s->req.memory * b->per_service;
        }
        /* Three nodes in four are large, one small (half): capacity for the demand at b->fill. */
        b->node_cpu = (uint32_t)(cpu / b->fill / (b->n_nodes * 0.875)) + 1;
        b->node_mem = ((uint64_t)(mem / b->fill / (b->n_nodes * 0.875)) | ((1 << 20) - 1)) + 1;
        return 0;
}

/* Node i's labels, as add_nodes() sets them. */
static const char *node_zone(uint32_t i)
{
        return zones[i % 3];
}

static bool node_hdd(uint32_t i)
{
        return i % 5 == 4;
}

static bool node_matches(const struct service *svc, uint32_t i)
{
        if (!svc->constraint.key)
                return true;
        if (streq(svc->constraint.key, "zone"))
                return streq(node_zone(i), svc->constraint.value);
        return !node_hdd(i);
}

static int add_nodes(const struct bench *b, struct orch_sched *s)
{
        for (uint32_t i = 0; i < b->n_nodes; i++) {
                struct orch_sched_label labels[] = {{"zone", node_zone(i)},
                                                    {"disk", node_hdd(i) ? "hdd" : "ssd"}};
                char name[32];
                bool small = i % 4 == 3;
                struct orch_sched_node_spec spec = {
                        .name = name,
                        .labels = labels,
                        .n_labels = ELEMENTSOF(labels),
                        .cpu_millis = small ? b->node_cpu / 2 : b->node_cpu,
                        .memory = small ? b->node_mem / 2 : b->node_mem,
                        .drivers = ORCH_SCHED_DRIVER_BIT(ORCH_DRIVER_EXEC),
                        .state = ORCH_NODE_READY,
                };
                uint32_t id;
                int r;

                if (orch_snprintf(name, sizeof name, "node-%05u", i) < 0)
                        return -ENOBUFS;
                r = orch_sched_node_add(s, &spec, &id);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void print_reason_once(bool *printed, const char *service, const char *reason)
{
        if (*printed)
                return;
        printf("         first failure (%s): %s\n", service, reason);
        *printed = true;
}

static int run(struct bench *b, enum orch_strategy strategy)
{
        _cleanup_(orch_sched_freep) struct orch_sched *s = NULL;
        struct orch_sched_options opts = {.seed = 42};
        uint32_t per_round = b->per_service / ROUNDS, max_excess = 0, full_nodes = 0, empty_nodes = 0;
        size_t above_ideal = 0;
        double t0, t_place = 0, round_us[ROUNDS];
        size_t placed = 0, failed = 0;
        struct orch_sched_result res;
        bool printed = false;
        long rss0 = rss_kib();
        uint64_t x = 88172645463325252ull;
        int r;

        for (uint32_t i = 0; i < b->n_services; i++)
                b->services[i].req.strategy = strategy;
        memset(b->inst_node, 0xff, b->n_instances * sizeof *b->inst_node); /* ORCH_SCHED_NODE_NONE */
        r = orch_sched_new(&opts, &s);
        if (r < 0)
                return r;
        t0 = now_sec();
        r = add_nodes(b, s);
        if (r < 0)
                return r;
        printf("%-8s %u nodes added in %.1f ms\n", orch_strategy_to_string(strategy), b->n_nodes,
               (now_sec() - t0) * 1e3);

        for (uint32_t round = 0; round < ROUNDS; round++) {
                size_t placed_round = 0;
                double tr = now_sec();

                for (uint32_t i = 0; i < b->n_services; i++) {
                        uint32_t *out =
                                &b->inst_node[(size_t)i * b->per_service + (size_t)round * per_round];
                        uint32_t n = round == ROUNDS - 1 ? b->per_service - round * per_round : per_round;

                        r = orch_sched_place_batch(s, &b->services[i].req, n, out, &res);
                        if (r < 0)
                                return r;
                        placed_round += (size_t)r;
                        if ((uint32_t)r < n) {
                                failed += n - (uint32_t)r;
                                print_reason_once(&printed, b->services[i].name, res.reason);
                        }
                }
                tr = now_sec() - tr;
                t_place += tr;
                placed += placed_round;
                round_us[round] = placed_round ? tr * 1e6 / (double)placed_round : 0;
        }
        printf("         placed %zu in %.2f s: %.0f placements/s, %.2f us each; failed %zu\n", placed,
               t_place, (double)placed / t_place, t_place * 1e6 / (double)placed, failed);
        printf("         us per placement by round (cluster filling up):");
        for (uint32_t round = 0; round < ROUNDS; round++)
                printf(" %.2f", round_us[round]);
        printf("\n");
        printf("         memory: RSS %+.1f MiB for the view of %u nodes and %zu instances (process: %.1f "
               "MiB)\n",
               (double)(rss_kib() - rss0) / 1024, b->n_nodes, placed, (double)rss_kib() / 1024);

        /* Quality: spread keeps every service even over the nodes it may use (ideal: placed / eligible
         * nodes, rounded up); binpack fills nodes. */
        for (uint32_t i = 0; i < b->n_services; i++) {
                const struct service *svc = &b->services[i];
                uint32_t eligible = 0, ideal, total = 0;

                for (uint32_t n = 0; n < b->n_nodes; n++)
                        eligible += node_matches(svc, n);
                for (uint32_t n = 0; n < b->n_nodes; n++)
                        total += orch_sched_service_count(s, svc->name, n);
                ideal = (total + eligible - 1) / eligible;
                for (uint32_t n = 0; n < b->n_nodes; n++) {
                        uint32_t c = orch_sched_service_count(s, svc->name, n);
                        if (c > ideal) {
                                max_excess = MAX(max_excess, c - ideal);
                                above_ideal += c - ideal;
                        }
                }
        }
        for (uint32_t n = 0; n < b->n_nodes; n++) {
                struct orch_sched_node_info info;

                if (orch_sched_node_get(s, n, &info) < 0)
                        continue;
                empty_nodes += info.instances == 0;
                full_nodes += info.cpu_allocated * 100 >= (uint64_t)info.cpu_millis * 95 ||
                              info.memory_allocated * 100 >= info.memory * 95;
        }
        printf("         result: %zu instances (%.2f%%) above their service's even share, at most %u above; "
               "%u nodes >= 95%% full, %u empty\n",
               above_ideal, 100.0 * (double)above_ideal / (double)(placed ? placed : 1), max_excess,
               full_nodes, empty_nodes);

        /* Churn on the full cluster, the way the reconciler replaces an instance: one leaves
         * (orch_sched_account -1), one of its service is placed (orch_sched_place, then +1). */
        {
                size_t churn_failed = 0;

                t0 = now_sec();
                for (uint32_t k = 0; k < CHURN; k++) {
                        size_t inst = (size_t)(xorshift(&x) % b->n_instances);
                        const struct orch_sched_request *req = &b->services[inst / b->per_service].req;

                        if (b->inst_node[inst] != ORCH_SCHED_NODE_NONE) {
                                r = orch_sched_account(s, b->inst_node[inst], req->service, req->cpu_millis,
                                                       req->memory, -1);
                                if (r < 0)
                                        return r;
                        }
                        r = orch_sched_place(s, req, &res);
                        if (r < 0)
                                return r;
                        b->inst_node[inst] = res.node;
                        if (r == 0) {
                                churn_failed++;
                                continue;
                        }
                        r = orch_sched_account(s, res.node, req->service, req->cpu_millis, req->memory, 1);
                        if (r < 0)
                                return r;
                }
                t0 = now_sec() - t0;
                printf("         churn on the full cluster: %u release+place+account in %.2f s, %.2f us "
                       "each, "
                       "%zu failed\n",
                       CHURN, t0, t0 * 1e6 / CHURN, churn_failed);
        }

        /* A request no node can take: the scan and the reason both cover every node. Two requests
         * in turn, so that neither is the last failure again; then one repeated, as the
         * reconciler does for the pending instances of one service. */
        {
                struct orch_sched_request big = b->services[0].req;
                double fresh, again;

                big.n_constraints = 0;
                t0 = now_sec();
                for (uint32_t k = 0; k < FAILURES; k++) {
                        big.cpu_millis = 1000000 + (k & 1);
                        r = orch_sched_place(s, &big, &res);
                        if (r != 0)
                                return r < 0 ? r : -EIO;
                }
                fresh = (now_sec() - t0) * 1e6 / FAILURES;
                t0 = now_sec();
                for (uint32_t k = 0; k < FAILURES; k++) {
                        r = orch_sched_place(s, &big, &res);
                        if (r != 0)
                                return r < 0 ? r : -EIO;
                }
                again = (now_sec() - t0) * 1e6 / FAILURES;
                printf("         unplaceable request: %.1f us, the same again %.2f us (\"%s\")\n", fresh,
                       again, res.reason);
        }

        /* Scale-down selection over one service's instances. */
        {
                for (uint32_t i = 0; i < b->per_service; i++)
                        b->victim_input[i] = (struct orch_sched_victim){
                                .state = xorshift(&x) % 10 ? ORCH_INSTANCE_RUNNING : ORCH_INSTANCE_STARTING,
                                .health = (enum orch_health_state)(xorshift(&x) % 3),
                                .placed = true,
                                .generation = xorshift(&x),
                        };
                t0 = now_sec();
                r = orch_sched_scale_down(b->victim_input, b->per_service, b->per_service / 2, b->victims);
                if (r < 0)
                        return r;
                printf("         scale-down: chose %d of %u instances in %.2f ms\n", r, b->per_service,
                       (now_sec() - t0) * 1e3);
        }
        return 0;
}

static int parse_arg(int argc, char **argv, int i, uint32_t def, uint32_t *ret)
{
        if (i >= argc) {
                *ret = def;
                return 0;
        }
        if (orch_parse_u32(argv[i], ret) < 0 || *ret == 0) {
                fprintf(stderr, "sched-place: bad number \"%s\"\n", argv[i]);
                return -EINVAL;
        }
        return 0;
}

int main(int argc, char **argv)
{
        struct bench b = {0};
        uint32_t instances, fill;
        char cpu_s[32], mem_s[32];
        int r;

        if (argc > 5) {
                fprintf(stderr, "usage: sched-place [NODES [INSTANCES [SERVICES [FILL%%]]]]\n");
                return 2;
        }
        if (parse_arg(argc, argv, 1, 5000, &b.n_nodes) < 0 ||
            parse_arg(argc, argv, 2, 1000000, &instances) < 0 ||
            parse_arg(argc, argv, 3, 200, &b.n_services) < 0 || parse_arg(argc, argv, 4, 90, &fill) < 0)
                return 2;
        if (fill > 100) {
                fprintf(stderr, "sched-place: FILL%% is at most 100\n");
                return 2;
        }
        b.fill = fill / 100.0;
        if (instances < b.n_services * ROUNDS) {
                fprintf(stderr, "sched-place: at least %u instances for %u services\n",
                        b.n_services * ROUNDS, b.n_services);
                return 2;
        }
        b.per_service = instances / b.n_services;
        b.n_instances = (size_t)b.per_service * b.n_services;
        r = setup(&b);
        if (r < 0) {
                fprintf(stderr, "sched-place: setup: %s\n", strerror(-r));
                return 1;
        }
        (void)orch_format_cpu(b.node_cpu, cpu_s, sizeof cpu_s);
        (void)orch_format_size(b.node_mem, mem_s, sizeof mem_s);
        printf("sched-place: %zu instances of %u services on %u nodes (large %s CPU %s memory, one in four "
               "half that), %.0f%% full at the end\n",
               b.n_instances, b.n_services, b.n_nodes, cpu_s, mem_s, b.fill * 100);
        r = run(&b, ORCH_STRATEGY_SPREAD);
        if (r >= 0)
                r = run(&b, ORCH_STRATEGY_BINPACK);
        free(b.services);
        free(b.inst_node);
        free(b.victims);
        free(b.victim_input);
        if (r < 0) {
                fprintf(stderr, "sched-place: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}
