/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <strings.h>

#include "agents.h"
#include "api.h"
#include "gateway/apikeys.h"
#include "httpd.h"
#include "json.h"
#include "log.h"
#include "reconciler.h"
#include "registry.h"
#include "router.h"
#include "scheduler.h"
#include "store.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* /v1/events without follow: at most this many events per answer (use since= to page). */
#define EVENTS_PAGE_MAX 10000

struct events_filter;

struct follower {
        struct orch_api *api;
        struct orch_httpd_req *req;
        struct orch_list link;
        char *service, *instance, *node; /* the request's filter */
};

struct log_request {
        struct orch_api *api;
        struct orch_httpd_req *req;
        struct orch_log_stream *stream;
        bool ended;
};

struct orch_api {
        struct orch_httpd *httpd;
        struct orch_api_config cfg;
        char *admin_token;
        struct orch_list followers;
        /* requests answered, by status class and code (for /metrics) */
        uint64_t by_code[600];
};

static const struct orch_http_route routes[];
static const size_t n_routes;

/* --- answering ------------------------------------------------------------------------------ */

static void count(struct orch_api *api, int status)
{
        if (status >= 100 && status < 600)
                api->by_code[status]++;
}

static void reply_json(struct orch_api *api, struct orch_httpd_req *req, int status, json_t *body)
{
        count(api, status);
        if (!body) {
                orch_httpd_respond_error(req, 500, "out of memory");
                return;
        }
        orch_httpd_respond_json(req, status, body);
        json_decref(body);
}

_printf_(4, 5) static void reply_error(struct orch_api *api, struct orch_httpd_req *req, int status,
                                       const char *fmt, ...)
{
        struct orch_buf b = {0};
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        count(api, status);
        orch_httpd_respond_error(req, status, "%s", b.data ? b.data : "error");
        orch_buf_release(&b);
}

static void reply_store_error(struct orch_api *api, struct orch_httpd_req *req, int r)
{
        log_error_errno(r, "store write failed: %s", orch_store_last_error(api->cfg.st->store));
        reply_error(api, req, 500, "could not persist the change: %s",
                    orch_store_last_error(api->cfg.st->store));
}

/* A query flag: 1, true, yes (or present without value) -> true. */
static bool query_flag(struct orch_httpd_req *req, const char *name)
{
        _cleanup_(freep) char *v = NULL;

        if (orch_httpd_req_query(req, name, &v) < 0)
                return false;
        return !*v || streq(v, "1") || streq(v, "true") || streq(v, "yes");
}

/* --- apply ---------------------------------------------------------------------------------- */

/* Dotted paths of the fields that differ between two canonical forms (arrays compare whole). */
static void json_diff(const json_t *a, const json_t *b, const char *prefix, json_t *out)
{
        const char *k;
        json_t *v;

        if (json_is_object(a) && json_is_object(b)) {
                json_object_foreach ((json_t *)a, k, v) {
                        _cleanup_(freep) char *p =
                                *prefix ? orch_strdup_printf("%s.%s", prefix, k) : strdup(k);
                        if (p)
                                json_diff(v, json_object_get(b, k), p, out);
                }
                json_object_foreach ((json_t *)b, k, v)
                        if (!json_object_get(a, k)) {
                                _cleanup_(freep) char *p =
                                        *prefix ? orch_strdup_printf("%s.%s", prefix, k) : strdup(k);
                                if (p)
                                        json_array_append_new(out, json_string(p));
                        }
                return;
        }
        if (!json_equal((json_t *)a, (json_t *)b))
                json_array_append_new(out, json_string(*prefix ? prefix : "."));
}

static json_t *diags_body(const struct orch_diags *d, const char *what)
{
        _cleanup_(freep) char *first = d->n ? orch_diag_format(&d->items[0]) : NULL;
        json_t *o = json_object();

        if (!o)
                return NULL;
        if (d->n > 1)
                json_object_set_new(
                        o, "error",
                        json_sprintf("%s (and %zu more errors)", first ? first : what, d->n - 1));
        else
                json_object_set_new(o, "error", json_string(first ? first : what));
        json_object_set_new(o, "errors", orch_diags_to_json(d));
        return o;
}

static void handle_apply(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_state *st = api->cfg.st;
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        _cleanup_json_ json_t *results = json_array();
        struct orch_diags diags = {0};
        bool dry_run = query_flag(req, "dry_run"), prune = query_flag(req, "prune");
        const char *body;
        size_t len;
        int r;

        if (!m || !results) {
                reply_error(api, req, 500, "out of memory");
                return;
        }
        body = orch_httpd_req_body(req, &len);
        if (len == 0) {
                reply_error(api, req, 400, "empty body: send a manifest (YAML or JSON)");
                return;
        }
        r = orch_manifest_parse_buffer(m, "request", body, len, &diags);
        if (r >= 0)
                orch_manifest_check_duplicates(m, &diags);
        if (r < 0 || diags.n > 0) {
                reply_json(api, req, 400, diags_body(&diags, "invalid manifest"));
                orch_diags_release(&diags);
                return;
        }
        /* with prune an empty set would delete every service: never from a body that came out empty
         * by accident (a comment, a lone ---, an empty list) */
        if (m->n_services == 0) {
                reply_error(api, req, 400, "the manifest holds no services: nothing to apply");
                return;
        }

        /* what would change, computed before anything does */
        for (size_t i = 0; i < m->n_services; i++) {
                struct orch_service *spec = m->services[i];
                struct orch_svc *svc = orch_state_service(st, spec->name);
                char hash[65], rev[ORCH_REVISION_LEN + 1];
                json_t *res = json_pack("{s:s}", "name", spec->name), *fields = json_array();

                orch_service_spec_hash(spec, hash);
                orch_service_revision(spec, rev);
                json_object_set_new(res, "revision", json_string(rev));
                if (!svc || svc->deleting) {
                        json_object_set_new(res, "change", json_string("created"));
                } else if (streq(svc->spec_hash, hash)) {
                        json_object_set_new(res, "change", json_string("unchanged"));
                } else {
                        json_t *old = NULL, *new = NULL;
                        orch_service_to_json(svc->spec, &old);
                        orch_service_to_json(spec, &new);
                        json_diff(old, new, "", fields);
                        json_decref(old);
                        json_decref(new);
                        json_object_set_new(res, "change", json_string("updated"));
                        json_object_set_new(res, "rolls", json_boolean(!streq(svc->revision, rev)));
                }
                json_object_set_new(res, "changed_fields", fields);
                if (dry_run) {
                        json_t *placements = json_array();
                        uint32_t n = 0;
                        if (!svc || svc->deleting)
                                n = spec->replicas;
                        else if (!streq(svc->revision, rev))
                                n = MIN(spec->replicas, spec->update.max_surge ? spec->update.max_surge : 1);
                        else if (spec->replicas > svc->spec->replicas)
                                n = spec->replicas - svc->spec->replicas;
                        if (n > 0)
                                orch_reconciler_preview(api->cfg.rc, spec, n, placements);
                        json_object_set_new(res, "placements", placements);
                }
                json_array_append_new(results, res);
        }
        if (prune) {
                struct orch_hmap_iter it;
                struct orch_hmap_node *n;
                for (n = orch_hmap_first(&st->services, &it); n; n = orch_hmap_next(&st->services, &it)) {
                        struct orch_svc *svc = container_of(n, struct orch_svc, hnode);
                        bool listed = false;
                        for (size_t i = 0; i < m->n_services && !listed; i++)
                                listed = streq(m->services[i]->name, svc->name);
                        if (!listed && !svc->deleting)
                                json_array_append_new(results, json_pack("{s:s, s:s}", "name", svc->name,
                                                                         "change", "deleted"));
                }
        }
        if (dry_run) {
                reply_json(api, req, 200, json_pack("{s:O, s:b}", "services", results, "dry_run", true));
                return;
        }

        /* all of it in memory, then one store transaction */
        for (size_t i = 0; i < m->n_services; i++) {
                const char *change;
                r = orch_state_apply_service(st, m->services[i], &change);
                if (r < 0) {
                        reply_error(api, req, 500, "apply of %s failed: %s", m->services[i]->name,
                                    strerror(-r));
                        return;
                }
                m->services[i] = NULL; /* taken over */
        }
        if (prune) {
                size_t i;
                json_t *res;
                json_array_foreach (results, i, res) {
                        const char *name = json_string_value(json_object_get(res, "name"));
                        const char *change = json_string_value(json_object_get(res, "change"));
                        struct orch_svc *svc = orch_state_service(st, name);
                        if (svc && streq(change, "deleted"))
                                orch_state_delete_service(st, svc);
                }
        }
        r = orch_state_flush(st);
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, json_pack("{s:O}", "services", results));
}

/* --- services ------------------------------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
        const char *x = json_string_value(json_object_get(*(json_t *const *)a, "name"));
        const char *y = json_string_value(json_object_get(*(json_t *const *)b, "name"));
        int r = strcmp(x ? x : "", y ? y : "");
        if (r)
                return r;
        x = json_string_value(json_object_get(*(json_t *const *)a, "id"));
        y = json_string_value(json_object_get(*(json_t *const *)b, "id"));
        return strcmp(x ? x : "", y ? y : "");
}

/* Arrays come out sorted by name (then id), so that output is stable. */
static json_t *sorted(json_t *arr)
{
        size_t n = json_array_size(arr);
        _cleanup_(freep) json_t **items = calloc(n + 1, sizeof *items);
        json_t *out = json_array();

        if (!items || !out) {
                json_decref(out);
                json_decref(arr);
                return NULL;
        }
        for (size_t i = 0; i < n; i++)
                items[i] = json_incref(json_array_get(arr, i));
        qsort(items, n, sizeof *items, cmp_name);
        for (size_t i = 0; i < n; i++)
                json_array_append_new(out, items[i]);
        json_decref(arr);
        return out;
}

static void handle_services(struct orch_httpd_req *req, const struct orch_router_params *params,
                            void *userdata)
{
        struct orch_api *api = userdata;
        json_t *arr = json_array();
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&api->cfg.st->services, &it); arr && n;
             n = orch_hmap_next(&api->cfg.st->services, &it))
                json_array_append_new(arr, orch_svc_to_json(container_of(n, struct orch_svc, hnode), false));
        reply_json(api, req, 200, arr ? sorted(arr) : NULL);
}

static struct orch_svc *find_service(struct orch_api *api, struct orch_httpd_req *req,
                                     const struct orch_router_params *params)
{
        const char *name = orch_router_param(params, "name");
        struct orch_svc *svc = name ? orch_state_service(api->cfg.st, name) : NULL;

        if (!svc)
                reply_error(api, req, 404, "service '%s' not found", name ? name : "");
        return svc;
}

static void handle_service(struct orch_httpd_req *req, const struct orch_router_params *params,
                           void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_svc *svc = find_service(api, req, params);

        if (svc)
                reply_json(api, req, 200, orch_svc_to_json(svc, true));
}

static void handle_service_delete(struct orch_httpd_req *req, const struct orch_router_params *params,
                                  void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_svc *svc = find_service(api, req, params);
        int r;

        if (!svc)
                return;
        orch_state_delete_service(api->cfg.st, svc);
        r = orch_state_flush(api->cfg.st);
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200,
                   json_pack("{s:s, s:s}", "name", orch_router_param(params, "name"), "change", "deleted"));
}

static void handle_scale(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_svc *svc = find_service(api, req, params);
        _cleanup_json_ json_t *j = NULL;
        json_error_t err;
        const char *body;
        size_t len;
        json_int_t replicas;
        int r;

        if (!svc)
                return;
        if (svc->deleting) {
                reply_error(api, req, 409, "service '%s' is being deleted", svc->name);
                return;
        }
        body = orch_httpd_req_body(req, &len);
        j = json_loadb(body, len, 0, &err);
        if (!j || !json_is_object(j)) {
                reply_error(api, req, 400, "body: expected a JSON object like {\"replicas\": 3}%s%s",
                            j ? "" : ": ", j ? "" : err.text);
                return;
        }
        if (!json_is_integer(json_object_get(j, "replicas")) ||
            (replicas = json_integer_value(json_object_get(j, "replicas"))) < 0 || replicas > 100000) {
                reply_error(api, req, 400, "replicas: expected an integer from 0 to 100000");
                return;
        }
        orch_state_scale_service(api->cfg.st, svc, (uint32_t)replicas);
        r = orch_state_flush(api->cfg.st);
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, orch_svc_to_json(svc, false));
}

static void handle_rollout(struct orch_httpd_req *req, const struct orch_router_params *params,
                           void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_svc *svc = find_service(api, req, params);
        size_t n_new = 0, n_old = 0, healthy = 0;
        struct orch_list *p;
        char deadline[40] = "";
        json_t *o;

        if (!svc)
                return;
        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                if (!orch_inst_is_live(inst))
                        continue;
                if (streq(inst->revision, svc->revision)) {
                        n_new++;
                        if (orch_inst_is_available(inst))
                                healthy++;
                } else
                        n_old++;
        }
        if (svc->rollout.state == ORCH_ROLLOUT_PROGRESSING)
                orch_format_time(svc->rollout.last_progress + svc->spec->update.progress_deadline_ms,
                                 deadline, sizeof deadline);
        o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:b, s:o, s:o}", "service", svc->name,
                      "state", orch_rollout_state_to_string(svc->rollout.state), "revision", svc->revision,
                      "from", svc->rollout.from_revision, "replicas", (json_int_t)svc->spec->replicas, "new",
                      (json_int_t)n_new, "old", (json_int_t)n_old, "healthy", (json_int_t)healthy,
                      "reverting", svc->rollout.reverting, "deadline",
                      *deadline ? json_string(deadline) : json_null(), "message",
                      svc->rollout.message ? json_string(svc->rollout.message) : json_null());
        if (o && svc->rollout.failed_reason)
                json_object_set_new(o, "last_failure",
                                    json_pack("{s:s, s:s}", "revision", svc->rollout.failed_revision,
                                              "reason", svc->rollout.failed_reason));
        reply_json(api, req, 200, o);
}

static void handle_undo(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_svc *svc = find_service(api, req, params);
        int r;

        if (!svc)
                return;
        if (svc->deleting) {
                reply_error(api, req, 409, "service '%s' is being deleted", svc->name);
                return;
        }
        r = orch_reconciler_undo(api->cfg.rc, svc);
        if (r == -ENOENT) {
                reply_error(api, req, 409, "service '%s' has no previous revision", svc->name);
                return;
        }
        if (r >= 0)
                r = orch_state_flush(api->cfg.st);
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, orch_svc_to_json(svc, false));
}

/* --- instances and nodes -------------------------------------------------------------------- */

static void handle_instances(struct orch_httpd_req *req, const struct orch_router_params *params,
                             void *userdata)
{
        struct orch_api *api = userdata;
        _cleanup_(freep) char *service = NULL, *node = NULL;
        json_t *arr = json_array();
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        orch_httpd_req_query(req, "service", &service);
        orch_httpd_req_query(req, "node", &node);
        if (service && *service) {
                struct orch_svc *svc = orch_state_service(api->cfg.st, service);
                struct orch_list *p;
                if (svc)
                        orch_list_foreach (p, &svc->instances) {
                                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                                if (!node || !*node || (inst->node && streq(inst->node->name, node)))
                                        json_array_append_new(arr, orch_inst_to_json(inst));
                        }
        } else if (node && *node) {
                /* the node's own list: a node's view costs its instances, not the cluster's */
                struct orch_node *nd = orch_state_node(api->cfg.st, node);
                struct orch_list *p;
                if (nd)
                        orch_list_foreach (p, &nd->instances)
                                json_array_append_new(arr, orch_inst_to_json(orch_list_entry(
                                                                   p, struct orch_inst, node_link)));
        } else
                for (n = orch_hmap_first(&api->cfg.st->instances, &it); arr && n;
                     n = orch_hmap_next(&api->cfg.st->instances, &it))
                        json_array_append_new(arr,
                                              orch_inst_to_json(container_of(n, struct orch_inst, hnode)));
        reply_json(api, req, 200, arr ? sorted(arr) : NULL);
}

static void handle_instance(struct orch_httpd_req *req, const struct orch_router_params *params,
                            void *userdata)
{
        struct orch_api *api = userdata;
        const char *id = orch_router_param(params, "id");
        struct orch_inst *inst = orch_state_instance(api->cfg.st, id);

        if (!inst) {
                reply_error(api, req, 404, "instance '%s' not found", id);
                return;
        }
        reply_json(api, req, 200, orch_inst_to_json(inst));
}

static void handle_nodes(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        json_t *arr = json_array();
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&api->cfg.st->nodes, &it); arr && n;
             n = orch_hmap_next(&api->cfg.st->nodes, &it))
                json_array_append_new(arr, orch_node_to_json(container_of(n, struct orch_node, hnode)));
        reply_json(api, req, 200, arr ? sorted(arr) : NULL);
}

static struct orch_node *find_node(struct orch_api *api, struct orch_httpd_req *req,
                                   const struct orch_router_params *params)
{
        const char *name = orch_router_param(params, "name");
        struct orch_node *node = orch_state_node(api->cfg.st, name);

        if (!node)
                reply_error(api, req, 404, "node '%s' not found", name);
        return node;
}

static void handle_node(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_node *node = find_node(api, req, params);

        if (node)
                reply_json(api, req, 200, orch_node_to_json(node));
}

/* Drain: no new placements, and every instance moves off under its service's max_unavailable.
 * The reconciler does the moving: the node's instances are marked for replacement one service
 * step at a time (docs/control-plane.md, "Drain"). */
static void set_cordon(struct orch_api *api, struct orch_httpd_req *req,
                       const struct orch_router_params *params, bool cordon)
{
        struct orch_node *node = find_node(api, req, params);
        struct orch_list *p;
        int r;

        if (!node)
                return;
        if (node->cordoned != cordon) {
                node->cordoned = cordon;
                orch_state_set_node_state(api->cfg.st, node, node->state);
                orch_state_event(api->cfg.st, cordon ? ORCH_EVENT_NODE_DRAINING : ORCH_EVENT_NODE_READY,
                                 json_pack("{s:s}", "node", node->name), "node %s %s", node->name,
                                 cordon ? "is draining" : "is schedulable again");
                orch_list_foreach (p, &node->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                        orch_state_mark_dirty(api->cfg.st, inst->svc);
                }
        }
        r = orch_state_flush(api->cfg.st);
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, orch_node_to_json(node));
}

static void handle_drain(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        set_cordon(userdata, req, params, true);
}

static void handle_uncordon(struct orch_httpd_req *req, const struct orch_router_params *params,
                            void *userdata)
{
        set_cordon(userdata, req, params, false);
}

/* --- events --------------------------------------------------------------------------------- */

/* Which events a request wants: by service, instance or node (exact names), and only the last N. */
struct events_filter {
        char *service, *instance, *node;
        uint64_t last; /* 0: all */
};

static void events_filter_release(struct events_filter *f)
{
        free(f->service);
        free(f->instance);
        free(f->node);
}

/* Events are compact JSON with names of [a-z0-9.-], so an exact "key":"value" match is a
 * substring test (the closing quote keeps "web" from matching "web2"). */
static bool field_matches(const char *json, size_t len, const char *key, const char *value)
{
        char pat[160];

        if (!value)
                return true;
        if (orch_snprintf(pat, sizeof pat, "\"%s\":\"%s\"", key, value) < 0)
                return false;
        return memmem(json, len, pat, strlen(pat)) != NULL;
}

static bool event_matches(const struct events_filter *f, const char *json, size_t len)
{
        return field_matches(json, len, "service", f->service) &&
               field_matches(json, len, "instance", f->instance) &&
               field_matches(json, len, "node", f->node);
}

struct events_page {
        struct orch_httpd_req *req;
        const struct events_filter *filter;
        bool stream;
        struct orch_buf buf;
        /* with filter->last: a ring of the last matching lines */
        char **ring;
        size_t ring_next, ring_n;
};

static int event_row(uint64_t index, const char *value, size_t len, void *userdata)
{
        struct events_page *p = userdata;

        if (!event_matches(p->filter, value, len))
                return 0;
        if (p->ring) {
                char *line = strndup(value, len);
                if (!line)
                        return -ENOMEM;
                free(p->ring[p->ring_next]);
                p->ring[p->ring_next] = line;
                p->ring_next = (p->ring_next + 1) % p->filter->last;
                p->ring_n = MIN(p->ring_n + 1, (size_t)p->filter->last);
                return 0;
        }
        orch_buf_put(&p->buf, value, len);
        orch_buf_putc(&p->buf, '\n');
        if (p->stream && p->buf.len > 64 * 1024) {
                orch_httpd_stream_write(p->req, p->buf.data, p->buf.len);
                orch_buf_reset(&p->buf);
        }
        return 0;
}

/* Moves the ring's lines, oldest first, into the buffer. */
static void ring_drain(struct events_page *p)
{
        size_t n = p->filter->last;

        if (!p->ring)
                return;
        for (size_t k = 0; k < p->ring_n; k++) {
                size_t i = (p->ring_next + n - p->ring_n + k) % n;
                orch_buf_puts(&p->buf, p->ring[i]);
                orch_buf_putc(&p->buf, '\n');
        }
        for (size_t i = 0; i < n; i++)
                free(p->ring[i]);
        free(p->ring);
        p->ring = NULL;
}

static void follower_free(struct follower *f)
{
        orch_list_remove(&f->link);
        free(f->service);
        free(f->instance);
        free(f->node);
        free(f);
}

static void follower_closed(struct orch_httpd_req *req, void *userdata)
{
        follower_free(userdata);
}

static void handle_events(struct orch_httpd_req *req, const struct orch_router_params *params,
                          void *userdata)
{
        struct orch_api *api = userdata;
        struct events_filter filter = {0};
        struct events_page page = {.req = req, .filter = &filter};
        _cleanup_(freep) char *since_s = NULL, *last_s = NULL;
        uint64_t since = 0;
        bool follow = query_flag(req, "follow");
        char idx[32];
        int r;

        if (orch_httpd_req_query(req, "since", &since_s) >= 0 && orch_parse_u64(since_s, &since) < 0) {
                reply_error(api, req, 400, "since: expected an event index (a non-negative integer)");
                return;
        }
        if (orch_httpd_req_query(req, "last", &last_s) >= 0 &&
            (orch_parse_u64(last_s, &filter.last) < 0 || filter.last == 0 ||
             filter.last > EVENTS_PAGE_MAX)) {
                reply_error(api, req, 400, "last: expected a number of events from 1 to %d",
                            EVENTS_PAGE_MAX);
                return;
        }
        orch_httpd_req_query(req, "service", &filter.service);
        orch_httpd_req_query(req, "instance", &filter.instance);
        orch_httpd_req_query(req, "node", &filter.node);
        if (filter.last && !(page.ring = calloc(filter.last, sizeof *page.ring))) {
                events_filter_release(&filter);
                reply_error(api, req, 500, "out of memory");
                return;
        }
        /* without a filter, the last N are simply the N below the current index */
        if (filter.last && !filter.service && !filter.instance && !filter.node &&
            api->cfg.st->event_index > filter.last)
                since = MAX(since, api->cfg.st->event_index - filter.last);
        orch_snprintf(idx, sizeof idx, "%" PRIu64, api->cfg.st->event_index);
        orch_httpd_req_add_header(req, "X-Orch-Index", idx);
        if (!follow) {
                r = orch_store_events_since(api->cfg.st->store, since, filter.last ? 0 : EVENTS_PAGE_MAX,
                                            event_row, &page);
                ring_drain(&page);
                events_filter_release(&filter);
                if (r < 0) {
                        orch_buf_release(&page.buf);
                        reply_store_error(api, req, r);
                        return;
                }
                count(api, 200);
                orch_httpd_respond(req, 200, "application/x-ndjson", page.buf.data ? page.buf.data : "",
                                   page.buf.len);
                orch_buf_release(&page.buf);
                return;
        }
        /* history from the store, then live: published events are always newer than stored ones */
        count(api, 200);
        if (orch_httpd_stream_start(req, 200, "application/x-ndjson") < 0) {
                ring_drain(&page);
                orch_buf_release(&page.buf);
                events_filter_release(&filter);
                return;
        }
        page.stream = true;
        r = orch_store_events_since(api->cfg.st->store, since, 0, event_row, &page);
        ring_drain(&page);
        if (page.buf.len)
                orch_httpd_stream_write(req, page.buf.data, page.buf.len);
        orch_buf_release(&page.buf);
        if (r < 0) {
                events_filter_release(&filter);
                orch_httpd_stream_end(req);
                return;
        }
        {
                struct follower *f = calloc(1, sizeof *f);
                if (!f) {
                        events_filter_release(&filter);
                        orch_httpd_stream_end(req);
                        return;
                }
                f->api = api;
                f->req = req;
                f->service = TAKE_PTR(filter.service);
                f->instance = TAKE_PTR(filter.instance);
                f->node = TAKE_PTR(filter.node);
                orch_list_append(&api->followers, &f->link);
                orch_httpd_req_set_close_cb(req, follower_closed, f);
        }
        events_filter_release(&filter);
}

void orch_api_publish_event(struct orch_api *api, uint64_t index, json_t *event)
{
        _cleanup_(freep) char *line = NULL;
        struct orch_list *p, *t;

        if (orch_list_empty(&api->followers))
                return;
        line = orch_json_dumps_compact(event);
        if (!line)
                return;
        orch_list_foreach_safe (p, t, &api->followers) {
                struct follower *f = orch_list_entry(p, struct follower, link);
                struct events_filter ff = {.service = f->service, .instance = f->instance, .node = f->node};
                if (!event_matches(&ff, line, strlen(line)))
                        continue;
                if (orch_httpd_stream_congested(f->req)) {
                        /* a follower that cannot keep up is told where to resume, not fed forever */
                        char msg[160];
                        orch_snprintf(msg, sizeof msg,
                                      "{\"error\":\"too slow to follow; resume with since=%" PRIu64 "\"}\n",
                                      index - 1);
                        orch_httpd_stream_write(f->req, msg, strlen(msg));
                        orch_httpd_req_set_close_cb(f->req, NULL, NULL);
                        orch_httpd_stream_end(f->req);
                        follower_free(f);
                        continue;
                }
                orch_httpd_stream_write(f->req, line, strlen(line));
                orch_httpd_stream_write(f->req, "\n", 1);
        }
}

/* --- logs ----------------------------------------------------------------------------------- */

static void log_data(void *userdata, const char *data, size_t len)
{
        struct log_request *lr = userdata;

        if (!lr->ended)
                orch_httpd_stream_write(lr->req, data, len);
}

static void log_end(void *userdata, const char *error)
{
        struct log_request *lr = userdata;

        lr->stream = NULL;
        if (lr->ended)
                return;
        lr->ended = true;
        if (error) {
                /* the status line went out long ago: the reason travels in the text */
                _cleanup_(freep) char *line = orch_strdup_printf("orch: log stream ended: %s\n", error);
                if (line)
                        orch_httpd_stream_write(lr->req, line, strlen(line));
        }
        orch_httpd_req_set_close_cb(lr->req, NULL, NULL);
        orch_httpd_stream_end(lr->req);
        free(lr);
}

static void log_client_gone(struct orch_httpd_req *req, void *userdata)
{
        struct log_request *lr = userdata;

        lr->ended = true;
        if (lr->stream)
                orch_agents_logs_cancel(lr->stream); /* its ack frees nothing of ours: we go here */
        free(lr);
}

static void handle_logs(struct orch_httpd_req *req, const struct orch_router_params *params, void *userdata)
{
        struct orch_api *api = userdata;
        const char *id = orch_router_param(params, "instance");
        struct orch_inst *inst = orch_state_instance(api->cfg.st, id);
        _cleanup_(freep) char *tail_s = NULL;
        uint64_t tail = UINT64_MAX;
        struct log_request *lr;
        int r;

        if (!inst) {
                /* a service name: its first instance, as `kubectl logs deploy/x` does */
                struct orch_svc *svc = orch_state_service(api->cfg.st, id);
                struct orch_list *p;
                if (svc)
                        orch_list_foreach (p, &svc->instances) {
                                struct orch_inst *i = orch_list_entry(p, struct orch_inst, svc_link);
                                if (i->node && orch_inst_is_live(i)) {
                                        inst = i;
                                        break;
                                }
                        }
        }
        if (!inst) {
                if (orch_state_service(api->cfg.st, id))
                        reply_error(api, req, 404, "service '%s' has no running instance", id);
                else
                        reply_error(api, req, 404, "instance '%s' not found", id);
                return;
        }
        if (orch_httpd_req_query(req, "tail", &tail_s) >= 0 && orch_parse_u64(tail_s, &tail) < 0) {
                reply_error(api, req, 400, "tail: expected a number of lines");
                return;
        }
        if (!inst->node || !inst->node->conn) {
                reply_error(api, req, 503, "instance '%s' is on %s, which is not connected", inst->id,
                            inst->node ? inst->node->name : "no node");
                return;
        }
        lr = calloc(1, sizeof *lr);
        if (!lr) {
                reply_error(api, req, 500, "out of memory");
                return;
        }
        lr->api = api;
        lr->req = req;
        count(api, 200);
        orch_httpd_stream_start(req, 200, "text/plain; charset=utf-8");
        orch_httpd_req_set_close_cb(req, log_client_gone, lr);
        r = orch_agents_logs(api->cfg.agents, inst, tail, query_flag(req, "follow"), log_data, log_end, lr,
                             &lr->stream);
        if (r < 0) {
                char msg[128];
                orch_snprintf(msg, sizeof msg, "cannot ask %s for the log: %s", inst->node->name,
                              strerror(-r));
                log_end(lr, msg);
        }
}

/* --- registry ------------------------------------------------------------------------------- */

static void handle_registry(struct orch_httpd_req *req, const struct orch_router_params *params,
                            void *userdata)
{
        struct orch_api *api = userdata;
        _cleanup_(freep) char *index_s = NULL, *wait_s = NULL;
        uint64_t index = 0, wait_ms = 0;

        if (!api->cfg.registry) {
                reply_error(api, req, 404, "the registry is not enabled");
                return;
        }
        if (orch_httpd_req_query(req, "index", &index_s) >= 0 && orch_parse_u64(index_s, &index) < 0) {
                reply_error(api, req, 400, "index: expected a registry index (a non-negative integer)");
                return;
        }
        if (orch_httpd_req_query(req, "wait", &wait_s) >= 0 && orch_parse_duration(wait_s, &wait_ms) < 0) {
                reply_error(api, req, 400, "wait: expected a duration like 30s");
                return;
        }
        count(api, 200);
        orch_registry_handle(api->cfg.registry, req, orch_router_param(params, "service"), index, wait_ms);
}

/* --- API keys of gateway routes (docs/gateway.md) ------------------------------------------- */

static void handle_apikey_create(struct orch_httpd_req *req, const struct orch_router_params *params,
                                 void *userdata)
{
        struct orch_api *api = userdata;
        _cleanup_json_ json_t *j = NULL;
        const char *body, *service = NULL, *name = NULL, *why = "invalid request";
        json_t *out = NULL;
        json_error_t err;
        size_t len;
        int r;

        body = orch_httpd_req_body(req, &len);
        j = json_loadb(body, len, 0, &err);
        if (!j || !json_is_object(j)) {
                reply_error(api, req, 400,
                            "body: expected a JSON object like {\"service\": \"web\", \"name\": \"ci\"}%s%s",
                            j ? "" : ": ", j ? "" : err.text);
                return;
        }
        if (orch_json_get_string(j, "service", &service) < 0 || orch_json_get_string(j, "name", &name) < 0) {
                reply_error(api, req, 400, "service and name: expected strings");
                return;
        }
        if (orch_service_name_valid(service) && !orch_state_service(api->cfg.st, service)) {
                reply_error(api, req, 404, "service '%s' not found", service);
                return;
        }
        r = orch_apikeys_create(api->cfg.st->store, service, name, &out, &why);
        if (r == -EINVAL) {
                reply_error(api, req, 400, "%s", why);
                return;
        }
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        /* the key appears in this answer only: the store keeps its SHA-256 */
        orch_httpd_req_add_header(req, "Cache-Control", "no-store");
        reply_json(api, req, 201, out);
}

static void handle_apikeys(struct orch_httpd_req *req, const struct orch_router_params *params,
                           void *userdata)
{
        struct orch_api *api = userdata;
        json_t *arr = NULL;
        int r = orch_apikeys_list(api->cfg.st->store, &arr);

        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, arr);
}

static void handle_apikey_delete(struct orch_httpd_req *req, const struct orch_router_params *params,
                                 void *userdata)
{
        struct orch_api *api = userdata;
        const char *id = orch_router_param(params, "id");
        int r = orch_apikeys_delete(api->cfg.st->store, id);

        if (r == -ENOENT) {
                reply_error(api, req, 404, "API key '%s' not found", id);
                return;
        }
        if (r < 0) {
                reply_store_error(api, req, r);
                return;
        }
        reply_json(api, req, 200, json_pack("{s:s, s:s}", "id", id, "change", "deleted"));
}

/* --- health and metrics --------------------------------------------------------------------- */

static void handle_healthz(struct orch_httpd_req *req, const struct orch_router_params *params,
                           void *userdata)
{
        struct orch_api *api = userdata;

        count(api, 200);
        orch_httpd_respond(req, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

static void handle_metrics(struct orch_httpd_req *req, const struct orch_router_params *params,
                           void *userdata)
{
        struct orch_api *api = userdata;
        struct orch_state *st = api->cfg.st;
        const struct orch_reconciler_stats *rs = orch_reconciler_stats(api->cfg.rc);
        size_t inst_by[_ORCH_INSTANCE_STATE_MAX] = {0}, node_by[_ORCH_NODE_STATE_MAX] = {0};
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;
        struct orch_buf b = {0};
        uint64_t cum = 0;

        for (n = orch_hmap_first(&st->instances, &it); n; n = orch_hmap_next(&st->instances, &it))
                inst_by[container_of(n, struct orch_inst, hnode)->state]++;
        for (n = orch_hmap_first(&st->nodes, &it); n; n = orch_hmap_next(&st->nodes, &it)) {
                struct orch_node *node = container_of(n, struct orch_node, hnode);
                node_by[node->state == ORCH_NODE_READY && node->cordoned ? ORCH_NODE_DRAINING
                                                                         : node->state]++;
        }
        orch_buf_puts(&b, "# HELP orch_instances Instances by state.\n# TYPE orch_instances gauge\n");
        for (size_t i = 0; i < _ORCH_INSTANCE_STATE_MAX; i++)
                orch_buf_printf(&b, "orch_instances{state=\"%s\"} %zu\n",
                                orch_instance_state_to_string((enum orch_instance_state)i), inst_by[i]);
        orch_buf_puts(&b, "# HELP orch_nodes Nodes by state.\n# TYPE orch_nodes gauge\n");
        for (size_t i = 0; i < _ORCH_NODE_STATE_MAX; i++)
                orch_buf_printf(&b, "orch_nodes{state=\"%s\"} %zu\n",
                                orch_node_state_to_string((enum orch_node_state)i), node_by[i]);
        orch_buf_printf(&b,
                        "# HELP orch_services Services.\n# TYPE orch_services gauge\norch_services %zu\n",
                        st->n_services);
        orch_buf_puts(&b, "# HELP orch_placement_seconds Time to decide one placement.\n"
                          "# TYPE orch_placement_seconds histogram\n");
        for (size_t i = 0; i < ELEMENTSOF(orch_reconciler_latency_bounds); i++) {
                cum += rs->latency_buckets[i];
                orch_buf_printf(&b, "orch_placement_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                                orch_reconciler_latency_bounds[i], cum);
        }
        cum += rs->latency_buckets[ELEMENTSOF(orch_reconciler_latency_bounds)];
        orch_buf_printf(&b, "orch_placement_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
        orch_buf_printf(&b, "orch_placement_seconds_sum %g\norch_placement_seconds_count %" PRIu64 "\n",
                        rs->latency_sum_sec, cum);
        orch_buf_printf(
                &b,
                "# HELP orch_placements_total Placements made.\n# TYPE orch_placements_total counter\n"
                "orch_placements_total %" PRIu64 "\n"
                "# HELP orch_placement_failures_total Placement attempts that found no node.\n"
                "# TYPE orch_placement_failures_total counter\norch_placement_failures_total %" PRIu64 "\n",
                rs->placements, rs->placement_failures);
        orch_buf_printf(
                &b,
                "# HELP orch_agents_connected Agent connections.\n# TYPE orch_agents_connected gauge\n"
                "orch_agents_connected %zu\n",
                orch_agents_connected(api->cfg.agents));
        orch_buf_puts(&b, "# HELP orch_api_requests_total API requests by status code.\n"
                          "# TYPE orch_api_requests_total counter\n");
        count(api, 200);
        for (int code = 100; code < 600; code++)
                if (api->by_code[code])
                        orch_buf_printf(&b, "orch_api_requests_total{code=\"%d\"} %" PRIu64 "\n", code,
                                        api->by_code[code]);
        if (api->cfg.metrics_extra)
                api->cfg.metrics_extra(api->cfg.metrics_userdata, &b);
        orch_httpd_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
                           b.len);
        orch_buf_release(&b);
}

/* --- dispatch ------------------------------------------------------------------------------- */

static const struct orch_http_route routes[] = {
        {"GET", "/healthz", handle_healthz},
        {"GET", "/metrics", handle_metrics},
        {"POST", "/v1/apply", handle_apply},
        {"GET", "/v1/services", handle_services},
        {"GET", "/v1/services/{name}", handle_service},
        {"DELETE", "/v1/services/{name}", handle_service_delete},
        {"POST", "/v1/services/{name}/scale", handle_scale},
        {"GET", "/v1/services/{name}/rollout", handle_rollout},
        {"POST", "/v1/services/{name}/rollout/undo", handle_undo},
        {"GET", "/v1/instances", handle_instances},
        {"GET", "/v1/instances/{id}", handle_instance},
        {"GET", "/v1/nodes", handle_nodes},
        {"GET", "/v1/nodes/{name}", handle_node},
        {"POST", "/v1/nodes/{name}/drain", handle_drain},
        {"POST", "/v1/nodes/{name}/uncordon", handle_uncordon},
        {"GET", "/v1/events", handle_events},
        {"GET", "/v1/logs/{instance}", handle_logs},
        {"GET", "/v1/registry/{service}", handle_registry},
        {"POST", "/v1/apikeys", handle_apikey_create},
        {"GET", "/v1/apikeys", handle_apikeys},
        {"DELETE", "/v1/apikeys/{id}", handle_apikey_delete},
};
static const size_t n_routes = ELEMENTSOF(routes);

static bool authorized(struct orch_api *api, struct orch_httpd_req *req)
{
        const struct orch_http_head *h = orch_httpd_req_head(req);
        const char *auth = orch_http_head_header(h, "Authorization"), *token;

        if (h->path && streq(h->path, "/healthz"))
                return true;
        /* the scheme is case-insensitive (RFC 9110 §11.1) */
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
                return false;
        token = auth + 7;
        while (*token == ' ')
                token++;
        return orch_secret_equal(token, api->admin_token);
}

static void on_request(struct orch_httpd_req *req, void *userdata)
{
        struct orch_api *api = userdata;

        if (!authorized(api, req)) {
                orch_httpd_req_add_header(req, "WWW-Authenticate", "Bearer realm=\"orch\"");
                reply_error(api, req, 401, "missing or invalid API token (Authorization: Bearer TOKEN)");
                return;
        }
        orch_router_dispatch(routes, n_routes, req, api);
}

int orch_api_new(uv_loop_t *loop, const struct orch_api_config *cfg, struct orch_api **ret)
{
        struct orch_api *api = calloc(1, sizeof *api);
        struct orch_httpd_config hc = {
                .listen = cfg->listen,
                .max_body_bytes = ORCH_MANIFEST_MAX_BYTES,
                .handler = on_request,
        };
        int r;

        if (!api)
                return -ENOMEM;
        api->cfg = *cfg;
        api->admin_token = strdup(cfg->admin_token);
        orch_list_init(&api->followers);
        if (!api->admin_token) {
                free(api);
                return -ENOMEM;
        }
        hc.userdata = api;
        r = orch_httpd_new(loop, &hc, &api->httpd);
        if (r < 0) {
                free(api->admin_token);
                free(api);
                return r;
        }
        *ret = api;
        return 0;
}

int orch_api_port(const struct orch_api *api)
{
        return orch_httpd_port(api->httpd);
}

struct api_free_ctx {
        struct orch_api *api;
        void (*done)(void *);
        void *userdata;
};

static void httpd_freed(void *userdata)
{
        struct api_free_ctx *c = userdata;

        free(c->api->admin_token);
        free(c->api);
        if (c->done)
                c->done(c->userdata);
        free(c);
}

void orch_api_free(struct orch_api *api, void (*done)(void *), void *userdata)
{
        struct api_free_ctx *c;

        if (!api)
                return;
        c = calloc(1, sizeof *c);
        if (!c)
                return;
        *c = (struct api_free_ctx){api, done, userdata};
        /* followers and log streams end through their close callbacks */
        orch_httpd_free(api->httpd, httpd_freed, c);
}
