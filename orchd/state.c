/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>

#include "json.h"
#include "log.h"
#include "scheduler.h"
#include "state.h"
#include "store.h"
#include "units.h"
#include "util.h"
#include "banned.h"

static const char *const event_types[_ORCH_EVENT_TYPE_MAX] = {
        [ORCH_EVENT_SERVICE_APPLIED] = "service.applied",
        [ORCH_EVENT_SERVICE_DELETED] = "service.deleted",
        [ORCH_EVENT_SERVICE_SCALED] = "service.scaled",
        [ORCH_EVENT_INSTANCE_PLACED] = "instance.placed",
        [ORCH_EVENT_INSTANCE_PENDING] = "instance.pending",
        [ORCH_EVENT_INSTANCE_STARTED] = "instance.started",
        [ORCH_EVENT_INSTANCE_EXITED] = "instance.exited",
        [ORCH_EVENT_INSTANCE_RESTARTED] = "instance.restarted",
        [ORCH_EVENT_INSTANCE_HEALTH] = "instance.health",
        [ORCH_EVENT_INSTANCE_STOPPING] = "instance.stopping",
        [ORCH_EVENT_INSTANCE_STOPPED] = "instance.stopped",
        [ORCH_EVENT_INSTANCE_LOST] = "instance.lost",
        [ORCH_EVENT_INSTANCE_REPLACED] = "instance.replaced",
        [ORCH_EVENT_INSTANCE_FAILED] = "instance.failed",
        [ORCH_EVENT_NODE_JOINED] = "node.joined",
        [ORCH_EVENT_NODE_DOWN] = "node.down",
        [ORCH_EVENT_NODE_DRAINING] = "node.draining",
        [ORCH_EVENT_NODE_READY] = "node.ready",
        [ORCH_EVENT_ROLLOUT] = "rollout",
};

static const char *const rollout_states[_ORCH_ROLLOUT_STATE_MAX] = {
        [ORCH_ROLLOUT_NONE] = "none",
        [ORCH_ROLLOUT_PROGRESSING] = "progressing",
        [ORCH_ROLLOUT_COMPLETE] = "complete",
        [ORCH_ROLLOUT_FAILED] = "failed",
};

const char *orch_event_type_to_string(enum orch_event_type t)
{
        return (unsigned)t < _ORCH_EVENT_TYPE_MAX ? event_types[t] : NULL;
}

const char *orch_rollout_state_to_string(enum orch_rollout_state s)
{
        return (unsigned)s < _ORCH_ROLLOUT_STATE_MAX ? rollout_states[s] : NULL;
}

static enum orch_rollout_state rollout_state_from_string(const char *s)
{
        for (size_t i = 0; s && i < _ORCH_ROLLOUT_STATE_MAX; i++)
                if (streq(s, rollout_states[i]))
                        return (enum orch_rollout_state)i;
        return ORCH_ROLLOUT_NONE;
}

/* --- construction ------------------------------------------------------------------------- */

int orch_state_new(struct orch_store *store, struct orch_state **ret)
{
        struct orch_sched_options so = {0};
        struct orch_state *st = calloc(1, sizeof *st);
        int r;

        if (!st)
                return -ENOMEM;
        st->store = store;
        orch_list_init(&st->dirty_services);
        orch_list_init(&st->store_services);
        orch_list_init(&st->store_instances);
        orch_list_init(&st->store_reports);
        orch_list_init(&st->store_nodes);
        st->store_events = json_array();
        st->pending_events = json_array();
        r = orch_random_bytes(&so.seed, sizeof so.seed);
        if (r >= 0)
                r = orch_sched_new(&so, &st->sched);
        if (r < 0 || !st->store_events || !st->pending_events) {
                orch_state_free(st);
                return r < 0 ? r : -ENOMEM;
        }
        *ret = st;
        return 0;
}

static void svc_rev_release(struct orch_svc_rev *rev)
{
        orch_service_free(rev->spec);
        free(rev->spec_json);
        *rev = (struct orch_svc_rev){0};
}

static void svc_free(struct orch_svc *svc)
{
        for (size_t i = 0; i < svc->n_revs; i++)
                svc_rev_release(&svc->revs[i]);
        free(svc->rollout.message);
        free(svc->rollout.failed_reason);
        free(svc->name);
        free(svc);
}

static void inst_free(struct orch_inst *inst)
{
        for (size_t i = 0; i < inst->n_ports; i++)
                free(inst->ports[i].name);
        free(inst->ports);
        free(inst->reason);
        free(inst->cgroup);
        free(inst);
}

static void node_free(struct orch_node *node)
{
        for (size_t i = 0; i < node->n_labels; i++) {
                free(node->labels[i].key);
                free(node->labels[i].value);
        }
        free(node->labels);
        orch_strv_free(node->drivers);
        free(node->version);
        free(node->address);
        free(node->name);
        free(node);
}

struct orch_state *orch_state_free(struct orch_state *st)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        if (!st)
                return NULL;
        {
                /* first the write queues (they link instances the map holds, and removed ones whose
                 * delete was never flushed and that only the queue holds), then the map */
                struct orch_list *p, *t;
                orch_list_foreach_safe (p, t, &st->store_reports)
                        orch_list_remove(p);
                orch_list_foreach_safe (p, t, &st->store_instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, store_link);
                        orch_list_remove(p);
                        if (inst->store_delete)
                                inst_free(inst);
                }
        }
        for (n = orch_hmap_first(&st->instances, &it); n; n = orch_hmap_next(&st->instances, &it))
                inst_free(container_of(n, struct orch_inst, hnode));
        for (n = orch_hmap_first(&st->services, &it); n; n = orch_hmap_next(&st->services, &it))
                svc_free(container_of(n, struct orch_svc, hnode));
        for (n = orch_hmap_first(&st->nodes, &it); n; n = orch_hmap_next(&st->nodes, &it))
                node_free(container_of(n, struct orch_node, hnode));
        orch_hmap_release(&st->instances);
        orch_hmap_release(&st->services);
        orch_hmap_release(&st->nodes);
        orch_sched_free(st->sched);
        json_decref(st->store_events);
        json_decref(st->pending_events);
        free(st);
        return NULL;
}

/* --- lookups and predicates ---------------------------------------------------------------- */

struct orch_svc *orch_state_service(struct orch_state *st, const char *name)
{
        return orch_hmap_entry(orch_hmap_get(&st->services, name), struct orch_svc, hnode);
}

struct orch_inst *orch_state_instance(struct orch_state *st, const char *id)
{
        return orch_hmap_entry(orch_hmap_get(&st->instances, id), struct orch_inst, hnode);
}

struct orch_node *orch_state_node(struct orch_state *st, const char *name)
{
        return orch_hmap_entry(orch_hmap_get(&st->nodes, name), struct orch_node, hnode);
}

static bool state_is_terminal(enum orch_instance_state s)
{
        return s == ORCH_INSTANCE_EXITED || s == ORCH_INSTANCE_FAILED || s == ORCH_INSTANCE_LOST;
}

bool orch_inst_is_live(const struct orch_inst *inst)
{
        return inst->desired_run && !state_is_terminal(inst->state);
}

bool orch_inst_is_available(const struct orch_inst *inst)
{
        if (!inst->desired_run || inst->state != ORCH_INSTANCE_RUNNING)
                return false;
        return inst->health == ORCH_HEALTH_PASSING ||
               (inst->svc && inst->svc->spec && inst->svc->spec->health.type == ORCH_HEALTH_NONE &&
                inst->health != ORCH_HEALTH_FAILING);
}

size_t orch_svc_ready_count(const struct orch_svc *svc)
{
        const struct orch_list *p;
        size_t n = 0;

        orch_list_foreach (p, &svc->instances) {
                const struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                if (orch_inst_is_available(inst))
                        n++;
        }
        return n;
}

const struct orch_svc_rev *orch_state_service_revision(const struct orch_svc *svc, const char *revision)
{
        for (size_t i = 0; i < svc->n_revs; i++)
                if (streq(svc->revs[i].revision, revision))
                        return &svc->revs[i];
        return NULL;
}

/* --- change tracking ------------------------------------------------------------------------ */

void orch_state_mark_dirty(struct orch_state *st, struct orch_svc *svc)
{
        if (st->loading)
                return;
        if (!orch_list_linked(&svc->dirty_link))
                orch_list_append(&st->dirty_services, &svc->dirty_link);
}

void orch_state_service_changed(struct orch_state *st, struct orch_svc *svc)
{
        if (st->loading)
                return;
        if (!orch_list_linked(&svc->store_link))
                orch_list_append(&st->store_services, &svc->store_link);
}

void orch_state_instance_changed(struct orch_state *st, struct orch_inst *inst)
{
        if (st->loading)
                return;
        if (orch_list_linked(&inst->report_link))
                orch_list_remove(&inst->report_link); /* written with the next flush anyway */
        if (!orch_list_linked(&inst->store_link))
                orch_list_append(&st->store_instances, &inst->store_link);
}

void orch_state_instance_reported(struct orch_state *st, struct orch_inst *inst)
{
        if (st->loading || orch_list_linked(&inst->store_link) || orch_list_linked(&inst->report_link))
                return;
        orch_list_append(&st->store_reports, &inst->report_link);
}

void orch_state_node_changed(struct orch_state *st, struct orch_node *node)
{
        if (st->loading)
                return;
        if (!orch_list_linked(&node->store_link))
                orch_list_append(&st->store_nodes, &node->store_link);
}

/* --- events --------------------------------------------------------------------------------- */

uint64_t orch_state_event(struct orch_state *st, enum orch_event_type type, json_t *fields, const char *fmt,
                          ...)
{
        struct orch_buf msg = {0};
        json_t *ev = fields ? fields : json_object();
        char ts[40];
        va_list ap;
        uint64_t now = orch_realtime_msec();

        if (!ev)
                return 0;
        if (st->loading) {
                json_decref(ev);
                return 0;
        }
        va_start(ap, fmt);
        orch_buf_vprintf(&msg, fmt, ap);
        va_end(ap);
        orch_format_time(now, ts, sizeof ts);
        st->event_index++;
        json_object_set_new(ev, "index", json_integer((json_int_t)st->event_index));
        json_object_set_new(ev, "time", json_string(ts));
        json_object_set_new(ev, "type", json_string(orch_event_type_to_string(type)));
        json_object_set_new(ev, "message", json_string(msg.oom ? "" : msg.data ? msg.data : ""));
        orch_buf_release(&msg);
        /* persisted with the next flush, published after it */
        json_array_append(st->store_events, ev);
        json_array_append_new(st->pending_events, ev);
        return st->event_index;
}

/* --- JSON forms ----------------------------------------------------------------------------- */

static json_t *ports_to_json(const struct orch_inst *inst)
{
        json_t *o = json_object();

        for (size_t i = 0; o && i < inst->n_ports; i++)
                json_object_set_new(o, inst->ports[i].name, json_integer(inst->ports[i].port));
        return o;
}

static json_t *time_or_null(uint64_t ms)
{
        char ts[40];

        if (ms == 0 || orch_format_time(ms, ts, sizeof ts) < 0)
                return json_null();
        return json_string(ts);
}

json_t *orch_inst_to_json(const struct orch_inst *inst)
{
        json_t *o = json_object(), *exit_info = json_null();
        char addr[300] = "";

        if (!o)
                return NULL;
        if (inst->node && inst->node->address && inst->n_ports > 0)
                orch_snprintf(addr, sizeof addr, "%s:%u", inst->node->address, inst->ports[0].port);
        if (inst->exit_code >= 0 || inst->exit_signal > 0 || inst->oom)
                exit_info = json_pack("{s:o, s:o, s:b}", "code",
                                      inst->exit_code >= 0 ? json_integer(inst->exit_code) : json_null(),
                                      "signal",
                                      inst->exit_signal > 0 ? json_integer(inst->exit_signal) : json_null(),
                                      "oom", inst->oom);
        json_object_set_new(o, "id", json_string(inst->id));
        json_object_set_new(o, "service", json_string(inst->svc->name));
        json_object_set_new(o, "revision", json_string(inst->revision));
        json_object_set_new(o, "node", inst->node ? json_string(inst->node->name) : json_null());
        json_object_set_new(o, "state", json_string(orch_instance_state_to_string(inst->state)));
        json_object_set_new(o, "pid", inst->pid > 0 ? json_integer(inst->pid) : json_null());
        json_object_set_new(o, "address", *addr ? json_string(addr) : json_null());
        json_object_set_new(o, "ports", ports_to_json(inst));
        json_object_set_new(o, "health", json_string(orch_health_state_to_string(inst->health)));
        json_object_set_new(o, "restarts", json_integer(inst->restarts));
        json_object_set_new(o, "started_at", time_or_null(inst->started_at));
        json_object_set_new(o, "cgroup", inst->cgroup ? json_string(inst->cgroup) : json_null());
        json_object_set_new(o, "generation", json_integer((json_int_t)inst->generation));
        json_object_set_new(o, "desired", json_string(inst->desired_run ? "run" : "stop"));
        json_object_set_new(o, "created_at", time_or_null(inst->created_at));
        json_object_set_new(o, "reason", inst->reason ? json_string(inst->reason) : json_null());
        json_object_set_new(o, "exit", exit_info ? exit_info : json_null());
        return o;
}

static json_t *route_to_json(const struct orch_service *spec)
{
        if (!spec->route.enabled)
                return json_null();
        return json_pack("{s:s, s:o, s:b, s:s}", "path", spec->route.path, "host",
                         spec->route.host ? json_string(spec->route.host) : json_null(), "strip_prefix",
                         spec->route.strip_prefix, "port", spec->route.port ? spec->route.port : "");
}

static void add_last_failure(const struct orch_svc *svc, json_t *o);

json_t *orch_svc_to_json(const struct orch_svc *svc, bool with_spec)
{
        json_t *o = json_object(), *counts = json_object();
        size_t by_state[_ORCH_INSTANCE_STATE_MAX] = {0};
        const struct orch_list *p;

        if (!o || !counts) {
                json_decref(o);
                json_decref(counts);
                return NULL;
        }
        orch_list_foreach (p, &svc->instances) {
                const struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                by_state[inst->state]++;
        }
        for (size_t i = 0; i < _ORCH_INSTANCE_STATE_MAX; i++)
                if (by_state[i])
                        json_object_set_new(counts,
                                            orch_instance_state_to_string((enum orch_instance_state)i),
                                            json_integer((json_int_t)by_state[i]));
        json_object_set_new(o, "name", json_string(svc->name));
        json_object_set_new(o, "replicas", json_integer(svc->spec->replicas));
        json_object_set_new(o, "ready", json_integer((json_int_t)orch_svc_ready_count(svc)));
        json_object_set_new(o, "revision", json_string(svc->revision));
        json_object_set_new(o, "route", route_to_json(svc->spec));
        json_object_set_new(o, "instances", counts);
        json_object_set_new(o, "deleting", json_boolean(svc->deleting));
        json_object_set_new(o, "created_at", time_or_null(svc->created_at));
        json_object_set_new(o, "updated_at", time_or_null(svc->updated_at));
        json_object_set_new(
                o, "rollout",
                json_pack("{s:s, s:s, s:s, s:o}", "state", orch_rollout_state_to_string(svc->rollout.state),
                          "from", svc->rollout.from_revision, "to", svc->rollout.to_revision, "message",
                          svc->rollout.message ? json_string(svc->rollout.message) : json_null()));
        add_last_failure(svc, o);
        if (with_spec) {
                json_t *spec = NULL, *revs = json_array();
                if (orch_service_to_json(svc->spec, &spec) >= 0)
                        json_object_set_new(o, "spec", spec);
                for (size_t i = 0; revs && i < svc->n_revs; i++)
                        json_array_append_new(revs, json_pack("{s:s, s:o}", "revision",
                                                              svc->revs[i].revision, "created_at",
                                                              time_or_null(svc->revs[i].created_at)));
                json_object_set_new(o, "revisions", revs ? revs : json_null());
        }
        return o;
}

json_t *orch_node_to_json(const struct orch_node *node)
{
        json_t *o = json_object(), *labels = json_object(), *drivers = json_array();
        char last_seen[40] = "";

        if (!o || !labels || !drivers) {
                json_decref(o);
                json_decref(labels);
                json_decref(drivers);
                return NULL;
        }
        for (size_t i = 0; i < node->n_labels; i++)
                json_object_set_new(labels, node->labels[i].key, json_string(node->labels[i].value));
        for (char **d = node->drivers; d && *d; d++)
                json_array_append_new(drivers, json_string(*d));
        if (node->last_seen)
                orch_format_time(node->last_seen, last_seen, sizeof last_seen);
        json_object_set_new(o, "name", json_string(node->name));
        json_object_set_new(o, "address", node->address ? json_string(node->address) : json_null());
        json_object_set_new(o, "state",
                            json_string(node->state == ORCH_NODE_READY && node->cordoned
                                                ? "draining"
                                                : orch_node_state_to_string(node->state)));
        json_object_set_new(o, "labels", labels);
        json_object_set_new(o, "capacity",
                            json_pack("{s:f, s:I}", "cpu", node->cpu_millis / 1000.0, "memory",
                                      (json_int_t)node->memory));
        json_object_set_new(o, "allocated",
                            json_pack("{s:f, s:I}", "cpu", node->alloc_cpu_millis / 1000.0, "memory",
                                      (json_int_t)node->alloc_memory));
        json_object_set_new(o, "instances", json_integer((json_int_t)node->n_instances));
        json_object_set_new(o, "last_seen", *last_seen ? json_string(last_seen) : json_null());
        json_object_set_new(o, "drivers", drivers);
        json_object_set_new(o, "version", node->version ? json_string(node->version) : json_null());
        json_object_set_new(o, "connected", json_boolean(node->conn != NULL));
        return o;
}

/* --- store records -------------------------------------------------------------------------- */

/* The last failed rollout survives the automatic rollback it caused: `rollout status` says why. */
static void add_last_failure(const struct orch_svc *svc, json_t *o)
{
        json_t *ro = o ? json_object_get(o, "rollout") : NULL;

        if (ro && svc->rollout.failed_reason)
                json_object_set_new(ro, "last_failure",
                                    json_pack("{s:s, s:s}", "revision", svc->rollout.failed_revision,
                                              "reason", svc->rollout.failed_reason));
}

static json_t *svc_record(const struct orch_svc *svc)
{
        json_t *spec = NULL, *revs = json_array(), *o;

        if (!revs || orch_service_to_json(svc->spec, &spec) < 0) {
                json_decref(revs);
                return NULL;
        }
        for (size_t i = 0; i < svc->n_revs; i++)
                json_array_append_new(revs, json_string(svc->revs[i].revision));
        o = json_pack("{s:s, s:o, s:s, s:s, s:I, s:I, s:b, s:o, s:{s:s, s:s, s:s, s:I, s:I, s:b, s:o}}",
                      "name", svc->name, "spec", spec, "revision", svc->revision, "spec_hash",
                      svc->spec_hash, "created_at", (json_int_t)svc->created_at, "updated_at",
                      (json_int_t)svc->updated_at, "deleting", svc->deleting, "revisions", revs, "rollout",
                      "state", orch_rollout_state_to_string(svc->rollout.state), "from",
                      svc->rollout.from_revision, "to", svc->rollout.to_revision, "started_at",
                      (json_int_t)svc->rollout.started_at, "last_progress",
                      (json_int_t)svc->rollout.last_progress, "reverting", svc->rollout.reverting, "message",
                      svc->rollout.message ? json_string(svc->rollout.message) : json_null());
        add_last_failure(svc, o);
        return o;
}

/*
 * Records and events are written as JSON text straight into a buffer. They are written once per
 * placement and once per report, a million of each in a big apply, and building a jansson object
 * only to dump it (a hash table per record, UTF-8 checks per character, a printf per integer) cost
 * several times what SQLite then takes to store the text. The strings are ids, names and texts
 * that orchd made or the protocol decoder checked: UTF-8 without NUL.
 */
static void put_string(struct orch_buf *b, const char *s)
{
        static const char hex[] = "0123456789abcdef";
        const char *run = s;

        orch_buf_putc(b, '"');
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch >= 0x20 && ch != '"' && ch != '\\')
                        continue;
                orch_buf_put(b, run, (size_t)(s - run));
                run = s + 1;
                if (ch == '"' || ch == '\\') {
                        char e[2] = {'\\', (char)ch};
                        orch_buf_put(b, e, sizeof e);
                } else {
                        char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
                        orch_buf_put(b, e, sizeof e);
                }
        }
        orch_buf_put(b, run, (size_t)(s - run));
        orch_buf_putc(b, '"');
}

static void put_int(struct orch_buf *b, int64_t v)
{
        char d[24];
        size_t i = sizeof d;
        uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;

        do
                d[--i] = (char)('0' + u % 10);
        while ((u /= 10) > 0);
        if (v < 0)
                d[--i] = '-';
        orch_buf_put(b, d + i, sizeof d - i);
}

/* ,"key": (the key needs no escaping) */
static void put_key(struct orch_buf *b, const char *key, bool first)
{
        if (!first)
                orch_buf_putc(b, ',');
        orch_buf_putc(b, '"');
        orch_buf_puts(b, key);
        orch_buf_puts(b, "\":");
}

static void put_string_or_null(struct orch_buf *b, const char *s)
{
        if (s)
                put_string(b, s);
        else
                orch_buf_puts(b, "null");
}

static void put_bool(struct orch_buf *b, bool v)
{
        orch_buf_puts(b, v ? "true" : "false");
}

/* The instance record: what orch_state_load() reads back. */
static void inst_record(struct orch_buf *b, const struct orch_inst *inst)
{
        orch_buf_putc(b, '{');
        put_key(b, "id", true);
        put_string(b, inst->id);
        put_key(b, "service", false);
        put_string(b, inst->svc->name);
        put_key(b, "revision", false);
        put_string(b, inst->revision);
        put_key(b, "node", false);
        put_string_or_null(b, inst->node ? inst->node->name : NULL);
        put_key(b, "generation", false);
        put_int(b, (int64_t)inst->generation);
        put_key(b, "desired_run", false);
        put_bool(b, inst->desired_run);
        put_key(b, "confirmed", false);
        put_bool(b, inst->confirmed);
        put_key(b, "state", false);
        put_string(b, orch_instance_state_to_string(inst->state));
        put_key(b, "health", false);
        put_string(b, orch_health_state_to_string(inst->health));
        put_key(b, "pid", false);
        put_int(b, inst->pid);
        put_key(b, "ports", false);
        orch_buf_putc(b, '{');
        for (size_t i = 0; i < inst->n_ports; i++) {
                if (i > 0)
                        orch_buf_putc(b, ',');
                put_string(b, inst->ports[i].name);
                orch_buf_putc(b, ':');
                put_int(b, inst->ports[i].port);
        }
        orch_buf_putc(b, '}');
        put_key(b, "restarts", false);
        put_int(b, inst->restarts);
        put_key(b, "created_at", false);
        put_int(b, (int64_t)inst->created_at);
        put_key(b, "started_at", false);
        put_int(b, (int64_t)inst->started_at);
        put_key(b, "healthy_since", false);
        put_int(b, (int64_t)inst->healthy_since);
        put_key(b, "exit_code", false);
        put_int(b, inst->exit_code);
        put_key(b, "exit_signal", false);
        put_int(b, inst->exit_signal);
        put_key(b, "oom", false);
        put_bool(b, inst->oom);
        put_key(b, "reason", false);
        put_string_or_null(b, inst->reason);
        put_key(b, "cgroup", false);
        put_string_or_null(b, inst->cgroup);
        orch_buf_putc(b, '}');
}

/* An event as JSON text. Events are flat objects of strings, integers, booleans and null (their
 * fields come from json_pack); anything else goes through jansson. */
static int event_text(struct orch_buf *b, const json_t *ev)
{
        const char *k;
        json_t *v;
        bool first = true;

        orch_buf_putc(b, '{');
        json_object_foreach ((json_t *)ev, k, v) {
                if (!first)
                        orch_buf_putc(b, ',');
                first = false;
                put_string(b, k);
                orch_buf_putc(b, ':');
                switch (json_typeof(v)) {
                case JSON_STRING:
                        put_string(b, json_string_value(v));
                        break;
                case JSON_INTEGER:
                        put_int(b, (int64_t)json_integer_value(v));
                        break;
                case JSON_TRUE:
                case JSON_FALSE:
                        put_bool(b, json_is_true(v));
                        break;
                case JSON_NULL:
                        orch_buf_puts(b, "null");
                        break;
                default: {
                        _cleanup_(freep) char *t = orch_json_dumps_compact(v);
                        if (!t)
                                return -ENOMEM;
                        orch_buf_puts(b, t);
                }
                }
        }
        orch_buf_putc(b, '}');
        return b->oom ? -ENOMEM : 0;
}

static json_t *node_record(const struct orch_node *node)
{
        json_t *o = orch_node_to_json(node);

        if (!o)
                return NULL;
        /* exact figures, not the display form */
        json_object_set_new(o, "capacity",
                            json_pack("{s:i, s:I}", "cpu_millis", (json_int_t)node->cpu_millis, "memory",
                                      (json_int_t)node->memory));
        json_object_set_new(o, "cordoned", json_boolean(node->cordoned));
        json_object_set_new(o, "state", json_string(orch_node_state_to_string(node->state)));
        json_object_set_new(o, "last_seen", json_integer((json_int_t)node->last_seen));
        json_object_del(o, "allocated");
        json_object_del(o, "instances");
        json_object_del(o, "connected");
        return o;
}

/* `b` is scratch space, reused from record to record. */
static int put_instance(struct orch_store_tx *tx, struct orch_buf *b, const struct orch_inst *inst)
{
        orch_buf_reset(b);
        inst_record(b, inst);
        if (b->oom)
                return -ENOMEM;
        return orch_store_put(tx, ORCH_STORE_INSTANCES, inst->id, b->data, b->len);
}

static int rev_key(const struct orch_svc *svc, const char *revision, char *buf, size_t size)
{
        return orch_snprintf(buf, size, "%s/%s", svc->name, revision);
}

int orch_state_flush(struct orch_state *st)
{
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        _cleanup_(orch_buf_release) struct orch_buf text = {0};
        struct orch_list *p, *t;
        size_t i;
        json_t *ev;
        char key[ORCH_STORE_KEY_MAX];
        uint64_t now = orch_now_usec();
        bool reports_due = !orch_list_empty(&st->store_reports) &&
                           now >= st->reports_flushed_usec + ORCH_STATE_REPORT_FLUSH_MS * USEC_PER_MSEC;
        int r;

        if (orch_list_empty(&st->store_services) && orch_list_empty(&st->store_instances) &&
            orch_list_empty(&st->store_nodes) && json_array_size(st->store_events) == 0 && !reports_due)
                goto publish;

        r = orch_store_begin(st->store, &tx);
        if (r < 0)
                return r;
        orch_list_foreach (p, &st->store_services) {
                struct orch_svc *svc = orch_list_entry(p, struct orch_svc, store_link);
                _cleanup_json_ json_t *rec = svc_record(svc);

                if (!rec)
                        return -ENOMEM;
                r = orch_store_put_json(tx, ORCH_STORE_SERVICES, svc->name, rec);
                if (r < 0)
                        return r;
                /* the current revision's template, for history and rollbacks */
                rev_key(svc, svc->revision, key, sizeof key);
                {
                        _cleanup_json_ json_t *rv =
                                json_pack("{s:s, s:I}", "spec", svc->revs[0].spec_json, "created_at",
                                          (json_int_t)svc->revs[0].created_at);
                        if (!rv)
                                return -ENOMEM;
                        r = orch_store_put_json(tx, ORCH_STORE_REVISIONS, key, rv);
                        if (r < 0)
                                return r;
                }
        }
        orch_list_foreach (p, &st->store_instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, store_link);

                if (inst->store_delete) {
                        r = orch_store_delete(tx, ORCH_STORE_INSTANCES, inst->id);
                        if (r < 0 && r != -ENOENT)
                                return r;
                } else {
                        r = put_instance(tx, &text, inst);
                        if (r < 0)
                                return r;
                }
        }
        if (reports_due)
                orch_list_foreach (p, &st->store_reports) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, report_link);
                        r = put_instance(tx, &text, inst);
                        if (r < 0)
                                return r;
                }
        orch_list_foreach (p, &st->store_nodes) {
                struct orch_node *node = orch_list_entry(p, struct orch_node, store_link);
                _cleanup_json_ json_t *rec = node_record(node);

                if (!rec)
                        return -ENOMEM;
                r = orch_store_put_json(tx, ORCH_STORE_NODES, node->name, rec);
                if (r < 0)
                        return r;
        }
        json_array_foreach (st->store_events, i, ev) {
                json_int_t idx = json_integer_value(json_object_get(ev, "index"));

                orch_buf_reset(&text);
                r = event_text(&text, ev);
                if (r < 0)
                        return r;
                r = orch_store_append_event(tx, (uint64_t)idx, text.data, text.len);
                if (r < 0)
                        return r;
        }
        {
                char num[32];
                orch_snprintf(num, sizeof num, "%" PRIu64, st->generation);
                r = orch_store_put(tx, ORCH_STORE_META, "generation", num, strlen(num));
                if (r < 0)
                        return r;
                orch_snprintf(num, sizeof num, "%" PRIu64, st->event_index);
                r = orch_store_put(tx, ORCH_STORE_META, "event_index", num, strlen(num));
                if (r < 0)
                        return r;
        }
        r = orch_store_commit(TAKE_PTR(tx));
        if (r < 0)
                return r;

        orch_list_foreach_safe (p, t, &st->store_services)
                orch_list_remove(p);
        orch_list_foreach_safe (p, t, &st->store_nodes)
                orch_list_remove(p);
        if (reports_due) {
                orch_list_foreach_safe (p, t, &st->store_reports)
                        orch_list_remove(p);
                st->reports_flushed_usec = now;
        }
        orch_list_foreach_safe (p, t, &st->store_instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, store_link);
                orch_list_remove(p);
                if (inst->store_delete)
                        inst_free(inst);
        }
        json_array_clear(st->store_events);

publish:
        if (json_array_size(st->pending_events) > 0) {
                _cleanup_json_ json_t *evs = st->pending_events;
                st->pending_events = json_array();
                if (st->on_event)
                        json_array_foreach (evs, i, ev)
                                st->on_event(st->on_event_userdata,
                                             (uint64_t)json_integer_value(json_object_get(ev, "index")), ev);
        }
        return 0;
}

/* --- accounting ----------------------------------------------------------------------------- */

/* An instance occupies its node's resources while it is placed and not ended. */
static void update_accounting(struct orch_state *st, struct orch_inst *inst)
{
        bool hold = inst->node && !state_is_terminal(inst->state);

        if (hold == inst->holds_resources)
                return;
        if (inst->node->sched_slot >= 0)
                orch_sched_account(st->sched, (uint32_t)inst->node->sched_slot, inst->svc->name,
                                   inst->cpu_millis, inst->memory, hold ? 1 : -1);
        if (hold) {
                inst->node->alloc_cpu_millis += inst->cpu_millis;
                inst->node->alloc_memory += inst->memory;
        } else {
                inst->node->alloc_cpu_millis -= MIN(inst->node->alloc_cpu_millis, inst->cpu_millis);
                inst->node->alloc_memory -= MIN(inst->node->alloc_memory, inst->memory);
        }
        inst->holds_resources = hold;
}

void orch_state_release_resources(struct orch_state *st, struct orch_inst *inst)
{
        update_accounting(st, inst);
}

/* --- services ------------------------------------------------------------------------------- */

static int svc_push_revision(struct orch_svc *svc, struct orch_service *spec, const char *revision,
                             uint64_t created_at)
{
        struct orch_svc_rev rev = {.spec = spec, .created_at = created_at};
        json_t *j = NULL;

        orch_strlcpy(rev.revision, revision, sizeof rev.revision);
        if (orch_service_to_json(spec, &j) < 0)
                return -ENOMEM;
        rev.spec_json = orch_json_dumps_canonical(j);
        json_decref(j);
        if (!rev.spec_json)
                return -ENOMEM;
        /* drop an older entry of the same revision (re-applying an old spec moves it to the front) */
        for (size_t i = 0; i < svc->n_revs; i++)
                if (streq(svc->revs[i].revision, revision)) {
                        svc_rev_release(&svc->revs[i]);
                        memmove(&svc->revs[i], &svc->revs[i + 1],
                                (svc->n_revs - i - 1) * sizeof svc->revs[0]);
                        svc->n_revs--;
                        break;
                }
        if (svc->n_revs == ELEMENTSOF(svc->revs)) {
                svc_rev_release(&svc->revs[svc->n_revs - 1]);
                svc->n_revs--;
        }
        memmove(&svc->revs[1], &svc->revs[0], svc->n_revs * sizeof svc->revs[0]);
        svc->revs[0] = rev;
        svc->n_revs++;
        return 0;
}

int orch_state_apply_service(struct orch_state *st, struct orch_service *spec, const char **ret_change)
{
        struct orch_svc *svc = orch_state_service(st, spec->name);
        char revision[ORCH_REVISION_LEN + 1], hash[65];
        uint64_t now = orch_realtime_msec();
        int r;

        r = orch_service_revision(spec, revision);
        if (r < 0)
                return r;
        r = orch_service_spec_hash(spec, hash);
        if (r < 0)
                return r;

        if (!svc) {
                svc = calloc(1, sizeof *svc);
                if (!svc)
                        return -ENOMEM;
                svc->name = strdup(spec->name);
                if (!svc->name) {
                        free(svc);
                        return -ENOMEM;
                }
                orch_list_init(&svc->instances);
                orch_list_init(&svc->unplaced);
                orch_list_init(&svc->dirty_link);
                orch_list_init(&svc->store_link);
                r = svc_push_revision(svc, spec, revision, now);
                if (r < 0) {
                        svc->revs[0].spec = NULL;
                        svc_free(svc);
                        return r;
                }
                r = orch_hmap_insert(&st->services, &svc->hnode, svc->name);
                if (r < 0) {
                        svc->revs[0].spec = NULL; /* stays the caller's */
                        svc_free(svc);
                        return r;
                }
                st->n_services++;
                svc->spec = spec;
                orch_strlcpy(svc->revision, revision, sizeof svc->revision);
                orch_strlcpy(svc->spec_hash, hash, sizeof svc->spec_hash);
                svc->created_at = svc->updated_at = now;
                *ret_change = "created";
        } else if (streq(svc->spec_hash, hash) && !svc->deleting) {
                orch_service_free(spec);
                *ret_change = "unchanged";
                return 0;
        } else {
                bool new_revision = !streq(svc->revision, revision), was_deleting = svc->deleting;

                if (new_revision) {
                        r = svc_push_revision(svc, spec, revision, now);
                        if (r < 0)
                                return r;
                        /* a new rollout; the record of the last failed one stays */
                        struct orch_rollout prev = svc->rollout;
                        free(prev.message);
                        svc->rollout = (struct orch_rollout){
                                .state = ORCH_ROLLOUT_PROGRESSING,
                                .started_at = now,
                                .last_progress = now,
                                .failed_reason = prev.failed_reason,
                        };
                        memcpy(svc->rollout.failed_revision, prev.failed_revision,
                               sizeof prev.failed_revision);
                        orch_strlcpy(svc->rollout.from_revision, svc->revision,
                                     sizeof svc->rollout.from_revision);
                        orch_strlcpy(svc->rollout.to_revision, revision, sizeof svc->rollout.to_revision);
                } else {
                        /* same template (replicas, route or update changed): replace in place */
                        struct orch_svc_rev *cur = &svc->revs[0];
                        json_t *j = NULL;
                        char *js;

                        if (orch_service_to_json(spec, &j) < 0)
                                return -ENOMEM;
                        js = orch_json_dumps_canonical(j);
                        json_decref(j);
                        if (!js)
                                return -ENOMEM;
                        orch_service_free(cur->spec);
                        free(cur->spec_json);
                        cur->spec = spec;
                        cur->spec_json = js;
                }
                svc->spec = spec;
                svc->deleting = false;
                orch_strlcpy(svc->revision, revision, sizeof svc->revision);
                orch_strlcpy(svc->spec_hash, hash, sizeof svc->spec_hash);
                svc->updated_at = now;
                /* re-applying a service being deleted brings it back: for the user, a creation */
                *ret_change = was_deleting ? "created" : "updated";
        }
        orch_state_service_changed(st, svc);
        orch_state_mark_dirty(st, svc);
        orch_state_event(st, ORCH_EVENT_SERVICE_APPLIED,
                         json_pack("{s:s, s:s, s:s}", "service", svc->name, "revision", svc->revision,
                                   "change", *ret_change),
                         "service %s %s (revision %s, %u replica%s)", svc->name, *ret_change, svc->revision,
                         svc->spec->replicas, svc->spec->replicas == 1 ? "" : "s");
        return 1;
}

int orch_state_scale_service(struct orch_state *st, struct orch_svc *svc, uint32_t replicas)
{
        char hash[65];
        uint32_t old = svc->spec->replicas;
        int r;

        if (old == replicas)
                return 0;
        svc->spec->replicas = replicas;
        r = orch_service_spec_hash(svc->spec, hash);
        if (r < 0) {
                svc->spec->replicas = old;
                return r;
        }
        orch_strlcpy(svc->spec_hash, hash, sizeof svc->spec_hash);
        svc->updated_at = orch_realtime_msec();
        orch_state_service_changed(st, svc);
        orch_state_mark_dirty(st, svc);
        orch_state_event(st, ORCH_EVENT_SERVICE_SCALED,
                         json_pack("{s:s, s:i, s:i}", "service", svc->name, "from", (json_int_t)old, "to",
                                   (json_int_t)replicas),
                         "service %s scaled from %u to %u replicas", svc->name, old, replicas);
        return 1;
}

int orch_state_delete_service(struct orch_state *st, struct orch_svc *svc)
{
        if (svc->deleting)
                return 0;
        svc->deleting = true;
        svc->updated_at = orch_realtime_msec();
        orch_state_service_changed(st, svc);
        orch_state_mark_dirty(st, svc);
        orch_state_event(st, ORCH_EVENT_SERVICE_DELETED, json_pack("{s:s}", "service", svc->name),
                         "service %s deleted", svc->name);
        return 1;
}

/* Deleting the service record needs its own transaction step: it is not a put. */
static int store_delete_service(struct orch_state *st, struct orch_svc *svc)
{
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        char key[ORCH_STORE_KEY_MAX];
        int r = orch_store_begin(st->store, &tx);

        if (r < 0)
                return r;
        r = orch_store_delete(tx, ORCH_STORE_SERVICES, svc->name);
        if (r < 0 && r != -ENOENT)
                return r;
        for (size_t i = 0; i < svc->n_revs; i++) {
                rev_key(svc, svc->revs[i].revision, key, sizeof key);
                r = orch_store_delete(tx, ORCH_STORE_REVISIONS, key);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return orch_store_commit(TAKE_PTR(tx));
}

void orch_state_remove_service(struct orch_state *st, struct orch_svc *svc)
{
        int r;

        /* pending writes of this service go first, so the delete is the last word */
        r = orch_state_flush(st);
        if (r >= 0)
                r = store_delete_service(st, svc);
        if (r < 0) {
                log_error_errno(r, "could not remove service %s from the store: %s", svc->name,
                                orch_store_last_error(st->store));
                return;
        }
        if (orch_list_linked(&svc->dirty_link))
                orch_list_remove(&svc->dirty_link);
        if (orch_list_linked(&svc->store_link))
                orch_list_remove(&svc->store_link);
        orch_hmap_remove(&st->services, &svc->hnode);
        st->n_services--;
        svc_free(svc);
}

/* --- instances ------------------------------------------------------------------------------ */

int orch_state_new_instance(struct orch_state *st, struct orch_svc *svc, struct orch_inst **ret)
{
        return orch_state_new_instance_at(st, svc, NULL, ret);
}

int orch_state_new_instance_at(struct orch_state *st, struct orch_svc *svc, const char *revision,
                               struct orch_inst **ret)
{
        const struct orch_svc_rev *rev =
                orch_state_service_revision(svc, revision ? revision : svc->revision);
        const struct orch_service *spec = rev ? rev->spec : svc->spec;
        struct orch_inst *inst;
        int r;

        if (revision && !rev)
                return -ENOENT;
        inst = calloc(1, sizeof *inst);
        if (!inst)
                return -ENOMEM;
        /* <service>-<8+ hex digits of a new generation>: unique, and rising, so that a million new
         * instance records are appended to the store's index rather than scattered over it */
        do
                orch_snprintf(inst->id, sizeof inst->id, "%s-%08" PRIx64, svc->name, ++st->generation);
        while (orch_hmap_get(&st->instances, inst->id));
        r = orch_hmap_insert(&st->instances, &inst->hnode, inst->id);
        if (r < 0) {
                free(inst);
                return r;
        }
        st->n_instances++;
        inst->svc = svc;
        orch_strlcpy(inst->revision, revision ? revision : svc->revision, sizeof inst->revision);
        inst->generation = st->generation; /* the one its id was made from */
        inst->desired_run = true;
        inst->state = ORCH_INSTANCE_PENDING;
        inst->health = ORCH_HEALTH_UNKNOWN;
        inst->exit_code = -1;
        inst->cpu_millis = spec->resources.cpu_millis;
        inst->memory = spec->resources.memory;
        inst->created_at = orch_realtime_msec();
        orch_list_init(&inst->node_link);
        orch_list_init(&inst->store_link);
        orch_list_init(&inst->report_link);
        orch_list_append(&svc->instances, &inst->svc_link);
        orch_list_append(&svc->unplaced, &inst->unplaced_link);
        svc->n_pending++;
        orch_state_instance_changed(st, inst);
        *ret = inst;
        return 0;
}

void orch_state_set_reason(struct orch_state *st, struct orch_inst *inst, const char *reason)
{
        if (streq_ptr(inst->reason, reason))
                return;
        free(inst->reason);
        inst->reason = reason ? strdup(reason) : NULL;
        orch_state_instance_changed(st, inst);
}

void orch_state_place_instance(struct orch_state *st, struct orch_inst *inst, struct orch_node *node)
{
        if (inst->node)
                orch_state_unplace_instance(st, inst, NULL);
        orch_list_remove(&inst->unplaced_link);
        inst->svc->n_pending--;
        inst->node = node;
        orch_list_append(&node->instances, &inst->node_link);
        node->n_instances++;
        /* every placement is a new generation: fencing compares them */
        inst->generation = ++st->generation;
        inst->confirmed = false;
        inst->created_at = orch_realtime_msec();
        update_accounting(st, inst);
        orch_state_set_reason(st, inst, NULL);
        orch_state_instance_changed(st, inst);
}

void orch_state_replace_instance(struct orch_state *st, struct orch_inst *inst)
{
        inst->state = ORCH_INSTANCE_PENDING;
        inst->generation = ++st->generation;
        inst->confirmed = false;
        inst->created_at = orch_realtime_msec();
        inst->pid = 0;
        update_accounting(st, inst); /* pending holds its node's resources */
        orch_state_instance_changed(st, inst);
}

void orch_state_unplace_instance(struct orch_state *st, struct orch_inst *inst, const char *reason)
{
        if (!inst->node)
                return;
        if (inst->holds_resources) {
                enum orch_instance_state saved = inst->state;
                inst->state = ORCH_INSTANCE_LOST; /* terminal: releases */
                update_accounting(st, inst);
                inst->state = saved;
        }
        orch_list_remove(&inst->node_link);
        inst->node->n_instances--;
        inst->node = NULL;
        orch_list_append(&inst->svc->unplaced, &inst->unplaced_link);
        inst->svc->n_pending++;
        if (reason)
                orch_state_set_reason(st, inst, reason);
        orch_state_instance_changed(st, inst);
}

void orch_state_remove_instance(struct orch_state *st, struct orch_inst *inst)
{
        if (inst->node)
                orch_state_unplace_instance(st, inst, NULL);
        orch_list_remove(&inst->unplaced_link);
        if (orch_list_linked(&inst->report_link))
                orch_list_remove(&inst->report_link);
        inst->svc->n_pending--;
        orch_list_remove(&inst->svc_link);
        orch_hmap_remove(&st->instances, &inst->hnode);
        st->n_instances--;
        /* freed after the flush that deletes its record */
        inst->store_delete = true;
        orch_state_instance_changed(st, inst);
}

/* --- nodes ---------------------------------------------------------------------------------- */

/* A cordoned (draining) node takes nothing new, whatever its connection state. */
static enum orch_node_state sched_state(const struct orch_node *node)
{
        return node->state == ORCH_NODE_READY && node->cordoned ? ORCH_NODE_DRAINING : node->state;
}

static int node_sched_sync(struct orch_state *st, struct orch_node *node)
{
        _cleanup_(freep) struct orch_sched_label *labels = calloc(node->n_labels + 1, sizeof *labels);
        struct orch_sched_node_spec spec = {
                .name = node->name,
                .labels = labels,
                .n_labels = node->n_labels,
                .cpu_millis = node->cpu_millis,
                .memory = node->memory,
                .state = sched_state(node),
        };
        enum orch_driver d;
        uint32_t slot;
        int r;

        if (!labels)
                return -ENOMEM;
        for (size_t i = 0; i < node->n_labels; i++)
                labels[i] = (struct orch_sched_label){node->labels[i].key, node->labels[i].value};
        for (char **p = node->drivers; p && *p; p++)
                if (orch_driver_from_string(*p, &d) >= 0)
                        spec.drivers |= ORCH_SCHED_DRIVER_BIT(d);
        if (node->sched_slot < 0) {
                r = orch_sched_node_add(st->sched, &spec, &slot);
                if (r < 0)
                        return r;
                node->sched_slot = (int)slot;
                return 0;
        }
        spec.name = NULL;
        return orch_sched_node_update(st->sched, (uint32_t)node->sched_slot, &spec);
}

int orch_state_upsert_node(struct orch_state *st, const char *name, struct orch_node **ret)
{
        struct orch_node *node = orch_state_node(st, name);
        int r;

        if (node) {
                *ret = node;
                return 0;
        }
        node = calloc(1, sizeof *node);
        if (!node || !(node->name = strdup(name))) {
                free(node);
                return -ENOMEM;
        }
        node->sched_slot = -1;
        node->state = ORCH_NODE_DOWN;
        orch_list_init(&node->instances);
        orch_list_init(&node->store_link);
        r = orch_hmap_insert(&st->nodes, &node->hnode, node->name);
        if (r < 0) {
                node_free(node);
                return r;
        }
        st->n_nodes++;
        r = node_sched_sync(st, node);
        if (r < 0)
                log_warn_errno(r, "scheduler: could not register node %s", name);
        *ret = node;
        return 1;
}

/* Called after the caller changed labels, capacity, drivers, cordon or connection. */
void orch_state_set_node_state(struct orch_state *st, struct orch_node *node, enum orch_node_state s)
{
        int r;

        node->state = s;
        r = node_sched_sync(st, node);
        if (r < 0)
                log_warn_errno(r, "scheduler: could not update node %s", node->name);
        orch_state_node_changed(st, node);
}

/* --- loading -------------------------------------------------------------------------------- */

static int load_service(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_state *st = userdata;
        _cleanup_json_ json_t *j = json_loadb(value, len, 0, NULL);
        _cleanup_(orch_service_freep) struct orch_service *spec = NULL;
        struct orch_diags diags = {0};
        json_t *jspec, *ro;
        const char *change = NULL, *s;
        struct orch_svc *svc;
        int r;

        if (!j || orch_json_get_object(j, "spec", &jspec) < 0) {
                log_error("store: service record %s is not valid JSON; skipping it", key);
                return 0;
        }
        r = orch_service_from_json(jspec, key, &spec, &diags);
        if (r < 0) {
                log_error("store: service %s no longer validates (%s); skipping it", key,
                          diags.n ? diags.items[0].message : "invalid");
                orch_diags_release(&diags);
                return 0;
        }
        r = orch_state_apply_service(st, TAKE_PTR(spec), &change);
        if (r < 0)
                return r;
        svc = orch_state_service(st, key);
        if (!svc)
                return 0;
        orch_json_get_u64(j, "created_at", &svc->created_at);
        orch_json_get_u64(j, "updated_at", &svc->updated_at);
        orch_json_get_bool(j, "deleting", &svc->deleting);
        if (orch_json_get_object(j, "rollout", &ro) >= 0) {
                if (orch_json_get_string(ro, "state", &s) >= 0)
                        svc->rollout.state = rollout_state_from_string(s);
                if (orch_json_get_string(ro, "from", &s) >= 0)
                        orch_strlcpy(svc->rollout.from_revision, s, sizeof svc->rollout.from_revision);
                if (orch_json_get_string(ro, "to", &s) >= 0)
                        orch_strlcpy(svc->rollout.to_revision, s, sizeof svc->rollout.to_revision);
                orch_json_get_u64(ro, "started_at", &svc->rollout.started_at);
                orch_json_get_u64(ro, "last_progress", &svc->rollout.last_progress);
                orch_json_get_bool(ro, "reverting", &svc->rollout.reverting);
                if (orch_json_get_string(ro, "message", &s) >= 0)
                        svc->rollout.message = strdup(s);
                {
                        json_t *lf;
                        if (orch_json_get_object(ro, "last_failure", &lf) >= 0) {
                                if (orch_json_get_string(lf, "revision", &s) >= 0)
                                        orch_strlcpy(svc->rollout.failed_revision, s,
                                                     sizeof svc->rollout.failed_revision);
                                if (orch_json_get_string(lf, "reason", &s) >= 0)
                                        svc->rollout.failed_reason = strdup(s);
                        }
                }
        }
        return 0;
}

/* Older revisions come back from the revisions collection, behind the current one. */
static int load_revision(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_state *st = userdata;
        _cleanup_json_ json_t *j = json_loadb(value, len, 0, NULL), *jspec = NULL;
        _cleanup_(orch_service_freep) struct orch_service *spec = NULL;
        struct orch_diags diags = {0};
        char name[ORCH_NAME_MAX + 1], revision[ORCH_REVISION_LEN + 1];
        const char *slash = strchr(key, '/'), *specstr;
        struct orch_svc *svc;
        uint64_t created = 0;
        size_t at;

        if (!slash || (size_t)(slash - key) > ORCH_NAME_MAX || strlen(slash + 1) != ORCH_REVISION_LEN)
                return 0;
        memcpy(name, key, (size_t)(slash - key));
        name[slash - key] = '\0';
        orch_strlcpy(revision, slash + 1, sizeof revision);
        svc = orch_state_service(st, name);
        if (!svc || orch_state_service_revision(svc, revision) || svc->n_revs == ELEMENTSOF(svc->revs))
                return 0;
        if (!j || orch_json_get_string(j, "spec", &specstr) < 0 || !(jspec = json_loads(specstr, 0, NULL)))
                return 0;
        if (orch_service_from_json(jspec, key, &spec, &diags) < 0) {
                orch_diags_release(&diags);
                return 0;
        }
        orch_json_get_u64(j, "created_at", &created);
        /* keep newest first: insert after the current revision, ordered by creation time */
        for (at = 1; at < svc->n_revs && svc->revs[at].created_at >= created; at++)
                ;
        memmove(&svc->revs[at + 1], &svc->revs[at], (svc->n_revs - at) * sizeof svc->revs[0]);
        svc->revs[at] = (struct orch_svc_rev){
                .spec = TAKE_PTR(spec), .spec_json = strdup(specstr), .created_at = created};
        orch_strlcpy(svc->revs[at].revision, revision, sizeof svc->revs[at].revision);
        svc->n_revs++;
        return 0;
}

static int load_node(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_state *st = userdata;
        _cleanup_json_ json_t *j = json_loadb(value, len, 0, NULL);
        json_t *cap, *labels, *drivers, *v;
        struct orch_node *node;
        const char *s, *k;
        size_t i;
        int r;

        if (!j)
                return 0;
        r = orch_state_upsert_node(st, key, &node);
        if (r < 0)
                return r;
        if (orch_json_get_string(j, "address", &s) >= 0)
                node->address = strdup(s);
        if (orch_json_get_string(j, "version", &s) >= 0)
                node->version = strdup(s);
        if (orch_json_get_object(j, "capacity", &cap) >= 0) {
                orch_json_get_u32(cap, "cpu_millis", &node->cpu_millis);
                orch_json_get_u64(cap, "memory", &node->memory);
        }
        if (orch_json_get_object(j, "labels", &labels) >= 0) {
                node->labels = calloc(json_object_size(labels) + 1, sizeof *node->labels);
                if (!node->labels)
                        return -ENOMEM;
                json_object_foreach (labels, k, v)
                        if (json_is_string(v))
                                node->labels[node->n_labels++] =
                                        (struct orch_label){strdup(k), strdup(json_string_value(v))};
        }
        if (orch_json_get_array(j, "drivers", &drivers) >= 0)
                json_array_foreach (drivers, i, v)
                        if (json_is_string(v))
                                orch_strv_push(&node->drivers, json_string_value(v));
        orch_json_get_bool(j, "cordoned", &node->cordoned);
        orch_json_get_u64(j, "last_seen", &node->last_seen);
        /* a node is down until its agent connects again */
        orch_state_set_node_state(st, node, ORCH_NODE_DOWN);
        return 0;
}

static int load_instance(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_state *st = userdata;
        _cleanup_json_ json_t *j = json_loadb(value, len, 0, NULL);
        const char *s;
        json_t *ports, *v;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_node *node = NULL;
        int r;

        if (!j || orch_json_get_string(j, "service", &s) < 0 || !(svc = orch_state_service(st, s))) {
                log_warn("store: instance %s belongs to no known service; dropping it", key);
                return 0;
        }
        if (strlen(key) > ORCH_INSTANCE_ID_MAX)
                return 0;
        inst = calloc(1, sizeof *inst);
        if (!inst)
                return -ENOMEM;
        orch_strlcpy(inst->id, key, sizeof inst->id);
        r = orch_hmap_insert(&st->instances, &inst->hnode, inst->id);
        if (r < 0) {
                free(inst);
                return r == -EEXIST ? 0 : r;
        }
        st->n_instances++;
        inst->svc = svc;
        orch_list_init(&inst->node_link);
        orch_list_init(&inst->store_link);
        orch_list_init(&inst->report_link);
        orch_list_append(&svc->instances, &inst->svc_link);
        orch_list_append(&svc->unplaced, &inst->unplaced_link);
        svc->n_pending++;
        if (orch_json_get_string(j, "revision", &s) >= 0)
                orch_strlcpy(inst->revision, s, sizeof inst->revision);
        orch_json_get_u64(j, "generation", &inst->generation);
        orch_json_get_bool(j, "desired_run", &inst->desired_run);
        orch_json_get_bool(j, "confirmed", &inst->confirmed);
        inst->state = orch_json_get_string(j, "state", &s) >= 0 ? orch_instance_state_from_string(s)
                                                                : ORCH_INSTANCE_PENDING;
        if ((int)inst->state < 0)
                inst->state = ORCH_INSTANCE_PENDING;
        inst->health = orch_json_get_string(j, "health", &s) >= 0 ? orch_health_state_from_string(s)
                                                                  : ORCH_HEALTH_UNKNOWN;
        if ((int)inst->health < 0)
                inst->health = ORCH_HEALTH_UNKNOWN;
        {
                int64_t x;
                if (orch_json_get_i64(j, "pid", &x) >= 0)
                        inst->pid = (int)x;
                if (orch_json_get_i64(j, "exit_code", &x) >= 0)
                        inst->exit_code = (int)x;
                if (orch_json_get_i64(j, "exit_signal", &x) >= 0)
                        inst->exit_signal = (int)x;
        }
        orch_json_get_u32(j, "restarts", &inst->restarts);
        orch_json_get_u64(j, "created_at", &inst->created_at);
        orch_json_get_u64(j, "started_at", &inst->started_at);
        orch_json_get_u64(j, "healthy_since", &inst->healthy_since);
        orch_json_get_bool(j, "oom", &inst->oom);
        if (orch_json_get_string(j, "reason", &s) >= 0)
                inst->reason = strdup(s);
        if (orch_json_get_string(j, "cgroup", &s) >= 0)
                inst->cgroup = strdup(s);
        {
                const struct orch_svc_rev *rev = orch_state_service_revision(svc, inst->revision);
                const struct orch_service *spec = rev ? rev->spec : svc->spec;
                inst->cpu_millis = spec->resources.cpu_millis;
                inst->memory = spec->resources.memory;
        }
        if (orch_json_get_object(j, "ports", &ports) >= 0) {
                const char *k;
                inst->ports = calloc(json_object_size(ports) + 1, sizeof *inst->ports);
                if (!inst->ports)
                        return -ENOMEM;
                json_object_foreach (ports, k, v)
                        if (json_is_integer(v))
                                inst->ports[inst->n_ports++] =
                                        (struct orch_inst_port){strdup(k), (uint16_t)json_integer_value(v)};
        }
        if (inst->generation > st->generation)
                st->generation = inst->generation;
        if (orch_json_get_string(j, "node", &s) >= 0 && (node = orch_state_node(st, s))) {
                uint64_t gen = inst->generation, created = inst->created_at;
                bool confirmed = inst->confirmed;
                char *reason = TAKE_PTR(inst->reason);
                orch_state_place_instance(st, inst, node);
                inst->reason = reason;
                /* a load restores a placement, it does not make a new one */
                st->generation--;
                inst->generation = gen;
                inst->created_at = created;
                inst->confirmed = confirmed;
        }
        return 0;
}

static int load_meta(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_state *st = userdata;
        char buf[32];
        uint64_t v;

        if (len >= sizeof buf)
                return 0;
        memcpy(buf, value, len);
        buf[len] = '\0';
        if (orch_parse_u64(buf, &v) < 0)
                return 0;
        if (streq(key, "generation"))
                st->generation = MAX(st->generation, v);
        else if (streq(key, "event_index"))
                st->event_index = v;
        return 0;
}

int orch_state_load(struct orch_state *st)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;
        int r;

        /* a load restores: no writes are queued and no events raised */
        st->loading = true;
        r = orch_store_load(st->store, ORCH_STORE_META, NULL, load_meta, st);
        if (r >= 0)
                r = orch_store_load(st->store, ORCH_STORE_SERVICES, NULL, load_service, st);
        if (r >= 0)
                r = orch_store_load(st->store, ORCH_STORE_REVISIONS, NULL, load_revision, st);
        if (r >= 0)
                r = orch_store_load(st->store, ORCH_STORE_NODES, NULL, load_node, st);
        if (r >= 0)
                r = orch_store_load(st->store, ORCH_STORE_INSTANCES, NULL, load_instance, st);
        st->loading = false;
        if (r < 0)
                return r;
        /* every service gets one reconcile pass */
        for (n = orch_hmap_first(&st->services, &it); n; n = orch_hmap_next(&st->services, &it))
                orch_state_mark_dirty(st, container_of(n, struct orch_svc, hnode));
        return 0;
}
