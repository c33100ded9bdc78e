/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>

#include "agents.h"
#include "json.h"
#include "log.h"
#include "net.h"
#include "proto.h"
#include "reconciler.h"
#include "scheduler.h"
#include "store.h"
#include "util.h"
#include "banned.h"

/* The hello must arrive this soon after the connection opens. */
#define HELLO_TIMEOUT_MSEC 10000
/* A command not acknowledged within this (plus the stop timeouts it covers) means a stuck agent. */
#define ACK_TIMEOUT_MSEC 30000
/* An agent that does not read its commands: past this many queued bytes it is dropped. */
#define WRITE_HIGH_WATER (256u * 1024 * 1024)
/* A hello split over more frames than this is refused (each frame holds tens of thousands of instances). */
#define HELLO_MAX_PARTS 64
/* The sweep's period; a sweep this much later than due means the loop was blocked. */
#define SWEEP_MSEC 100
#define STALL_MSEC 1000
/* Parsed specs kept for sending (they are immutable per revision); past this many the cache starts
 * over. */
#define SPEC_CACHE_MAX 4096
/* Agents reconnecting after an orchd restart get at least this long before their instances are lost. */
#define STARTUP_GRACE_MSEC 10000

enum conn_state {
        CONN_AWAIT_HELLO,
        CONN_READY,
        CONN_CLOSING,
};

struct command {
        uint64_t id;
        enum orch_proto_type type;
        uint64_t deadline_usec;
        /* start/stop: the instances and generations it covered */
        char **instances;
        uint64_t *generations;
        size_t n;
        struct orch_log_stream *logs; /* type logs */
        struct command *next;
};

struct spec_sent {
        struct orch_hmap_node hnode;
        char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];
};

struct orch_agent_conn {
        uv_tcp_t tcp;
        struct orch_agents *agents;
        enum conn_state state;
        struct orch_proto_reader reader;
        struct orch_buf out;      /* encoded frames not yet handed to libuv */
        struct orch_buf inflight; /* the frames of the write in progress */
        uv_write_t write_req;
        bool writing;
        char peer[INET6_ADDRSTRLEN];
        struct orch_node *node;
        uint64_t next_id;
        uint64_t opened_usec;
        struct command *commands; /* awaiting their ack, oldest first */
        struct command **commands_tail;
        struct orch_hmap specs_sent;
        /* batched per flush */
        struct orch_proto_start_item *starts;
        size_t n_starts, cap_starts;
        struct orch_proto_stop_item *stops;
        size_t n_stops, cap_stops;
        uint64_t stop_timeout_ms; /* the longest stop timeout in the batch */
        /* a hello split over several frames */
        struct orch_proto_msg **hello_parts;
        size_t n_hello_parts;
        struct orch_list link;
};

struct orch_log_stream {
        struct orch_agent_conn *conn;
        uint64_t id;
        orch_log_data_fn on_data;
        orch_log_end_fn on_end;
        void *userdata;
        bool cancelled;
};

/* A stop waiting out the drain delay. */
struct delayed_stop {
        char id[ORCH_INSTANCE_ID_MAX + 1];
        uint64_t generation;
        uint64_t due_usec;
        struct orch_list link;
};

struct orch_agents {
        uv_loop_t *loop;
        uv_tcp_t listener;
        uv_timer_t sweep;
        struct orch_list delayed; /* struct delayed_stop, in due order */
        bool listening, closing;
        int open_handles;     /* the listener and the sweep timer */
        size_t closing_conns; /* connection handles whose close callback is still to come */
        struct orch_state *st;
        struct orch_reconciler *rc;
        struct orch_agents_config cfg;
        char *join_token;
        struct orch_list conns;
        size_t n_conns;
        uint64_t started_usec;
        uint64_t last_sweep_usec;
        /* struct spec_cache by "<service>/<revision>": the spec as sent, parsed once */
        struct orch_hmap spec_cache;
};

struct spec_cache {
        struct orch_hmap_node hnode;
        char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];
        json_t *spec;
};

static void conn_close(struct orch_agent_conn *c, const char *why);
static void conn_flush(struct orch_agent_conn *c);

/* --- heartbeat arithmetic ------------------------------------------------------------------- */

uint64_t orch_agents_heartbeat_ms(const struct orch_agents *a)
{
        uint64_t nodes = a->st->n_nodes, rate = MAX(a->cfg.max_heartbeat_rate, 1u);
        return MAX(a->cfg.heartbeat_ms, (1000 * nodes + rate - 1) / rate);
}

uint64_t orch_agents_ttl_ms(const struct orch_agents *a)
{
        return orch_agents_heartbeat_ms(a) * MAX(a->cfg.ttl_factor, 2u);
}

size_t orch_agents_connected(const struct orch_agents *a)
{
        return a->n_conns;
}

/* --- writing -------------------------------------------------------------------------------- */

static int send_msg(struct orch_agent_conn *c, const struct orch_proto_msg *m)
{
        struct orch_proto_error err;
        int r;

        if (c->state == CONN_CLOSING)
                return -ECONNRESET;
        r = orch_proto_encode(&c->out, m, &err);
        if (r < 0) {
                /* our own bug: say which field, and do not send a half frame */
                log_error("agent %s: cannot encode %s: %s", c->node ? c->node->name : c->peer,
                          orch_proto_type_to_string(m->type), err.message);
                return r;
        }
        if (c->out.len + c->inflight.len > WRITE_HIGH_WATER) {
                conn_close(c, "not reading its commands");
                return -ENOBUFS;
        }
        return 0;
}

static void write_cb(uv_write_t *req, int status)
{
        struct orch_agent_conn *c = container_of(req, struct orch_agent_conn, write_req);

        c->writing = false;
        orch_buf_reset(&c->inflight);
        if (status < 0) {
                conn_close(c, uv_strerror(status));
                return;
        }
        conn_flush(c);
}

/* Hands the queued frames to libuv: one write at a time, the next batch queues behind it. */
static void conn_flush(struct orch_agent_conn *c)
{
        struct orch_buf tmp;
        uv_buf_t b;
        int r;

        if (c->writing || c->out.len == 0 || c->state == CONN_CLOSING)
                return;
        tmp = c->inflight;
        c->inflight = c->out;
        c->out = tmp;
        orch_buf_reset(&c->out);
        b = uv_buf_init(c->inflight.data, (unsigned)c->inflight.len);
        r = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
        if (r < 0) {
                conn_close(c, uv_strerror(r));
                return;
        }
        c->writing = true;
}

static void send_error(struct orch_agent_conn *c, const char *error)
{
        struct orch_proto_msg m = {.type = ORCH_PROTO_ERROR, .error = {.error = error}};

        send_msg(c, &m);
        conn_flush(c);
}

static struct command *command_new(struct orch_agent_conn *c, enum orch_proto_type type, uint64_t timeout_ms)
{
        struct command *cmd = calloc(1, sizeof *cmd);

        if (!cmd)
                return NULL;
        cmd->id = ++c->next_id;
        cmd->type = type;
        cmd->deadline_usec = orch_now_usec() + (ACK_TIMEOUT_MSEC + timeout_ms) * USEC_PER_MSEC;
        *c->commands_tail = cmd;
        c->commands_tail = &cmd->next;
        return cmd;
}

static void command_free(struct command *cmd)
{
        for (size_t i = 0; i < cmd->n; i++)
                free(cmd->instances[i]);
        free(cmd->instances);
        free(cmd->generations);
        free(cmd);
}

static struct command *command_take(struct orch_agent_conn *c, uint64_t id)
{
        for (struct command **p = &c->commands; *p; p = &(*p)->next)
                if ((*p)->id == id) {
                        struct command *cmd = *p;
                        *p = cmd->next;
                        if (c->commands_tail == &cmd->next)
                                c->commands_tail = p;
                        cmd->next = NULL;
                        return cmd;
                }
        return NULL;
}

static int command_cover(struct command *cmd, const char *instance, uint64_t generation)
{
        char **ni = realloc(cmd->instances, (cmd->n + 1) * sizeof *ni);
        uint64_t *ng;

        if (!ni)
                return -ENOMEM;
        cmd->instances = ni;
        ng = realloc(cmd->generations, (cmd->n + 1) * sizeof *ng);
        if (!ng)
                return -ENOMEM;
        cmd->generations = ng;
        if (!(cmd->instances[cmd->n] = strdup(instance)))
                return -ENOMEM;
        cmd->generations[cmd->n++] = generation;
        return 0;
}

static void spec_cache_clear(struct orch_agents *a)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&a->spec_cache, &it); n; n = orch_hmap_next(&a->spec_cache, &it)) {
                struct spec_cache *sc = container_of(n, struct spec_cache, hnode);
                orch_hmap_remove(&a->spec_cache, n);
                json_decref(sc->spec);
                free(sc);
        }
}

/* The spec of a revision as a tree, with a reference for the caller. A revision's spec never
 * changes (the revision is its hash), so every node that needs it shares one parse: with spread
 * placements each node needs nearly every service's spec. */
static json_t *cached_spec(struct orch_agents *a, const char *key, const struct orch_svc_rev *rev)
{
        struct spec_cache *sc =
                orch_hmap_entry(orch_hmap_get(&a->spec_cache, key), struct spec_cache, hnode);

        if (sc)
                return json_incref(sc->spec);
        if (a->spec_cache.n >= SPEC_CACHE_MAX)
                spec_cache_clear(a);
        sc = calloc(1, sizeof *sc);
        if (!sc)
                return NULL;
        orch_strlcpy(sc->key, key, sizeof sc->key);
        sc->spec = json_loads(rev->spec_json, 0, NULL);
        if (!sc->spec || orch_hmap_insert(&a->spec_cache, &sc->hnode, sc->key) < 0) {
                json_decref(sc->spec);
                free(sc);
                return NULL;
        }
        return json_incref(sc->spec);
}

/* Sends the spec of (service, revision) unless this connection has it already. */
static int ensure_spec(struct orch_agent_conn *c, struct orch_inst *inst)
{
        const struct orch_svc_rev *rev = orch_state_service_revision(inst->svc, inst->revision);
        struct spec_sent *s;
        struct command *cmd;
        char key[sizeof s->key];
        json_t *spec;
        int r;

        orch_snprintf(key, sizeof key, "%s/%s", inst->svc->name, inst->revision);
        if (orch_hmap_get(&c->specs_sent, key))
                return 0;
        if (!rev)
                return -ENOENT;
        spec = cached_spec(c->agents, key, rev);
        if (!spec)
                return -ENOMEM;
        cmd = command_new(c, ORCH_PROTO_SPEC, 0);
        if (!cmd) {
                json_decref(spec);
                return -ENOMEM;
        }
        {
                struct orch_proto_msg m = {
                        .type = ORCH_PROTO_SPEC,
                        .spec = {.id = cmd->id,
                                 .service = inst->svc->name,
                                 .revision = inst->revision,
                                 .spec = spec,
                                 .spec_text = rev->spec_json},
                };
                r = send_msg(c, &m);
        }
        json_decref(spec);
        if (r < 0)
                return r;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        orch_strlcpy(s->key, key, sizeof s->key);
        r = orch_hmap_insert(&c->specs_sent, &s->hnode, s->key);
        if (r < 0)
                free(s);
        return r;
}

/* --- the reconciler's outlets ------------------------------------------------------------- */

void orch_agents_start_instance(void *userdata, struct orch_inst *inst)
{
        struct orch_agent_conn *c = inst->node ? inst->node->conn : NULL;
        int r;

        /* A node without a connection gets its instances when its agent says hello. */
        if (!c || c->state != CONN_READY)
                return;
        r = ensure_spec(c, inst);
        if (r < 0) {
                log_error_errno(r, "agent %s: cannot send the spec of %s", inst->node->name, inst->id);
                return;
        }
        if (c->n_starts == c->cap_starts) {
                size_t cap = c->cap_starts ? c->cap_starts * 2 : 64;
                struct orch_proto_start_item *n = realloc(c->starts, cap * sizeof *n);
                if (!n)
                        return;
                c->starts = n;
                c->cap_starts = cap;
        }
        /* the strings live in the instance until the flush encodes them, in this loop iteration */
        c->starts[c->n_starts++] = (struct orch_proto_start_item){
                .instance = inst->id,
                .service = inst->svc->name,
                .revision = inst->revision,
                .generation = inst->generation,
        };
}

static void queue_stop(struct orch_inst *inst)
{
        struct orch_agent_conn *c = inst->node ? inst->node->conn : NULL;
        const struct orch_svc_rev *rev;

        if (!c || c->state != CONN_READY)
                return; /* the hello of the returning node fences it */
        if (c->n_stops == c->cap_stops) {
                size_t cap = c->cap_stops ? c->cap_stops * 2 : 64;
                struct orch_proto_stop_item *n = realloc(c->stops, cap * sizeof *n);
                if (!n)
                        return;
                c->stops = n;
                c->cap_stops = cap;
        }
        c->stops[c->n_stops++] =
                (struct orch_proto_stop_item){.instance = inst->id, .generation = inst->generation};
        rev = orch_state_service_revision(inst->svc, inst->revision);
        c->stop_timeout_ms =
                MAX(c->stop_timeout_ms, rev ? rev->spec->stop.timeout_ms : inst->svc->spec->stop.timeout_ms);
}

void orch_agents_stop_instance(void *userdata, struct orch_inst *inst, const char *reason)
{
        struct orch_agents *a = userdata;
        struct delayed_stop *d;

        if (a->cfg.drain_delay_ms == 0 || !inst->node || !inst->node->conn ||
            inst->state != ORCH_INSTANCE_RUNNING) {
                queue_stop(inst);
                return;
        }
        /* out of the registry already (desired stop); the signal waits for clients to move on */
        d = calloc(1, sizeof *d);
        if (!d) {
                queue_stop(inst);
                return;
        }
        orch_strlcpy(d->id, inst->id, sizeof d->id);
        d->generation = inst->generation;
        d->due_usec = orch_now_usec() + a->cfg.drain_delay_ms * USEC_PER_MSEC;
        orch_list_append(&a->delayed, &d->link);
}

static void send_due_stops(struct orch_agents *a)
{
        uint64_t now = orch_now_usec();
        struct orch_list *p, *t;
        bool any = false;

        orch_list_foreach_safe (p, t, &a->delayed) {
                struct delayed_stop *d = orch_list_entry(p, struct delayed_stop, link);
                struct orch_inst *inst;
                if (!a->closing && d->due_usec > now)
                        break; /* appended in due order */
                inst = a->closing ? NULL : orch_state_instance(a->st, d->id);
                if (inst && inst->generation == d->generation && !inst->desired_run) {
                        queue_stop(inst);
                        any = true;
                }
                orch_list_remove(p);
                free(d);
        }
        if (any)
                orch_agents_flush(a);
}

static void conn_send_batches(struct orch_agent_conn *c)
{
        struct command *cmd;
        int r;

        if (c->n_stops > 0) {
                cmd = command_new(c, ORCH_PROTO_STOP, c->stop_timeout_ms);
                if (cmd) {
                        struct orch_proto_msg m = {
                                .type = ORCH_PROTO_STOP,
                                .stop = {.id = cmd->id, .instances = c->stops, .n_instances = c->n_stops},
                        };
                        for (size_t i = 0; i < c->n_stops; i++)
                                command_cover(cmd, c->stops[i].instance, c->stops[i].generation);
                        r = send_msg(c, &m);
                        if (r < 0)
                                return;
                }
                c->n_stops = 0;
                c->stop_timeout_ms = 0;
        }
        if (c->n_starts > 0) {
                cmd = command_new(c, ORCH_PROTO_START, 0);
                if (cmd) {
                        struct orch_proto_msg m = {
                                .type = ORCH_PROTO_START,
                                .start = {.id = cmd->id, .instances = c->starts, .n_instances = c->n_starts},
                        };
                        for (size_t i = 0; i < c->n_starts; i++)
                                command_cover(cmd, c->starts[i].instance, c->starts[i].generation);
                        r = send_msg(c, &m);
                        if (r < 0)
                                return;
                }
                c->n_starts = 0;
        }
        conn_flush(c);
}

void orch_agents_flush(void *userdata)
{
        struct orch_agents *a = userdata;
        struct orch_list *p, *t;

        orch_list_foreach_safe (p, t, &a->conns)
                conn_send_batches(orch_list_entry(p, struct orch_agent_conn, link));
}

/* --- instance reports ----------------------------------------------------------------------- */

static enum orch_proto_record record_for(const struct orch_inst *inst, const struct orch_node *node)
{
        if (!inst)
                return ORCH_PROTO_RECORD_NONE;
        if (inst->node == node && inst->desired_run && inst->state != ORCH_INSTANCE_LOST)
                return ORCH_PROTO_RECORD_WANTED;
        return ORCH_PROTO_RECORD_REPLACED;
}

static void set_ports(struct orch_inst *inst, const struct orch_proto_report *rep)
{
        bool same = inst->n_ports == rep->n_ports;

        for (size_t i = 0; same && i < rep->n_ports; i++)
                same = streq(inst->ports[i].name, rep->ports[i].name) &&
                       inst->ports[i].port == rep->ports[i].port;
        if (same)
                return;
        for (size_t i = 0; i < inst->n_ports; i++)
                free(inst->ports[i].name);
        free(inst->ports);
        inst->ports = calloc(rep->n_ports + 1, sizeof *inst->ports);
        inst->n_ports = 0;
        for (size_t i = 0; inst->ports && i < rep->n_ports; i++) {
                char *n = strdup(rep->ports[i].name);
                if (!n)
                        break;
                inst->ports[inst->n_ports++] = (struct orch_inst_port){n, rep->ports[i].port};
        }
}

static void set_string(char **dst, const char *src)
{
        if (streq_ptr(*dst, src))
                return;
        free(*dst);
        *dst = src ? strdup(src) : NULL;
}

/* Applies what the agent says about an instance orchd holds at the same generation. */
static bool state_is_terminal(enum orch_instance_state s)
{
        return s == ORCH_INSTANCE_EXITED || s == ORCH_INSTANCE_FAILED;
}

static void apply_report(struct orch_agents *a, struct orch_inst *inst, const struct orch_proto_report *rep,
                         bool from_hello)
{
        struct orch_state *st = a->st;
        enum orch_instance_state old_state = inst->state;
        enum orch_health_state old_health = inst->health;
        bool was_available = orch_inst_is_available(inst), was_live = orch_inst_is_live(inst);
        uint32_t old_restarts = inst->restarts;
        const char *svc = inst->svc->name;

        inst->confirmed = true;
        inst->state = rep->state;
        inst->health = rep->health;
        inst->pid = (int)rep->pid;
        inst->restarts = rep->restarts;
        inst->started_at = rep->started_at;
        if (rep->has_exit) {
                inst->exit_code = (int)rep->exit.code;
                inst->exit_signal = (int)rep->exit.signal;
                inst->oom = rep->exit.oom;
        }
        set_ports(inst, rep);
        set_string(&inst->reason, rep->reason);
        set_string(&inst->cgroup, rep->cgroup);
        orch_state_release_resources(st, inst); /* re-evaluates: terminal states release */

        if (orch_inst_is_available(inst) && !was_available)
                inst->healthy_since = orch_realtime_msec();
        else if (!orch_inst_is_available(inst))
                inst->healthy_since = 0;

        if (!from_hello) {
                if (inst->restarts > old_restarts)
                        orch_state_event(st, ORCH_EVENT_INSTANCE_RESTARTED,
                                         json_pack("{s:s, s:s, s:i}", "service", svc, "instance", inst->id,
                                                   "restarts", (json_int_t)inst->restarts),
                                         "instance %s restarted (%u restarts)%s%s", inst->id, inst->restarts,
                                         inst->reason ? ": " : "", inst->reason ? inst->reason : "");
                if (inst->state != old_state) {
                        if (inst->state == ORCH_INSTANCE_RUNNING)
                                orch_state_event(st, ORCH_EVENT_INSTANCE_STARTED,
                                                 json_pack("{s:s, s:s, s:s, s:i}", "service", svc,
                                                           "instance", inst->id, "node", inst->node->name,
                                                           "pid", (json_int_t)inst->pid),
                                                 "instance %s running on %s (pid %d)", inst->id,
                                                 inst->node->name, inst->pid);
                        else if (inst->state == ORCH_INSTANCE_EXITED ||
                                 inst->state == ORCH_INSTANCE_FAILED ||
                                 (old_state == ORCH_INSTANCE_RUNNING && rep->has_exit))
                                orch_state_event(
                                        st,
                                        inst->state == ORCH_INSTANCE_FAILED ? ORCH_EVENT_INSTANCE_FAILED
                                                                            : ORCH_EVENT_INSTANCE_EXITED,
                                        json_pack("{s:s, s:s, s:s, s:o, s:o, s:b}", "service", svc,
                                                  "instance", inst->id, "state",
                                                  orch_instance_state_to_string(inst->state), "code",
                                                  rep->has_exit ? json_integer(rep->exit.code) : json_null(),
                                                  "signal",
                                                  rep->has_exit && rep->exit.signal
                                                          ? json_integer(rep->exit.signal)
                                                          : json_null(),
                                                  "oom", rep->has_exit && rep->exit.oom),
                                        "instance %s %s%s%s", inst->id,
                                        rep->has_exit && rep->exit.oom        ? "was OOM-killed"
                                        : inst->state == ORCH_INSTANCE_FAILED ? "failed"
                                                                              : "exited",
                                        inst->reason ? ": " : "", inst->reason ? inst->reason : "");
                }
                if (inst->health != old_health && inst->health != ORCH_HEALTH_UNKNOWN)
                        orch_state_event(st, ORCH_EVENT_INSTANCE_HEALTH,
                                         json_pack("{s:s, s:s, s:s}", "service", svc, "instance", inst->id,
                                                   "health", orch_health_state_to_string(inst->health)),
                                         "instance %s is %s%s%s", inst->id,
                                         inst->health == ORCH_HEALTH_PASSING ? "healthy" : "unhealthy",
                                         inst->reason ? ": " : "", inst->reason ? inst->reason : "");
        }
        /* What an agent reports is the truth only until its next hello, which reports it again: it
         * is worth a store write only when it changes what orchd decides after a restart, i.e. when
         * the instance ended or came back (terminal instances count towards replicas without being
         * live). A running instance that reports running costs no write — a million of them would
         * cost a million. */
        if (state_is_terminal(old_state) != state_is_terminal(inst->state))
                orch_state_instance_reported(st, inst);
        /* Most reports change nothing the reconciler decides on (a running instance stays live):
         * only liveness, or availability during a rollout, can. A million-instance cluster stays
         * out of the reconciler while its instances report. */
        if (from_hello || was_live != orch_inst_is_live(inst) || inst->svc->deleting ||
            (inst->svc->rollout.state == ORCH_ROLLOUT_PROGRESSING &&
             (was_available != orch_inst_is_available(inst) || inst->restarts != old_restarts)))
                orch_state_mark_dirty(st, inst->svc);
}

static void handle_event(struct orch_agent_conn *c, const struct orch_proto_event *ev)
{
        struct orch_agents *a = c->agents;
        struct orch_inst *inst = orch_state_instance(a->st, ev->report.instance);
        enum orch_proto_record rec = record_for(inst, c->node);

        if (!inst || inst->node != c->node ||
            !orch_proto_fence_current(rec, inst->generation, ev->report.generation)) {
                /* a copy orchd no longer holds: the hello fenced it, or a stop is on its way */
                log_debug("agent %s: event for %s generation %" PRIu64 " ignored", c->node->name,
                          ev->report.instance, ev->report.generation);
                return;
        }
        apply_report(a, inst, &ev->report, false);
}

/* A stop completed on the agent: orchd forgets the instance. */
static void stop_done(struct orch_agents *a, struct orch_agent_conn *c, const char *id, uint64_t generation)
{
        struct orch_inst *inst = orch_state_instance(a->st, id);

        if (!inst || inst->node != c->node || inst->generation != generation || inst->desired_run)
                return;
        orch_state_event(a->st, ORCH_EVENT_INSTANCE_STOPPED,
                         json_pack("{s:s, s:s, s:s}", "service", inst->svc->name, "instance", inst->id,
                                   "node", c->node->name),
                         "instance %s stopped on %s", inst->id, c->node->name);
        if (inst->state != ORCH_INSTANCE_LOST)
                inst->state = ORCH_INSTANCE_EXITED;
        orch_state_release_resources(a->st, inst);
        orch_state_unplace_instance(a->st, inst, NULL);
        orch_state_mark_dirty(a->st, inst->svc);
}

static void start_failed(struct orch_agents *a, struct orch_agent_conn *c, const char *id,
                         uint64_t generation, const char *error)
{
        struct orch_inst *inst = orch_state_instance(a->st, id);

        if (!inst || inst->node != c->node || inst->generation != generation)
                return;
        inst->state = ORCH_INSTANCE_FAILED;
        inst->confirmed = true;
        orch_state_set_reason(a->st, inst, error);
        orch_state_release_resources(a->st, inst);
        orch_state_instance_changed(a->st, inst);
        orch_state_event(a->st, ORCH_EVENT_INSTANCE_FAILED,
                         json_pack("{s:s, s:s, s:s, s:s}", "service", inst->svc->name, "instance", inst->id,
                                   "node", c->node->name, "reason", error),
                         "instance %s could not start on %s: %s", inst->id, c->node->name, error);
        orch_state_mark_dirty(a->st, inst->svc);
}

static void handle_ack(struct orch_agent_conn *c, const struct orch_proto_ack *ack)
{
        struct orch_agents *a = c->agents;
        struct command *cmd = command_take(c, ack->id);

        if (!cmd) {
                log_warn("agent %s: ack for unknown command %" PRIu64, c->node->name, ack->id);
                return;
        }
        switch (cmd->type) {
        case ORCH_PROTO_START:
                for (size_t i = 0; i < ack->n_results; i++)
                        if (!ack->results[i].ok)
                                for (size_t k = 0; k < cmd->n; k++)
                                        if (streq(cmd->instances[k], ack->results[i].instance))
                                                start_failed(a, c, cmd->instances[k], cmd->generations[k],
                                                             ack->results[i].error);
                if (!ack->ok && ack->n_results == 0)
                        for (size_t k = 0; k < cmd->n; k++)
                                start_failed(a, c, cmd->instances[k], cmd->generations[k],
                                             ack->error ? ack->error : "the agent refused the start");
                break;
        case ORCH_PROTO_STOP:
                for (size_t k = 0; k < cmd->n; k++)
                        stop_done(a, c, cmd->instances[k], cmd->generations[k]);
                break;
        case ORCH_PROTO_SPEC:
                if (!ack->ok)
                        log_error("agent %s refused a spec: %s", c->node->name, strna(ack->error));
                break;
        case ORCH_PROTO_LOGS:
                if (cmd->logs) {
                        struct orch_log_stream *s = cmd->logs;
                        if (!s->cancelled && s->on_end)
                                s->on_end(s->userdata,
                                          ack->ok ? NULL : (ack->error ? ack->error : "log unavailable"));
                        free(s);
                        cmd->logs = NULL;
                }
                break;
        default:
                break;
        }
        command_free(cmd);
}

static struct command *find_logs(struct orch_agent_conn *c, uint64_t id)
{
        for (struct command *cmd = c->commands; cmd; cmd = cmd->next)
                if (cmd->id == id && cmd->type == ORCH_PROTO_LOGS)
                        return cmd;
        return NULL;
}

static void handle_log(struct orch_agent_conn *c, const struct orch_proto_log *l)
{
        struct command *cmd = find_logs(c, l->id);

        if (!cmd || !cmd->logs || cmd->logs->cancelled)
                return;
        if (l->data_len > 0)
                cmd->logs->on_data(cmd->logs->userdata, l->data, l->data_len);
}

/* --- hello and fencing ---------------------------------------------------------------------- */

static void node_lose_instances(struct orch_agents *a, struct orch_node *node, const char *why);

static int node_from_hello(struct orch_agent_conn *c, const struct orch_proto_hello *h)
{
        struct orch_agents *a = c->agents;
        struct orch_node *node;
        bool joined;
        int r;

        r = orch_state_upsert_node(a->st, h->node, &node);
        if (r < 0)
                return r;
        joined = r > 0;
        if (node->conn && node->conn != c) {
                /* the agent restarted before orchd noticed the old connection die */
                log_info("node %s connected again; closing its previous connection", node->name);
                conn_close(node->conn, "replaced by a new connection of the same node");
        }
        node->conn = c;
        c->node = node;
        set_string(&node->address, h->address && *h->address ? h->address : c->peer);
        set_string(&node->version, h->version);
        for (size_t i = 0; i < node->n_labels; i++) {
                free(node->labels[i].key);
                free(node->labels[i].value);
        }
        free(node->labels);
        node->labels = calloc(h->n_labels + 1, sizeof *node->labels);
        node->n_labels = 0;
        for (size_t i = 0; node->labels && i < h->n_labels; i++)
                node->labels[node->n_labels++] =
                        (struct orch_label){strdup(h->labels[i].key), strdup(h->labels[i].value)};
        node->drivers = orch_strv_free(node->drivers);
        for (size_t i = 0; i < h->n_drivers; i++)
                orch_strv_push(&node->drivers, h->drivers[i]);
        node->cpu_millis = h->capacity.cpu_millis;
        node->memory = h->capacity.memory;
        node->last_seen = orch_realtime_msec();
        node->last_heard_usec = orch_now_usec();
        return joined;
}

static void fence_one(struct orch_agent_conn *c, const struct orch_proto_report *rep)
{
        struct orch_agents *a = c->agents;
        struct orch_inst *inst = orch_state_instance(a->st, rep->instance);
        enum orch_proto_record rec = record_for(inst, c->node);
        enum orch_proto_fence_action act =
                orch_proto_fence_hello(rec, inst ? inst->generation : 0, rep->generation);

        switch (act) {
        case ORCH_PROTO_FENCE_ADOPT:
                apply_report(a, inst, rep, true);
                break;
        case ORCH_PROTO_FENCE_STOP:
        case ORCH_PROTO_FENCE_RESTART:
                /* stop the copy the agent holds, at the generation it holds */
                if (c->n_stops == c->cap_stops) {
                        size_t cap = c->cap_stops ? c->cap_stops * 2 : 64;
                        struct orch_proto_stop_item *n = realloc(c->stops, cap * sizeof *n);
                        if (!n)
                                return;
                        c->stops = n;
                        c->cap_stops = cap;
                }
                c->stops[c->n_stops++] = (struct orch_proto_stop_item){rep->instance, rep->generation};
                /* the ack comes once the copy is gone: its stop timeout (and the SIGKILL after it) is
                 * part of the wait, or a slow stop would be taken for a silent agent. A copy orchd does
                 * not know gets the longest stop timeout a manifest may give. */
                {
                        const struct orch_svc_rev *rev =
                                inst ? orch_state_service_revision(inst->svc, rep->revision) : NULL;
                        uint64_t t = rev    ? rev->spec->stop.timeout_ms
                                     : inst ? inst->svc->spec->stop.timeout_ms
                                            : ORCH_STOP_TIMEOUT_MAX_MS;
                        c->stop_timeout_ms = MAX(c->stop_timeout_ms, t);
                }
                log_info("node %s: stopping %s (generation %" PRIu64 "): %s", c->node->name, rep->instance,
                         rep->generation,
                         act == ORCH_PROTO_FENCE_RESTART ? "restarting at a new generation"
                         : !inst                         ? "unknown to orchd"
                                                         : "replaced while the node was away");
                if (act == ORCH_PROTO_FENCE_RESTART)
                        orch_state_replace_instance(a->st, inst); /* started after the welcome */
                break;
        default:
                break;
        }
}

static void process_hello(struct orch_agent_conn *c)
{
        struct orch_agents *a = c->agents;
        const struct orch_proto_hello *h = &c->hello_parts[0]->hello;
        struct orch_list *p, *t;
        struct orch_hmap reported = {0};
        _cleanup_(freep) struct orch_hmap_node *rnodes = NULL;
        size_t total = 0, k = 0;
        int joined;

        if (h->proto != ORCH_PROTO_VERSION) {
                char msg[128];
                orch_snprintf(msg, sizeof msg, "protocol version %u is not supported (orchd speaks %u)",
                              h->proto, ORCH_PROTO_VERSION);
                send_error(c, msg);
                conn_close(c, msg);
                return;
        }
        if (!h->token || !orch_secret_equal(h->token, a->join_token)) {
                log_warn("agent at %s (node %s): invalid join token", c->peer, h->node);
                send_error(c, "invalid join token");
                conn_close(c, NULL);
                return;
        }
        joined = node_from_hello(c, h);
        if (joined < 0) {
                send_error(c, "orchd could not register the node");
                conn_close(c, strerror(-joined));
                return;
        }

        /* 1. fencing first: stop what orchd no longer wants here, before anything else is sent.
         *    A store restored from a backup may hold an older generation counter than the
         *    cluster used: it never falls behind what an agent reports. */
        for (size_t i = 0; i < c->n_hello_parts; i++) {
                total += c->hello_parts[i]->hello.n_instances;
                for (size_t j = 0; j < c->hello_parts[i]->hello.n_instances; j++)
                        a->st->generation =
                                MAX(a->st->generation, c->hello_parts[i]->hello.instances[j].generation);
        }
        rnodes = calloc(total + 1, sizeof *rnodes);
        for (size_t i = 0; rnodes && i < c->n_hello_parts; i++) {
                const struct orch_proto_hello *part = &c->hello_parts[i]->hello;
                for (size_t j = 0; j < part->n_instances; j++) {
                        fence_one(c, &part->instances[j]);
                        orch_hmap_insert(&reported, &rnodes[k++], part->instances[j].instance);
                }
        }
        /* 2. wanted here but not reported: start again at a new generation; lost copies that the
         *    node no longer runs are forgotten */
        orch_list_foreach_safe (p, t, &c->node->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                if (orch_hmap_get(&reported, inst->id))
                        continue;
                if (record_for(inst, c->node) == ORCH_PROTO_RECORD_WANTED &&
                    inst->state != ORCH_INSTANCE_EXITED && inst->state != ORCH_INSTANCE_FAILED) {
                        if (inst->confirmed)
                                log_info("node %s: %s is missing; starting it again", c->node->name,
                                         inst->id);
                        /* not orch_state_place_instance(): that would move it to the tail of the
                         * list this loop walks, and the loop would never end */
                        orch_state_replace_instance(a->st, inst);
                } else if (!inst->desired_run || inst->state == ORCH_INSTANCE_LOST) {
                        orch_state_release_resources(a->st, inst);
                        orch_state_unplace_instance(a->st, inst, NULL);
                        orch_state_mark_dirty(a->st, inst->svc);
                }
        }
        orch_hmap_release(&reported);
        /* lost records of this node are settled by the stops above (their acks forget them) */

        c->state = CONN_READY;
        c->node->instances_lost = false;
        /* stops go out before the welcome and before any start */
        conn_send_batches(c);
        {
                struct orch_proto_msg m = {
                        .type = ORCH_PROTO_WELCOME,
                        .welcome = {.node = c->node->name,
                                    .heartbeat_ms = orch_agents_heartbeat_ms(a),
                                    .ttl_ms = orch_agents_ttl_ms(a),
                                    .server_time = orch_realtime_msec()},
                };
                send_msg(c, &m);
        }
        /* 3. what orchd wants here and the agent does not run yet (placed again above, or placed
         *    while the node had no connection) starts now that the connection is ready, once the
         *    new generations are persisted (protocol.md: persisted before the placement is sent) */
        if (orch_state_flush(a->st) < 0) {
                log_error("node %s: could not persist the placements of its hello: %s", c->node->name,
                          orch_store_last_error(a->st->store));
                conn_close(c, "store failure; the agent's next hello tries again");
                return;
        }
        orch_list_foreach (p, &c->node->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                if (!inst->confirmed && orch_inst_is_live(inst))
                        orch_agents_start_instance(a, inst);
        }
        conn_send_batches(c);

        orch_state_set_node_state(a->st, c->node, ORCH_NODE_READY);
        orch_state_event(a->st, joined ? ORCH_EVENT_NODE_JOINED : ORCH_EVENT_NODE_READY,
                         json_pack("{s:s, s:s, s:i}", "node", c->node->name, "address", c->node->address,
                                   "instances", (json_int_t)total),
                         "node %s %s from %s with %zu instances", c->node->name,
                         joined ? "joined" : "is back", c->node->address, total);
        log_info("node %s %s (%s, %zu instances reported)", c->node->name, joined ? "joined" : "reconnected",
                 c->peer, total);
        for (size_t i = 0; i < c->n_hello_parts; i++)
                orch_proto_msg_free(c->hello_parts[i]);
        free(c->hello_parts);
        c->hello_parts = NULL;
        c->n_hello_parts = 0;
}

/* --- reading -------------------------------------------------------------------------------- */

static void handle_frame(struct orch_agent_conn *c, const char *frame, size_t len)
{
        struct orch_agents *a = c->agents;
        struct orch_proto_msg *m = NULL;
        struct orch_proto_error err;
        int r = orch_proto_decode(frame, len, &m, &err);

        if (r < 0) {
                log_warn("agent %s: bad frame: %s", c->node ? c->node->name : c->peer, err.message);
                send_error(c, err.message);
                conn_close(c, NULL);
                return;
        }
        if (!orch_proto_type_sent_by_agent(m->type)) {
                char msg[128];
                orch_snprintf(msg, sizeof msg, "an agent may not send '%s'",
                              orch_proto_type_to_string(m->type));
                send_error(c, msg);
                conn_close(c, msg);
                orch_proto_msg_free(m);
                return;
        }
        if (c->state == CONN_AWAIT_HELLO) {
                struct orch_proto_msg **parts;
                if (m->type != ORCH_PROTO_HELLO) {
                        send_error(c, "the first frame must be a hello");
                        conn_close(c, "no hello");
                        orch_proto_msg_free(m);
                        return;
                }
                if (c->n_hello_parts > 0 && !streq(c->hello_parts[0]->hello.node, m->hello.node)) {
                        send_error(c, "hello parts name different nodes");
                        conn_close(c, NULL);
                        orch_proto_msg_free(m);
                        return;
                }
                if (c->n_hello_parts >= HELLO_MAX_PARTS) {
                        send_error(c, "hello split over too many frames");
                        conn_close(c, "hello too large");
                        orch_proto_msg_free(m);
                        return;
                }
                parts = realloc(c->hello_parts, (c->n_hello_parts + 1) * sizeof *parts);
                if (!parts) {
                        orch_proto_msg_free(m);
                        conn_close(c, "out of memory");
                        return;
                }
                c->hello_parts = parts;
                c->hello_parts[c->n_hello_parts++] = m;
                if (!m->hello.more)
                        process_hello(c);
                return;
        }
        if (c->node) {
                c->node->last_heard_usec = orch_now_usec();
                c->node->last_seen = orch_realtime_msec();
        }
        switch (m->type) {
        case ORCH_PROTO_HELLO:
                send_error(c, "hello sent twice");
                conn_close(c, NULL);
                break;
        case ORCH_PROTO_HEARTBEAT: {
                struct orch_proto_msg reply = {
                        .type = ORCH_PROTO_HEARTBEAT,
                        .heartbeat = {.seq = m->heartbeat.seq,
                                      .heartbeat_ms = orch_agents_heartbeat_ms(a),
                                      .ttl_ms = orch_agents_ttl_ms(a)},
                };
                send_msg(c, &reply);
                conn_flush(c);
                break;
        }
        case ORCH_PROTO_EVENT:
                handle_event(c, &m->event);
                break;
        case ORCH_PROTO_ACK:
                handle_ack(c, &m->ack);
                break;
        case ORCH_PROTO_LOG:
                handle_log(c, &m->log);
                break;
        case ORCH_PROTO_USAGE:
                break; /* usage is not persisted; a later release can keep it for `describe` */
        case ORCH_PROTO_ERROR:
                log_warn("agent %s reports an error: %s", c->node ? c->node->name : c->peer, m->error.error);
                conn_close(c, NULL);
                break;
        default:
                break;
        }
        orch_proto_msg_free(m);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct orch_agent_conn *c = container_of(h, struct orch_agent_conn, tcp);
        char *space;
        size_t size;

        if (orch_proto_reader_space(&c->reader, 64 * 1024, &space, &size) < 0) {
                *buf = uv_buf_init(NULL, 0);
                return;
        }
        *buf = uv_buf_init(space, (unsigned)MIN(size, (size_t)UINT32_MAX));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct orch_agent_conn *c = container_of(s, struct orch_agent_conn, tcp);
        char *frame;
        size_t len;
        int r;

        if (nread < 0) {
                conn_close(c, nread == UV_EOF ? "closed by the agent" : uv_strerror((int)nread));
                return;
        }
        if (nread == 0)
                return;
        r = orch_proto_reader_commit(&c->reader, (size_t)nread);
        while (c->state != CONN_CLOSING && (r = orch_proto_reader_next(&c->reader, &frame, &len)) > 0)
                handle_frame(c, frame, len);
        if (r == -EMSGSIZE && c->state != CONN_CLOSING) {
                send_error(c, "frame too large");
                conn_close(c, "frame too large");
        }
}

/* --- connections ---------------------------------------------------------------------------- */

static void conn_free_cb(uv_handle_t *h)
{
        struct orch_agent_conn *c = container_of(h, struct orch_agent_conn, tcp);
        struct orch_agents *a = c->agents;
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&c->specs_sent, &it); n; n = orch_hmap_next(&c->specs_sent, &it))
                free(container_of(n, struct spec_sent, hnode));
        orch_hmap_release(&c->specs_sent);
        orch_proto_reader_release(&c->reader);
        orch_buf_release(&c->out);
        orch_buf_release(&c->inflight);
        free(c->starts);
        free(c->stops);
        for (size_t i = 0; i < c->n_hello_parts; i++)
                orch_proto_msg_free(c->hello_parts[i]);
        free(c->hello_parts);
        free(c);
        /* the last handle of a closed endpoint frees it, whichever kind it is */
        if (--a->closing_conns == 0 && a->closing && a->open_handles == 0)
                free(a);
}

static void conn_close(struct orch_agent_conn *c, const char *why)
{
        struct orch_agents *a = c->agents;

        if (c->state == CONN_CLOSING)
                return;
        if (why)
                log_info("agent connection %s%s%s closed: %s", c->peer, c->node ? " of node " : "",
                         c->node ? c->node->name : "", why);
        c->state = CONN_CLOSING;
        /* log streams on this connection end with the reason */
        while (c->commands) {
                struct command *cmd = c->commands;
                c->commands = cmd->next;
                if (cmd->logs) {
                        if (!cmd->logs->cancelled && cmd->logs->on_end)
                                cmd->logs->on_end(cmd->logs->userdata, "the agent disconnected");
                        free(cmd->logs);
                }
                command_free(cmd);
        }
        c->commands_tail = &c->commands;
        if (c->node && c->node->conn == c) {
                c->node->conn = NULL;
                /* the node stays ready until its TTL runs out: a quick reconnect changes nothing */
        }
        orch_list_remove(&c->link);
        a->n_conns--;
        a->closing_conns++;
        uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
}

static void on_connection(uv_stream_t *server, int status)
{
        struct orch_agents *a = container_of(server, struct orch_agents, listener);
        struct orch_agent_conn *c;
        struct sockaddr_storage ss;
        int len = sizeof ss, r;

        if (status < 0) {
                log_warn("agent endpoint: accept failed: %s", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof *c);
        if (!c)
                return;
        c->agents = a;
        c->commands_tail = &c->commands;
        c->opened_usec = orch_now_usec();
        orch_proto_reader_init(&c->reader, 0);
        orch_list_init(&c->link);
        uv_tcp_init(a->loop, &c->tcp);
        if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
                a->closing_conns++;
                uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
                return;
        }
        orch_list_append(&a->conns, &c->link);
        a->n_conns++;
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
                if (ss.ss_family == AF_INET)
                        uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
                else if (ss.ss_family == AF_INET6)
                        uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
        }
        if (a->n_conns > a->cfg.max_connections) {
                send_error(c, "too many agent connections");
                conn_close(c, "connection limit reached");
                return;
        }
        uv_tcp_nodelay(&c->tcp, 1);
        uv_tcp_keepalive(&c->tcp, 1, 30);
        r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        if (r < 0)
                conn_close(c, uv_strerror(r));
}

/* --- liveness ------------------------------------------------------------------------------- */

static void node_lose_instances(struct orch_agents *a, struct orch_node *node, const char *why)
{
        struct orch_list *p;
        size_t n = 0;

        orch_list_foreach (p, &node->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                /* live ones are replaced; those orchd was stopping can no longer confirm it, so they
                 * are lost too (the node's hello stops them if it comes back) */
                if (inst->state == ORCH_INSTANCE_LOST || (inst->desired_run && !orch_inst_is_live(inst)))
                        continue;
                inst->state = ORCH_INSTANCE_LOST;
                inst->desired_run = false;
                inst->healthy_since = 0;
                orch_state_set_reason(a->st, inst, why);
                orch_state_release_resources(a->st, inst);
                orch_state_instance_changed(a->st, inst);
                orch_state_mark_dirty(a->st, inst->svc);
                orch_state_event(a->st, ORCH_EVENT_INSTANCE_LOST,
                                 json_pack("{s:s, s:s, s:s}", "service", inst->svc->name, "instance",
                                           inst->id, "node", node->name),
                                 "instance %s lost with node %s; replacing it", inst->id, node->name);
                n++;
        }
        node->instances_lost = true;
        if (n)
                log_warn("node %s: %zu instances lost (%s)", node->name, n, why);
}

static void sweep_cb(uv_timer_t *t)
{
        struct orch_agents *a = container_of(t, struct orch_agents, sweep);
        uint64_t last = a->last_sweep_usec;

        send_due_stops(a);
        a->last_sweep_usec = orch_now_usec();
        /* The loop was blocked (a long pass, a slow disk): the heartbeats and acks of that time
         * wait unread in the sockets, and timers run before reads. Liveness is judged at the next
         * sweep, after this iteration has read them. */
        if (last && a->last_sweep_usec - last > STALL_MSEC * USEC_PER_MSEC) {
                log_debug("agent endpoint: the loop was blocked for %" PRIu64 " ms",
                          (uint64_t)((a->last_sweep_usec - last) / USEC_PER_MSEC));
                return;
        }
        {
                uint64_t now = orch_now_usec(), ttl = orch_agents_ttl_ms(a) * USEC_PER_MSEC;
                uint64_t grace = MAX(ttl, (uint64_t)STARTUP_GRACE_MSEC * USEC_PER_MSEC);
                struct orch_hmap_iter it;
                struct orch_hmap_node *n;
                struct orch_list *p, *tmp;

                for (n = orch_hmap_first(&a->st->nodes, &it); n; n = orch_hmap_next(&a->st->nodes, &it)) {
                        struct orch_node *node = container_of(n, struct orch_node, hnode);

                        if (node->state != ORCH_NODE_DOWN && now > node->last_heard_usec + ttl) {
                                char why[96];
                                orch_snprintf(why, sizeof why, "no heartbeat for %" PRIu64 " ms",
                                              (uint64_t)(ttl / USEC_PER_MSEC));
                                log_warn("node %s is down: %s", node->name, why);
                                if (node->conn)
                                        conn_close(node->conn, why);
                                orch_state_set_node_state(a->st, node, ORCH_NODE_DOWN);
                                orch_state_event(a->st, ORCH_EVENT_NODE_DOWN,
                                                 json_pack("{s:s}", "node", node->name),
                                                 "node %s is down: %s", node->name, why);
                                node_lose_instances(a, node, "node down");
                        } else if (node->state == ORCH_NODE_DOWN && !node->instances_lost && !node->conn &&
                                   now > MAX(node->last_heard_usec, a->started_usec) + grace) {
                                /* known from the store, but its agent did not come back after orchd started
                                 */
                                node_lose_instances(a, node, "node did not reconnect");
                        }
                }
                /* commands an agent never answered: it is stuck; the hello after reconnecting settles it */
                orch_list_foreach_safe (p, tmp, &a->conns) {
                        struct orch_agent_conn *c = orch_list_entry(p, struct orch_agent_conn, link);
                        if (c->state == CONN_AWAIT_HELLO &&
                            now > c->opened_usec + HELLO_TIMEOUT_MSEC * USEC_PER_MSEC) {
                                send_error(c, "no hello within 10s");
                                conn_close(c, "no hello");
                        } else {
                                for (struct command *cmd = c->commands; cmd; cmd = cmd->next)
                                        if (now > cmd->deadline_usec) {
                                                conn_close(c, "a command was not acknowledged in time");
                                                break;
                                        }
                        }
                }
        }
}

/* --- setup ---------------------------------------------------------------------------------- */

int orch_agents_new(uv_loop_t *loop, struct orch_state *st, const struct orch_agents_config *cfg,
                    struct orch_agents **ret)
{
        struct orch_agents *a = calloc(1, sizeof *a);

        if (!a)
                return -ENOMEM;
        a->loop = loop;
        a->st = st;
        a->cfg = *cfg;
        if (!a->cfg.heartbeat_ms)
                a->cfg.heartbeat_ms = 1000;
        if (!a->cfg.ttl_factor)
                a->cfg.ttl_factor = 3;
        if (!a->cfg.max_heartbeat_rate)
                a->cfg.max_heartbeat_rate = 1000;
        if (!a->cfg.max_connections)
                a->cfg.max_connections = 10000;
        a->join_token = strdup(cfg->join_token);
        a->started_usec = orch_now_usec();
        orch_list_init(&a->conns);
        orch_list_init(&a->delayed);
        if (!a->join_token) {
                free(a);
                return -ENOMEM;
        }
        a->cfg.join_token = a->join_token;
        *ret = a;
        return 0;
}

void orch_agents_set_reconciler(struct orch_agents *a, struct orch_reconciler *rc)
{
        a->rc = rc;
}

int orch_agents_listen(struct orch_agents *a)
{
        struct sockaddr_storage ss;
        int r = orch_parse_listen(a->cfg.listen, &ss, NULL);

        if (r < 0) {
                log_error("--agent-listen '%s': expected HOST:PORT or [IPV6]:PORT with an IP address",
                          a->cfg.listen);
                return r;
        }
        r = uv_tcp_init(a->loop, &a->listener);
        if (r < 0)
                return r;
        a->open_handles++;
        r = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
        if (r >= 0)
                r = uv_listen((uv_stream_t *)&a->listener, 1024, on_connection);
        if (r < 0) {
                log_error("agent endpoint: cannot listen on %s: %s", a->cfg.listen, uv_strerror(r));
                return r;
        }
        a->listening = true;
        r = uv_timer_init(a->loop, &a->sweep);
        if (r < 0)
                return r;
        a->open_handles++;
        uv_timer_start(&a->sweep, sweep_cb, SWEEP_MSEC, SWEEP_MSEC);
        log_info("agent endpoint listening on %s", a->cfg.listen);
        return 0;
}

static void handle_closed(uv_handle_t *h)
{
        struct orch_agents *a = h->data;

        if (--a->open_handles == 0 && a->closing_conns == 0)
                free(a);
}

void orch_agents_close(struct orch_agents *a)
{
        struct orch_list *p, *t;

        if (!a)
                return;
        a->closing = true;
        send_due_stops(a); /* frees them: nothing is sent while closing */
        spec_cache_clear(a);
        orch_hmap_release(&a->spec_cache);
        orch_list_foreach_safe (p, t, &a->conns)
                conn_close(orch_list_entry(p, struct orch_agent_conn, link), NULL);
        free(a->join_token);
        a->join_token = NULL;
        if (a->open_handles == 0) {
                if (a->closing_conns == 0)
                        free(a);
                return;
        }
        a->listener.data = a;
        a->sweep.data = a;
        uv_close((uv_handle_t *)&a->listener, handle_closed);
        if (a->open_handles >= 2 || uv_is_active((uv_handle_t *)&a->sweep))
                uv_close((uv_handle_t *)&a->sweep, handle_closed);
}

/* --- logs ----------------------------------------------------------------------------------- */

int orch_agents_logs(struct orch_agents *a, struct orch_inst *inst, uint64_t tail, bool follow,
                     orch_log_data_fn on_data, orch_log_end_fn on_end, void *userdata,
                     struct orch_log_stream **ret)
{
        struct orch_agent_conn *c = inst->node ? inst->node->conn : NULL;
        struct orch_log_stream *s;
        struct command *cmd;
        int r;

        if (!c || c->state != CONN_READY)
                return -ENOTCONN;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        cmd = command_new(c, ORCH_PROTO_LOGS, 0);
        if (!cmd) {
                free(s);
                return -ENOMEM;
        }
        /* a follow stays open as long as the client wants: no ack deadline */
        if (follow)
                cmd->deadline_usec = UINT64_MAX;
        *s = (struct orch_log_stream){c, cmd->id, on_data, on_end, userdata, false};
        cmd->logs = s;
        {
                struct orch_proto_msg m = {
                        .type = ORCH_PROTO_LOGS,
                        .logs = {.id = cmd->id, .instance = inst->id, .tail = tail, .follow = follow},
                };
                r = send_msg(c, &m);
        }
        if (r < 0) {
                cmd->logs = NULL;
                free(s);
                return r;
        }
        conn_flush(c);
        *ret = s;
        return 0;
}

void orch_agents_logs_cancel(struct orch_log_stream *s)
{
        struct orch_proto_msg m = {.type = ORCH_PROTO_LOGS_CANCEL};

        if (!s || s->cancelled)
                return;
        s->cancelled = true;
        m.logs_cancel.id = s->id;
        if (s->conn->state == CONN_READY) {
                send_msg(s->conn, &m);
                conn_flush(s->conn);
        }
        /* freed when the ack of the logs command arrives or the connection closes */
}
