/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <uv.h>

#include "reconciler.h"
#include "scheduler.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* A test cluster: a real store in a temporary directory, a state, three nodes, and a
 * reconciler whose commands are recorded instead of sent. */
struct cluster {
        char dir[64];
        uv_loop_t loop;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_reconciler *rc;
        struct orch_inst *started[256];
        size_t n_started;
        struct orch_inst *stopped[256];
        size_t n_stopped;
        size_t flushes;
};

static void rec_start(void *ud, struct orch_inst *inst)
{
        struct cluster *c = ud;
        ck_assert_uint_lt(c->n_started, ELEMENTSOF(c->started));
        c->started[c->n_started++] = inst;
}

static void rec_stop(void *ud, struct orch_inst *inst, const char *reason)
{
        struct cluster *c = ud;
        ck_assert_ptr_nonnull(reason);
        ck_assert_uint_lt(c->n_stopped, ELEMENTSOF(c->stopped));
        c->stopped[c->n_stopped++] = inst;
}

static void rec_flush(void *ud)
{
        struct cluster *c = ud;
        c->flushes++;
}

static const struct orch_reconciler_ops rec_ops = {rec_start, rec_stop, rec_flush};

static void add_node(struct cluster *c, const char *name, uint32_t cpu, uint64_t mem, const char *zone)
{
        struct orch_node *node;

        ck_assert_int_ge(orch_state_upsert_node(c->st, name, &node), 0);
        node->cpu_millis = cpu;
        node->memory = mem;
        node->labels = calloc(2, sizeof *node->labels);
        node->labels[0] = (struct orch_label){strdup("zone"), strdup(zone)};
        node->n_labels = 1;
        orch_strv_push(&node->drivers, "exec");
        orch_state_set_node_state(c->st, node, ORCH_NODE_READY);
}

static void cluster_init(struct cluster *c)
{
        memset(c, 0, sizeof *c);
        orch_strlcpy(c->dir, "/tmp/orch-test-rc-XXXXXX", sizeof c->dir);
        ck_assert_ptr_nonnull(mkdtemp(c->dir));
        ck_assert_int_eq(uv_loop_init(&c->loop), 0);
        ck_assert_int_eq(orch_store_open(c->dir, NULL, &c->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(c->store, &c->st), 0);
        ck_assert_int_eq(orch_reconciler_new(&c->loop, c->st, &rec_ops, c, &c->rc), 0);
        add_node(c, "n1", 2000, 4ULL << 30, "eu-1");
        add_node(c, "n2", 2000, 4ULL << 30, "eu-1");
        add_node(c, "n3", 2000, 4ULL << 30, "us-1");
}

static void cluster_release(struct cluster *c)
{
        char cmd[128];

        orch_reconciler_close(c->rc);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        uv_loop_close(&c->loop);
        orch_state_free(c->st);
        orch_store_close(c->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
        ck_assert_int_eq(system(cmd), 0);
}

static void run(struct cluster *c)
{
        c->n_started = c->n_stopped = 0;
        ck_assert_int_eq(orch_reconciler_run(c->rc), 0);
}

static struct orch_service *parse(const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        struct orch_service *s;
        int r = orch_manifest_parse_buffer(&m, "test.yaml", yaml, strlen(yaml), &d);

        if (r < 0)
                orch_diags_print(&d, stderr);
        ck_assert_int_ge(r, 0);
        ck_assert_uint_eq(m.n_services, 1);
        s = m.services[0];
        free(m.services);
        orch_diags_release(&d);
        return s;
}

static struct orch_svc *apply(struct cluster *c, const char *yaml, const char *expect_change)
{
        struct orch_service *spec = parse(yaml);
        const char *change = NULL;
        char name[64];

        orch_strlcpy(name, spec->name, sizeof name);
        ck_assert_int_ge(orch_state_apply_service(c->st, spec, &change), 0);
        ck_assert_str_eq(change, expect_change);
        return orch_state_service(c->st, name);
}

/* What an agent would report: the instance runs and passes its checks since `ago_ms`. */
static void report_available(struct orch_inst *inst, uint64_t ago_ms)
{
        inst->state = ORCH_INSTANCE_RUNNING;
        inst->health = ORCH_HEALTH_PASSING;
        inst->confirmed = true;
        inst->healthy_since = orch_realtime_msec() - ago_ms;
}

/* What an agent would report after a stop: gone. */
static void report_stopped(struct cluster *c, struct orch_inst *inst)
{
        inst->state = ORCH_INSTANCE_EXITED;
        orch_state_release_resources(c->st, inst);
        orch_state_unplace_instance(c->st, inst, NULL);
        orch_state_mark_dirty(c->st, inst->svc);
}

static size_t count_live(struct orch_svc *svc, const char *revision)
{
        struct orch_list *p;
        size_t n = 0;

        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *i = orch_list_entry(p, struct orch_inst, svc_link);
                if (orch_inst_is_live(i) && (!revision || streq(i->revision, revision)))
                        n++;
        }
        return n;
}

START_TEST(test_spread_and_scale)
{
        struct cluster c;
        struct orch_svc *svc;
        bool seen[3] = {false};

        cluster_init(&c);
        svc = apply(&c,
                    "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n"
                    "resources: {cpu: 100m, memory: 64Mi}\n",
                    "created");
        run(&c);
        ck_assert_uint_eq(c.n_started, 3);
        ck_assert_uint_ge(c.flushes, 1);
        for (size_t i = 0; i < 3; i++) {
                const char *n = c.started[i]->node->name;
                seen[n[1] - '1'] = true;
                ck_assert_uint_gt(c.started[i]->generation, 0);
        }
        ck_assert(seen[0] && seen[1] && seen[2]); /* spread: one per node */
        ck_assert_uint_eq(orch_state_node(c.st, "n1")->alloc_memory, 64ULL << 20);

        /* the same manifest again changes nothing */
        apply(&c,
              "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n"
              "resources: {cpu: 100m, memory: 64Mi}\n",
              "unchanged");
        for (size_t i = 0; i < 3; i++)
                report_available(orch_list_entry(svc->instances.next, struct orch_inst, svc_link), 10000);

        ck_assert_int_eq(orch_state_scale_service(c.st, svc, 1), 1);
        run(&c);
        ck_assert_uint_eq(c.n_started, 0);
        ck_assert_uint_eq(c.n_stopped, 2);
        ck_assert_uint_eq(count_live(svc, NULL), 1);
        report_stopped(&c, c.stopped[0]);
        report_stopped(&c, c.stopped[1]);
        run(&c);
        ck_assert_uint_eq(c.st->n_instances, 1);

        ck_assert_int_eq(orch_state_scale_service(c.st, svc, 4), 1);
        run(&c);
        ck_assert_uint_eq(c.n_started, 3);
        ck_assert_uint_eq(count_live(svc, NULL), 4);
        cluster_release(&c);
}
END_TEST

START_TEST(test_pending_reason_and_capacity)
{
        struct cluster c;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_node *big;

        cluster_init(&c);
        svc = apply(&c,
                    "kind: service\nname: big\ncommand: [/bin/true]\nresources: {memory: 16Gi}\n"
                    "placement: {constraints: ['zone=eu-1']}\n",
                    "created");
        run(&c);
        ck_assert_uint_eq(c.n_started, 0);
        inst = orch_list_entry(svc->instances.next, struct orch_inst, svc_link);
        ck_assert_ptr_null(inst->node);
        ck_assert_ptr_nonnull(inst->reason);
        ck_assert_msg(strstr(inst->reason, "memory") && strstr(inst->reason, "zone=eu-1"), "reason: %s",
                      inst->reason);

        /* a fitting node joins: placed without any other trigger */
        add_node(&c, "n4", 4000, 32ULL << 30, "eu-1");
        (void)big;
        run(&c);
        ck_assert_uint_eq(c.n_started, 1);
        ck_assert_str_eq(inst->node->name, "n4");
        ck_assert_ptr_null(inst->reason);
        cluster_release(&c);
}
END_TEST

START_TEST(test_delete)
{
        struct cluster c;
        struct orch_svc *svc;

        cluster_init(&c);
        svc = apply(&c, "kind: service\nname: api\nreplicas: 2\ncommand: [/bin/sleep, '9']\n", "created");
        run(&c);
        ck_assert_uint_eq(c.n_started, 2);
        ck_assert_int_eq(orch_state_delete_service(c.st, svc), 1);
        run(&c);
        ck_assert_uint_eq(c.n_stopped, 2);
        ck_assert_ptr_nonnull(orch_state_service(c.st, "api")); /* until the agents confirm */
        report_stopped(&c, c.stopped[0]);
        report_stopped(&c, c.stopped[1]);
        run(&c);
        ck_assert_ptr_null(orch_state_service(c.st, "api"));
        ck_assert_uint_eq(c.st->n_instances, 0);
        cluster_release(&c);
}
END_TEST

static const char v1[] = "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '100']\n"
                         "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s}\n";
static const char v2[] = "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '200']\n"
                         "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s}\n";

START_TEST(test_rollout_surge)
{
        struct cluster c;
        struct orch_svc *svc;
        char rev1[ORCH_REVISION_LEN + 1], rev2[ORCH_REVISION_LEN + 1];

        cluster_init(&c);
        svc = apply(&c, v1, "created");
        orch_strlcpy(rev1, svc->revision, sizeof rev1);
        run(&c);
        for (size_t i = 0; i < c.n_started; i++)
                report_available(c.started[i], 1000);

        apply(&c, v2, "updated");
        orch_strlcpy(rev2, svc->revision, sizeof rev2);
        ck_assert_str_ne(rev1, rev2);
        ck_assert_int_eq(svc->rollout.state, ORCH_ROLLOUT_PROGRESSING);

        /* step 1: one surge instance, no old one stopped (max_unavailable 0) */
        run(&c);
        ck_assert_uint_eq(c.n_started, 1);
        ck_assert_uint_eq(c.n_stopped, 0);
        ck_assert_str_eq(c.started[0]->revision, rev2);
        report_available(c.started[0], 1000);

        /* step 2: the new one is available: one old goes, one more new starts */
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(c.n_stopped, 1);
        ck_assert_uint_eq(c.n_started, 1);
        ck_assert_str_eq(c.stopped[0]->revision, rev1);
        report_stopped(&c, c.stopped[0]);
        report_available(c.started[0], 1000);

        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(c.n_stopped, 1);
        report_stopped(&c, c.stopped[0]);
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(count_live(svc, rev2), 2);
        ck_assert_uint_eq(count_live(svc, rev1), 0);
        ck_assert_int_eq(svc->rollout.state, ORCH_ROLLOUT_COMPLETE);

        /* scaling only does not roll */
        apply(&c,
              "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '200']\n"
              "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s}\n",
              "updated");
        ck_assert_str_eq(svc->revision, rev2);
        run(&c);
        ck_assert_uint_eq(c.n_started, 1);
        ck_assert_uint_eq(c.n_stopped, 0);
        cluster_release(&c);
}
END_TEST

START_TEST(test_rollout_crash_loop_reverts)
{
        struct cluster c;
        struct orch_svc *svc;
        char rev1[ORCH_REVISION_LEN + 1];

        cluster_init(&c);
        svc = apply(&c, v1, "created");
        orch_strlcpy(rev1, svc->revision, sizeof rev1);
        run(&c);
        for (size_t i = 0; i < c.n_started; i++)
                report_available(c.started[i], 1000);
        apply(&c, v2, "updated");
        run(&c);
        ck_assert_uint_eq(c.n_started, 1);
        /* the new instance crash-loops */
        c.started[0]->state = ORCH_INSTANCE_PENDING;
        c.started[0]->restarts = 3;
        c.started[0]->confirmed = true;
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        /* reverted: the service is back on revision 1, and the broken instance is being stopped */
        ck_assert_str_eq(svc->revision, rev1);
        ck_assert(svc->rollout.reverting);
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(count_live(svc, rev1), 2);
        ck_assert_uint_le(count_live(svc, NULL), 2);
        cluster_release(&c);
}
END_TEST

START_TEST(test_persist_and_load)
{
        struct cluster c;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_svc *svc;
        uint64_t gen;

        cluster_init(&c);
        apply(&c, "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '100']\n", "created");
        run(&c);
        ck_assert_uint_eq(c.n_started, 2);
        gen = c.st->generation;
        /* a second orchd on the same data dir is refused while the first holds it */
        ck_assert_int_lt(orch_store_open(c.dir, NULL, &store, NULL), 0);
        orch_reconciler_close(c.rc);
        uv_run(&c.loop, UV_RUN_DEFAULT);
        c.st = orch_state_free(c.st);
        c.store = orch_store_close(c.store);

        ck_assert_int_eq(orch_store_open(c.dir, NULL, &store, NULL), 0);
        ck_assert_int_eq(orch_state_new(store, &st), 0);
        ck_assert_int_eq(orch_state_load(st), 0);
        svc = orch_state_service(st, "web");
        ck_assert_ptr_nonnull(svc);
        ck_assert_uint_eq(svc->spec->replicas, 2);
        ck_assert_uint_eq(st->n_instances, 2);
        ck_assert_uint_eq(st->n_nodes, 3);
        ck_assert_uint_eq(st->generation, gen);
        ck_assert_uint_gt(st->event_index, 0);
        orch_state_free(st);
        orch_store_close(store);
        c.rc = NULL;
        {
                char cmd[128];
                uv_loop_close(&c.loop);
                orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", c.dir);
                ck_assert_int_eq(system(cmd), 0);
        }
}
END_TEST

START_TEST(test_drain)
{
        struct cluster c;
        struct orch_svc *svc;
        struct orch_node *n1;
        struct orch_inst *on_n1 = NULL;

        cluster_init(&c);
        svc = apply(&c,
                    "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n"
                    "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s}\n",
                    "created");
        run(&c);
        ck_assert_uint_eq(c.n_started, 3);
        for (size_t i = 0; i < 3; i++) {
                report_available(c.started[i], 1000);
                if (streq(c.started[i]->node->name, "n1"))
                        on_n1 = c.started[i];
        }
        ck_assert_ptr_nonnull(on_n1);
        n1 = orch_state_node(c.st, "n1");
        n1->cordoned = true;
        orch_state_set_node_state(c.st, n1, n1->state);
        orch_state_mark_dirty(c.st, svc);
        /* a replacement starts elsewhere first; the one on n1 keeps running (max_unavailable 0) */
        run(&c);
        ck_assert_uint_eq(c.n_started, 1);
        ck_assert_uint_eq(c.n_stopped, 0);
        ck_assert_str_ne(c.started[0]->node->name, "n1");
        report_available(c.started[0], 1000);
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(c.n_stopped, 1);
        ck_assert_ptr_eq(c.stopped[0], on_n1);
        report_stopped(&c, on_n1);
        orch_state_mark_dirty(c.st, svc);
        run(&c);
        ck_assert_uint_eq(orch_state_node(c.st, "n1")->n_instances, 0);
        ck_assert_uint_eq(count_live(svc, NULL), 3);
        ck_assert_int_ne(svc->rollout.state, ORCH_ROLLOUT_FAILED);
        cluster_release(&c);
}
END_TEST

static Suite *reconciler_suite(void)
{
        Suite *s = suite_create("reconciler");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_spread_and_scale);
        tcase_add_test(tc, test_pending_reason_and_capacity);
        tcase_add_test(tc, test_delete);
        tcase_add_test(tc, test_rollout_surge);
        tcase_add_test(tc, test_rollout_crash_loop_reverts);
        tcase_add_test(tc, test_persist_and_load);
        tcase_add_test(tc, test_drain);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(reconciler_suite)
