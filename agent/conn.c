/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <netdb.h>

#include "conn.h"
#include "hashmap.h"
#include "json.h"
#include "log.h"
#include "logs.h"
#include "net.h"
#include "proto.h"
#include "util.h"
#include "banned.h"

#define RECONNECT_MIN_MS 100
/* A connect without an answer this long is given up and tried again. Behind a router a partition
 * drops packets silently: the kernel would resend the SYN with its own backoff (1, 3, 7 s ...),
 * and a healed partition would be noticed that late. */
#define CONNECT_TIMEOUT_MS 1000
/* Connected, hello sent: how long to wait for the welcome. */
#define WELCOME_TIMEOUT_MS 30000
/* 1 s at most: a healed partition is noticed within a second, so a replaced copy never outlives it
 * by more (the self-healing issue allows one heartbeat). */
#define RECONNECT_MAX_MS 1000
#define USAGE_PERIOD_MS  10000
#define TAIL_MAX_BYTES   (4u * 1024 * 1024)
/* Log followers pause while this much is queued for orchd, and resume once it drained. */
#define LOG_HIGH_WATER (1u * 1024 * 1024)
/* Until the welcome says otherwise. */
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_TTL_MS       3000

enum conn_state {
        STATE_IDLE, /* waiting to dial */
        STATE_RESOLVING,
        STATE_CONNECTING,
        STATE_HELLO, /* hello sent, waiting for the welcome */
        STATE_READY,
        STATE_CLOSED,
};

struct cached_spec {
        struct orch_hmap_node hnode;
        char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];
        struct orch_service *spec;
};

/* A stop command waits for every instance it names to be gone before its ack. */
struct pending_stop {
        struct orch_conn *conn;
        uint64_t id;
        uint64_t session;
        size_t waiting;
};

struct log_stream {
        struct orch_conn *conn;
        uint64_t id;
        uint64_t session;
        struct orch_log_follower *follower;
        bool paused;
        struct log_stream *next;
};

struct orch_conn {
        uv_loop_t *loop;
        struct orch_supervisor *sv;
        struct orch_logs *logs;
        struct orch_conn_config cfg;
        char *server_host;
        char *server_port;
        enum conn_state state;
        uint64_t session; /* rises with every connection: late callbacks of an old one are ignored */

        uv_tcp_t tcp;
        bool tcp_open;
        uv_connect_t connect_req;
        uv_getaddrinfo_t gai_req;
        uv_timer_t retry; /* reconnect backoff */
        uv_timer_t beat;  /* heartbeats and the orchd silence check */
        uv_timer_t usage;
        uv_timer_t orphan; /* stop_after_disconnect */
        uv_timer_t dial;   /* a connect that does not complete in time is abandoned */
        int open_handles;
        bool closing;

        uint64_t backoff_ms;
        bool dial_timed_out; /* the last connect got no answer: the next one goes out at once */
        uint64_t heartbeat_ms, ttl_ms;
        uint64_t last_heard_usec;
        uint64_t beat_seq, event_seq;
        /* An instance changed after the hello reported it and before the welcome: its events were not
         * sent (orchd takes none before it welcomes), so every instance is reported again then. */
        bool changed_in_hello;
        struct orch_proto_reader reader;
        struct orch_buf out, inflight;
        uv_write_t write_req;
        bool writing;
        struct orch_hmap specs;
        struct log_stream *streams;
        /* the advertised address: --address, or the local address of the connection to orchd */
        char local_address[64];
};

static void conn_drop(struct orch_conn *c, const char *why);
static void schedule_reconnect(struct orch_conn *c);

/* --- writing -------------------------------------------------------------------------------- */

static void flush_out(struct orch_conn *c);

static void write_cb(uv_write_t *req, int status)
{
        struct orch_conn *c = container_of(req, struct orch_conn, write_req);

        c->writing = false;
        orch_buf_reset(&c->inflight);
        if (status < 0) {
                if (c->state != STATE_IDLE && c->state != STATE_CLOSED)
                        conn_drop(c, uv_strerror(status));
                return;
        }
        /* drained: followers that waited for room go on */
        if (c->out.len < LOG_HIGH_WATER)
                for (struct log_stream *s = c->streams; s; s = s->next)
                        if (s->paused) {
                                s->paused = false;
                                orch_logs_follower_resume(s->follower);
                        }
        flush_out(c);
}

static void flush_out(struct orch_conn *c)
{
        struct orch_buf tmp;
        uv_buf_t b;

        if (c->writing || c->out.len == 0 || !c->tcp_open ||
            (c->state != STATE_HELLO && c->state != STATE_READY))
                return;
        tmp = c->inflight;
        c->inflight = c->out;
        c->out = tmp;
        orch_buf_reset(&c->out);
        b = uv_buf_init(c->inflight.data, (unsigned)c->inflight.len);
        if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
                conn_drop(c, "write failed");
                return;
        }
        c->writing = true;
}

static int send_msg(struct orch_conn *c, const struct orch_proto_msg *m)
{
        struct orch_proto_error err;
        int r;

        if (c->state != STATE_HELLO && c->state != STATE_READY)
                return -ENOTCONN;
        r = orch_proto_encode(&c->out, m, &err);
        if (r < 0) {
                log_error("cannot encode %s: %s", orch_proto_type_to_string(m->type), err.message);
                return r;
        }
        flush_out(c);
        return 0;
}

static void send_ack(struct orch_conn *c, uint64_t id, bool ok, const char *error,
                     struct orch_proto_ack_result *results, size_t n)
{
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_ACK,
                .ack = {.id = id, .ok = ok, .error = ok ? NULL : error, .results = results, .n_results = n},
        };
        send_msg(c, &m);
}

/* --- reports -------------------------------------------------------------------------------- */

static void fill_report(const struct orch_sv_info *info, struct orch_proto_report *rep,
                        struct orch_proto_port *ports)
{
        for (size_t i = 0; i < info->n_ports && i < ORCH_PROTO_MAX_PORTS; i++)
                ports[i] = (struct orch_proto_port){info->ports[i].name, info->ports[i].port};
        *rep = (struct orch_proto_report){
                .instance = info->id,
                .service = info->service,
                .revision = info->revision,
                .generation = info->generation,
                .state = info->state,
                .health = info->health,
                .pid = info->pid > 0 ? (uint32_t)info->pid : 0,
                .ports = ports,
                .n_ports = MIN(info->n_ports, (size_t)ORCH_PROTO_MAX_PORTS),
                .restarts = info->restarts,
                .started_at = info->started_at,
                .has_exit = info->has_exit,
                .exit = {.code = info->exit_code >= 0 ? (uint32_t)info->exit_code : 0,
                         .signal = info->exit_signal > 0 ? (uint32_t)info->exit_signal : 0,
                         .oom = info->exit_oom},
                .reason = info->reason,
                .cgroup = info->cgroup,
        };
}

void orch_conn_event(struct orch_conn *c, const struct orch_sv_info *info)
{
        struct orch_proto_port ports[ORCH_PROTO_MAX_PORTS];
        struct orch_proto_msg m = {.type = ORCH_PROTO_EVENT};

        if (c->state == STATE_HELLO)
                c->changed_in_hello = true;
        if (c->state != STATE_READY)
                return; /* the next hello (or the welcome's resend) carries the state */
        m.event.seq = ++c->event_seq;
        fill_report(info, &m.event.report, ports);
        send_msg(c, &m);
}

/* The hello: who we are and every instance we hold. Strings are borrowed from the supervisor,
 * so the reports are collected and encoded in one go. */
struct hello_collect {
        struct orch_proto_report *reports;
        struct orch_proto_port *ports;
        size_t n, cap;
};

static void collect_cb(void *userdata, const struct orch_sv_info *info)
{
        struct hello_collect *h = userdata;

        if (h->n >= h->cap)
                return;
        fill_report(info, &h->reports[h->n], &h->ports[h->n * ORCH_PROTO_MAX_PORTS]);
        h->n++;
}

static void send_hello(struct orch_conn *c)
{
        struct hello_collect h = {0};
        _cleanup_(freep) struct orch_proto_label *labels = calloc(c->cfg.n_labels + 1, sizeof *labels);
        struct orch_proto_msg m = {.type = ORCH_PROTO_HELLO};

        h.cap = orch_supervisor_count(c->sv);
        h.reports = calloc(h.cap + 1, sizeof *h.reports);
        h.ports = calloc((h.cap + 1) * ORCH_PROTO_MAX_PORTS, sizeof *h.ports);
        if (!labels || !h.reports || !h.ports) {
                free(h.reports);
                free(h.ports);
                conn_drop(c, "out of memory");
                return;
        }
        orch_supervisor_foreach(c->sv, collect_cb, &h);
        for (size_t i = 0; i < c->cfg.n_labels; i++)
                labels[i] = (struct orch_proto_label){c->cfg.labels[i].key, c->cfg.labels[i].value};
        m.hello = (struct orch_proto_hello){
                .proto = ORCH_PROTO_VERSION,
                .node = c->cfg.node,
                .token = c->cfg.token,
                .address = c->cfg.address && *c->cfg.address ? c->cfg.address : c->local_address,
                .version = ORCH_VERSION,
                .labels = labels,
                .n_labels = c->cfg.n_labels,
                .capacity = {.cpu_millis = c->cfg.cpu_millis, .memory = c->cfg.memory},
                .drivers = (const char **)c->cfg.drivers,
                .n_drivers = c->cfg.n_drivers,
                .instances = h.reports,
                .n_instances = h.n,
        };
        c->state = STATE_HELLO;
        c->changed_in_hello = false;
        send_msg(c, &m);
        free(h.reports);
        free(h.ports);
}

/* --- commands ------------------------------------------------------------------------------- */

static void handle_spec(struct orch_conn *c, struct orch_proto_spec *s)
{
        struct cached_spec *cs;
        char key[sizeof cs->key];

        orch_snprintf(key, sizeof key, "%s/%s", s->service, s->revision);
        if (orch_hmap_get(&c->specs, key)) {
                send_ack(c, s->id, true, NULL, NULL, 0);
                return;
        }
        cs = calloc(1, sizeof *cs);
        if (!cs) {
                send_ack(c, s->id, false, "out of memory", NULL, 0);
                return;
        }
        orch_strlcpy(cs->key, key, sizeof cs->key);
        cs->spec = TAKE_PTR(s->parsed);
        if (orch_hmap_insert(&c->specs, &cs->hnode, cs->key) < 0) {
                orch_service_free(cs->spec);
                free(cs);
                send_ack(c, s->id, false, "out of memory", NULL, 0);
                return;
        }
        send_ack(c, s->id, true, NULL, NULL, 0);
}

static void handle_start(struct orch_conn *c, const struct orch_proto_start *st)
{
        _cleanup_(freep) struct orch_proto_ack_result *res = calloc(st->n_instances + 1, sizeof *res);
        _cleanup_(freep) char *errors = calloc(st->n_instances + 1, ORCH_SV_REASON_MAX);
        bool all_ok = true;

        if (!res || !errors) {
                send_ack(c, st->id, false, "out of memory", NULL, 0);
                return;
        }
        for (size_t i = 0; i < st->n_instances; i++) {
                const struct orch_proto_start_item *it = &st->instances[i];
                char *reason = errors + i * ORCH_SV_REASON_MAX;
                char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];
                struct cached_spec *cs;
                uint64_t held = orch_supervisor_generation(c->sv, it->instance);
                int r = 0;

                res[i] = (struct orch_proto_ack_result){.instance = it->instance, .ok = true};
                switch (orch_proto_fence_start(held, it->generation)) {
                case ORCH_PROTO_START_SAME:
                        continue;
                case ORCH_PROTO_START_STALE:
                        orch_snprintf(reason, ORCH_SV_REASON_MAX,
                                      "held at generation %" PRIu64 ", newer than %" PRIu64, held,
                                      it->generation);
                        r = -ESTALE;
                        break;
                default:
                        orch_snprintf(key, sizeof key, "%s/%s", it->service, it->revision);
                        cs = orch_hmap_entry(orch_hmap_get(&c->specs, key), struct cached_spec, hnode);
                        if (!cs) {
                                orch_snprintf(reason, ORCH_SV_REASON_MAX, "no spec for %s revision %s",
                                              it->service, it->revision);
                                r = -ENOENT;
                                break;
                        }
                        r = orch_supervisor_start(c->sv, it->instance, it->generation, cs->spec,
                                                  it->revision, reason, ORCH_SV_REASON_MAX);
                }
                if (r < 0) {
                        res[i].ok = false;
                        res[i].error = *reason ? reason : strerror(-r);
                        all_ok = false;
                        log_warn("cannot start %s: %s", it->instance, res[i].error);
                }
        }
        send_ack(c, st->id, all_ok, all_ok ? NULL : "some instances could not start", res, st->n_instances);
}

static void stop_done(void *userdata, const char *id)
{
        struct pending_stop *p = userdata;
        struct orch_conn *c = p->conn;

        if (--p->waiting > 0)
                return;
        /* Acked on the connection that asked; after a reconnect the hello told orchd anyway. Also
         * before the welcome: orchd sends the fencing stops of a hello and then its welcome in one go,
         * so it reads this ack after it welcomed the node, and a stop that completes before the
         * welcome arrives (a process that dies at once of its stop signal) must not go unanswered:
         * orchd forgets the fenced copy only on this ack. */
        if (c->session == p->session && (c->state == STATE_READY || c->state == STATE_HELLO))
                send_ack(c, p->id, true, NULL, NULL, 0);
        free(p);
}

static void handle_stop(struct orch_conn *c, const struct orch_proto_stop *st)
{
        struct pending_stop *p = calloc(1, sizeof *p);

        if (!p) {
                send_ack(c, st->id, false, "out of memory", NULL, 0);
                return;
        }
        *p = (struct pending_stop){c, st->id, c->session, 1}; /* one extra hold until the loop is done */
        for (size_t i = 0; i < st->n_instances; i++) {
                const struct orch_proto_stop_item *it = &st->instances[i];
                uint64_t held = orch_supervisor_generation(c->sv, it->instance);

                if (orch_proto_fence_stop(held, it->generation) != ORCH_PROTO_STOP_STOP)
                        continue;
                p->waiting++;
                if (orch_supervisor_stop(c->sv, it->instance, st->reason ? st->reason : "stopped by orchd",
                                         stop_done, p) < 0)
                        p->waiting--;
        }
        stop_done(p, NULL);
}

static struct log_stream **find_stream(struct orch_conn *c, uint64_t id)
{
        for (struct log_stream **s = &c->streams; *s; s = &(*s)->next)
                if ((*s)->id == id)
                        return s;
        return NULL;
}

static void stream_end(struct orch_conn *c, uint64_t id, bool ok, const char *error)
{
        struct log_stream **sp = find_stream(c, id), *s;

        if (!sp)
                return;
        s = *sp;
        *sp = s->next;
        orch_logs_follower_cancel(s->follower);
        if (c->session == s->session)
                send_ack(c, id, ok, error, NULL, 0);
        free(s);
}

static void send_log(struct orch_conn *c, uint64_t id, const char *data, size_t len)
{
        /* frames of at most 64 KiB of text */
        while (len > 0) {
                size_t n = MIN(len, (size_t)64 * 1024);
                struct orch_proto_msg m = {.type = ORCH_PROTO_LOG,
                                           .log = {.id = id, .data = data, .data_len = n}};
                send_msg(c, &m);
                data += n;
                len -= n;
        }
}

static void follow_cb(struct orch_log_follower *f, const char *data, size_t len, int r, void *userdata)
{
        struct log_stream *s = userdata;
        struct orch_conn *c = s->conn;

        if (c->session != s->session)
                return;
        if (data && len) {
                send_log(c, s->id, data, len);
                /* a chatty instance must not queue its whole log for a slow orchd */
                if (c->out.len + c->inflight.len > LOG_HIGH_WATER && !s->paused) {
                        s->paused = true;
                        orch_logs_follower_pause(f);
                }
        } else
                stream_end(c, s->id, r >= 0, r < 0 ? strerror(-r) : NULL);
}

static void handle_logs(struct orch_conn *c, const struct orch_proto_logs *l)
{
        struct orch_buf buf = {0};
        struct log_stream *s;
        uint64_t end = 0;
        size_t lines = l->tail == ORCH_PROTO_TAIL_ALL ? SIZE_MAX : (size_t)MIN(l->tail, (uint64_t)SIZE_MAX);
        int r;

        if (!c->logs || !orch_supervisor_generation(c->sv, l->instance)) {
                char msg[160];
                orch_snprintf(msg, sizeof msg, "instance %s does not run on this node", l->instance);
                send_ack(c, l->id, false, msg, NULL, 0);
                return;
        }
        r = l->tail == 0 ? 0 : orch_logs_tail(c->logs, l->instance, lines, TAIL_MAX_BYTES, &buf, &end);
        if (r < 0 && r != -ENOENT) {
                orch_buf_release(&buf);
                send_ack(c, l->id, false, strerror(-r), NULL, 0);
                return;
        }
        if (buf.len)
                send_log(c, l->id, buf.data, buf.len);
        orch_buf_release(&buf);
        if (!l->follow) {
                send_ack(c, l->id, true, NULL, NULL, 0);
                return;
        }
        s = calloc(1, sizeof *s);
        if (!s) {
                send_ack(c, l->id, false, "out of memory", NULL, 0);
                return;
        }
        *s = (struct log_stream){.conn = c, .id = l->id, .session = c->session};
        r = orch_logs_follow(c->logs, l->instance, l->tail == 0 || r == -ENOENT ? ORCH_LOGS_FOLLOW_END : end,
                             follow_cb, s, &s->follower);
        if (r < 0) {
                free(s);
                send_ack(c, l->id, false, strerror(-r), NULL, 0);
                return;
        }
        s->next = c->streams;
        c->streams = s;
}

static void report_cb(void *userdata, const struct orch_sv_info *info)
{
        orch_conn_event(userdata, info);
}

static void handle_welcome(struct orch_conn *c, const struct orch_proto_welcome *w)
{
        c->heartbeat_ms = w->heartbeat_ms;
        c->ttl_ms = w->ttl_ms;
        c->state = STATE_READY;
        c->backoff_ms = 0;
        uv_timer_stop(&c->orphan);
        log_info("registered with orchd at %s as node %s (heartbeat %" PRIu64 " ms, ttl %" PRIu64 " ms)",
                 c->cfg.server, w->node, w->heartbeat_ms, w->ttl_ms);
        /* The hello's reports are older than what changed since: without this an instance that
         * became running meanwhile would stay starting in orchd's view until its next change. */
        if (c->changed_in_hello) {
                c->changed_in_hello = false;
                orch_supervisor_foreach(c->sv, report_cb, c);
        }
        if (c->cfg.on_ready)
                c->cfg.on_ready(c->cfg.userdata);
}

static void beat_cb(uv_timer_t *t);

static void handle_frame(struct orch_conn *c, const char *frame, size_t len)
{
        _cleanup_(orch_proto_msg_freep) struct orch_proto_msg *m = NULL;
        struct orch_proto_error err;

        if (orch_proto_decode(frame, len, &m, &err) < 0) {
                struct orch_proto_msg e = {.type = ORCH_PROTO_ERROR, .error = {.error = err.message}};
                log_error("bad frame from orchd: %s", err.message);
                send_msg(c, &e);
                conn_drop(c, "bad frame");
                return;
        }
        if (!orch_proto_type_sent_by_server(m->type)) {
                conn_drop(c, "orchd sent a message only agents send");
                return;
        }
        c->last_heard_usec = orch_now_usec();
        if (c->state == STATE_HELLO && m->type != ORCH_PROTO_WELCOME && m->type != ORCH_PROTO_ERROR &&
            m->type != ORCH_PROTO_STOP) {
                /* orchd sends the fencing stops first, then the welcome */
                conn_drop(c, "orchd did not welcome the node");
                return;
        }
        switch (m->type) {
        case ORCH_PROTO_WELCOME:
                handle_welcome(c, &m->welcome);
                beat_cb(&c->beat);
                break;
        case ORCH_PROTO_ERROR:
                log_error("orchd refused the node: %s", m->error.error);
                conn_drop(c, NULL);
                break;
        case ORCH_PROTO_HEARTBEAT:
                if (m->heartbeat.heartbeat_ms)
                        c->heartbeat_ms = m->heartbeat.heartbeat_ms;
                if (m->heartbeat.ttl_ms)
                        c->ttl_ms = m->heartbeat.ttl_ms;
                break;
        case ORCH_PROTO_SPEC:
                handle_spec(c, &m->spec);
                break;
        case ORCH_PROTO_START:
                handle_start(c, &m->start);
                break;
        case ORCH_PROTO_STOP:
                handle_stop(c, &m->stop);
                break;
        case ORCH_PROTO_LOGS:
                handle_logs(c, &m->logs);
                break;
        case ORCH_PROTO_LOGS_CANCEL:
                stream_end(c, m->logs_cancel.id, true, NULL);
                break;
        default:
                break;
        }
}

/* --- connection lifecycle --------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct orch_conn *c = container_of(h, struct orch_conn, tcp);
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
        struct orch_conn *c = container_of(s, struct orch_conn, tcp);
        uint64_t session = c->session;
        char *frame;
        size_t len;
        int r;

        if (nread < 0) {
                conn_drop(c, nread == UV_EOF ? "orchd closed the connection" : uv_strerror((int)nread));
                return;
        }
        r = orch_proto_reader_commit(&c->reader, (size_t)nread);
        while (c->session == session && (c->state == STATE_HELLO || c->state == STATE_READY) &&
               (r = orch_proto_reader_next(&c->reader, &frame, &len)) > 0)
                handle_frame(c, frame, len);
        if (r == -EMSGSIZE && c->session == session)
                conn_drop(c, "frame from orchd too large");
}

static void tcp_closed(uv_handle_t *h)
{
        struct orch_conn *c = container_of(h, struct orch_conn, tcp);

        c->open_handles--;
        if (c->closing) {
                if (c->open_handles == 0)
                        free(c);
                return;
        }
        schedule_reconnect(c);
}

static void collect_id(void *userdata, const struct orch_sv_info *info)
{
        orch_strv_push(userdata, info->id);
}

static void orphan_cb(uv_timer_t *t)
{
        struct orch_conn *c = container_of(t, struct orch_conn, orphan);
        _cleanup_(orch_strv_freep) char **ids = NULL;

        orch_supervisor_foreach(c->sv, collect_id, &ids);
        if (!ids)
                return;
        /* orchd has replaced them elsewhere by now: no second copy may keep running here */
        log_warn("orchd unreachable for longer than --stop-after-disconnect: stopping all %zu instances",
                 orch_strv_length(ids));
        for (char **id = ids; *id; id++)
                orch_supervisor_stop(c->sv, *id, "orchd unreachable (--stop-after-disconnect)", NULL, NULL);
}

static void clear_specs(struct orch_conn *c)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&c->specs, &it); n; n = orch_hmap_next(&c->specs, &it)) {
                struct cached_spec *cs = container_of(n, struct cached_spec, hnode);
                orch_hmap_remove(&c->specs, n);
                orch_service_free(cs->spec);
                free(cs);
        }
}

static void conn_drop(struct orch_conn *c, const char *why)
{
        bool was_ready = c->state == STATE_READY;

        if (c->state == STATE_IDLE || c->state == STATE_CLOSED)
                return;
        if (why)
                log_warn("connection to orchd at %s lost: %s", c->cfg.server, why);
        c->session++;
        c->state = c->closing ? STATE_CLOSED : STATE_IDLE;
        uv_timer_stop(&c->beat);
        while (c->streams) {
                struct log_stream *s = c->streams;
                c->streams = s->next;
                orch_logs_follower_cancel(s->follower);
                free(s);
        }
        clear_specs(c);
        orch_buf_reset(&c->out);
        c->writing = false;
        if (was_ready && c->cfg.stop_after_disconnect_ms && !c->closing)
                uv_timer_start(&c->orphan, orphan_cb, c->cfg.stop_after_disconnect_ms, 0);
        /* a new connection starts with an empty reader */
        orch_proto_reader_release(&c->reader);
        orch_proto_reader_init(&c->reader, 0);
        if (c->tcp_open) {
                c->tcp_open = false;
                uv_close((uv_handle_t *)&c->tcp, tcp_closed);
        } else if (!c->closing)
                schedule_reconnect(c);
}

static void beat_cb(uv_timer_t *t)
{
        struct orch_conn *c = container_of(t, struct orch_conn, beat);
        uint64_t now = orch_now_usec();

        if (c->state == STATE_HELLO) {
                /* orchd reads the hello as soon as it can; a busy one (thousands of agents coming
                 * back after its restart) gets long enough that they do not storm it again */
                if (now > c->last_heard_usec + WELCOME_TIMEOUT_MS * USEC_PER_MSEC)
                        conn_drop(c, "no welcome from orchd within 30 s");
                else
                        uv_timer_start(&c->beat, beat_cb, 1000, 0);
                return;
        }
        if (c->state != STATE_READY)
                return;
        if (now > c->last_heard_usec + c->ttl_ms * USEC_PER_MSEC) {
                conn_drop(c, "no word from orchd within the TTL");
                return;
        }
        {
                struct orch_proto_msg m = {.type = ORCH_PROTO_HEARTBEAT,
                                           .heartbeat = {.seq = ++c->beat_seq}};
                send_msg(c, &m);
        }
        uv_timer_start(&c->beat, beat_cb, c->heartbeat_ms, 0);
}

/* The ids are borrowed from the supervisor's infos, which stay valid while it is not called:
 * the message is encoded before control returns to the loop. */
struct usage_walk {
        struct orch_conn *c;
        struct orch_proto_usage_item *items;
        size_t n, cap;
};

static void usage_walk_cb(void *userdata, const struct orch_sv_info *info)
{
        struct usage_walk *w = userdata;
        struct orch_sv_usage su;

        if (w->n >= w->cap || orch_supervisor_usage(w->c->sv, info->id, &su) < 0)
                return;
        w->items[w->n++] = (struct orch_proto_usage_item){
                .instance = info->id,
                .cpu_usec = su.cpu_usec == UINT64_MAX ? 0 : su.cpu_usec,
                .memory = su.memory == UINT64_MAX ? 0 : su.memory,
                .pids = su.pids == UINT64_MAX ? 0 : (uint32_t)MIN(su.pids, (uint64_t)UINT32_MAX),
        };
}

static void usage_cb(uv_timer_t *t)
{
        struct orch_conn *c = container_of(t, struct orch_conn, usage);
        struct usage_walk w = {.c = c, .cap = orch_supervisor_count(c->sv)};
        struct orch_proto_msg m = {.type = ORCH_PROTO_USAGE};

        if (c->state != STATE_READY || w.cap == 0)
                return;
        w.items = calloc(w.cap, sizeof *w.items);
        if (!w.items)
                return;
        orch_supervisor_foreach(c->sv, usage_walk_cb, &w);
        /* frames of at most 10,000 instances: far below the codec's per-frame bound */
        for (size_t off = 0; off < w.n; off += 10000) {
                m.usage = (struct orch_proto_usage){.instances = w.items + off,
                                                    .n_instances = MIN(w.n - off, (size_t)10000)};
                send_msg(c, &m);
        }
        free(w.items);
}

static void dial_timeout_cb(uv_timer_t *t)
{
        struct orch_conn *c = container_of(t, struct orch_conn, dial);

        if (c->state == STATE_CONNECTING) {
                c->dial_timed_out = true;
                conn_drop(c, NULL); /* closing the handle cancels the connect; a new dial follows */
        }
}

static void connect_cb(uv_connect_t *req, int status)
{
        struct orch_conn *c = container_of(req, struct orch_conn, connect_req);

        uv_timer_stop(&c->dial);
        if (c->closing || status == UV_ECANCELED)
                return; /* we closed it (shutdown, or the dial timed out): that path reconnects */
        if (status < 0) {
                log_debug("connect to %s failed: %s", c->cfg.server, uv_strerror(status));
                c->state = STATE_CONNECTING;
                conn_drop(c, NULL);
                return;
        }
        uv_tcp_nodelay(&c->tcp, 1);
        uv_tcp_keepalive(&c->tcp, 1, 30);
        {
                /* the address this host reaches orchd from is the one orchd (and its gateway) can
                 * reach the instances at, when --address does not say otherwise */
                struct sockaddr_storage ss;
                int len = sizeof ss;
                c->local_address[0] = '\0';
                if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
                        if (ss.ss_family == AF_INET)
                                uv_ip4_name((struct sockaddr_in *)&ss, c->local_address,
                                            sizeof c->local_address);
                        else if (ss.ss_family == AF_INET6)
                                uv_ip6_name((struct sockaddr_in6 *)&ss, c->local_address,
                                            sizeof c->local_address);
                }
                if (!c->local_address[0])
                        orch_strlcpy(c->local_address, "127.0.0.1", sizeof c->local_address);
        }
        c->last_heard_usec = orch_now_usec();
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) < 0) {
                conn_drop(c, "cannot read");
                return;
        }
        send_hello(c);
        uv_timer_start(&c->beat, beat_cb, 1000, 0);
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
        struct orch_conn *c = container_of(req, struct orch_conn, gai_req);
        int r;

        if (c->closing) {
                uv_freeaddrinfo(res);
                return;
        }
        if (status < 0 || !res) {
                log_warn("cannot resolve %s: %s", c->server_host, uv_strerror(status));
                uv_freeaddrinfo(res);
                c->state = STATE_IDLE;
                schedule_reconnect(c);
                return;
        }
        c->state = STATE_CONNECTING;
        r = uv_tcp_init(c->loop, &c->tcp);
        if (r >= 0) {
                c->tcp_open = true;
                c->open_handles++;
                r = uv_tcp_connect(&c->connect_req, &c->tcp, res->ai_addr, connect_cb);
                if (r >= 0)
                        uv_timer_start(&c->dial, dial_timeout_cb, CONNECT_TIMEOUT_MS, 0);
        }
        uv_freeaddrinfo(res);
        if (r < 0) {
                log_warn("cannot connect to %s: %s", c->cfg.server, uv_strerror(r));
                conn_drop(c, NULL);
        }
}

static void retry_cb(uv_timer_t *t)
{
        struct orch_conn *c = container_of(t, struct orch_conn, retry);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};

        if (c->closing || c->state != STATE_IDLE)
                return;
        c->state = STATE_RESOLVING;
        if (uv_getaddrinfo(c->loop, &c->gai_req, resolved_cb, c->server_host, c->server_port, &hints) < 0) {
                c->state = STATE_IDLE;
                schedule_reconnect(c);
        }
}

static void schedule_reconnect(struct orch_conn *c)
{
        uint64_t jitter;

        if (c->closing)
                return;
        c->state = STATE_IDLE;
        /* jitter: a restarted orchd is not hit by every agent in the same millisecond */
        orch_random_bytes(&jitter, sizeof jitter);
        if (c->dial_timed_out) {
                /* The connect waited CONNECT_TIMEOUT_MS without an answer: packets are being dropped
                 * (a partition), which costs orchd nothing. Dial again at once, so that the SYN after
                 * a heal leaves within about one timeout rather than a timeout plus a backoff. */
                c->dial_timed_out = false;
                uv_timer_start(&c->retry, retry_cb, jitter % (RECONNECT_MIN_MS / 2 + 1), 0);
                return;
        }
        c->backoff_ms =
                c->backoff_ms ? MIN(c->backoff_ms * 2, (uint64_t)RECONNECT_MAX_MS) : RECONNECT_MIN_MS;
        uv_timer_start(&c->retry, retry_cb, c->backoff_ms / 2 + jitter % (c->backoff_ms / 2 + 1), 0);
}

/* a DNS name is at most 253 characters; an IPv6 address with a zone, far less */
#define ORCH_CONN_HOST_MAX 253

bool orch_conn_server_valid(const char *server)
{
        char host[ORCH_CONN_HOST_MAX + 1];
        uint16_t port;

        return orch_split_host_port(server, host, sizeof host, &port) >= 0 && port > 0;
}

int orch_conn_new(uv_loop_t *loop, struct orch_supervisor *sv, struct orch_logs *logs,
                  const struct orch_conn_config *cfg, struct orch_conn **ret)
{
        char host[ORCH_CONN_HOST_MAX + 1];
        struct orch_conn *c;
        uint16_t port;

        if (orch_split_host_port(cfg->server, host, sizeof host, &port) < 0 || port == 0)
                return -EINVAL;
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->server_host = strdup(host); /* [::1]:7071 without its brackets */
        c->server_port = orch_strdup_printf("%u", port);
        if (!c->server_host || !c->server_port) {
                free(c->server_host);
                free(c->server_port);
                free(c);
                return -ENOMEM;
        }
        c->loop = loop;
        c->sv = sv;
        c->logs = logs;
        c->cfg = *cfg;
        c->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
        c->ttl_ms = DEFAULT_TTL_MS;
        orch_proto_reader_init(&c->reader, 0);
        uv_timer_init(loop, &c->retry);
        uv_timer_init(loop, &c->beat);
        uv_timer_init(loop, &c->usage);
        uv_timer_init(loop, &c->orphan);
        uv_timer_init(loop, &c->dial);
        c->open_handles = 5;
        *ret = c;
        return 0;
}

int orch_conn_start(struct orch_conn *c)
{
        c->state = STATE_IDLE;
        uv_timer_start(&c->retry, retry_cb, 0, 0);
        uv_timer_start(&c->usage, usage_cb, USAGE_PERIOD_MS, USAGE_PERIOD_MS);
        return 0;
}

bool orch_conn_is_connected(const struct orch_conn *c)
{
        return c->state == STATE_READY;
}

static void timer_closed(uv_handle_t *h)
{
        struct orch_conn *c = h->data;

        if (--c->open_handles == 0)
                free(c);
}

void orch_conn_close(struct orch_conn *c)
{
        if (!c)
                return;
        c->closing = true;
        conn_drop(c, NULL);
        clear_specs(c);
        orch_hmap_release(&c->specs);
        orch_buf_release(&c->out);
        orch_buf_release(&c->inflight);
        orch_proto_reader_release(&c->reader);
        free(c->server_host);
        free(c->server_port);
        c->server_host = c->server_port = NULL;
        c->retry.data = c->beat.data = c->usage.data = c->orphan.data = c;
        uv_close((uv_handle_t *)&c->retry, timer_closed);
        uv_close((uv_handle_t *)&c->beat, timer_closed);
        uv_close((uv_handle_t *)&c->usage, timer_closed);
        uv_close((uv_handle_t *)&c->orphan, timer_closed);
        c->dial.data = c;
        uv_close((uv_handle_t *)&c->dial, timer_closed);
}
