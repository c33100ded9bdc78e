/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "httpd.h"
#include "json.h"
#include "log.h"
#include "registry.h"
#include "util.h"
#include "banned.h"

/* The longest a blocking query may wait, and the wait when the client gives an index but no wait. */
#define WAIT_MAX_MS     (10ULL * 60 * 1000)
#define WAIT_DEFAULT_MS (5ULL * 60 * 1000)

/* What the registry knows of one endpoint, to tell whether an event changed it. */
struct ep_entry {
        struct orch_hmap_node hnode;
        char *id;
        char *service;
        char *signature; /* node, address and ports: a change of any of them is a change of the set */
};

struct reg_service {
        struct orch_hmap_node hnode;
        char *name;
        uint64_t index; /* the registry index at this service's last change */
        size_t n_endpoints;
        struct orch_list waiters;
};

struct waiter {
        struct orch_registry *reg;
        struct orch_httpd_req *req;
        char *service;
        uint64_t index;
        uv_timer_t timer;
        struct orch_list link;
        bool answered;
};

struct subscriber {
        orch_registry_change_fn fn;
        void *userdata;
};

struct orch_registry {
        uv_loop_t *loop;
        struct orch_state *st;
        uint64_t index;
        struct orch_hmap endpoints; /* ep_entry by instance id */
        struct orch_hmap services;  /* reg_service by name */
        struct subscriber *subs;
        size_t n_subs;
};

bool orch_registry_is_endpoint(const struct orch_inst *inst)
{
        if (!inst->desired_run || inst->state != ORCH_INSTANCE_RUNNING || !inst->node ||
            inst->node->state == ORCH_NODE_DOWN)
                return false;
        if (inst->health == ORCH_HEALTH_PASSING)
                return true;
        /* without a check, running is healthy (health stays unknown) */
        return inst->health == ORCH_HEALTH_UNKNOWN && inst->svc->spec->health.type == ORCH_HEALTH_NONE;
}

static struct reg_service *service_get(struct orch_registry *reg, const char *name, bool create)
{
        struct reg_service *rs =
                orch_hmap_entry(orch_hmap_get(&reg->services, name), struct reg_service, hnode);

        if (rs || !create)
                return rs;
        rs = calloc(1, sizeof *rs);
        if (!rs || !(rs->name = strdup(name))) {
                free(rs);
                return NULL;
        }
        orch_list_init(&rs->waiters);
        /* a new record is as of now: what a client read before it existed was the registry's index,
         * and an answer must never go back below that */
        rs->index = reg->index;
        if (orch_hmap_insert(&reg->services, &rs->hnode, rs->name) < 0) {
                free(rs->name);
                free(rs);
                return NULL;
        }
        return rs;
}

static uint16_t route_port(const struct orch_inst *inst)
{
        const struct orch_service *spec = inst->svc->spec;
        int idx;

        if (!spec->route.enabled)
                return 0;
        idx = orch_service_port_index(spec, spec->route.port);
        for (size_t i = 0; idx >= 0 && i < inst->n_ports; i++)
                if (streq(inst->ports[i].name, spec->ports[idx].name))
                        return inst->ports[i].port;
        return inst->n_ports ? inst->ports[0].port : 0;
}

static char *signature(const struct orch_inst *inst)
{
        struct orch_buf b = {0};

        orch_buf_printf(&b, "%s|%s", inst->node->name, strempty(inst->node->address));
        for (size_t i = 0; i < inst->n_ports; i++)
                orch_buf_printf(&b, "|%s=%u", inst->ports[i].name, inst->ports[i].port);
        return orch_buf_steal(&b);
}

static json_t *endpoints_json(struct orch_registry *reg, const char *service, uint64_t *ret_index)
{
        struct orch_svc *svc = orch_state_service(reg->st, service);
        struct reg_service *rs = service_get(reg, service, false);
        json_t *eps = json_array();
        struct orch_list *p;

        if (svc && eps)
                orch_list_foreach (p, &svc->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                        json_t *ports;
                        if (!orch_registry_is_endpoint(inst))
                                continue;
                        ports = json_object();
                        for (size_t i = 0; ports && i < inst->n_ports; i++)
                                json_object_set_new(ports, inst->ports[i].name,
                                                    json_integer(inst->ports[i].port));
                        json_array_append_new(
                                eps,
                                json_pack("{s:s, s:s, s:s, s:o, s:o}", "instance", inst->id, "node",
                                          inst->node->name, "address", strempty(inst->node->address), "port",
                                          inst->n_ports ? json_integer(inst->ports[0].port) : json_null(),
                                          "ports", ports ? ports : json_object()));
                }
        /* never 0: a client passes back what it got, and index=0 means "do not wait" */
        *ret_index = MAX(rs ? rs->index : reg->index, (uint64_t)1);
        return eps;
}

json_t *orch_registry_json(struct orch_registry *reg, const char *service)
{
        uint64_t index;
        json_t *eps = endpoints_json(reg, service, &index);

        if (!eps)
                return NULL;
        return json_pack("{s:I, s:s, s:o}", "index", (json_int_t)index, "service", service, "endpoints",
                         eps);
}

/* --- blocking queries ----------------------------------------------------------------------- */

static void waiter_closed(uv_handle_t *h)
{
        struct waiter *w = h->data;

        free(w->service);
        free(w);
}

/* The record of a service that does not exist and that nobody waits for any more goes. */
static void service_gc(struct orch_registry *reg, const char *name)
{
        struct reg_service *rs = service_get(reg, name, false);

        if (!rs || !orch_list_empty(&rs->waiters) || orch_state_service(reg->st, name))
                return;
        orch_hmap_remove(&reg->services, &rs->hnode);
        free(rs->name);
        free(rs);
}

/* gc: drop the service's record if this was the last waiter of a service that does not exist
 * (not while a caller walks that service's waiters) */
static void waiter_finish(struct waiter *w, bool gc)
{
        if (w->answered)
                return;
        w->answered = true;
        orch_list_remove(&w->link);
        uv_timer_stop(&w->timer);
        w->timer.data = w;
        uv_close((uv_handle_t *)&w->timer, waiter_closed);
        if (gc)
                service_gc(w->reg, w->service);
}

static void waiter_answer(struct waiter *w, bool gc)
{
        _cleanup_json_ json_t *body = orch_registry_json(w->reg, w->service);
        char idx[32];

        if (w->answered)
                return;
        orch_httpd_req_set_close_cb(w->req, NULL, NULL);
        orch_snprintf(idx, sizeof idx, "%" PRIu64,
                      (uint64_t)json_integer_value(json_object_get(body, "index")));
        orch_httpd_req_add_header(w->req, "X-Orch-Index", idx);
        if (body)
                orch_httpd_respond_json(w->req, 200, body);
        else
                orch_httpd_respond_error(w->req, 500, "out of memory");
        waiter_finish(w, gc);
}

static void waiter_timeout(uv_timer_t *t)
{
        waiter_answer(container_of(t, struct waiter, timer), true);
}

static void waiter_gone(struct orch_httpd_req *req, void *userdata)
{
        waiter_finish(userdata, true);
}

void orch_registry_handle(struct orch_registry *reg, struct orch_httpd_req *req, const char *service,
                          uint64_t index, uint64_t wait_ms)
{
        /* a record per name a client asks about would grow without bound: only services that
         * exist, or that a client waits for, get one */
        struct reg_service *rs =
                service_get(reg, service, index > 0 || orch_state_service(reg->st, service));
        struct waiter *w;

        if (!rs) {
                _cleanup_json_ json_t *body = orch_registry_json(reg, service);
                char idx[32];

                /* the header says what the body says */
                orch_snprintf(idx, sizeof idx, "%" PRIu64,
                              (uint64_t)json_integer_value(json_object_get(body, "index")));
                orch_httpd_req_add_header(req, "X-Orch-Index", idx);
                if (body)
                        orch_httpd_respond_json(req, 200, body);
                else
                        orch_httpd_respond_error(req, 500, "out of memory");
                return;
        }
        if (index == 0 || MAX(rs->index, (uint64_t)1) > index) {
                _cleanup_json_ json_t *body = orch_registry_json(reg, service);
                char idx[32];
                orch_snprintf(idx, sizeof idx, "%" PRIu64, MAX(rs->index, (uint64_t)1));
                orch_httpd_req_add_header(req, "X-Orch-Index", idx);
                orch_httpd_respond_json(req, 200, body);
                return;
        }
        w = calloc(1, sizeof *w);
        if (!w || !(w->service = strdup(service))) {
                free(w);
                orch_httpd_respond_error(req, 500, "out of memory");
                return;
        }
        w->reg = reg;
        w->req = req;
        w->index = index;
        uv_timer_init(reg->loop, &w->timer);
        orch_list_append(&rs->waiters, &w->link);
        orch_httpd_req_set_close_cb(req, waiter_gone, w);
        uv_timer_start(&w->timer, waiter_timeout, wait_ms ? MIN(wait_ms, WAIT_MAX_MS) : WAIT_DEFAULT_MS, 0);
}

/* --- changes -------------------------------------------------------------------------------- */

static void notify(struct orch_registry *reg, const char *service, bool changed)
{
        struct reg_service *rs = service_get(reg, service, true);
        struct orch_list *p, *t;

        if (!rs)
                return;
        if (changed) {
                rs->index = ++reg->index;
                orch_list_foreach_safe (p, t, &rs->waiters)
                        waiter_answer(orch_list_entry(p, struct waiter, link), false);
        }
        for (size_t i = 0; i < reg->n_subs; i++)
                reg->subs[i].fn(reg->subs[i].userdata, service, reg->index);
}

static void entry_free(struct ep_entry *e)
{
        free(e->id);
        free(e->service);
        free(e->signature);
        free(e);
}

/* Re-examines one instance id; true when the endpoint set of its service changed. */
static bool examine(struct orch_registry *reg, const char *id)
{
        struct orch_inst *inst = orch_state_instance(reg->st, id);
        struct ep_entry *e = orch_hmap_entry(orch_hmap_get(&reg->endpoints, id), struct ep_entry, hnode);
        bool is = inst && orch_registry_is_endpoint(inst);
        _cleanup_(freep) char *sig = is ? signature(inst) : NULL;

        if (!is) {
                if (!e)
                        return false;
                orch_hmap_remove(&reg->endpoints, &e->hnode);
                entry_free(e);
                return true;
        }
        if (e) {
                if (sig && streq(e->signature, sig))
                        return false;
                free(e->signature);
                e->signature = TAKE_PTR(sig);
                return true;
        }
        e = calloc(1, sizeof *e);
        if (!e || !(e->id = strdup(id)) || !(e->service = strdup(inst->svc->name))) {
                if (e)
                        free(e->id);
                free(e);
                return false;
        }
        e->signature = TAKE_PTR(sig);
        if (orch_hmap_insert(&reg->endpoints, &e->hnode, e->id) < 0) {
                entry_free(e);
                return false;
        }
        return true;
}

void orch_registry_on_event(struct orch_registry *reg, const json_t *event)
{
        const char *type = NULL, *service = NULL, *instance = NULL, *node = NULL;

        orch_json_get_string(event, "type", &type);
        orch_json_get_string(event, "service", &service);
        orch_json_get_string(event, "instance", &instance);
        orch_json_get_string(event, "node", &node);
        if (!type)
                return;
        if (instance && service) {
                if (examine(reg, instance))
                        notify(reg, service, true);
                return;
        }
        if (service && (startswith(type, "service.") || startswith(type, "rollout"))) {
                /* routes may have changed: subscribers rebuild; the endpoint set itself did not */
                notify(reg, service, false);
                return;
        }
        if (node && startswith(type, "node.")) {
                /* a node going down or coming back changes every endpoint on it */
                struct orch_node *n = orch_state_node(reg->st, node);
                struct orch_list *p;
                if (!n)
                        return;
                orch_list_foreach (p, &n->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                        if (examine(reg, inst->id))
                                notify(reg, inst->svc->name, true);
                }
        }
}

void orch_registry_refresh_all(struct orch_registry *reg)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&reg->st->instances, &it); n;
             n = orch_hmap_next(&reg->st->instances, &it)) {
                struct orch_inst *inst = container_of(n, struct orch_inst, hnode);
                if (examine(reg, inst->id))
                        notify(reg, inst->svc->name, true);
        }
}

uint64_t orch_registry_index(const struct orch_registry *reg)
{
        return reg->index;
}

void orch_registry_foreach_routed(struct orch_registry *reg, orch_registry_visit_fn fn, void *userdata)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&reg->st->services, &it); n; n = orch_hmap_next(&reg->st->services, &it)) {
                struct orch_svc *svc = container_of(n, struct orch_svc, hnode);
                _cleanup_(freep) struct orch_endpoint *eps = NULL;
                size_t k = 0, cap = 0;
                struct orch_list *p;

                if (!svc->spec->route.enabled || svc->deleting)
                        continue;
                orch_list_foreach (p, &svc->instances)
                        cap++;
                eps = calloc(cap + 1, sizeof *eps);
                if (!eps)
                        continue;
                orch_list_foreach (p, &svc->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                        if (!orch_registry_is_endpoint(inst))
                                continue;
                        eps[k++] = (struct orch_endpoint){
                                .instance = inst->id,
                                .node = inst->node->name,
                                .address = strempty(inst->node->address),
                                .port = inst->n_ports ? inst->ports[0].port : 0,
                                .route_port = route_port(inst),
                                .ports = inst->ports,
                                .n_ports = inst->n_ports,
                        };
                }
                fn(userdata, svc, eps, k);
        }
}

int orch_registry_subscribe(struct orch_registry *reg, orch_registry_change_fn fn, void *userdata)
{
        struct subscriber *s = realloc(reg->subs, (reg->n_subs + 1) * sizeof *s);

        if (!s)
                return -ENOMEM;
        reg->subs = s;
        reg->subs[reg->n_subs++] = (struct subscriber){fn, userdata};
        return 0;
}

void orch_registry_unsubscribe(struct orch_registry *reg, orch_registry_change_fn fn, void *userdata)
{
        for (size_t i = 0; i < reg->n_subs; i++)
                if (reg->subs[i].fn == fn && reg->subs[i].userdata == userdata) {
                        memmove(&reg->subs[i], &reg->subs[i + 1],
                                (reg->n_subs - i - 1) * sizeof reg->subs[0]);
                        reg->n_subs--;
                        return;
                }
}

int orch_registry_new(uv_loop_t *loop, struct orch_state *st, struct orch_registry **ret)
{
        struct orch_registry *reg = calloc(1, sizeof *reg);

        if (!reg)
                return -ENOMEM;
        reg->loop = loop;
        reg->st = st;
        *ret = reg;
        return 0;
}

void orch_registry_free(struct orch_registry *reg)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        if (!reg)
                return;
        for (n = orch_hmap_first(&reg->endpoints, &it); n; n = orch_hmap_next(&reg->endpoints, &it))
                entry_free(container_of(n, struct ep_entry, hnode));
        for (n = orch_hmap_first(&reg->services, &it); n; n = orch_hmap_next(&reg->services, &it)) {
                struct reg_service *rs = container_of(n, struct reg_service, hnode);
                struct orch_list *p, *t;
                orch_list_foreach_safe (p, t, &rs->waiters)
                        waiter_finish(orch_list_entry(p, struct waiter, link), false);
                free(rs->name);
                free(rs);
        }
        orch_hmap_release(&reg->endpoints);
        orch_hmap_release(&reg->services);
        free(reg->subs);
        free(reg);
}
