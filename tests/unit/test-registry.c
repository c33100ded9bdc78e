/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "api.h"
#include "httpclient.h"
#include "json.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * The service registry over the real state and store: instances change the way agents' reports
 * change them, events are published by orch_state_flush() as in orchd, and blocking queries go
 * through the real API (orch_api on port 0) with lib/httpclient from a thread while the test's
 * thread runs the loop.
 */

#define ADMIN "admin-token-for-the-tests"

struct harness {
        char dir[64];
        uv_loop_t loop;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_registry *reg;
        struct orch_api *api;
        int port;
        bool api_freed;
        /* subscriber calls */
        size_t n_notified;
        char last_service[64];
};

static void on_event(void *userdata, uint64_t index, json_t *event)
{
        struct harness *h = userdata;

        orch_registry_on_event(h->reg, event);
        if (h->api)
                orch_api_publish_event(h->api, index, event);
}

static void on_change(void *userdata, const char *service, uint64_t index)
{
        struct harness *h = userdata;

        h->n_notified++;
        orch_strlcpy(h->last_service, service, sizeof h->last_service);
}

static struct orch_node *add_node(struct harness *h, const char *name)
{
        struct orch_node *node;

        ck_assert_int_ge(orch_state_upsert_node(h->st, name, &node), 0);
        node->cpu_millis = 4000;
        node->memory = 8ULL << 30;
        node->address = strdup("10.0.0.1");
        orch_strv_push(&node->drivers, "exec");
        orch_state_set_node_state(h->st, node, ORCH_NODE_READY);
        return node;
}

static struct orch_svc *apply(struct harness *h, const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        const char *change;
        char name[64];

        ck_assert_int_ge(orch_manifest_parse_buffer(&m, "test.yaml", yaml, strlen(yaml), &d), 0);
        ck_assert_uint_eq(m.n_services, 1);
        orch_strlcpy(name, m.services[0]->name, sizeof name);
        ck_assert_int_ge(orch_state_apply_service(h->st, m.services[0], &change), 0);
        free(m.services);
        orch_diags_release(&d);
        ck_assert_int_eq(orch_state_flush(h->st), 0);
        return orch_state_service(h->st, name);
}

static void harness_init(struct harness *h, bool with_api)
{
        memset(h, 0, sizeof *h);
        orch_strlcpy(h->dir, "/tmp/orch-test-registry-XXXXXX", sizeof h->dir);
        ck_assert_ptr_nonnull(mkdtemp(h->dir));
        ck_assert_int_eq(uv_loop_init(&h->loop), 0);
        ck_assert_int_eq(orch_store_open(h->dir, NULL, &h->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(h->store, &h->st), 0);
        ck_assert_int_eq(orch_registry_new(&h->loop, h->st, &h->reg), 0);
        ck_assert_int_eq(orch_registry_subscribe(h->reg, on_change, h), 0);
        h->st->on_event = on_event;
        h->st->on_event_userdata = h;
        if (with_api) {
                struct orch_api_config cfg = {
                        .listen = "127.0.0.1:0", .admin_token = ADMIN, .st = h->st, .registry = h->reg};
                ck_assert_int_eq(orch_api_new(&h->loop, &cfg, &h->api), 0);
                h->port = orch_api_port(h->api);
        }
        add_node(h, "n1");
        add_node(h, "n2");
        ck_assert_int_eq(orch_state_flush(h->st), 0);
}

static void api_freed(void *userdata)
{
        struct harness *h = userdata;
        h->api_freed = true;
}

static void harness_release(struct harness *h)
{
        char cmd[128];

        if (h->api) {
                orch_api_free(h->api, api_freed, h);
                while (!h->api_freed)
                        uv_run(&h->loop, UV_RUN_ONCE);
                h->api = NULL;
        }
        uv_run(&h->loop, UV_RUN_DEFAULT);
        h->st->on_event = NULL;
        orch_registry_free(h->reg);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&h->loop), 0);
        orch_state_free(h->st);
        orch_store_close(h->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
        ck_assert_int_eq(system(cmd), 0);
}

static void pump(struct harness *h, uint64_t ms)
{
        uint64_t end = orch_now_usec() + ms * 1000;

        do {
                uv_run(&h->loop, UV_RUN_NOWAIT);
                usleep(500);
        } while (orch_now_usec() < end);
}

/* A placed instance of svc on node, as the reconciler makes one. */
static struct orch_inst *place(struct harness *h, struct orch_svc *svc, struct orch_node *node)
{
        struct orch_inst *inst;

        ck_assert_int_eq(orch_state_new_instance(h->st, svc, &inst), 0);
        orch_state_place_instance(h->st, inst, node);
        orch_state_event(
                h->st, ORCH_EVENT_INSTANCE_PLACED,
                json_pack("{s:s, s:s, s:s}", "service", svc->name, "instance", inst->id, "node", node->name),
                "placed");
        ck_assert_int_eq(orch_state_flush(h->st), 0);
        return inst;
}

static void set_port(struct orch_inst *inst, uint16_t port)
{
        for (size_t i = 0; i < inst->n_ports; i++)
                free(inst->ports[i].name);
        free(inst->ports);
        inst->ports = calloc(2, sizeof *inst->ports);
        inst->ports[0] = (struct orch_inst_port){strdup("http"), port};
        inst->n_ports = 1;
}

/* What an agent's report does to the record, and the event it raises, published by a flush. */
static void report(struct harness *h, struct orch_inst *inst, enum orch_instance_state state,
                   enum orch_health_state health, enum orch_event_type ev)
{
        inst->state = state;
        inst->health = health;
        inst->confirmed = true;
        orch_state_instance_changed(h->st, inst);
        orch_state_event(h->st, ev,
                         json_pack("{s:s, s:s}", "service", inst->svc->name, "instance", inst->id),
                         "report");
        ck_assert_int_eq(orch_state_flush(h->st), 0);
}

static size_t n_endpoints(struct harness *h, const char *service, uint64_t *ret_index)
{
        json_t *j = orch_registry_json(h->reg, service);
        size_t n;

        ck_assert_ptr_nonnull(j);
        n = json_array_size(json_object_get(j, "endpoints"));
        if (ret_index)
                *ret_index = (uint64_t)json_integer_value(json_object_get(j, "index"));
        json_decref(j);
        return n;
}

static const char web_yaml[] = "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '100']\n"
                               "ports: [{name: http}]\nroute: {path: /web, port: http}\n";
static const char checked_yaml[] = "kind: service\nname: chk\ncommand: [/bin/sleep, '100']\n"
                                   "ports: [{name: http}]\n"
                                   "health: {type: http, port: http, path: /healthz}\n";

/* --- tests ---------------------------------------------------------------------------------- */

START_TEST(test_endpoint_rule)
{
        struct harness h;
        struct orch_svc *web, *chk;
        struct orch_inst *a, *b;
        struct orch_node *n1;

        harness_init(&h, false);
        n1 = orch_state_node(h.st, "n1");
        web = apply(&h, web_yaml);
        chk = apply(&h, checked_yaml);
        a = place(&h, web, n1);
        b = place(&h, chk, n1);

        /* not before it runs */
        ck_assert(!orch_registry_is_endpoint(a));
        a->state = ORCH_INSTANCE_STARTING;
        ck_assert(!orch_registry_is_endpoint(a));
        /* without a check, running is enough */
        a->state = ORCH_INSTANCE_RUNNING;
        ck_assert(orch_registry_is_endpoint(a));
        a->health = ORCH_HEALTH_FAILING;
        ck_assert(!orch_registry_is_endpoint(a));
        a->health = ORCH_HEALTH_UNKNOWN;
        /* with a check, only passing */
        b->state = ORCH_INSTANCE_RUNNING;
        ck_assert(!orch_registry_is_endpoint(b));
        b->health = ORCH_HEALTH_PASSING;
        ck_assert(orch_registry_is_endpoint(b));
        b->health = ORCH_HEALTH_FAILING;
        ck_assert(!orch_registry_is_endpoint(b));
        /* not one orchd is stopping */
        a->desired_run = false;
        ck_assert(!orch_registry_is_endpoint(a));
        a->desired_run = true;
        /* not on a node that is down */
        orch_state_set_node_state(h.st, n1, ORCH_NODE_DOWN);
        ck_assert(!orch_registry_is_endpoint(a));
        orch_state_set_node_state(h.st, n1, ORCH_NODE_READY);
        ck_assert(orch_registry_is_endpoint(a));
        /* ended instances are not */
        a->state = ORCH_INSTANCE_EXITED;
        ck_assert(!orch_registry_is_endpoint(a));
        a->state = ORCH_INSTANCE_LOST;
        ck_assert(!orch_registry_is_endpoint(a));
        harness_release(&h);
}
END_TEST

START_TEST(test_index_rises_once_per_change)
{
        struct harness h;
        struct orch_svc *web;
        struct orch_inst *a, *b;
        struct orch_node *n1, *n2;
        uint64_t i0, i1, i2, idx;
        json_t *j, *ep;

        harness_init(&h, false);
        n1 = orch_state_node(h.st, "n1");
        n2 = orch_state_node(h.st, "n2");
        web = apply(&h, web_yaml);
        a = place(&h, web, n1);
        b = place(&h, web, n2);
        i0 = orch_registry_index(h.reg);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 0);

        /* placed and starting: no endpoint, no change */
        report(&h, a, ORCH_INSTANCE_STARTING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        ck_assert_uint_eq(orch_registry_index(h.reg), i0);

        /* running: one change */
        set_port(a, 20001);
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        i1 = orch_registry_index(h.reg);
        ck_assert_uint_eq(i1, i0 + 1);
        ck_assert_uint_eq(n_endpoints(&h, "web", &idx), 1);
        ck_assert_uint_eq(idx, i1);
        j = orch_registry_json(h.reg, "web");
        ep = json_array_get(json_object_get(j, "endpoints"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(ep, "instance")), a->id);
        ck_assert_str_eq(json_string_value(json_object_get(ep, "node")), "n1");
        ck_assert_str_eq(json_string_value(json_object_get(ep, "address")), "10.0.0.1");
        ck_assert_int_eq(json_integer_value(json_object_get(ep, "port")), 20001);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(ep, "ports"), "http")), 20001);
        json_decref(j);

        /* an event that changes nothing the registry serves: no change */
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_HEALTH);
        ck_assert_uint_eq(orch_registry_index(h.reg), i1);

        /* two events about the same change in one flush: one change */
        b->state = ORCH_INSTANCE_RUNNING;
        set_port(b, 20002);
        orch_state_instance_changed(h.st, b);
        orch_state_event(h.st, ORCH_EVENT_INSTANCE_STARTED,
                         json_pack("{s:s, s:s}", "service", "web", "instance", b->id), "started");
        orch_state_event(h.st, ORCH_EVENT_INSTANCE_HEALTH,
                         json_pack("{s:s, s:s}", "service", "web", "instance", b->id), "health");
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        i2 = orch_registry_index(h.reg);
        ck_assert_uint_eq(i2, i1 + 1);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 2);

        /* a new port (restarted elsewhere on the node) is a change of the set */
        set_port(b, 20003);
        report(&h, b, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_RESTARTED);
        ck_assert_uint_eq(orch_registry_index(h.reg), i2 + 1);

        /* failing health: out */
        report(&h, b, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_FAILING, ORCH_EVENT_INSTANCE_HEALTH);
        ck_assert_uint_eq(orch_registry_index(h.reg), i2 + 2);
        ck_assert_uint_eq(n_endpoints(&h, "web", &idx), 1);
        ck_assert_uint_eq(idx, i2 + 2);

        /* orchd stops it: out at once (before the agent confirms) */
        a->desired_run = false;
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STOPPING);
        ck_assert_uint_eq(orch_registry_index(h.reg), i2 + 3);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 0);
        harness_release(&h);
}
END_TEST

START_TEST(test_node_events_and_services)
{
        struct harness h;
        struct orch_svc *web, *chk;
        struct orch_inst *a, *b;
        struct orch_node *n1;
        uint64_t i0, web_index, chk_index;
        size_t notified;

        harness_init(&h, false);
        n1 = orch_state_node(h.st, "n1");
        web = apply(&h, web_yaml);
        chk = apply(&h, checked_yaml);
        a = place(&h, web, n1);
        b = place(&h, chk, n1);
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        report(&h, b, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_PASSING, ORCH_EVENT_INSTANCE_HEALTH);
        ck_assert_uint_eq(n_endpoints(&h, "web", &web_index), 1);
        ck_assert_uint_eq(n_endpoints(&h, "chk", &chk_index), 1);
        /* each service remembers the index of its own last change */
        ck_assert_uint_lt(web_index, chk_index);
        i0 = orch_registry_index(h.reg);

        /* the node goes down: both endpoints leave, one change per service */
        orch_state_set_node_state(h.st, n1, ORCH_NODE_DOWN);
        orch_state_event(h.st, ORCH_EVENT_NODE_DOWN, json_pack("{s:s}", "node", "n1"), "down");
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        ck_assert_uint_eq(orch_registry_index(h.reg), i0 + 2);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 0);
        ck_assert_uint_eq(n_endpoints(&h, "chk", NULL), 0);

        /* and back */
        orch_state_set_node_state(h.st, n1, ORCH_NODE_READY);
        orch_state_event(h.st, ORCH_EVENT_NODE_READY, json_pack("{s:s}", "node", "n1"), "back");
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        ck_assert_uint_eq(orch_registry_index(h.reg), i0 + 4);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 1);

        /* a service event tells subscribers (routes may change) without a change of the set */
        notified = h.n_notified;
        apply(&h, "kind: service\nname: web\nreplicas: 2\ncommand: [/bin/sleep, '100']\n"
                  "ports: [{name: http}]\nroute: {path: /other, port: http}\n");
        ck_assert_uint_eq(h.n_notified, notified + 1);
        ck_assert_str_eq(h.last_service, "web");
        ck_assert_uint_eq(orch_registry_index(h.reg), i0 + 4);

        /* a service nobody heard of: an empty set */
        ck_assert_uint_eq(n_endpoints(&h, "nope", NULL), 0);
        harness_release(&h);
}
END_TEST

START_TEST(test_refresh_all_after_load)
{
        struct harness h;
        struct orch_svc *web;
        struct orch_inst *a;
        struct orch_registry *fresh;

        harness_init(&h, false);
        web = apply(&h, web_yaml);
        a = place(&h, web, orch_state_node(h.st, "n1"));
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        /* a registry made after the fact (orchd starting on a loaded state) sees it once refreshed */
        ck_assert_int_eq(orch_registry_new(&h.loop, h.st, &fresh), 0);
        ck_assert_uint_eq(orch_registry_index(fresh), 0);
        orch_registry_refresh_all(fresh);
        ck_assert_uint_eq(orch_registry_index(fresh), 1);
        {
                json_t *j = orch_registry_json(fresh, "web");
                ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 1);
                json_decref(j);
        }
        orch_registry_free(fresh);
        harness_release(&h);
}
END_TEST

/* --- blocking queries through the API ------------------------------------------------------- */

struct call {
        int port;
        char target[256];
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
        struct orch_httpclient_request req = {.method = "GET", .target = c->target};

        orch_snprintf(url, sizeof url, "http://127.0.0.1:%d", c->port);
        c->r = orch_httpclient_new(url, &hc);
        if (c->r >= 0)
                c->r = orch_httpclient_set_token(hc, ADMIN);
        if (c->r >= 0)
                c->r = orch_httpclient_request(hc, &req, &c->resp);
        orch_httpclient_free(hc);
        __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
        return NULL;
}

static void call_start(struct harness *h, struct call *c, const char *target)
{
        memset(c, 0, sizeof *c);
        c->port = h->port;
        orch_strlcpy(c->target, target, sizeof c->target);
        ck_assert_int_eq(pthread_create(&c->thread, NULL, call_main, c), 0);
}

static bool call_done(struct call *c)
{
        return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
}

/* Waits for the answer and returns its body as JSON (the status must be 200). */
static json_t *call_finish(struct harness *h, struct call *c)
{
        uint64_t end = orch_now_usec() + 10 * 1000 * 1000;
        json_t *j;

        while (!call_done(c) && orch_now_usec() < end)
                pump(h, 1);
        ck_assert_msg(call_done(c), "GET %s: no answer", c->target);
        pthread_join(c->thread, NULL);
        ck_assert_int_eq(c->r, 0);
        ck_assert_int_eq(c->resp.status, 200);
        j = json_loads(c->resp.body, 0, NULL);
        ck_assert_ptr_nonnull(j);
        {
                const char *hdr = orch_http_response_header(&c->resp, "X-Orch-Index");
                ck_assert_ptr_nonnull(hdr);
                ck_assert_uint_eq(strtoull(hdr, NULL, 10),
                                  (uint64_t)json_integer_value(json_object_get(j, "index")));
        }
        orch_http_response_release(&c->resp);
        return j;
}

START_TEST(test_blocking_query_answers_on_change)
{
        struct harness h;
        struct orch_svc *web;
        struct orch_inst *a;
        struct call c;
        char target[128];
        uint64_t idx, t0;
        json_t *j;

        harness_init(&h, true);
        web = apply(&h, web_yaml);
        a = place(&h, web, orch_state_node(h.st, "n1"));
        set_port(a, 20001);
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);

        /* without an index: at once */
        call_start(&h, &c, "/v1/registry/web");
        j = call_finish(&h, &c);
        idx = (uint64_t)json_integer_value(json_object_get(j, "index"));
        ck_assert_uint_gt(idx, 0);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 1);
        json_decref(j);

        /* an index below the service's: at once too */
        orch_snprintf(target, sizeof target, "/v1/registry/web?index=%llu&wait=5s",
                      (unsigned long long)(idx - 1));
        call_start(&h, &c, target);
        j = call_finish(&h, &c);
        ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(j, "index")), idx);
        json_decref(j);

        /* at the current index: held until the set changes */
        orch_snprintf(target, sizeof target, "/v1/registry/web?index=%llu&wait=5s", (unsigned long long)idx);
        t0 = orch_now_usec();
        call_start(&h, &c, target);
        pump(&h, 300);
        ck_assert(!call_done(&c));
        /* a change of another service does not answer it */
        {
                struct orch_svc *chk = apply(&h, checked_yaml);
                struct orch_inst *b = place(&h, chk, orch_state_node(h.st, "n2"));
                report(&h, b, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_PASSING, ORCH_EVENT_INSTANCE_HEALTH);
        }
        pump(&h, 100);
        ck_assert(!call_done(&c));
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_FAILING, ORCH_EVENT_INSTANCE_HEALTH);
        j = call_finish(&h, &c);
        ck_assert_uint_lt(orch_now_usec() - t0, 4 * 1000 * 1000);
        ck_assert_uint_gt((uint64_t)json_integer_value(json_object_get(j, "index")), idx);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 0);
        json_decref(j);

        /* a service that does not exist: no endpoints, the registry's index (above 1 by now), and the
         * header's index is the body's (call_finish checks it) */
        call_start(&h, &c, "/v1/registry/nosuch");
        j = call_finish(&h, &c);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 0);
        idx = (uint64_t)json_integer_value(json_object_get(j, "index"));
        ck_assert_uint_gt(idx, 1);
        json_decref(j);
        /* waiting on it (which makes a record for it) never answers with a lower index */
        orch_snprintf(target, sizeof target, "/v1/registry/nosuch?index=%llu&wait=300ms",
                      (unsigned long long)idx);
        call_start(&h, &c, target);
        j = call_finish(&h, &c);
        ck_assert_uint_ge((uint64_t)json_integer_value(json_object_get(j, "index")), idx);
        json_decref(j);
        harness_release(&h);
}
END_TEST

START_TEST(test_blocking_query_times_out)
{
        struct harness h;
        struct orch_svc *web;
        struct orch_inst *a;
        struct call c;
        char target[128];
        uint64_t idx, t0, took;
        json_t *j;

        harness_init(&h, true);
        web = apply(&h, web_yaml);
        a = place(&h, web, orch_state_node(h.st, "n1"));
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        n_endpoints(&h, "web", &idx);

        orch_snprintf(target, sizeof target, "/v1/registry/web?index=%llu&wait=400ms",
                      (unsigned long long)idx);
        t0 = orch_now_usec();
        call_start(&h, &c, target);
        j = call_finish(&h, &c);
        took = orch_now_usec() - t0;
        ck_assert_uint_ge(took, 350 * 1000);
        ck_assert_uint_lt(took, 3000 * 1000);
        /* unchanged: the same index and set */
        ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(j, "index")), idx);
        ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 1);
        json_decref(j);
        harness_release(&h);
}
END_TEST

START_TEST(test_waiter_client_leaves)
{
        struct harness h;
        struct orch_svc *web;
        struct orch_inst *a;
        uint64_t idx;
        char req[256];
        int fds[3];

        harness_init(&h, true);
        web = apply(&h, web_yaml);
        a = place(&h, web, orch_state_node(h.st, "n1"));
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_STARTED);
        n_endpoints(&h, "web", &idx);

        /* three blocking queries whose clients hang up while they wait */
        orch_snprintf(req, sizeof req,
                      "GET /v1/registry/web?index=%llu&wait=10s HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer " ADMIN "\r\n\r\n",
                      (unsigned long long)idx);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                struct sockaddr_in sa = {.sin_family = AF_INET,
                                         .sin_port = htons((uint16_t)h.port),
                                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                fds[i] = socket(AF_INET, SOCK_STREAM, 0);
                ck_assert_int_ge(fds[i], 0);
                ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
                ck_assert_int_eq(send(fds[i], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
        }
        pump(&h, 100);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        pump(&h, 100);
        /* the change finds no waiter left to answer (the sanitizer build sees any stale one) */
        report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_FAILING, ORCH_EVENT_INSTANCE_HEALTH);
        pump(&h, 50);
        ck_assert_uint_eq(n_endpoints(&h, "web", NULL), 0);

        /* the registry still answers the next waiter */
        {
                struct call c;
                char target[128];
                n_endpoints(&h, "web", &idx);
                orch_snprintf(target, sizeof target, "/v1/registry/web?index=%llu&wait=2s",
                              (unsigned long long)idx);
                call_start(&h, &c, target);
                pump(&h, 100);
                ck_assert(!call_done(&c));
                report(&h, a, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN, ORCH_EVENT_INSTANCE_HEALTH);
                json_decref(call_finish(&h, &c));
        }
        harness_release(&h);
}
END_TEST

/* A service with no change yet must not answer index 0: index=0 never blocks, and a client that
 * follows the protocol (pass back the index you got) would spin. */
START_TEST(test_index_never_zero)
{
        struct harness h;
        struct call c;
        json_t *j;
        uint64_t t0;

        harness_init(&h, true);
        apply(&h, web_yaml);
        call_start(&h, &c, "/v1/registry/web");
        j = call_finish(&h, &c);
        ck_assert_int_ge(json_integer_value(json_object_get(j, "index")), 1);
        {
                char target[128];
                orch_snprintf(target, sizeof target, "/v1/registry/web?index=%lld&wait=1s",
                              json_integer_value(json_object_get(j, "index")));
                json_decref(j);
                t0 = orch_now_usec();
                call_start(&h, &c, target);
                json_decref(call_finish(&h, &c));
        }
        ck_assert_msg(orch_now_usec() - t0 > 900 * 1000, "answered at once: no change happened");
        harness_release(&h);
}
END_TEST

static Suite *registry_suite(void)
{
        Suite *s = suite_create("registry");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_endpoint_rule);
        tcase_add_test(tc, test_index_rises_once_per_change);
        tcase_add_test(tc, test_node_events_and_services);
        tcase_add_test(tc, test_refresh_all_after_load);
        tcase_add_test(tc, test_blocking_query_answers_on_change);
        tcase_add_test(tc, test_blocking_query_times_out);
        tcase_add_test(tc, test_waiter_client_leaves);
        tcase_add_test(tc, test_index_never_zero);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(registry_suite)
