/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <uv.h>

#include "agents.h"
#include "api.h"
#include "httpclient.h"
#include "json.h"
#include "reconciler.h"
#include "registry.h"
#include "scheduler.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * orchd's HTTP API for real: orch_api on 127.0.0.1 port 0 over the state, a store in a
 * temporary directory, the reconciler, the registry and an agent endpoint without agents.
 * Requests go through lib/httpclient from a thread, while the test's thread runs the loop
 * (all of orchd's objects stay on that thread). Nodes are registered directly in the state.
 */

#define ADMIN "admin-token-for-the-tests"

struct harness {
        char dir[64];
        uv_loop_t loop;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_agents *agents;
        struct orch_reconciler *rc;
        struct orch_registry *reg;
        struct orch_api *api;
        int port;
        bool api_freed;
};

static void on_event(void *userdata, uint64_t index, json_t *event)
{
        struct harness *h = userdata;

        orch_registry_on_event(h->reg, event);
        orch_api_publish_event(h->api, index, event);
}

static void add_node(struct harness *h, const char *name, uint32_t cpu, uint64_t mem)
{
        struct orch_node *node;

        ck_assert_int_ge(orch_state_upsert_node(h->st, name, &node), 0);
        node->cpu_millis = cpu;
        node->memory = mem;
        node->address = strdup("127.0.0.1");
        node->labels = calloc(2, sizeof *node->labels);
        node->labels[0] = (struct orch_label){strdup("zone"), strdup("eu-1")};
        node->n_labels = 1;
        orch_strv_push(&node->drivers, "exec");
        node->last_seen = orch_realtime_msec();
        node->last_heard_usec = orch_now_usec();
        orch_state_set_node_state(h->st, node, ORCH_NODE_READY);
        ck_assert_int_eq(orch_state_flush(h->st), 0);
}

static void harness_init(struct harness *h)
{
        static const struct orch_reconciler_ops ops = {orch_agents_start_instance, orch_agents_stop_instance,
                                                       orch_agents_flush};
        struct orch_agents_config ac = {.listen = "127.0.0.1:0", .join_token = "join-token-for-the-tests"};

        memset(h, 0, sizeof *h);
        orch_strlcpy(h->dir, "/tmp/orch-test-api-XXXXXX", sizeof h->dir);
        ck_assert_ptr_nonnull(mkdtemp(h->dir));
        ck_assert_int_eq(uv_loop_init(&h->loop), 0);
        ck_assert_int_eq(orch_store_open(h->dir, NULL, &h->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(h->store, &h->st), 0);
        ck_assert_int_eq(orch_agents_new(&h->loop, h->st, &ac, &h->agents), 0);
        ck_assert_int_eq(orch_reconciler_new(&h->loop, h->st, &ops, h->agents, &h->rc), 0);
        orch_agents_set_reconciler(h->agents, h->rc);
        ck_assert_int_eq(orch_registry_new(&h->loop, h->st, &h->reg), 0);
        {
                struct orch_api_config cfg = {
                        .listen = "127.0.0.1:0",
                        .admin_token = ADMIN,
                        .st = h->st,
                        .agents = h->agents,
                        .rc = h->rc,
                        .registry = h->reg,
                };
                ck_assert_int_eq(orch_api_new(&h->loop, &cfg, &h->api), 0);
        }
        h->port = orch_api_port(h->api);
        ck_assert_int_gt(h->port, 0);
        h->st->on_event = on_event;
        h->st->on_event_userdata = h;
        add_node(h, "n1", 2000, 4ULL << 30);
        add_node(h, "n2", 2000, 4ULL << 30);
}

static void api_freed(void *userdata)
{
        struct harness *h = userdata;
        h->api_freed = true;
}

static void harness_release(struct harness *h)
{
        char cmd[128];

        orch_api_free(h->api, api_freed, h);
        while (!h->api_freed)
                uv_run(&h->loop, UV_RUN_ONCE);
        h->api = NULL;
        h->st->on_event = NULL;
        orch_agents_close(h->agents);
        orch_reconciler_close(h->rc);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&h->loop), 0);
        orch_registry_free(h->reg);
        orch_state_free(h->st);
        orch_store_close(h->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
        ck_assert_int_eq(system(cmd), 0);
}

/* Runs the loop for about `ms`. */
static void pump(struct harness *h, uint64_t ms)
{
        uint64_t end = orch_now_usec() + ms * 1000;

        do {
                uv_run(&h->loop, UV_RUN_NOWAIT);
                usleep(500);
        } while (orch_now_usec() < end);
}

/* --- HTTP from a thread --------------------------------------------------------------------- */

struct call {
        int port;
        const char *token;
        const char *method;
        char target[512];
        const char *body;
        pthread_t thread;
        int done;
        int r;
        struct orch_http_response resp;
};

static void *call_main(void *arg)
{
        struct call *c = arg;
        struct orch_httpclient *hc = NULL;
        char url[64];
        struct orch_httpclient_request req = {
                .method = c->method,
                .target = c->target,
                .body = c->body,
                .body_len = c->body ? strlen(c->body) : 0,
                .content_type = c->body ? "application/yaml" : NULL,
        };

        orch_snprintf(url, sizeof url, "http://127.0.0.1:%d", c->port);
        c->r = orch_httpclient_new(url, &hc);
        if (c->r >= 0 && c->token)
                c->r = orch_httpclient_set_token(hc, c->token);
        if (c->r >= 0)
                c->r = orch_httpclient_request(hc, &req, &c->resp);
        orch_httpclient_free(hc);
        __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
        return NULL;
}

static void call_start(struct harness *h, struct call *c, const char *token, const char *method,
                       const char *target, const char *body)
{
        memset(c, 0, sizeof *c);
        c->port = h->port;
        c->token = token;
        c->method = method;
        orch_strlcpy(c->target, target, sizeof c->target);
        c->body = body;
        ck_assert_int_eq(pthread_create(&c->thread, NULL, call_main, c), 0);
}

static bool call_done(struct call *c)
{
        return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
}

static void call_finish(struct harness *h, struct call *c)
{
        uint64_t end = orch_now_usec() + 10 * 1000 * 1000;

        while (!call_done(c) && orch_now_usec() < end)
                pump(h, 1);
        ck_assert_msg(call_done(c), "%s %s: no answer", c->method, c->target);
        pthread_join(c->thread, NULL);
        ck_assert_msg(c->r == 0, "%s %s: %s", c->method, c->target, strerror(-c->r));
}

/* A whole request; returns the status, and the body parsed as JSON in *ret (when asked). */
static int http_tok(struct harness *h, const char *token, const char *method, const char *target,
                    const char *body, json_t **ret)
{
        struct call c;
        int status;

        call_start(h, &c, token, method, target, body);
        call_finish(h, &c);
        status = c.resp.status;
        if (ret) {
                json_error_t err;
                *ret = json_loadb(c.resp.body ? c.resp.body : "", c.resp.body_len, 0, &err);
                ck_assert_msg(*ret != NULL, "%s %s: body is not JSON (%s): %s", method, target, err.text,
                              c.resp.body ? c.resp.body : "");
        }
        orch_http_response_release(&c.resp);
        return status;
}

static int http(struct harness *h, const char *method, const char *target, const char *body, json_t **ret)
{
        return http_tok(h, ADMIN, method, target, body, ret);
}

/* An error answer: the status and a non-empty {"error"}. */
static void expect_error(struct harness *h, const char *method, const char *target, const char *body,
                         int status)
{
        json_t *j = NULL;
        int s = http(h, method, target, body, &j);
        const char *e = json_string_value(json_object_get(j, "error"));

        ck_assert_msg(s == status, "%s %s: status %d, expected %d", method, target, s, status);
        ck_assert_msg(e && *e, "%s %s: no error message", method, target);
        json_decref(j);
}

static void expect_keys(const json_t *o, const char *const *keys)
{
        ck_assert(json_is_object(o));
        for (size_t i = 0; keys[i]; i++)
                ck_assert_msg(json_object_get(o, keys[i]) != NULL, "key %s missing", keys[i]);
}

static const char web_yaml[] = "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '100']\n"
                               "ports: [{name: http}]\nresources: {cpu: 500m, memory: 256Mi}\n"
                               "route: {path: /web, port: http}\n";

/* Applies and lets the reconciler place. */
static void apply_ok(struct harness *h, const char *yaml, const char *change)
{
        json_t *j = NULL, *res;

        ck_assert_int_eq(http(h, "POST", "/v1/apply", yaml, &j), 200);
        res = json_array_get(json_object_get(j, "services"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(res, "change")), change);
        json_decref(j);
        pump(h, 20);
}

/* --- tests ---------------------------------------------------------------------------------- */

START_TEST(test_auth)
{
        struct harness h;
        struct call c;
        json_t *j = NULL;

        harness_init(&h);
        /* healthz needs no token */
        call_start(&h, &c, NULL, "GET", "/healthz", NULL);
        call_finish(&h, &c);
        ck_assert_int_eq(c.resp.status, 200);
        ck_assert_str_eq(c.resp.body, "ok\n");
        orch_http_response_release(&c.resp);

        /* everything else does: 401 with an {"error"} and a challenge */
        call_start(&h, &c, NULL, "GET", "/v1/services", NULL);
        call_finish(&h, &c);
        ck_assert_int_eq(c.resp.status, 401);
        ck_assert_ptr_nonnull(orch_http_response_header(&c.resp, "WWW-Authenticate"));
        j = json_loads(c.resp.body, 0, NULL);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "error")));
        json_decref(j);
        orch_http_response_release(&c.resp);

        ck_assert_int_eq(http_tok(&h, "wrong-token", "GET", "/v1/services", NULL, NULL), 401);
        ck_assert_int_eq(http_tok(&h, ADMIN "x", "GET", "/v1/nodes", NULL, NULL), 401);
        ck_assert_int_eq(http_tok(&h, NULL, "POST", "/v1/apply", web_yaml, NULL), 401);
        ck_assert_int_eq(http_tok(&h, NULL, "GET", "/metrics", NULL, NULL), 401);
        /* the refused apply changed nothing */
        ck_assert_uint_eq(h.st->n_services, 0);
        ck_assert_int_eq(http(&h, "GET", "/v1/services", NULL, NULL), 200);
        harness_release(&h);
}
END_TEST

START_TEST(test_apply_create_update_unchanged)
{
        struct harness h;
        json_t *j = NULL, *res;
        struct orch_svc *svc;

        harness_init(&h);
        ck_assert_int_eq(http(&h, "POST", "/v1/apply", web_yaml, &j), 200);
        res = json_array_get(json_object_get(j, "services"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(res, "name")), "web");
        ck_assert_str_eq(json_string_value(json_object_get(res, "change")), "created");
        ck_assert_uint_eq(strlen(json_string_value(json_object_get(res, "revision"))), ORCH_REVISION_LEN);
        json_decref(j);
        svc = orch_state_service(h.st, "web");
        ck_assert_ptr_nonnull(svc);
        pump(&h, 20);
        ck_assert_uint_eq(h.st->n_instances, 2);

        apply_ok(&h, web_yaml, "unchanged");

        /* replicas only: updated, same revision, no roll */
        {
                char rev[ORCH_REVISION_LEN + 1];
                orch_strlcpy(rev, svc->revision, sizeof rev);
                ck_assert_int_eq(http(&h, "POST", "/v1/apply",
                                      "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n"
                                      "ports: [{name: http}]\nresources: {cpu: 500m, memory: 256Mi}\n"
                                      "route: {path: /web, port: http}\n",
                                      &j),
                                 200);
                res = json_array_get(json_object_get(j, "services"), 0);
                ck_assert_str_eq(json_string_value(json_object_get(res, "change")), "updated");
                ck_assert(json_is_false(json_object_get(res, "rolls")));
                ck_assert_str_eq(svc->revision, rev);
                json_decref(j);
        }

        /* the JSON form is accepted too */
        ck_assert_int_eq(http(&h, "POST", "/v1/apply",
                              "{\"kind\": \"service\", \"name\": \"api\", \"command\": [\"/bin/true\"]}",
                              &j),
                         200);
        json_decref(j);
        ck_assert_ptr_nonnull(orch_state_service(h.st, "api"));
        harness_release(&h);
}
END_TEST

START_TEST(test_apply_invalid_changes_nothing)
{
        struct harness h;
        json_t *j = NULL, *errs, *e0;
        uint64_t events, gen;

        harness_init(&h);
        events = h.st->event_index;
        gen = h.st->generation;

        /* an unknown key: 400 with positions */
        ck_assert_int_eq(http(&h, "POST", "/v1/apply",
                              "kind: service\nname: web\ncommand: [/bin/true]\nreplicaz: 2\n", &j),
                         400);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(j, "error")));
        errs = json_object_get(j, "errors");
        ck_assert_uint_ge(json_array_size(errs), 1);
        e0 = json_array_get(errs, 0);
        ck_assert_int_eq(json_integer_value(json_object_get(e0, "line")), 4);
        ck_assert_int_eq(json_integer_value(json_object_get(e0, "column")), 1);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(e0, "message")));
        ck_assert_msg(strstr(json_string_value(json_object_get(j, "error")), "replicas"),
                      "a did-you-mean: %s", json_string_value(json_object_get(j, "error")));
        json_decref(j);

        /* two services, the second invalid: neither is applied */
        ck_assert_int_eq(http(&h, "POST", "/v1/apply",
                              "kind: service\nname: good\ncommand: [/bin/true]\n---\n"
                              "kind: service\nname: bad\ncommand: [/bin/true]\nreplicas: many\n",
                              &j),
                         400);
        e0 = json_array_get(json_object_get(j, "errors"), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(e0, "line")), 8);
        json_decref(j);

        /* a duplicate name, an empty body, YAML that is not YAML */
        expect_error(&h, "POST", "/v1/apply",
                     "kind: service\nname: dup\ncommand: [/bin/true]\n---\n"
                     "kind: service\nname: dup\ncommand: [/bin/true]\n",
                     400);
        expect_error(&h, "POST", "/v1/apply", "", 400);
        expect_error(&h, "POST", "/v1/apply", "kind: [unclosed\n", 400);

        pump(&h, 20);
        ck_assert_uint_eq(h.st->n_services, 0);
        ck_assert_uint_eq(h.st->n_instances, 0);
        ck_assert_uint_eq(h.st->event_index, events);
        ck_assert_uint_eq(h.st->generation, gen);
        ck_assert_int_eq(http(&h, "GET", "/v1/services", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 0);
        json_decref(j);
        harness_release(&h);
}
END_TEST

START_TEST(test_apply_dry_run_changes_nothing)
{
        struct harness h;
        json_t *j = NULL, *res, *pl;
        struct orch_node *n1, *n2;
        uint64_t events, gen;
        struct orch_sched_node_info before1, before2, after1, after2;

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        n1 = orch_state_node(h.st, "n1");
        n2 = orch_state_node(h.st, "n2");
        events = h.st->event_index;
        gen = h.st->generation;
        ck_assert_int_eq(orch_sched_node_get(h.st->sched, (uint32_t)n1->sched_slot, &before1), 0);
        ck_assert_int_eq(orch_sched_node_get(h.st->sched, (uint32_t)n2->sched_slot, &before2), 0);

        ck_assert_int_eq(http(&h, "POST", "/v1/apply?dry_run=1",
                              "kind: service\nname: api\nreplicas: 3\ncommand: [/bin/true]\n"
                              "resources: {cpu: 1, memory: 1Gi}\n",
                              &j),
                         200);
        ck_assert(json_is_true(json_object_get(j, "dry_run")));
        res = json_array_get(json_object_get(j, "services"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(res, "change")), "created");
        pl = json_object_get(res, "placements");
        /* 2 nodes of 2 cores with 0.5 taken each: two fit, the third waits with a reason */
        ck_assert_uint_eq(json_array_size(pl), 3);
        ck_assert_ptr_nonnull(json_string_value(json_object_get(json_array_get(pl, 0), "node")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(json_array_get(pl, 1), "node")));
        ck_assert_ptr_nonnull(json_string_value(json_object_get(json_array_get(pl, 2), "pending")));
        json_decref(j);

        /* a dry update shows the changed fields */
        ck_assert_int_eq(http(&h, "POST", "/v1/apply?dry_run=true",
                              "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '200']\n"
                              "ports: [{name: http}]\nresources: {cpu: 500m, memory: 256Mi}\n"
                              "route: {path: /web, port: http}\n",
                              &j),
                         200);
        res = json_array_get(json_object_get(j, "services"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(res, "change")), "updated");
        ck_assert(json_is_true(json_object_get(res, "rolls")));
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(res, "changed_fields"), 0)),
                         "command");
        json_decref(j);

        pump(&h, 20);
        ck_assert_ptr_null(orch_state_service(h.st, "api"));
        ck_assert_uint_eq(h.st->n_services, 1);
        ck_assert_uint_eq(h.st->n_instances, 2);
        ck_assert_uint_eq(h.st->event_index, events);
        ck_assert_uint_eq(h.st->generation, gen);
        ck_assert_int_eq(orch_state_service(h.st, "web")->rollout.state, ORCH_ROLLOUT_NONE);
        /* the scheduler's accounting is as it was */
        ck_assert_int_eq(orch_sched_node_get(h.st->sched, (uint32_t)n1->sched_slot, &after1), 0);
        ck_assert_int_eq(orch_sched_node_get(h.st->sched, (uint32_t)n2->sched_slot, &after2), 0);
        ck_assert_uint_eq(after1.cpu_allocated, before1.cpu_allocated);
        ck_assert_uint_eq(after1.memory_allocated, before1.memory_allocated);
        ck_assert_uint_eq(after1.instances, before1.instances);
        ck_assert_uint_eq(after2.cpu_allocated, before2.cpu_allocated);
        ck_assert_uint_eq(after2.instances, before2.instances);
        ck_assert_uint_eq(n1->alloc_cpu_millis + n2->alloc_cpu_millis, 1000);
        ck_assert_uint_eq(orch_sched_service_count(h.st->sched, "api", (uint32_t)n1->sched_slot), 0);
        harness_release(&h);
}
END_TEST

START_TEST(test_apply_prune)
{
        struct harness h;
        json_t *j = NULL, *svcs;
        bool deleted = false;

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        /* a body that holds no service (an empty list, comments, a lone ---) is refused: with prune it
         * would delete everything */
        ck_assert_int_eq(http(&h, "POST", "/v1/apply?prune=1", "[]", NULL), 400);
        ck_assert_int_eq(http(&h, "POST", "/v1/apply?prune=1", "# nothing\n---\n", NULL), 400);
        ck_assert(!orch_state_service(h.st, "web")->deleting);
        ck_assert_int_eq(http(&h, "POST", "/v1/apply?prune=1",
                              "kind: service\nname: api\ncommand: [/bin/true]\n", &j),
                         200);
        svcs = json_object_get(j, "services");
        for (size_t i = 0; i < json_array_size(svcs); i++) {
                json_t *r = json_array_get(svcs, i);
                if (streq(json_string_value(json_object_get(r, "name")), "web"))
                        deleted = streq(json_string_value(json_object_get(r, "change")), "deleted");
        }
        ck_assert(deleted);
        json_decref(j);
        ck_assert(orch_state_service(h.st, "web")->deleting);
        harness_release(&h);
}
END_TEST

START_TEST(test_services_endpoints)
{
        struct harness h;
        json_t *j = NULL, *o;
        static const char *const keys[] = {"name", "replicas", "ready", "revision", "route", NULL};

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        apply_ok(&h, "kind: service\nname: api\ncommand: [/bin/true]\n", "created");

        ck_assert_int_eq(http(&h, "GET", "/v1/services", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 2);
        /* sorted by name */
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "name")), "api");
        o = json_array_get(j, 1);
        expect_keys(o, keys);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "replicas")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "ready")), 0);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "route"), "path")), "/web");
        ck_assert(json_is_null(json_object_get(json_array_get(j, 0), "route")));
        json_decref(j);

        ck_assert_int_eq(http(&h, "GET", "/v1/services/web", NULL, &j), 200);
        expect_keys(j, keys);
        ck_assert(json_is_object(json_object_get(j, "spec")));
        json_decref(j);
        expect_error(&h, "GET", "/v1/services/nope", NULL, 404);

        /* scale */
        ck_assert_int_eq(http(&h, "POST", "/v1/services/web/scale", "{\"replicas\": 3}", &j), 200);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "replicas")), 3);
        json_decref(j);
        pump(&h, 20);
        ck_assert_uint_eq(orch_state_service(h.st, "web")->spec->replicas, 3);
        expect_error(&h, "POST", "/v1/services/web/scale", "{\"replicas\": -1}", 400);
        expect_error(&h, "POST", "/v1/services/web/scale", "{\"replicas\": \"3\"}", 400);
        expect_error(&h, "POST", "/v1/services/web/scale", "{\"replicas\": 2.5}", 400);
        expect_error(&h, "POST", "/v1/services/web/scale", "[3]", 400);
        expect_error(&h, "POST", "/v1/services/web/scale", "not json", 400);
        expect_error(&h, "POST", "/v1/services/web/scale", "{\"replicas\": 100001}", 400);
        expect_error(&h, "POST", "/v1/services/nope/scale", "{\"replicas\": 1}", 404);
        ck_assert_uint_eq(orch_state_service(h.st, "web")->spec->replicas, 3);

        /* rollout status, and undo without a previous revision */
        ck_assert_int_eq(http(&h, "GET", "/v1/services/web/rollout", NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "service")), "web");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "new")), 3);
        json_decref(j);
        expect_error(&h, "POST", "/v1/services/web/rollout/undo", NULL, 409);

        /* delete: the record stays while instances stop; a scale of a deleting service conflicts */
        ck_assert_int_eq(http(&h, "DELETE", "/v1/services/web", NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "change")), "deleted");
        json_decref(j);
        ck_assert(orch_state_service(h.st, "web")->deleting);
        expect_error(&h, "POST", "/v1/services/web/scale", "{\"replicas\": 1}", 409);
        expect_error(&h, "DELETE", "/v1/services/nope", NULL, 404);

        /* unknown paths and methods */
        expect_error(&h, "GET", "/v1/nothing", NULL, 404);
        expect_error(&h, "PUT", "/v1/services", NULL, 405);
        harness_release(&h);
}
END_TEST

START_TEST(test_instances_and_nodes)
{
        struct harness h;
        json_t *j = NULL, *o;
        const char *id;
        char idbuf[ORCH_INSTANCE_ID_MAX + 1], target[128];
        static const char *const ikeys[] = {"id",         "service", "revision", "node",   "state",
                                            "pid",        "address", "ports",    "health", "restarts",
                                            "started_at", "cgroup",  NULL};
        static const char *const nkeys[] = {"name",      "address",   "state",     "labels", "capacity",
                                            "allocated", "instances", "last_seen", NULL};

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        apply_ok(&h, "kind: service\nname: api\ncommand: [/bin/true]\n", "created");

        ck_assert_int_eq(http(&h, "GET", "/v1/instances", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 3);
        o = json_array_get(j, 1);
        expect_keys(o, ikeys);
        ck_assert_str_eq(json_string_value(json_object_get(o, "service")), "web");
        ck_assert_str_eq(json_string_value(json_object_get(o, "state")), "pending");
        ck_assert_str_eq(json_string_value(json_object_get(o, "health")), "unknown");
        ck_assert(json_is_object(json_object_get(o, "ports")));
        id = json_string_value(json_object_get(o, "id"));
        orch_strlcpy(idbuf, id, sizeof idbuf);
        json_decref(j);

        ck_assert_int_eq(http(&h, "GET", "/v1/instances?service=web", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 2);
        json_decref(j);
        ck_assert_int_eq(http(&h, "GET", "/v1/instances?service=nope", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 0);
        json_decref(j);
        ck_assert_int_eq(http(&h, "GET", "/v1/instances?node=n1", NULL, &j), 200);
        for (size_t i = 0; i < json_array_size(j); i++)
                ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, i), "node")), "n1");
        json_decref(j);

        orch_snprintf(target, sizeof target, "/v1/instances/%s", idbuf);
        ck_assert_int_eq(http(&h, "GET", target, NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "id")), idbuf);
        json_decref(j);
        expect_error(&h, "GET", "/v1/instances/web-00000000", NULL, 404);

        ck_assert_int_eq(http(&h, "GET", "/v1/nodes", NULL, &j), 200);
        ck_assert_uint_eq(json_array_size(j), 2);
        o = json_array_get(j, 0);
        expect_keys(o, nkeys);
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")), "n1");
        ck_assert_str_eq(json_string_value(json_object_get(o, "state")), "ready");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "labels"), "zone")), "eu-1");
        ck_assert(json_is_number(json_object_get(json_object_get(o, "capacity"), "cpu")));
        ck_assert(json_is_integer(json_object_get(json_object_get(o, "capacity"), "memory")));
        ck_assert(json_is_number(json_object_get(json_object_get(o, "allocated"), "cpu")));
        ck_assert(json_is_integer(json_object_get(json_object_get(o, "allocated"), "memory")));
        json_decref(j);

        ck_assert_int_eq(http(&h, "GET", "/v1/nodes/n2", NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "name")), "n2");
        json_decref(j);
        expect_error(&h, "GET", "/v1/nodes/n9", NULL, 404);

        /* drain and uncordon */
        ck_assert_int_eq(http(&h, "POST", "/v1/nodes/n1/drain", NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "draining");
        json_decref(j);
        ck_assert(orch_state_node(h.st, "n1")->cordoned);
        ck_assert_int_eq(http(&h, "POST", "/v1/nodes/n1/uncordon", NULL, &j), 200);
        ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "ready");
        json_decref(j);
        expect_error(&h, "POST", "/v1/nodes/n9/drain", NULL, 404);

        /* logs: unknown instance, and an instance on a node without an agent connection */
        expect_error(&h, "GET", "/v1/logs/web-00000000", NULL, 404);
        orch_snprintf(target, sizeof target, "/v1/logs/%s", idbuf);
        expect_error(&h, "GET", target, NULL, 503);
        orch_snprintf(target, sizeof target, "/v1/logs/%s?tail=abc", idbuf);
        expect_error(&h, "GET", target, NULL, 400);
        harness_release(&h);
}
END_TEST

START_TEST(test_events)
{
        struct harness h;
        struct call c;
        uint64_t last = 0, n = 0, mid = 0;
        char target[64];
        const char *p;

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");

        call_start(&h, &c, ADMIN, "GET", "/v1/events", NULL);
        call_finish(&h, &c);
        ck_assert_int_eq(c.resp.status, 200);
        ck_assert_ptr_nonnull(strstr(orch_http_response_header(&c.resp, "Content-Type"), "ndjson"));
        /* one JSON object a line, each with a rising index and a type */
        for (p = c.resp.body; p && *p;) {
                const char *nl = strchr(p, '\n');
                json_t *ev;
                uint64_t idx;
                ck_assert_ptr_nonnull(nl);
                ev = json_loadb(p, (size_t)(nl - p), 0, NULL);
                ck_assert_ptr_nonnull(ev);
                idx = (uint64_t)json_integer_value(json_object_get(ev, "index"));
                ck_assert_uint_gt(idx, last);
                ck_assert_ptr_nonnull(json_string_value(json_object_get(ev, "type")));
                last = idx;
                if (++n == 2)
                        mid = idx;
                json_decref(ev);
                p = nl + 1;
        }
        ck_assert_uint_ge(n, 3); /* applied, and two placements */
        ck_assert_uint_eq(last, h.st->event_index);
        orch_http_response_release(&c.resp);

        orch_snprintf(target, sizeof target, "/v1/events?since=%llu", (unsigned long long)mid);
        call_start(&h, &c, ADMIN, "GET", target, NULL);
        call_finish(&h, &c);
        ck_assert_int_eq(c.resp.status, 200);
        {
                json_t *ev = json_loadb(c.resp.body, strcspn(c.resp.body, "\n"), 0, NULL);
                ck_assert_ptr_nonnull(ev);
                ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(ev, "index")), mid + 1);
                json_decref(ev);
        }
        orch_http_response_release(&c.resp);
        expect_error(&h, "GET", "/v1/events?since=abc", NULL, 400);
        expect_error(&h, "GET", "/v1/events?since=-1", NULL, 400);
        harness_release(&h);
}
END_TEST

START_TEST(test_registry_and_metrics)
{
        struct harness h;
        struct call c;
        json_t *j = NULL;

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        ck_assert_int_eq(http(&h, "GET", "/v1/registry/web", NULL, &j), 200);
        ck_assert(json_is_integer(json_object_get(j, "index")));
        ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 0);
        json_decref(j);
        expect_error(&h, "GET", "/v1/registry/web?index=x", NULL, 400);
        expect_error(&h, "GET", "/v1/registry/web?index=1&wait=soon", NULL, 400);

        call_start(&h, &c, ADMIN, "GET", "/metrics", NULL);
        call_finish(&h, &c);
        ck_assert_int_eq(c.resp.status, 200);
        ck_assert_ptr_nonnull(strstr(c.resp.body, "orch_instances{state=\"pending\"} 2\n"));
        ck_assert_ptr_nonnull(strstr(c.resp.body, "orch_nodes{state=\"ready\"} 2\n"));
        ck_assert_ptr_nonnull(strstr(c.resp.body, "orch_services 1\n"));
        ck_assert_ptr_nonnull(strstr(c.resp.body, "orch_placements_total 2\n"));
        orch_http_response_release(&c.resp);
        harness_release(&h);
}
END_TEST

START_TEST(test_apply_is_durable_before_the_answer)
{
        struct harness h;
        char *value = NULL;
        size_t len;

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        /* what the client was told is in the store */
        ck_assert_int_eq(orch_store_get(h.store, ORCH_STORE_SERVICES, "web", &value, &len), 0);
        free(value);
        ck_assert_int_eq(http(&h, "POST", "/v1/services/web/scale", "{\"replicas\": 5}", NULL), 200);
        ck_assert_int_eq(orch_store_get(h.store, ORCH_STORE_SERVICES, "web", &value, &len), 0);
        ck_assert_ptr_nonnull(strstr(value, "\"replicas\":5"));
        free(value);
        ck_assert_int_eq(http(&h, "POST", "/v1/nodes/n2/drain", NULL, NULL), 200);
        ck_assert_int_eq(orch_store_get(h.store, ORCH_STORE_NODES, "n2", &value, &len), 0);
        ck_assert_ptr_nonnull(strstr(value, "\"cordoned\":true"));
        free(value);
        ck_assert_int_eq(http(&h, "DELETE", "/v1/services/web", NULL, NULL), 200);
        ck_assert_int_eq(orch_store_get(h.store, ORCH_STORE_SERVICES, "web", &value, &len), 0);
        ck_assert_ptr_nonnull(strstr(value, "\"deleting\":true"));
        free(value);
        harness_release(&h);
}
END_TEST

static void make_available(struct harness *h, const char *service)
{
        struct orch_svc *svc = orch_state_service(h->st, service);
        struct orch_list *p;
        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *i = orch_list_entry(p, struct orch_inst, svc_link);
                if (orch_inst_is_live(i) && i->node && i->state != ORCH_INSTANCE_RUNNING) {
                        i->state = ORCH_INSTANCE_RUNNING;
                        i->confirmed = true;
                        i->healthy_since = orch_realtime_msec() - 1000;
                        orch_state_instance_changed(h->st, i);
                }
        }
        orch_state_mark_dirty(h->st, svc);
}

static size_t live_count(struct harness *h, const char *service)
{
        struct orch_svc *svc = orch_state_service(h->st, service);
        struct orch_list *p;
        size_t n = 0;
        orch_list_foreach (p, &svc->instances)
                if (orch_inst_is_live(orch_list_entry(p, struct orch_inst, svc_link)))
                        n++;
        return n;
}

/* Regression: a dry run makes the reconciler retry every pending placement (the release of the
 * preview's accounting raises the scheduler's epoch) */
START_TEST(test_dry_run_moves_sched_epoch)
{
        struct harness h;
        uint64_t failures;

        harness_init(&h);
        apply_ok(&h, "kind: service\nname: big\ncommand: [/bin/true]\nresources: {memory: 64Gi}\n",
                 "created");
        pump(&h, 50);
        failures = orch_reconciler_stats(h.rc)->placement_failures;
        ck_assert_uint_ge(failures, 1);
        ck_assert_int_eq(http(&h, "POST", "/v1/apply?dry_run=1",
                              "kind: service\nname: api\nreplicas: 2\ncommand: [/bin/true]\n", NULL),
                         200);
        pump(&h, 50);
        ck_assert_uint_eq(orch_reconciler_stats(h.rc)->placement_failures, failures);
        harness_release(&h);
}
END_TEST

static const char r1[] = "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n"
                         "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s, progress_deadline: 1s,"
                         " auto_revert: false}\n";
static const char r2[] = "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '200']\n"
                         "update: {max_surge: 1, max_unavailable: 0, min_healthy: 0s, progress_deadline: 1s,"
                         " auto_revert: false}\n";

/* Regression: a finished rollout's state is not written: after a restart it is "progressing" again */
START_TEST(test_rollout_complete_not_persisted)
{
        struct harness h;
        struct orch_state *st2;

        harness_init(&h);
        apply_ok(&h, r1, "created");
        make_available(&h, "web");
        pump(&h, 20);
        apply_ok(&h, r2, "updated");
        for (int i = 0; i < 10; i++) {
                struct orch_svc *svc = orch_state_service(h.st, "web");
                struct orch_list *p, *t;
                /* the agents confirm stops at once */
                orch_list_foreach_safe (p, t, &svc->instances) {
                        struct orch_inst *in = orch_list_entry(p, struct orch_inst, svc_link);
                        if (!in->desired_run && in->node) {
                                in->state = ORCH_INSTANCE_EXITED;
                                orch_state_release_resources(h.st, in);
                                orch_state_unplace_instance(h.st, in, NULL);
                        }
                }
                make_available(&h, "web");
                pump(&h, 20);
        }
        ck_assert_int_eq(orch_state_service(h.st, "web")->rollout.state, ORCH_ROLLOUT_COMPLETE);
        pump(&h, 300);
        ck_assert_int_eq(orch_state_new(h.store, &st2), 0);
        ck_assert_int_eq(orch_state_load(st2), 0);
        ck_assert_msg(orch_state_service(st2, "web")->rollout.state == ORCH_ROLLOUT_COMPLETE,
                      "rollout state after a reload: %s",
                      orch_rollout_state_to_string(orch_state_service(st2, "web")->rollout.state));
        orch_state_free(st2);
        harness_release(&h);
}
END_TEST

/* Regression: after a failed rollout without auto_revert, a lost instance is never replaced */
START_TEST(test_failed_rollout_does_not_replace_lost)
{
        struct harness h;
        struct orch_svc *svc;
        struct orch_list *p;

        harness_init(&h);
        apply_ok(&h, r1, "created");
        make_available(&h, "web");
        pump(&h, 20);
        apply_ok(&h, r2, "updated");
        /* the new instance never becomes available: the rollout fails at its deadline */
        pump(&h, 1600);
        svc = orch_state_service(h.st, "web");
        ck_assert_int_eq(svc->rollout.state, ORCH_ROLLOUT_FAILED);
        ck_assert_uint_eq(live_count(&h, "web"), 4);
        /* two of the three old instances are lost with their node */
        int lost = 0;
        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *in = orch_list_entry(p, struct orch_inst, svc_link);
                if (in->state == ORCH_INSTANCE_RUNNING && lost++ < 2) {
                        in->state = ORCH_INSTANCE_LOST;
                        in->desired_run = false;
                        orch_state_release_resources(h.st, in);
                        orch_state_instance_changed(h.st, in);
                }
        }
        orch_state_mark_dirty(h.st, svc);
        pump(&h, 300);
        ck_assert_msg(live_count(&h, "web") >= 3, "live instances: %zu of 3 replicas",
                      live_count(&h, "web"));
        harness_release(&h);
}
END_TEST

/* Regression: the reason of a placed instance does not survive a reload */
START_TEST(test_reason_lost_on_load)
{
        struct harness h;
        struct orch_state *st2;
        struct orch_inst *in;
        char id[ORCH_INSTANCE_ID_MAX + 1];

        harness_init(&h);
        apply_ok(&h, web_yaml, "created");
        in = orch_list_entry(orch_state_service(h.st, "web")->instances.next, struct orch_inst, svc_link);
        ck_assert_ptr_nonnull(in->node);
        orch_strlcpy(id, in->id, sizeof id);
        in->state = ORCH_INSTANCE_FAILED;
        orch_state_set_reason(h.st, in, "user nobody does not exist");
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        ck_assert_int_eq(orch_state_new(h.store, &st2), 0);
        ck_assert_int_eq(orch_state_load(st2), 0);
        ck_assert_msg(orch_state_instance(st2, id)->reason != NULL, "reason lost on load");
        orch_state_free(st2);
        harness_release(&h);
}
END_TEST

static Suite *api_suite(void)
{
        Suite *s = suite_create("api");
        TCase *tc = tcase_create("handlers");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_auth);
        tcase_add_test(tc, test_apply_create_update_unchanged);
        tcase_add_test(tc, test_apply_invalid_changes_nothing);
        tcase_add_test(tc, test_apply_dry_run_changes_nothing);
        tcase_add_test(tc, test_apply_prune);
        tcase_add_test(tc, test_services_endpoints);
        tcase_add_test(tc, test_instances_and_nodes);
        tcase_add_test(tc, test_events);
        tcase_add_test(tc, test_registry_and_metrics);
        tcase_add_test(tc, test_apply_is_durable_before_the_answer);
        tcase_add_test(tc, test_dry_run_moves_sched_epoch);
        tcase_add_test(tc, test_rollout_complete_not_persisted);
        tcase_add_test(tc, test_failed_rollout_does_not_replace_lost);
        tcase_add_test(tc, test_reason_lost_on_load);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(api_suite)
