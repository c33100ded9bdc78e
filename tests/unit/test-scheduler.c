/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <math.h>

#include "scheduler.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

#define GI          (UINT64_C(1) << 30)
#define MI          (UINT64_C(1) << 20)
#define EXEC_ONLY   ORCH_SCHED_DRIVER_BIT(ORCH_DRIVER_EXEC)
#define ALL_DRIVERS (ORCH_SCHED_DRIVER_BIT(ORCH_DRIVER_EXEC) | ORCH_SCHED_DRIVER_BIT(ORCH_DRIVER_SYSTEMD))

static struct orch_sched *new_sched(uint64_t seed, uint32_t exhaustive_max)
{
        struct orch_sched_options o = {.seed = seed, .exhaustive_max = exhaustive_max};
        struct orch_sched *s = NULL;

        ck_assert_int_eq(orch_sched_new(&o, &s), 0);
        return s;
}

/* labels: "k=v,k=v" or NULL */
static uint32_t add_node_full(struct orch_sched *s, const char *name, uint32_t cpu, uint64_t mem,
                              const char *labels, unsigned drivers, enum orch_node_state state)
{
        struct orch_sched_label l[8];
        char buf[256], *save = NULL;
        struct orch_sched_node_spec spec = {.name = name,
                                            .labels = l,
                                            .cpu_millis = cpu,
                                            .memory = mem,
                                            .drivers = drivers,
                                            .state = state};
        uint32_t id = ORCH_SCHED_NODE_NONE;

        if (labels) {
                ck_assert_uint_lt(orch_strlcpy(buf, labels, sizeof buf), sizeof buf);
                for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                        char *eq = strchr(kv, '=');
                        ck_assert_ptr_nonnull(eq);
                        *eq = '\0';
                        ck_assert_uint_lt(spec.n_labels, ELEMENTSOF(l));
                        l[spec.n_labels++] = (struct orch_sched_label){kv, eq + 1};
                }
        }
        ck_assert_int_eq(orch_sched_node_add(s, &spec, &id), 0);
        ck_assert_uint_ne(id, ORCH_SCHED_NODE_NONE);
        return id;
}

static uint32_t add_node(struct orch_sched *s, const char *name, uint32_t cpu, uint64_t mem,
                         const char *labels)
{
        return add_node_full(s, name, cpu, mem, labels, EXEC_ONLY, ORCH_NODE_READY);
}

static struct orch_sched_request request(const char *service, uint32_t cpu, uint64_t mem)
{
        return (struct orch_sched_request){.service = service, .cpu_millis = cpu, .memory = mem};
}

/* Places one instance and accounts it, as the reconciler does; returns the node. */
static uint32_t place(struct orch_sched *s, const struct orch_sched_request *req)
{
        struct orch_sched_result res;
        int r = orch_sched_place(s, req, &res);

        ck_assert_msg(r == 1, "not placed (%d): %s", r, res.reason);
        ck_assert_int_eq(orch_sched_account(s, res.node, req->service, req->cpu_millis, req->memory, 1), 0);
        return res.node;
}

static void assert_reason(struct orch_sched *s, const struct orch_sched_request *req, const char *expected)
{
        struct orch_sched_result res;

        ck_assert_int_eq(orch_sched_place(s, req, &res), 0);
        ck_assert_uint_eq(res.node, ORCH_SCHED_NODE_NONE);
        ck_assert_ptr_null(res.node_name);
        ck_assert_str_eq(res.reason, expected);
}

START_TEST(test_cpu_and_memory)
{
        struct orch_sched *s = new_sched(1, 0);
        uint32_t small = add_node(s, "small", 1000, 1 * GI, NULL);
        uint32_t big = add_node(s, "big", 4000, 8 * GI, NULL);
        struct orch_sched_request r = request("web", 2000, 512 * MI);
        struct orch_sched_result res;

        for (int i = 0; i < 10; i++) {
                ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
                ck_assert_uint_eq(res.node, big);
                ck_assert_str_eq(res.node_name, "big");
        }
        r = request("web", 500, 4 * GI);
        ck_assert_uint_eq(place(s, &r), big);
        /* big: 500m and 4Gi used; small: nothing. */
        r = request("web", 500, 5 * GI);
        assert_reason(s, &r, "no node fits: 2 nodes lack 5Gi of free memory (the most free: 4Gi)");
        r = request("web", 3600, MI);
        assert_reason(s, &r, "no node fits: 2 nodes lack 3600m of free CPU (the most free: 3500m)");
        r = request("web", 3600, 6 * GI);
        assert_reason(s, &r, "no node fits: 2 nodes lack both 3600m of free CPU and 6Gi of free memory");
        /* Exactly the free capacity fits (binpack: the fuller node, where it fits exactly). */
        r = request("db", 1000, 1 * GI);
        r.strategy = ORCH_STRATEGY_BINPACK;
        ck_assert_uint_eq(place(s, &r), small);
        r = request("db", 3500, 4 * GI);
        ck_assert_uint_eq(place(s, &r), big);
        r = request("db", 1, 0);
        assert_reason(s, &r, "no node fits: 2 nodes lack 1m of free CPU (the most free: 0)");
        /* A request of nothing fits on a full node. */
        r = request("db", 0, 0);
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_constraints)
{
        struct orch_sched *s = new_sched(2, 0);
        uint32_t a = add_node(s, "a", 4000, 4 * GI, "zone=eu-1,disk=ssd");
        uint32_t b = add_node(s, "b", 4000, 4 * GI, "zone=eu-2,disk=hdd");
        uint32_t c = add_node(s, "c", 4000, 4 * GI, NULL);
        struct orch_constraint zone1[] = {{"zone", "eu-1", false}};
        struct orch_constraint not_hdd[] = {{"disk", "hdd", true}};
        struct orch_constraint zone2_not_hdd[] = {{"zone", "eu-2", false}, {"disk", "hdd", true}};
        struct orch_constraint unknown_key[] = {{"rack", "r1", false}};
        struct orch_constraint not_unknown[] = {{"rack", "r1", true}};
        struct orch_constraint value_of_other_key[] = {{"zone", "ssd", false}};
        struct orch_sched_request r = request("web", 100, MI);
        bool seen_a = false, seen_c = false;

        r.constraints = zone1;
        r.n_constraints = ELEMENTSOF(zone1);
        for (int i = 0; i < 5; i++)
                ck_assert_uint_eq(place(s, &r), a);

        /* "!=": a node without the label passes. */
        r.constraints = not_hdd;
        for (int i = 0; i < 10; i++) {
                uint32_t n = place(s, &r);
                ck_assert_uint_ne(n, b);
                seen_a |= n == a;
                seen_c |= n == c;
        }
        ck_assert(seen_a && seen_c);

        r.constraints = zone2_not_hdd;
        r.n_constraints = ELEMENTSOF(zone2_not_hdd);
        assert_reason(s, &r, "no node fits: 2 nodes filtered by zone=eu-2, 1 node filtered by disk!=hdd");

        /* A missing label fails "=" (no node has "rack"), and passes "!=". */
        r.constraints = unknown_key;
        r.n_constraints = 1;
        assert_reason(s, &r, "no node fits: 3 nodes filtered by rack=r1");
        r.constraints = not_unknown;
        ck_assert_uint_ne(place(s, &r), ORCH_SCHED_NODE_NONE);
        /* Values are compared per key: "ssd" is a value of disk, not of zone. */
        r.constraints = value_of_other_key;
        assert_reason(s, &r, "no node fits: 3 nodes filtered by zone=ssd");

        /* Capacity is reported only for nodes that match the constraints. */
        {
                struct orch_sched_node_info info;

                ck_assert_int_eq(orch_sched_node_get(s, a, &info), 0);
                ck_assert_int_eq(orch_sched_account(s, a, "filler",
                                                    (uint32_t)(info.cpu_millis - info.cpu_allocated) - 400,
                                                    0, 1),
                                 0);
        }
        r = request("big", 1000, MI);
        r.constraints = zone1;
        r.n_constraints = 1;
        assert_reason(s, &r,
                      "no node fits: 1 node lacks 1 of free CPU (the most free: 400m), 2 nodes filtered by "
                      "zone=eu-1");
        orch_sched_free(s);
}
END_TEST

START_TEST(test_node_states_and_epoch)
{
        struct orch_sched *s = new_sched(3, 0);
        uint32_t a = add_node(s, "a", 1000, GI, NULL);
        uint32_t b = add_node(s, "b", 1000, GI, NULL);
        struct orch_sched_request r = request("web", 100, MI);
        struct orch_sched_node_info info;
        uint64_t epoch;

        ck_assert_int_eq(orch_sched_node_set_state(s, a, ORCH_NODE_DRAINING), 0);
        for (int i = 0; i < 5; i++)
                ck_assert_uint_eq(place(s, &r), b);
        ck_assert_int_eq(orch_sched_node_set_state(s, b, ORCH_NODE_DOWN), 0);
        assert_reason(s, &r, "no node fits: 1 node draining, 1 node down");

        /* Only a change that can make something fit raises the epoch. */
        epoch = orch_sched_epoch(s);
        ck_assert_int_eq(orch_sched_node_set_state(s, a, ORCH_NODE_DOWN), 0);
        ck_assert_uint_eq(orch_sched_epoch(s), epoch);
        assert_reason(s, &r, "no node fits: 2 nodes down");
        ck_assert_int_eq(orch_sched_node_set_state(s, a, ORCH_NODE_READY), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), epoch);
        ck_assert_uint_eq(place(s, &r), a);
        epoch = orch_sched_epoch(s);
        ck_assert_int_eq(orch_sched_account(s, a, "web", 100, MI, 1), 0);
        ck_assert_uint_eq(orch_sched_epoch(s), epoch);
        ck_assert_int_eq(orch_sched_account(s, a, "web", 100, MI, -1), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), epoch);

        /* The instances on a down node still count until they are released. */
        ck_assert_int_eq(orch_sched_node_get(s, b, &info), 0);
        ck_assert_str_eq(info.name, "b");
        ck_assert_int_eq(info.state, ORCH_NODE_DOWN);
        ck_assert_uint_eq(info.instances, 5);
        ck_assert_uint_eq(info.cpu_allocated, 500);
        ck_assert_uint_eq(info.memory_allocated, 5 * MI);
        ck_assert_int_eq(orch_sched_node_set_state(s, a, _ORCH_NODE_STATE_MAX), -EINVAL);
        ck_assert_int_eq(orch_sched_node_set_state(s, 999, ORCH_NODE_READY), -ENOENT);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_epoch_on_update)
{
        struct orch_sched *s = new_sched(15, 0);
        struct orch_sched_label eu1[] = {{"zone", "eu-1"}}, eu2[] = {{"zone", "eu-2"}};
        struct orch_sched_node_spec spec = {.name = "a",
                                            .labels = eu1,
                                            .n_labels = 1,
                                            .cpu_millis = 1000,
                                            .memory = GI,
                                            .drivers = EXEC_ONLY,
                                            .state = ORCH_NODE_DOWN};
        uint64_t e;
        uint32_t a;

        /* A node that joins down cannot take anything yet. */
        e = orch_sched_epoch(s);
        ck_assert_int_eq(orch_sched_node_add(s, &spec, &a), 0);
        ck_assert_uint_eq(orch_sched_epoch(s), e);
        spec.state = ORCH_NODE_READY;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);

        /* The same registration again, less capacity, fewer drivers, draining: no new chance. */
        e = orch_sched_epoch(s);
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        spec.cpu_millis = 500;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        spec.drivers = 0;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        spec.state = ORCH_NODE_DRAINING;
        spec.cpu_millis = 4000;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_eq(orch_sched_epoch(s), e);

        /* Each of these may make a pending instance fit. */
        spec.state = ORCH_NODE_READY;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);
        e = orch_sched_epoch(s);
        spec.memory = 2 * GI;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);
        e = orch_sched_epoch(s);
        spec.drivers = EXEC_ONLY;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);
        e = orch_sched_epoch(s);
        spec.labels = eu2;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);
        e = orch_sched_epoch(s);
        spec.n_labels = 0;
        ck_assert_int_eq(orch_sched_node_update(s, a, &spec), 0);
        ck_assert_uint_gt(orch_sched_epoch(s), e);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_driver_and_exclude)
{
        struct orch_sched *s = new_sched(4, 0);
        uint32_t a = add_node_full(s, "a", 4000, GI, NULL, EXEC_ONLY, ORCH_NODE_READY);
        uint32_t b = add_node_full(s, "b", 4000, GI, NULL, ALL_DRIVERS, ORCH_NODE_READY);
        struct orch_sched_request r = request("web", 100, MI);
        bool seen_a = false;

        r.driver = ORCH_DRIVER_SYSTEMD;
        for (int i = 0; i < 5; i++)
                ck_assert_uint_eq(place(s, &r), b);
        r.exclude_node = "b";
        assert_reason(s, &r,
                      "no node fits: 1 node lacks the systemd driver, 1 node excluded for this instance");
        r.exclude_node = NULL;
        ck_assert_int_eq(orch_sched_node_set_state(s, b, ORCH_NODE_DOWN), 0);
        assert_reason(s, &r, "no node fits: 1 node lacks the systemd driver, 1 node down");
        ck_assert_int_eq(orch_sched_node_set_state(s, b, ORCH_NODE_READY), 0);

        /* The default driver runs anywhere; exclusion steers away from one node. */
        r.driver = ORCH_DRIVER_DEFAULT;
        for (int i = 0; i < 10; i++)
                seen_a |= place(s, &r) == a;
        ck_assert(seen_a);
        r.exclude_node = "a";
        for (int i = 0; i < 10; i++)
                ck_assert_uint_eq(place(s, &r), b);
        /* An unknown name excludes nothing. */
        r.exclude_node = "gone";
        ck_assert_uint_ne(place(s, &r), ORCH_SCHED_NODE_NONE);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_spread_even)
{
        struct orch_sched *s = new_sched(5, 0);
        uint32_t n[3], nodes[9];
        struct orch_sched_request r = request("web", 100, 64 * MI);
        struct orch_sched_result res;

        n[0] = add_node(s, "a", 4000, 4 * GI, NULL);
        n[1] = add_node(s, "b", 4000, 4 * GI, NULL);
        n[2] = add_node(s, "c", 4000, 4 * GI, NULL);
        ck_assert_int_eq(orch_sched_place_batch(s, &r, 9, nodes, &res), 9);
        for (int i = 0; i < 3; i++)
                ck_assert_uint_eq(orch_sched_service_count(s, "web", n[i]), 3);
        /* Each round of three covers every node once. */
        for (int round = 0; round < 3; round++)
                ck_assert(nodes[3 * round] != nodes[3 * round + 1] &&
                          nodes[3 * round] != nodes[3 * round + 2] &&
                          nodes[3 * round + 1] != nodes[3 * round + 2]);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_spread_sampled_even)
{
        struct orch_sched *s = new_sched(17, 0);
        struct orch_sched_request r = request("web", 10, MI);
        struct orch_sched_result res;
        uint32_t *nodes = calloc(3000, sizeof *nodes), ids[1000], max = 0, empty = 0;
        char name[32];

        ck_assert_ptr_nonnull(nodes);
        for (int i = 0; i < 1000; i++) {
                ck_assert_int_ge(orch_snprintf(name, sizeof name, "n%d", i), 0);
                ids[i] = add_node(s, name, 64000, 64 * GI, NULL);
        }
        /* 1000 nodes are sampled (20 candidates a placement), yet 3000 replicas end up on every
         * node and within two of the even share of 3 (4 with this seed). */
        ck_assert_int_eq(orch_sched_place_batch(s, &r, 3000, nodes, &res), 3000);
        ck_assert_uint_eq(res.feasible, 20);
        for (int i = 0; i < 1000; i++) {
                uint32_t c = orch_sched_service_count(s, "web", ids[i]);
                max = MAX(max, c);
                empty += c == 0;
        }
        ck_assert_uint_le(max, 5);
        ck_assert_uint_eq(empty, 0);
        free(nodes);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_spread_criteria)
{
        struct orch_sched *s = new_sched(6, 0);
        uint32_t a = add_node(s, "a", 4000, 4 * GI, NULL);
        uint32_t b = add_node(s, "b", 4000, 4 * GI, NULL);
        uint32_t c = add_node(s, "c", 4000, 4 * GI, NULL);
        struct orch_sched_request web = request("web", 100, 64 * MI);

        /* a is the busiest node but runs no web: fewest of the service wins over least allocated. */
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(orch_sched_account(s, a, "db", 1000, GI, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, b, "web", 100, 64 * MI, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, c, "web", 100, 64 * MI, 1), 0);
        ck_assert_uint_eq(place(s, &web), a);
        /* Now one web everywhere: the least allocated of b and c, here c once b carries more. */
        ck_assert_int_eq(orch_sched_account(s, b, "cache", 500, 0, 1), 0);
        ck_assert_uint_eq(place(s, &web), c);
        ck_assert_uint_eq(place(s, &web), b);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", a), 1);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", b), 2);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", c), 2);
        ck_assert_uint_eq(orch_sched_service_count(s, "nope", c), 0);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_binpack)
{
        struct orch_sched *s = new_sched(7, 0);
        uint32_t first, second, third;
        struct orch_sched_request r = request("batch", 1000, 256 * MI);

        add_node(s, "a", 4000, 4 * GI, NULL);
        add_node(s, "b", 4000, 4 * GI, NULL);
        add_node(s, "c", 4000, 4 * GI, NULL);
        r.strategy = ORCH_STRATEGY_BINPACK;
        first = place(s, &r);
        for (int i = 0; i < 3; i++)
                ck_assert_uint_eq(place(s, &r), first);
        second = place(s, &r);
        ck_assert_uint_ne(second, first);
        for (int i = 0; i < 3; i++)
                ck_assert_uint_eq(place(s, &r), second);
        third = place(s, &r);
        ck_assert(third != first && third != second);

        /* The fullest node that fits: 2 cores only fit on the third; 1 core goes back to the
         * second once it has room again. */
        ck_assert_int_eq(orch_sched_account(s, second, "batch", 1000, 256 * MI, -1), 0);
        r.cpu_millis = 2000;
        ck_assert_uint_eq(place(s, &r), third);
        r.cpu_millis = 1000;
        ck_assert_uint_eq(place(s, &r), second);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_reason_aggregation)
{
        struct orch_sched *s = new_sched(8, 0);
        struct orch_constraint c[] = {{"zone", "eu-1", false}};
        struct orch_sched_request r = request("web", 500, 2 * GI);
        uint32_t full_mem1, full_cpu, full_both;

        full_mem1 = add_node(s, "m1", 4000, 3 * GI, "zone=eu-1");
        add_node(s, "m2", 4000, GI + GI / 2, "zone=eu-1");
        full_cpu = add_node(s, "c1", 1000, 8 * GI, "zone=eu-1");
        full_both = add_node(s, "b1", 1000, 3 * GI, "zone=eu-1");
        add_node(s, "z1", 4000, 8 * GI, "zone=eu-2");
        add_node(s, "z2", 4000, 8 * GI, "zone=eu-3");
        add_node(s, "z3", 4000, 8 * GI, NULL);
        add_node_full(s, "d1", 4000, 8 * GI, "zone=eu-1", EXEC_ONLY, ORCH_NODE_DRAINING);
        add_node_full(s, "x1", 4000, 8 * GI, "zone=eu-1", EXEC_ONLY, ORCH_NODE_DOWN);
        add_node(s, "e1", 4000, 8 * GI, "zone=eu-1");
        ck_assert_int_eq(orch_sched_account(s, full_mem1, "db", 100, GI + GI / 2 + 1, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, full_cpu, "db", 600, GI, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, full_both, "db", 600, 2 * GI, 1), 0);
        r.constraints = c;
        r.n_constraints = 1;
        r.exclude_node = "e1";
        assert_reason(s, &r,
                      "no node fits: 2 nodes lack 2Gi of free memory (the most free: 1536Mi), "
                      "1 node lacks 500m of free CPU (the most free: 400m), "
                      "1 node lacks both 500m of free CPU and 2Gi of free memory, "
                      "3 nodes filtered by zone=eu-1, 1 node draining, 1 node down, "
                      "1 node excluded for this instance");

        orch_sched_free(s);

        s = new_sched(8, 0);
        assert_reason(s, &r, "no nodes are registered");
        orch_sched_free(s);
}
END_TEST

START_TEST(test_failure_remembered)
{
        struct orch_sched *s = new_sched(16, 0);
        struct orch_constraint zone[] = {{"zone", "eu-1", false}};
        struct orch_sched_request r = request("web", 2000, GI);
        struct orch_sched_result res;
        uint32_t a = add_node(s, "a", 1000, 4 * GI, "zone=eu-1");

        add_node(s, "b", 4000, 4 * GI, "zone=eu-2");
        r.constraints = zone;
        r.n_constraints = 1;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_uint_gt(res.examined, 0);
        ck_assert_str_eq(
                res.reason,
                "no node fits: 1 node lacks 2 of free CPU (the most free: 1), 1 node filtered by zone=eu-1");
        /* Again, and for another service with the same needs: the same answer, no node visited. */
        memset(res.reason, 'x', sizeof res.reason);
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_uint_eq(res.examined, 0);
        ck_assert_str_eq(
                res.reason,
                "no node fits: 1 node lacks 2 of free CPU (the most free: 1), 1 node filtered by zone=eu-1");
        r.service = "api";
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_uint_eq(res.examined, 0);
        /* Another request is worked out afresh. */
        r.memory = 2 * GI;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_uint_gt(res.examined, 0);
        ck_assert_str_eq(res.reason, "no node fits: 1 node lacks 2 of free CPU (the most free: 1), "
                                     "1 node filtered by zone=eu-1");
        /* Any change of the view, even one that cannot help, makes the reason current. */
        ck_assert_int_eq(orch_sched_account(s, a, "db", 500, 0, 1), 0);
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_str_eq(res.reason, "no node fits: 1 node lacks 2 of free CPU (the most free: 500m), "
                                     "1 node filtered by zone=eu-1");
        ck_assert_int_eq(orch_sched_node_set_state(s, a, ORCH_NODE_DRAINING), 0);
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_str_eq(res.reason, "no node fits: 1 node filtered by zone=eu-1, 1 node draining");
        orch_sched_free(s);
}
END_TEST

START_TEST(test_reason_truncated)
{
        struct orch_sched *s = new_sched(14, 0);
        struct orch_constraint c[20];
        struct orch_sched_label l[20];
        char keys[20][40], names[20][16];
        struct orch_sched_request r = request("web", 1, 1);
        struct orch_sched_result res;
        uint32_t id;

        /* Node i carries the first i labels, so it fails constraint i: twenty parts, too long. */
        for (int i = 0; i < 20; i++) {
                ck_assert_int_ge(orch_snprintf(keys[i], sizeof keys[i], "example.com/key-number-%02d", i),
                                 0);
                ck_assert_int_ge(orch_snprintf(names[i], sizeof names[i], "n%d", i), 0);
                c[i] = (struct orch_constraint){keys[i], "a-rather-long-label-value", false};
                l[i] = (struct orch_sched_label){keys[i], "a-rather-long-label-value"};
        }
        for (int i = 0; i < 20; i++) {
                struct orch_sched_node_spec spec = {.name = names[i],
                                                    .labels = l,
                                                    .n_labels = (size_t)i,
                                                    .cpu_millis = 1000,
                                                    .memory = GI,
                                                    .state = ORCH_NODE_READY};
                ck_assert_int_eq(orch_sched_node_add(s, &spec, &id), 0);
        }
        r.constraints = c;
        r.n_constraints = ELEMENTSOF(c);
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 0);
        ck_assert_uint_eq(strlen(res.reason), ORCH_SCHED_REASON_MAX - 1);
        ck_assert(orch_endswith(res.reason, "..."));
        ck_assert(startswith(res.reason,
                             "no node fits: 1 node filtered by example.com/key-number-00=a-rather"));
        orch_sched_free(s);
}
END_TEST

START_TEST(test_sample_bound_and_miss)
{
        struct orch_sched *s = new_sched(9, 0);
        struct orch_sched_request r = request("web", 100, MI);
        struct orch_constraint only[] = {{"role", "special", false}};
        struct orch_sched_result res;
        char name[32];
        uint32_t special = ORCH_SCHED_NODE_NONE;

        for (int i = 0; i < 5000; i++) {
                ck_assert_int_ge(orch_snprintf(name, sizeof name, "n%04d", i), 0);
                if (i == 4321)
                        special = add_node(s, name, 4000, 4 * GI, "role=special");
                else
                        add_node(s, name, 4000, 4 * GI, "role=plain");
        }
        /* 5000 nodes: the first 2 * ceil(log2 5000) = 26 feasible nodes are scored, no more. */
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
        ck_assert_uint_eq(res.feasible, 26);
        ck_assert_uint_eq(res.examined, 26);

        /* One feasible node among 5000: every sample misses it, the scan goes on until found. */
        r.constraints = only;
        r.n_constraints = 1;
        for (int i = 0; i < 20; i++) {
                ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
                ck_assert_uint_eq(res.node, special);
                ck_assert_uint_eq(res.feasible, 1);
        }
        /* Fill it: now nothing fits, and the reason covers every node. */
        ck_assert_int_eq(orch_sched_account(s, special, "db", 4000, MI, 1), 0);
        assert_reason(s, &r,
                      "no node fits: 1 node lacks 100m of free CPU (the most free: 0), "
                      "4999 nodes filtered by role=special");
        orch_sched_free(s);
}
END_TEST

START_TEST(test_full_nodes_are_skipped)
{
        struct orch_sched *s = new_sched(10, 1);
        struct orch_sched_request r = request("web", 1000, GI);
        struct orch_sched_result res;
        char name[32];
        uint32_t ids[2048];

        for (int i = 0; i < 2048; i++) {
                ck_assert_int_ge(orch_snprintf(name, sizeof name, "n%d", i), 0);
                ids[i] = add_node(s, name, 1000, GI, NULL);
        }
        /* Every node but one runs out of one resource: even nodes of CPU, odd ones of memory, so
         * any run of nodes has both some free CPU and some free memory, on different nodes. */
        for (int i = 0; i < 2048; i++)
                if (i != 1500)
                        ck_assert_int_eq(
                                orch_sched_account(s, ids[i], "db", i % 2 ? 0 : 1000, i % 2 ? GI : 0, 1), 0);
        /* The 2047 nodes that cannot take it are skipped by the capacity tree, not visited. */
        for (int i = 0; i < 10; i++) {
                ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
                ck_assert_uint_eq(res.node, ids[1500]);
                ck_assert_uint_eq(res.examined, 1);
        }
        r.strategy = ORCH_STRATEGY_BINPACK;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), 1);
        ck_assert_uint_eq(res.node, ids[1500]);
        /* Memory that is not a power of two: the leaf check is exact, 1Gi free does not take 1Gi+1. */
        r.memory = GI + 1;
        assert_reason(s, &r,
                      "no node fits: 1025 nodes lack 1073741825 of free memory (the most free: 1Gi), "
                      "1023 nodes lack both 1 of free CPU and 1073741825 of free memory");
        r.memory = GI;
        ck_assert_int_eq(orch_sched_account(s, ids[1500], "web", 1000, GI, 1), 0);
        assert_reason(s, &r,
                      "no node fits: 1024 nodes lack 1Gi of free memory (the most free: 0), "
                      "1023 nodes lack 1 of free CPU (the most free: 0), "
                      "1 node lacks both 1 of free CPU and 1Gi of free memory");
        orch_sched_free(s);
}
END_TEST

static void placement_sequence(uint64_t seed, uint32_t *out, size_t n)
{
        struct orch_sched *s = new_sched(seed, 0);
        struct orch_sched_request r = request("web", 10, MI);
        struct orch_sched_result res;
        char name[32];

        for (int i = 0; i < 200; i++) {
                ck_assert_int_ge(orch_snprintf(name, sizeof name, "n%d", i), 0);
                add_node(s, name, 4000, 4 * GI, NULL);
        }
        ck_assert_int_eq(orch_sched_place_batch(s, &r, n, out, &res), (int)n);
        orch_sched_free(s);
}

START_TEST(test_deterministic)
{
        uint32_t a[100], b[100], c[100];

        placement_sequence(42, a, ELEMENTSOF(a));
        placement_sequence(42, b, ELEMENTSOF(b));
        placement_sequence(43, c, ELEMENTSOF(c));
        ck_assert_mem_eq(a, b, sizeof a);
        ck_assert(memcmp(a, c, sizeof a) != 0);
}
END_TEST

START_TEST(test_batch_partial)
{
        struct orch_sched *s = new_sched(11, 0);
        struct orch_sched_request r = request("web", 1000, GI);
        struct orch_sched_result res;
        uint32_t nodes[8];
        uint32_t a = add_node(s, "a", 3000, 8 * GI, NULL);
        uint32_t b = add_node(s, "b", 2000, 8 * GI, NULL);

        ck_assert_int_eq(orch_sched_place_batch(s, &r, 8, nodes, &res), 5);
        ck_assert_str_eq(res.reason, "no node fits: 2 nodes lack 1 of free CPU (the most free: 0)");
        ck_assert_uint_eq(orch_sched_service_count(s, "web", a), 3);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", b), 2);
        /* A dry run releases what it placed. */
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(orch_sched_account(s, nodes[i], "web", 1000, GI, -1), 0);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", a), 0);
        ck_assert_int_eq(orch_sched_place_batch(s, &r, 0, NULL, &res), 0);
        r.service = NULL;
        ck_assert_int_eq(orch_sched_place_batch(s, &r, 1, nodes, &res), -EINVAL);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_node_lifecycle)
{
        struct orch_sched *s = new_sched(12, 0);
        struct orch_sched_label dup[] = {{"k", "1"}, {"k", "2"}};
        struct orch_sched_label zone2[] = {{"zone", "eu-2"}};
        struct orch_sched_node_spec spec = {.name = "a", .cpu_millis = 1000, .memory = GI};
        struct orch_constraint c[] = {{"zone", "eu-2", false}};
        struct orch_sched_request r = request("web", 500, MI);
        struct orch_sched_node_info info;
        uint32_t a, b, again, found;

        a = add_node(s, "a", 1000, GI, "zone=eu-1");
        b = add_node(s, "b", 1000, GI, "zone=eu-1");
        ck_assert_int_eq(orch_sched_node_add(s, &spec, &found), -EEXIST);
        spec.name = "";
        ck_assert_int_eq(orch_sched_node_add(s, &spec, &found), -EINVAL);
        spec.name = "x";
        spec.labels = dup;
        spec.n_labels = 2;
        ck_assert_int_eq(orch_sched_node_add(s, &spec, &found), -EINVAL);
        ck_assert_uint_eq(orch_sched_node_count(s), 2);
        ck_assert_int_eq(orch_sched_node_find(s, "b", &found), 0);
        ck_assert_uint_eq(found, b);
        ck_assert_int_eq(orch_sched_node_find(s, "zz", &found), -ENOENT);

        ck_assert_int_eq(orch_sched_account(s, a, "web", 500, MI, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, a, "web", 500, MI, 1), 0);
        ck_assert_int_eq(orch_sched_account(s, a, "web", 1, 0, 2), -EINVAL);
        ck_assert_int_eq(orch_sched_account(s, 77, "web", 1, 0, 1), -ENOENT);
        ck_assert_int_eq(orch_sched_account(s, b, "web", 500, MI, -1), -ERANGE);
        ck_assert_int_eq(orch_sched_account(s, a, "other", 500, MI, -1), -ERANGE);
        ck_assert_int_eq(orch_sched_account(s, a, "web", 5000, MI, -1), -ERANGE);
        ck_assert_uint_eq(place(s, &r), b);

        /* Relabel and shrink b: it is now over-committed and takes nothing. */
        spec = (struct orch_sched_node_spec){.labels = zone2,
                                             .n_labels = 1,
                                             .cpu_millis = 200,
                                             .memory = GI,
                                             .drivers = EXEC_ONLY,
                                             .state = ORCH_NODE_READY};
        ck_assert_int_eq(orch_sched_node_update(s, b, &spec), 0);
        r.constraints = c;
        r.n_constraints = 1;
        assert_reason(s, &r,
                      "no node fits: 1 node lacks 500m of free CPU (the most free: 0), 1 node filtered by "
                      "zone=eu-2");
        ck_assert_int_eq(orch_sched_account(s, b, "web", 500, MI, -1), 0);
        r.cpu_millis = 200;
        ck_assert_uint_eq(place(s, &r), b);
        spec.name = "renamed";
        ck_assert_int_eq(orch_sched_node_update(s, b, &spec), -EINVAL);

        /* Removing a node forgets what was accounted on it; its handle may come back for a new node. */
        ck_assert_int_eq(orch_sched_node_remove(s, a), 0);
        ck_assert_int_eq(orch_sched_node_remove(s, a), -ENOENT);
        ck_assert_int_eq(orch_sched_node_get(s, a, &info), -ENOENT);
        ck_assert_uint_eq(orch_sched_node_count(s), 1);
        ck_assert_int_eq(orch_sched_node_find(s, "a", &found), -ENOENT);
        again = add_node(s, "a2", 1000, GI, NULL);
        ck_assert_int_eq(orch_sched_node_get(s, again, &info), 0);
        ck_assert_str_eq(info.name, "a2");
        ck_assert_uint_eq(info.instances, 0);
        ck_assert_uint_eq(info.cpu_allocated, 0);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", again), 0);
        ck_assert_uint_eq(orch_sched_service_count(s, "web", b), 1);
        ck_assert_int_eq(orch_sched_node_remove(s, b), 0);
        ck_assert_int_eq(orch_sched_node_remove(s, again), 0);
        ck_assert_uint_eq(orch_sched_node_count(s), 0);
        r.constraints = NULL;
        r.n_constraints = 0;
        assert_reason(s, &r, "no nodes are registered");
        orch_sched_free(s);
}
END_TEST

START_TEST(test_bad_requests)
{
        struct orch_sched *s = new_sched(13, 0);
        struct orch_sched_request r = request("web", 1, 1);
        struct orch_sched_result res;
        struct orch_constraint bad[] = {{NULL, "x", false}};

        add_node(s, "a", 1000, GI, NULL);
        r.strategy = _ORCH_STRATEGY_MAX;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), -EINVAL);
        r.strategy = ORCH_STRATEGY_SPREAD;
        r.driver = _ORCH_DRIVER_MAX;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), -EINVAL);
        r.driver = ORCH_DRIVER_DEFAULT;
        r.constraints = bad;
        r.n_constraints = 1;
        ck_assert_int_eq(orch_sched_place(s, &r, &res), -EINVAL);
        r.n_constraints = 0;
        r.service = "";
        ck_assert_int_eq(orch_sched_place(s, &r, &res), -EINVAL);
        orch_sched_free(s);
}
END_TEST

START_TEST(test_scale_down_order)
{
        const struct orch_sched_victim v[] = {
                [0] = {ORCH_INSTANCE_RUNNING, ORCH_HEALTH_PASSING, true, 10},
                [1] = {ORCH_INSTANCE_RUNNING, ORCH_HEALTH_PASSING, true, 30},
                [2] = {ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, true, 5},
                [3] = {ORCH_INSTANCE_RUNNING, ORCH_HEALTH_FAILING, true, 1},
                [4] = {ORCH_INSTANCE_STARTING, ORCH_HEALTH_UNKNOWN, true, 40},
                [5] = {ORCH_INSTANCE_PENDING, ORCH_HEALTH_UNKNOWN, true, 41},
                [6] = {ORCH_INSTANCE_PENDING, ORCH_HEALTH_UNKNOWN, false, 2},
                [7] = {ORCH_INSTANCE_EXITED, ORCH_HEALTH_UNKNOWN, true, 3},
                [8] = {ORCH_INSTANCE_RUNNING, ORCH_HEALTH_PASSING, true, 20},
                [9] = {ORCH_INSTANCE_STARTING, ORCH_HEALTH_UNKNOWN, true, 50},
        };
        /* ended; unplaced; placed pending; then not serving (failing before unknown, newest
         * first); running unknown; running passing newest first. */
        const size_t expected[] = {7, 6, 5, 3, 9, 4, 2, 1, 8, 0};
        size_t out[ELEMENTSOF(v)];

        ck_assert_int_eq(orch_sched_scale_down(v, ELEMENTSOF(v), ELEMENTSOF(v), out), (int)ELEMENTSOF(v));
        for (size_t i = 0; i < ELEMENTSOF(v); i++)
                ck_assert_msg(out[i] == expected[i], "position %zu: %zu, expected %zu", i, out[i],
                              expected[i]);
        ck_assert_int_eq(orch_sched_scale_down(v, ELEMENTSOF(v), 2, out), 2);
        ck_assert_uint_eq(out[0], 7);
        ck_assert_uint_eq(out[1], 6);
        /* Newest first among equals. */
        ck_assert_int_eq(orch_sched_scale_down(v, 2, 1, out), 1);
        ck_assert_uint_eq(out[0], 1);
        ck_assert_int_eq(orch_sched_scale_down(v, 2, 5, out), 2);
        ck_assert_int_eq(orch_sched_scale_down(v, 0, 5, out), 0);
        ck_assert_int_eq(orch_sched_scale_down(NULL, 3, 1, out), -EINVAL);
}
END_TEST

/*
 * Random operations checked against a plain model of the cluster: on small clusters (examined in
 * full) the choice must be the best by the strategy's order; on large ones (sampled) it must be
 * feasible; and a placement fails only when the model has no feasible node.
 */
struct model_node {
        bool present;
        uint32_t id;
        uint32_t cpu_cap, cpu_alloc;
        uint64_t mem_cap, mem_alloc;
        enum orch_node_state state;
        int zone;
        uint32_t count[4]; /* per service */
};

static uint64_t test_rng(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

static bool model_fits(const struct model_node *m, uint32_t cpu, uint64_t mem, int zone)
{
        return m->present && m->state == ORCH_NODE_READY && m->cpu_alloc + cpu <= m->cpu_cap &&
               m->mem_alloc + mem <= m->mem_cap && (zone < 0 || m->zone == zone);
}

static double model_util(const struct model_node *m, uint32_t cpu, uint64_t mem)
{
        return (double)(m->cpu_alloc + cpu) / m->cpu_cap + (double)(m->mem_alloc + mem) / (double)m->mem_cap;
}

static void run_model(uint32_t max_nodes, uint32_t exhaustive_max, uint64_t seed)
{
        static const char *const services[4] = {"s0", "s1", "s2", "s3"};
        static const char *const zones[3] = {"zone=z0", "zone=z1", "zone=z2"};
        static const char *const zone_values[3] = {"z0", "z1", "z2"};
        struct orch_sched *s = new_sched(seed, exhaustive_max);
        struct model_node *m = calloc(max_nodes, sizeof *m);
        uint64_t x = seed * 2654435761u + 1;
        uint32_t placed = 0, failed = 0;
        char name[32];

        ck_assert_ptr_nonnull(m);
        for (int step = 0; step < 20000; step++) {
                uint32_t i = (uint32_t)(test_rng(&x) % max_nodes), op = (uint32_t)(test_rng(&x) % 100);

                if (op < 4) { /* add or remove a node */
                        ck_assert_int_ge(orch_snprintf(name, sizeof name, "n%u", i), 0);
                        if (m[i].present) {
                                ck_assert_int_eq(orch_sched_node_remove(s, m[i].id), 0);
                                m[i].present = false;
                        } else {
                                m[i] = (struct model_node){.present = true,
                                                           .cpu_cap =
                                                                   1000 + 500 * (uint32_t)(test_rng(&x) % 8),
                                                           .mem_cap = GI * (1 + test_rng(&x) % 8),
                                                           .zone = (int)(test_rng(&x) % 3)};
                                m[i].id = add_node(s, name, m[i].cpu_cap, m[i].mem_cap, zones[m[i].zone]);
                        }
                } else if (op < 8) { /* change a node's state */
                        if (!m[i].present)
                                continue;
                        m[i].state = (enum orch_node_state)(test_rng(&x) % 3);
                        if (m[i].state == ORCH_NODE_DOWN && test_rng(&x) % 2)
                                m[i].state = ORCH_NODE_READY;
                        ck_assert_int_eq(orch_sched_node_set_state(s, m[i].id, m[i].state), 0);
                } else if (op < 30) { /* release one instance */
                        uint32_t svc = (uint32_t)(test_rng(&x) % 4);
                        if (!m[i].present || m[i].count[svc] == 0)
                                continue;
                        /* every instance of service k requests (k+1)*100m and (k+1)*128Mi */
                        ck_assert_int_eq(orch_sched_account(s, m[i].id, services[svc], (svc + 1) * 100,
                                                            (svc + 1) * 128 * MI, -1),
                                         0);
                        m[i].count[svc]--;
                        m[i].cpu_alloc -= (svc + 1) * 100;
                        m[i].mem_alloc -= (svc + 1) * 128 * MI;
                } else { /* place one */
                        uint32_t svc = (uint32_t)(test_rng(&x) % 4), cpu = (svc + 1) * 100;
                        uint64_t mem = (svc + 1) * 128 * MI;
                        int zone = test_rng(&x) % 4 == 0 ? (int)(test_rng(&x) % 3) : -1;
                        struct orch_constraint c = {"zone", (char *)(zone >= 0 ? zone_values[zone] : ""),
                                                    false};
                        struct orch_sched_request r = request(services[svc], cpu, mem);
                        struct orch_sched_result res;
                        struct model_node *chosen = NULL;
                        bool any = false;
                        int ret;

                        r.strategy = test_rng(&x) % 2 ? ORCH_STRATEGY_BINPACK : ORCH_STRATEGY_SPREAD;
                        if (zone >= 0) {
                                r.constraints = &c;
                                r.n_constraints = 1;
                        }
                        ret = orch_sched_place(s, &r, &res);
                        ck_assert_int_ge(ret, 0);
                        for (uint32_t k = 0; k < max_nodes; k++) {
                                any |= model_fits(&m[k], cpu, mem, zone);
                                if (m[k].present && m[k].id == res.node)
                                        chosen = &m[k];
                        }
                        ck_assert_int_eq(ret, any);
                        if (!any) {
                                failed++;
                                continue;
                        }
                        placed++;
                        ck_assert_ptr_nonnull(chosen);
                        ck_assert(model_fits(chosen, cpu, mem, zone));
                        if (exhaustive_max >= max_nodes)
                                for (uint32_t k = 0; k < max_nodes; k++) {
                                        const struct model_node *o = &m[k];
                                        double uo, uc;

                                        if (!model_fits(o, cpu, mem, zone))
                                                continue;
                                        uo = model_util(o, cpu, mem);
                                        uc = model_util(chosen, cpu, mem);
                                        if (r.strategy == ORCH_STRATEGY_SPREAD)
                                                ck_assert(chosen->count[svc] < o->count[svc] ||
                                                          (chosen->count[svc] == o->count[svc] && uc <= uo));
                                        else
                                                ck_assert(uc > uo ||
                                                          (uc == uo && chosen->count[svc] <= o->count[svc]));
                                }
                        ck_assert_int_eq(orch_sched_account(s, res.node, services[svc], cpu, mem, 1), 0);
                        chosen->count[svc]++;
                        chosen->cpu_alloc += cpu;
                        chosen->mem_alloc += mem;
                }
        }
        /* Both outcomes were exercised many times (about 6000 and 8000 with these seeds). */
        ck_assert_uint_gt(placed, 1000);
        ck_assert_uint_gt(failed, 1000);
        /* The view agrees with the model at the end. */
        for (uint32_t k = 0; k < max_nodes; k++) {
                struct orch_sched_node_info info;
                uint32_t total = 0;

                if (!m[k].present)
                        continue;
                ck_assert_int_eq(orch_sched_node_get(s, m[k].id, &info), 0);
                ck_assert_uint_eq(info.cpu_allocated, m[k].cpu_alloc);
                ck_assert_uint_eq(info.memory_allocated, m[k].mem_alloc);
                for (int v = 0; v < 4; v++) {
                        ck_assert_uint_eq(orch_sched_service_count(s, services[v], m[k].id), m[k].count[v]);
                        total += m[k].count[v];
                }
                ck_assert_uint_eq(info.instances, total);
        }
        free(m);
        orch_sched_free(s);
}

START_TEST(test_model_exhaustive)
{
        run_model(40, 64, 100);
        run_model(12, 64, 101);
}
END_TEST

START_TEST(test_model_sampled)
{
        run_model(300, 1, 200);
        run_model(1000, 0, 201);
}
END_TEST

static Suite *scheduler_suite(void)
{
        Suite *s = suite_create("scheduler");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_cpu_and_memory);
        tcase_add_test(tc, test_constraints);
        tcase_add_test(tc, test_node_states_and_epoch);
        tcase_add_test(tc, test_epoch_on_update);
        tcase_add_test(tc, test_driver_and_exclude);
        tcase_add_test(tc, test_spread_even);
        tcase_add_test(tc, test_spread_sampled_even);
        tcase_add_test(tc, test_spread_criteria);
        tcase_add_test(tc, test_binpack);
        tcase_add_test(tc, test_reason_aggregation);
        tcase_add_test(tc, test_reason_truncated);
        tcase_add_test(tc, test_failure_remembered);
        tcase_add_test(tc, test_sample_bound_and_miss);
        tcase_add_test(tc, test_full_nodes_are_skipped);
        tcase_add_test(tc, test_deterministic);
        tcase_add_test(tc, test_batch_partial);
        tcase_add_test(tc, test_node_lifecycle);
        tcase_add_test(tc, test_bad_requests);
        tcase_add_test(tc, test_scale_down_order);
        tcase_add_test(tc, test_model_exhaustive);
        tcase_add_test(tc, test_model_sampled);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(scheduler_suite)
