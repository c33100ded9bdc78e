/* SPDX-License-Identifier: MIT */
#include "config.h"

/*
 * A cluster of simulated nodes for the placement benchmark (bench/sched.sh). One process opens N
 * connections to orchd's agent endpoint; each is a node that speaks the real protocol through
 * lib/proto and runs nothing: it says hello with the join token, acks every spec, start and stop
 * at once, reports every started instance running with one event (a made-up pid and ports), and
 * sends heartbeats at the interval orchd gives. A dropped node reconnects with backoff and reports
 * what it holds in its hello, as an agent does, so orchd's fencing runs as in production.
 *
 *   sched-sim --server HOST:PORT --token-file FILE [--nodes N] [--cpu CORES] [--memory SIZE]
 *             [--zones Z] [--prefix NAME] [--in-flight K] [--expect M] [--decode-all] [--quiet]
 *
 * Nodes are PREFIX-00001 ... with the label zone=z1 ... zZ (round robin), the given capacity and
 * the exec driver. Connections are opened at most K at a time (a node counts until its welcome),
 * so that orchd's listen backlog is not overrun.
 *
 * stdout, one line per milestone, key=value, for scripts (t_ms is the wall clock in ms):
 *   ready nodes=N t_ms=T               every node was welcomed
 *   acked starts=M events=M t_ms=T     M starts acked and their running events handed to the
 *                                      kernel (with --expect M)
 *   summary key=value ...              at SIGTERM or SIGINT, then it exits 0
 * stderr: progress once a second (unless --quiet), problems as they happen.
 */

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include <uv.h>

#include "hashmap.h"
#include "log.h"
#include "manifest.h"
#include "proto.h"
#include "units.h"
#include "util.h"
#include "banned.h"

#define DEFAULT_NODES     5000u
#define DEFAULT_CPU       32000u /* millicores */
#define DEFAULT_MEMORY    (128ull << 30)
#define DEFAULT_ZONES     4u
#define DEFAULT_IN_FLIGHT 256u
/* Until the welcome says otherwise (the agent's defaults). */
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_TTL_MS       3000
#define RECONNECT_MIN_MS     100
#define RECONNECT_MAX_MS     2000
/* A timer that fires this much late means the loop was blocked (see beat_cb). */
#define STALL_USEC    (1000 * USEC_PER_MSEC)
#define LATE_RETRY_MS 100
/* Past this many bytes queued towards orchd a node gives up its connection: orchd does not read. */
#define WRITE_HIGH_WATER (256u * 1024 * 1024)
/* Made-up ports come from this range, as from an agent's --port-range. */
#define PORT_BASE  20000u
#define PORT_COUNT 10000u

/* A (service, revision) some node received a spec for. Shared by every node: 5,000 nodes hold the
 * same few hundred specs, and an event needs only the port names and whether a check runs. */
struct spec_info {
        struct orch_hmap_node hnode;
        char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1]; /* "<service>/<revision>" */
        char service[ORCH_NAME_MAX + 1];
        char revision[ORCH_REVISION_LEN + 1];
        char **ports; /* port names, in the spec's order */
        size_t n_ports;
        bool has_health;
        uint32_t index; /* bit in every node's have_spec */
};

/* An instance a node holds ("runs"). */
struct sim_inst {
        struct orch_hmap_node hnode;
        char id[ORCH_PROTO_INSTANCE_ID_MAX + 1];
        const struct spec_info *spec;
        uint64_t generation;
        uint64_t started_at; /* realtime ms */
        uint32_t pid;
        uint16_t first_port; /* the spec's ports get consecutive numbers from here */
};

enum node_state {
        NODE_IDLE,       /* not connected; the timer may hold a reconnect */
        NODE_CONNECTING, /* TCP connect in progress */
        NODE_HELLO,      /* hello sent, waiting for the welcome */
        NODE_READY,
        NODE_CLOSING, /* the TCP handle is closing */
};

struct sim;

struct node {
        struct sim *sim;
        uint32_t index;
        char name[ORCH_PROTO_NODE_NAME_MAX + 1];
        char zone[16];
        enum node_state state;
        bool counted;    /* counts against the connect wave until its first welcome or failure */
        bool ever_ready; /* welcomed at least once */
        uv_tcp_t tcp;
        uv_connect_t connect_req;
        uv_timer_t timer; /* heartbeats while ready, the reconnect backoff while idle */
        struct orch_proto_reader reader;
        struct orch_buf out;      /* encoded frames not yet handed to libuv */
        struct orch_buf inflight; /* the frames of the write in progress */
        uv_write_t write_req;
        bool writing;
        uint64_t heartbeat_ms, ttl_ms;
        uint64_t last_heard_usec;
        uint64_t beat_due_usec; /* when the heartbeat timer should fire */
        uint64_t beat_seq, event_seq;
        uint64_t backoff_ms;
        struct orch_hmap instances; /* struct sim_inst by id */
        uint8_t *have_spec;         /* bitmap by spec_info.index: specs received on this connection */
        size_t have_spec_bytes;
        uint32_t next_port;
};

struct counters {
        uint64_t specs, specs_decoded, starts_ok, starts_failed, starts_repeated, stops, events, heartbeats;
        uint64_t logs_refused, frames_in, bytes_in, bytes_out, drops, connect_failures, welcomes;
};

struct sim {
        uv_loop_t *loop;
        struct sockaddr_storage server;
        const char *server_str;
        char *token;
        uint32_t n_nodes, cpu_millis, zones, in_flight;
        uint64_t memory, expect;
        const char *prefix;
        bool quiet;
        bool decode_all; /* every spec frame through orch_proto_decode(), repeats included */

        struct node *nodes;
        uint32_t next_connect; /* the next node of the first wave */
        uint32_t connecting;   /* counted nodes between connect and welcome */
        uint32_t ready;        /* nodes welcomed at least once */
        bool ready_reported, acked_reported, stopping;
        int open_handles;

        struct orch_hmap specs; /* struct spec_info by key */
        struct spec_info **spec_list;
        size_t n_specs;
        uint32_t next_pid;

        uv_timer_t progress;
        uv_signal_t sigterm, sigint;
        struct counters n, last;
        uint64_t started_usec;
};

static void node_drop(struct node *nd, const char *why);
static void node_flush(struct node *nd);
static void node_connect(struct node *nd);
static void connect_more(struct sim *s);

/* --- specs ---------------------------------------------------------------------------------- */

static struct spec_info *spec_lookup(struct sim *s, const char *service, const char *revision)
{
        char key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];

        if (orch_snprintf(key, sizeof key, "%s/%s", service, revision) < 0)
                return NULL;
        return orch_hmap_entry(orch_hmap_get(&s->specs, key), struct spec_info, hnode);
}

/* The shared record of a spec the decoder validated; made on its first sight. */
static int spec_intern(struct sim *s, const struct orch_proto_spec *sp, struct spec_info **ret)
{
        struct spec_info *si = spec_lookup(s, sp->service, sp->revision), **list;
        int r;

        if (si) {
                *ret = si;
                return 0;
        }
        si = calloc(1, sizeof *si);
        if (!si)
                return -ENOMEM;
        orch_snprintf(si->key, sizeof si->key, "%s/%s", sp->service, sp->revision);
        orch_strlcpy(si->service, sp->service, sizeof si->service);
        orch_strlcpy(si->revision, sp->revision, sizeof si->revision);
        si->has_health = sp->parsed->health.type != ORCH_HEALTH_NONE;
        si->ports = calloc(sp->parsed->n_ports + 1, sizeof *si->ports);
        if (!si->ports) {
                free(si);
                return -ENOMEM;
        }
        for (size_t i = 0; i < sp->parsed->n_ports; i++) {
                si->ports[i] = strdup(sp->parsed->ports[i].name);
                if (!si->ports[i]) {
                        orch_strv_free(si->ports);
                        free(si);
                        return -ENOMEM;
                }
        }
        si->n_ports = sp->parsed->n_ports;
        list = realloc(s->spec_list, (s->n_specs + 1) * sizeof *list);
        if (!list) {
                orch_strv_free(si->ports);
                free(si);
                return -ENOMEM;
        }
        s->spec_list = list;
        r = orch_hmap_insert(&s->specs, &si->hnode, si->key);
        if (r < 0) {
                orch_strv_free(si->ports);
                free(si);
                return r;
        }
        si->index = (uint32_t)s->n_specs;
        s->spec_list[s->n_specs++] = si;
        *ret = si;
        return 0;
}

static bool node_has_spec(const struct node *nd, const struct spec_info *si)
{
        return si && si->index / 8 < nd->have_spec_bytes &&
               (nd->have_spec[si->index / 8] & (1u << (si->index % 8)));
}

static int node_add_spec(struct node *nd, const struct spec_info *si)
{
        size_t need = si->index / 8 + 1;

        if (need > nd->have_spec_bytes) {
                size_t bytes = MAX(need, nd->have_spec_bytes * 2);
                uint8_t *b = realloc(nd->have_spec, bytes);
                if (!b)
                        return -ENOMEM;
                memset(b + nd->have_spec_bytes, 0, bytes - nd->have_spec_bytes);
                nd->have_spec = b;
                nd->have_spec_bytes = bytes;
        }
        nd->have_spec[si->index / 8] |= (uint8_t)(1u << (si->index % 8));
        return 0;
}

/* --- instances ------------------------------------------------------------------------------ */

static struct sim_inst *inst_get(struct node *nd, const char *id)
{
        return orch_hmap_entry(orch_hmap_get(&nd->instances, id), struct sim_inst, hnode);
}

static void inst_forget(struct node *nd, struct sim_inst *si)
{
        orch_hmap_remove(&nd->instances, &si->hnode);
        free(si);
}

static void forget_all(struct node *nd)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&nd->instances, &it); n; n = orch_hmap_next(&nd->instances, &it))
                inst_forget(nd, container_of(n, struct sim_inst, hnode));
        orch_hmap_release(&nd->instances);
}

/* The report of a running instance; `ports` has room for the spec's ports. */
static void fill_report(const struct sim_inst *si, struct orch_proto_report *rep,
                        struct orch_proto_port *ports)
{
        size_t n = MIN(si->spec->n_ports, (size_t)ORCH_PROTO_MAX_PORTS);

        for (size_t i = 0; i < n; i++)
                ports[i] = (struct orch_proto_port){
                        si->spec->ports[i],
                        (uint16_t)(PORT_BASE + (si->first_port - PORT_BASE + i) % PORT_COUNT)};
        *rep = (struct orch_proto_report){
                .instance = si->id,
                .service = si->spec->service,
                .revision = si->spec->revision,
                .generation = si->generation,
                .state = ORCH_INSTANCE_RUNNING,
                /* a node that runs nothing: every check would pass */
                .health = si->spec->has_health ? ORCH_HEALTH_PASSING : ORCH_HEALTH_UNKNOWN,
                .pid = si->pid,
                .ports = ports,
                .n_ports = n,
                .started_at = si->started_at,
        };
}

/* --- writing -------------------------------------------------------------------------------- */

static int send_msg(struct node *nd, const struct orch_proto_msg *m)
{
        struct orch_proto_error err;
        int r;

        if (nd->state != NODE_HELLO && nd->state != NODE_READY)
                return -ENOTCONN;
        r = orch_proto_encode(&nd->out, m, &err);
        if (r < 0) {
                log_error("%s: cannot encode %s: %s", nd->name, orch_proto_type_to_string(m->type),
                          err.message);
                return r;
        }
        if (nd->out.len + nd->inflight.len > WRITE_HIGH_WATER) {
                node_drop(nd, "orchd does not read what this node sends");
                return -ENOBUFS;
        }
        return 0;
}

static void send_ack(struct node *nd, uint64_t id, bool ok, const char *error,
                     struct orch_proto_ack_result *results, size_t n)
{
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_ACK,
                .ack = {.id = id, .ok = ok, .error = ok ? NULL : error, .results = results, .n_results = n},
        };
        send_msg(nd, &m);
}

static void write_cb(uv_write_t *req, int status)
{
        struct node *nd = container_of(req, struct node, write_req);

        nd->writing = false;
        orch_buf_reset(&nd->inflight);
        if (status < 0) {
                node_drop(nd, uv_strerror(status));
                return;
        }
        node_flush(nd);
}

/* One write at a time; what is queued meanwhile goes out in the next one. */
static void node_flush(struct node *nd)
{
        struct orch_buf tmp;
        uv_buf_t b;
        int r;

        if (nd->writing || nd->out.len == 0 || (nd->state != NODE_HELLO && nd->state != NODE_READY))
                return;
        if (nd->out.oom) {
                node_drop(nd, "out of memory");
                return;
        }
        tmp = nd->inflight;
        nd->inflight = nd->out;
        nd->out = tmp;
        orch_buf_reset(&nd->out);
        b = uv_buf_init(nd->inflight.data, (unsigned)nd->inflight.len);
        r = uv_write(&nd->write_req, (uv_stream_t *)&nd->tcp, &b, 1, write_cb);
        if (r < 0) {
                node_drop(nd, uv_strerror(r));
                return;
        }
        nd->sim->n.bytes_out += nd->inflight.len;
        nd->writing = true;
}

/* --- milestones ----------------------------------------------------------------------------- */

static void check_milestones(struct sim *s)
{
        if (!s->ready_reported && s->ready == s->n_nodes) {
                s->ready_reported = true;
                printf("ready nodes=%" PRIu32 " t_ms=%" PRIu64 "\n", s->ready, orch_realtime_msec());
                fflush(stdout);
        }
        if (s->expect && !s->acked_reported && s->n.starts_ok >= s->expect) {
                s->acked_reported = true;
                printf("acked starts=%" PRIu64 " events=%" PRIu64 " t_ms=%" PRIu64 "\n", s->n.starts_ok,
                       s->n.events, orch_realtime_msec());
                fflush(stdout);
        }
}

/* A node of the first wave is done connecting (welcomed or failed): the next one may start. */
static void wave_done(struct node *nd)
{
        struct sim *s = nd->sim;

        if (!nd->counted)
                return;
        nd->counted = false;
        s->connecting--;
        connect_more(s);
}

/* --- commands ------------------------------------------------------------------------------- */

/* Reads the literal `lit` at *p (within end) and moves past it. */
static bool skip_literal(const char **p, const char *end, const char *lit)
{
        size_t n = strlen(lit);

        if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
                return false;
        *p += n;
        return true;
}

/* A run of [a-z0-9-] (a service name) or of hex digits (a revision) up to the closing quote. */
static bool scan_token(const char **p, const char *end, char *out, size_t size, bool hex)
{
        size_t n = 0;

        while (*p < end && **p != '"') {
                char ch = **p;
                bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                          (!hex && ((ch >= 'g' && ch <= 'z') || ch == '-'));
                if (!ok || n + 1 >= size)
                        return false;
                out[n++] = ch;
                (*p)++;
        }
        out[n] = '\0';
        return n > 0 && skip_literal(p, end, "\"");
}

/*
 * Specs are most of what orchd sends: a node needs the spec of every service it runs an instance
 * of, with spread placements nearly all of them. A revision's spec never changes (the revision is
 * its hash), and decoding one means validating the whole service (orch_service_from_json), the
 * simulator's largest cost on the machine where orchd is measured. So a spec frame for a revision
 * this process already decoded in full is acked from its head, when the head is exactly what
 * orchd's encoder writes ("type" first, then id, service, revision, spec); anything else, and
 * every frame with --decode-all, goes through orch_proto_decode().
 */
static bool known_spec_frame(struct sim *s, const char *frame, size_t len, uint64_t *ret_id,
                             struct spec_info **ret)
{
        const char *p = frame, *end = frame + len;
        char service[ORCH_NAME_MAX + 1], revision[ORCH_REVISION_LEN + 1];
        uint64_t id = 0;
        size_t digits = 0;
        struct spec_info *si;

        if (s->decode_all || !skip_literal(&p, end, "{\"type\":\"spec\",\"id\":"))
                return false;
        for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
                id = id * 10 + (uint64_t)(*p - '0');
        if (digits == 0 || id == 0 || !skip_literal(&p, end, ",\"service\":\"") ||
            !scan_token(&p, end, service, sizeof service, false) ||
            !skip_literal(&p, end, ",\"revision\":\"") ||
            !scan_token(&p, end, revision, sizeof revision, true) || !skip_literal(&p, end, ",\"spec\":{"))
                return false;
        si = spec_lookup(s, service, revision);
        if (!si)
                return false;
        *ret_id = id;
        *ret = si;
        return true;
}

static void handle_known_spec(struct node *nd, uint64_t id, struct spec_info *si)
{
        if (node_add_spec(nd, si) < 0) {
                send_ack(nd, id, false, "out of memory", NULL, 0);
                return;
        }
        nd->sim->n.specs++;
        send_ack(nd, id, true, NULL, NULL, 0);
}

static void handle_spec(struct node *nd, const struct orch_proto_spec *sp)
{
        struct spec_info *si;
        int r = spec_intern(nd->sim, sp, &si);

        if (r >= 0)
                r = node_add_spec(nd, si);
        if (r < 0) {
                send_ack(nd, sp->id, false, strerror(-r), NULL, 0);
                return;
        }
        nd->sim->n.specs++;
        nd->sim->n.specs_decoded++;
        send_ack(nd, sp->id, true, NULL, NULL, 0);
}

enum start_outcome {
        START_RAN,     /* new, or a newer generation of one held: it runs now */
        START_ALREADY, /* held at this generation: nothing to do */
        START_REFUSED,
};

/* Takes a start item on by the agent's rules (docs/protocol.md); `reason` says why not. */
static enum start_outcome start_one(struct node *nd, const struct orch_proto_start_item *it, char *reason,
                                    size_t size)
{
        struct sim *s = nd->sim;
        struct sim_inst *si = inst_get(nd, it->instance);
        const struct spec_info *spec;
        uint64_t held = si ? si->generation : 0;

        switch (orch_proto_fence_start(held, it->generation)) {
        case ORCH_PROTO_START_SAME:
                return START_ALREADY;
        case ORCH_PROTO_START_STALE:
                orch_snprintf(reason, size, "held at generation %" PRIu64 ", newer than %" PRIu64, held,
                              it->generation);
                return START_REFUSED;
        default:
                break;
        }
        spec = spec_lookup(s, it->service, it->revision);
        if (!node_has_spec(nd, spec)) {
                orch_snprintf(reason, size, "no spec for %s revision %s", it->service, it->revision);
                return START_REFUSED;
        }
        if (!si) {
                si = calloc(1, sizeof *si);
                if (!si) {
                        orch_strlcpy(reason, "out of memory", size);
                        return START_REFUSED;
                }
                orch_strlcpy(si->id, it->instance, sizeof si->id);
                if (orch_hmap_insert(&nd->instances, &si->hnode, si->id) < 0) {
                        free(si);
                        orch_strlcpy(reason, "out of memory", size);
                        return START_REFUSED;
                }
        }
        si->spec = spec;
        si->generation = it->generation;
        si->started_at = orch_realtime_msec();
        s->next_pid = s->next_pid >= ORCH_PROTO_PID_MAX ? 300 : s->next_pid + 1;
        si->pid = s->next_pid;
        si->first_port = (uint16_t)(PORT_BASE + nd->next_port % PORT_COUNT);
        nd->next_port += (uint32_t)MAX(spec->n_ports, (size_t)1);
        return START_RAN;
}

static void send_running(struct node *nd, const struct sim_inst *si)
{
        struct orch_proto_port ports[ORCH_PROTO_MAX_PORTS];
        struct orch_proto_msg m = {.type = ORCH_PROTO_EVENT};

        m.event.seq = ++nd->event_seq;
        fill_report(si, &m.event.report, ports);
        if (send_msg(nd, &m) >= 0)
                nd->sim->n.events++;
}

#define REASON_MAX 160

/* The ack first, then one running event per instance that started: what an agent whose processes
 * come up at once would send. */
static void handle_start(struct node *nd, const struct orch_proto_start *st)
{
        struct sim *s = nd->sim;
        _cleanup_(freep) struct orch_proto_ack_result *res = calloc(st->n_instances + 1, sizeof *res);
        _cleanup_(freep) char *reasons = calloc(st->n_instances + 1, REASON_MAX);
        _cleanup_(freep) uint8_t *ran = calloc(st->n_instances + 1, sizeof *ran);
        size_t failed = 0, first_failed = 0;

        if (!res || !reasons || !ran) {
                send_ack(nd, st->id, false, "out of memory", NULL, 0);
                return;
        }
        for (size_t i = 0; i < st->n_instances; i++) {
                const struct orch_proto_start_item *it = &st->instances[i];
                char *reason = reasons + i * REASON_MAX;

                res[i] = (struct orch_proto_ack_result){.instance = it->instance, .ok = true};
                switch (start_one(nd, it, reason, REASON_MAX)) {
                case START_RAN:
                        ran[i] = 1;
                        break;
                case START_ALREADY:
                        s->n.starts_repeated++;
                        break;
                case START_REFUSED:
                        res[i] = (struct orch_proto_ack_result){it->instance, false, reason};
                        if (failed++ == 0)
                                first_failed = i;
                        break;
                }
        }
        /* results only when something failed: an agent may leave them out otherwise */
        if (failed) {
                send_ack(nd, st->id, false, "some instances could not start", res, st->n_instances);
                s->n.starts_failed += failed;
                log_warn("%s: %zu of %zu starts refused, e.g. %s: %s", nd->name, failed, st->n_instances,
                         res[first_failed].instance, res[first_failed].error);
        } else
                send_ack(nd, st->id, true, NULL, NULL, 0);
        for (size_t i = 0; i < st->n_instances; i++)
                if (ran[i])
                        send_running(nd, inst_get(nd, st->instances[i].instance));
        s->n.starts_ok += st->n_instances - failed;
}

static void handle_stop(struct node *nd, const struct orch_proto_stop *st)
{
        for (size_t i = 0; i < st->n_instances; i++) {
                struct sim_inst *si = inst_get(nd, st->instances[i].instance);
                if (si && orch_proto_fence_stop(si->generation, st->instances[i].generation) ==
                                  ORCH_PROTO_STOP_STOP)
                        inst_forget(nd, si);
        }
        nd->sim->n.stops += st->n_instances;
        send_ack(nd, st->id, true, NULL, NULL, 0);
}

static void handle_welcome(struct node *nd, const struct orch_proto_welcome *w)
{
        struct sim *s = nd->sim;

        nd->state = NODE_READY;
        nd->heartbeat_ms = w->heartbeat_ms;
        nd->ttl_ms = w->ttl_ms;
        nd->backoff_ms = 0;
        s->n.welcomes++;
        if (!nd->ever_ready) {
                nd->ever_ready = true;
                s->ready++;
                wave_done(nd);
        }
}

/* --- reading -------------------------------------------------------------------------------- */

static void beat_cb(uv_timer_t *t);

static void handle_frame(struct node *nd, const char *frame, size_t len)
{
        _cleanup_(orch_proto_msg_freep) struct orch_proto_msg *m = NULL;
        struct orch_proto_error err;

        nd->sim->n.frames_in++;
        if (nd->state == NODE_READY) {
                struct spec_info *si;
                uint64_t id;
                if (known_spec_frame(nd->sim, frame, len, &id, &si)) {
                        nd->last_heard_usec = orch_now_usec();
                        handle_known_spec(nd, id, si);
                        return;
                }
        }
        if (orch_proto_decode(frame, len, &m, &err) < 0) {
                struct orch_proto_msg e = {.type = ORCH_PROTO_ERROR, .error = {.error = err.message}};
                log_error("%s: bad frame from orchd: %s", nd->name, err.message);
                send_msg(nd, &e);
                node_flush(nd);
                node_drop(nd, "bad frame");
                return;
        }
        if (!orch_proto_type_sent_by_server(m->type)) {
                node_drop(nd, "orchd sent a message only agents send");
                return;
        }
        nd->last_heard_usec = orch_now_usec();
        if (nd->state == NODE_HELLO && m->type != ORCH_PROTO_WELCOME && m->type != ORCH_PROTO_ERROR &&
            m->type != ORCH_PROTO_STOP) {
                /* orchd sends the fencing stops first, then the welcome */
                node_drop(nd, "orchd sent a command before the welcome");
                return;
        }
        switch (m->type) {
        case ORCH_PROTO_WELCOME:
                handle_welcome(nd, &m->welcome);
                beat_cb(&nd->timer);
                break;
        case ORCH_PROTO_ERROR:
                log_error("%s: orchd says: %s", nd->name, m->error.error);
                node_drop(nd, NULL);
                break;
        case ORCH_PROTO_HEARTBEAT:
                if (m->heartbeat.heartbeat_ms)
                        nd->heartbeat_ms = m->heartbeat.heartbeat_ms;
                if (m->heartbeat.ttl_ms)
                        nd->ttl_ms = m->heartbeat.ttl_ms;
                break;
        case ORCH_PROTO_SPEC:
                handle_spec(nd, &m->spec);
                break;
        case ORCH_PROTO_START:
                handle_start(nd, &m->start);
                break;
        case ORCH_PROTO_STOP:
                handle_stop(nd, &m->stop);
                break;
        case ORCH_PROTO_LOGS:
                nd->sim->n.logs_refused++;
                send_ack(nd, m->logs.id, false, "a simulated node keeps no logs", NULL, 0);
                break;
        default:
                break; /* logs_cancel: no stream runs here */
        }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct node *nd = container_of(h, struct node, tcp);
        char *space;
        size_t size;

        if (orch_proto_reader_space(&nd->reader, 64 * 1024, &space, &size) < 0) {
                *buf = uv_buf_init(NULL, 0);
                return;
        }
        *buf = uv_buf_init(space, (unsigned)MIN(size, (size_t)UINT32_MAX));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
        struct node *nd = container_of(stream, struct node, tcp);
        char *frame;
        size_t len;
        int r;

        if (nread < 0) {
                node_drop(nd, nread == UV_EOF ? "orchd closed the connection" : uv_strerror((int)nread));
                return;
        }
        if (nread == 0)
                return;
        nd->sim->n.bytes_in += (uint64_t)nread;
        r = orch_proto_reader_commit(&nd->reader, (size_t)nread);
        while ((nd->state == NODE_HELLO || nd->state == NODE_READY) &&
               (r = orch_proto_reader_next(&nd->reader, &frame, &len)) > 0)
                handle_frame(nd, frame, len);
        if (r == -EMSGSIZE && nd->state != NODE_CLOSING && nd->state != NODE_IDLE) {
                node_drop(nd, "frame from orchd too large");
                return;
        }
        /* the acks and events of everything read go out in one write */
        node_flush(nd);
        check_milestones(nd->sim);
}

/* --- connection lifecycle ------------------------------------------------------------------- */

static void send_hello(struct node *nd)
{
        struct sim *s = nd->sim;
        struct orch_proto_label label = {"zone", nd->zone};
        const char *drivers[] = {"exec"};
        size_t n = nd->instances.n, k = 0;
        _cleanup_(freep) struct orch_proto_report *reports = calloc(n + 1, sizeof *reports);
        _cleanup_(freep) struct orch_proto_port *ports = NULL;
        struct orch_hmap_iter it;
        struct orch_hmap_node *hn;
        size_t n_ports = 0;

        for (hn = orch_hmap_first(&nd->instances, &it); hn; hn = orch_hmap_next(&nd->instances, &it))
                n_ports += MIN(container_of(hn, struct sim_inst, hnode)->spec->n_ports,
                               (size_t)ORCH_PROTO_MAX_PORTS);
        ports = calloc(n_ports + 1, sizeof *ports);
        if (!reports || !ports) {
                node_drop(nd, "out of memory");
                return;
        }
        n_ports = 0;
        for (hn = orch_hmap_first(&nd->instances, &it); hn; hn = orch_hmap_next(&nd->instances, &it)) {
                const struct sim_inst *si = container_of(hn, struct sim_inst, hnode);
                fill_report(si, &reports[k++], ports + n_ports);
                n_ports += reports[k - 1].n_ports;
        }
        {
                struct orch_proto_msg m = {
                        .type = ORCH_PROTO_HELLO,
                        .hello = {.proto = ORCH_PROTO_VERSION,
                                  .node = nd->name,
                                  .token = s->token,
                                  .address = "127.0.0.1",
                                  .version = "sched-sim-" ORCH_VERSION,
                                  .labels = &label,
                                  .n_labels = 1,
                                  .capacity = {.cpu_millis = s->cpu_millis, .memory = s->memory},
                                  .drivers = drivers,
                                  .n_drivers = ELEMENTSOF(drivers),
                                  .instances = reports,
                                  .n_instances = k},
                };
                nd->state = NODE_HELLO;
                if (send_msg(nd, &m) < 0)
                        return;
        }
        node_flush(nd);
}

static void reconnect_cb(uv_timer_t *t)
{
        struct node *nd = container_of(t, struct node, timer);

        if (nd->state == NODE_IDLE && !nd->sim->stopping)
                node_connect(nd);
}

/* An agent's backoff: 100 ms doubling to 2 s, jittered. */
static void schedule_reconnect(struct node *nd)
{
        uint64_t jitter = 0;

        nd->state = NODE_IDLE;
        if (nd->sim->stopping)
                return;
        nd->backoff_ms =
                nd->backoff_ms ? MIN(nd->backoff_ms * 2, (uint64_t)RECONNECT_MAX_MS) : RECONNECT_MIN_MS;
        orch_random_bytes(&jitter, sizeof jitter);
        uv_timer_start(&nd->timer, reconnect_cb, nd->backoff_ms / 2 + jitter % (nd->backoff_ms / 2 + 1), 0);
}

static void tcp_closed(uv_handle_t *h)
{
        struct node *nd = container_of(h, struct node, tcp);

        nd->sim->open_handles--;
        orch_buf_release(&nd->out);
        orch_buf_release(&nd->inflight);
        orch_proto_reader_release(&nd->reader);
        schedule_reconnect(nd);
}

/* Closes the connection (a failed connect included); the node dials again after its backoff. */
static void node_drop(struct node *nd, const char *why)
{
        struct sim *s = nd->sim;

        if (nd->state == NODE_CLOSING || nd->state == NODE_IDLE)
                return;
        if (!s->stopping && (nd->state == NODE_HELLO || nd->state == NODE_READY)) {
                s->n.drops++;
                if (why)
                        log_warn("%s: connection dropped: %s", nd->name, why);
        }
        nd->state = NODE_CLOSING;
        uv_timer_stop(&nd->timer);
        /* specs are per connection: orchd sends them again after a reconnect */
        if (nd->have_spec)
                memset(nd->have_spec, 0, nd->have_spec_bytes);
        wave_done(nd);
        uv_close((uv_handle_t *)&nd->tcp, tcp_closed);
}

static void connect_cb(uv_connect_t *req, int status)
{
        struct node *nd = container_of(req, struct node, connect_req);
        int r;

        if (nd->state != NODE_CONNECTING)
                return; /* closed meanwhile (stopping) */
        if (status < 0) {
                nd->sim->n.connect_failures++;
                log_debug("%s: connect failed: %s", nd->name, uv_strerror(status));
                node_drop(nd, NULL);
                return;
        }
        uv_tcp_nodelay(&nd->tcp, 1);
        nd->last_heard_usec = orch_now_usec();
        r = uv_read_start((uv_stream_t *)&nd->tcp, alloc_cb, read_cb);
        if (r < 0) {
                node_drop(nd, uv_strerror(r));
                return;
        }
        nd->state = NODE_HELLO;
        send_hello(nd);
        /* the welcome must come within the TTL, as for an agent */
        nd->ttl_ms = MAX(nd->ttl_ms, (uint64_t)DEFAULT_TTL_MS);
        if (nd->state == NODE_HELLO) {
                nd->beat_due_usec = orch_now_usec() + nd->ttl_ms * USEC_PER_MSEC;
                uv_timer_start(&nd->timer, beat_cb, nd->ttl_ms, 0);
        }
}

static void node_connect(struct node *nd)
{
        struct sim *s = nd->sim;
        int r;

        r = uv_tcp_init(s->loop, &nd->tcp);
        if (r < 0) {
                log_error("%s: %s", nd->name, uv_strerror(r));
                wave_done(nd);
                schedule_reconnect(nd);
                return;
        }
        s->open_handles++;
        orch_proto_reader_init(&nd->reader, 0);
        nd->state = NODE_CONNECTING;
        r = uv_tcp_connect(&nd->connect_req, &nd->tcp, (const struct sockaddr *)&s->server, connect_cb);
        if (r < 0) {
                s->n.connect_failures++;
                log_warn("%s: cannot connect to %s: %s", nd->name, s->server_str, uv_strerror(r));
                node_drop(nd, NULL);
        }
}

/* The first wave: at most in_flight nodes between connect and welcome. */
static void connect_more(struct sim *s)
{
        while (!s->stopping && s->connecting < s->in_flight && s->next_connect < s->n_nodes) {
                struct node *nd = &s->nodes[s->next_connect++];
                nd->counted = true;
                s->connecting++;
                node_connect(nd);
        }
}

/* Heartbeats while ready; while waiting for the welcome it is the welcome's deadline. */
static void beat_cb(uv_timer_t *t)
{
        struct node *nd = container_of(t, struct node, timer);
        uint64_t now = orch_now_usec();

        if (nd->state == NODE_HELLO) {
                if (now < nd->beat_due_usec + STALL_USEC) {
                        node_drop(nd, "no welcome within the TTL");
                        return;
                }
                /* late (see below): judged once the reads of this iteration are done */
                nd->beat_due_usec = now + LATE_RETRY_MS * USEC_PER_MSEC;
                uv_timer_start(&nd->timer, beat_cb, LATE_RETRY_MS, 0);
                return;
        }
        if (nd->state != NODE_READY)
                return;
        /* A timer this late means this process was blocked: what orchd sent meanwhile is still
         * unread (timers run before reads), so silence is judged at the next beat. */
        if (now > nd->last_heard_usec + nd->ttl_ms * USEC_PER_MSEC && now < nd->beat_due_usec + STALL_USEC) {
                node_drop(nd, "no word from orchd within the TTL");
                return;
        }
        {
                struct orch_proto_msg m = {.type = ORCH_PROTO_HEARTBEAT,
                                           .heartbeat = {.seq = ++nd->beat_seq}};
                if (send_msg(nd, &m) < 0)
                        return;
        }
        nd->sim->n.heartbeats++;
        node_flush(nd);
        nd->beat_due_usec = now + nd->heartbeat_ms * USEC_PER_MSEC;
        uv_timer_start(&nd->timer, beat_cb, nd->heartbeat_ms, 0);
}

/* --- progress and shutdown ------------------------------------------------------------------ */

static void progress_cb(uv_timer_t *t)
{
        struct sim *s = container_of(t, struct sim, progress);
        double secs = (double)(orch_now_usec() - s->started_usec) / 1e6;

        if (memcmp(&s->n, &s->last, sizeof s->n) == 0)
                return;
        fprintf(stderr,
                "sched-sim: %6.1fs ready %" PRIu32 "/%" PRIu32 " specs %" PRIu64 " starts %" PRIu64
                " (+%" PRIu64 "/s) events %" PRIu64 " stops %" PRIu64 " drops %" PRIu64
                " connect failures %" PRIu64 " in %.0f MB out %.0f MB\n",
                secs, s->ready, s->n_nodes, s->n.specs, s->n.starts_ok, s->n.starts_ok - s->last.starts_ok,
                s->n.events, s->n.stops, s->n.drops, s->n.connect_failures, (double)s->n.bytes_in / 1e6,
                (double)s->n.bytes_out / 1e6);
        s->last = s->n;
}

static double cpu_seconds(const struct timeval *tv)
{
        return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void print_summary(struct sim *s)
{
        struct rusage ru = {0};
        size_t held = 0;

        getrusage(RUSAGE_SELF, &ru);
        for (uint32_t i = 0; i < s->n_nodes; i++)
                held += s->nodes[i].instances.n;
        printf("summary nodes=%" PRIu32 " ready=%" PRIu32 " held=%zu specs=%" PRIu64
               " specs_decoded=%" PRIu64 " starts=%" PRIu64 " starts_failed=%" PRIu64
               " starts_repeated=%" PRIu64 " events=%" PRIu64 " stops=%" PRIu64 " heartbeats=%" PRIu64
               " welcomes=%" PRIu64 " drops=%" PRIu64 " connect_failures=%" PRIu64 " frames_in=%" PRIu64
               " bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " cpu_user=%.2f cpu_sys=%.2f maxrss_kib=%ld\n",
               s->n_nodes, s->ready, held, s->n.specs, s->n.specs_decoded, s->n.starts_ok,
               s->n.starts_failed, s->n.starts_repeated, s->n.events, s->n.stops, s->n.heartbeats,
               s->n.welcomes, s->n.drops, s->n.connect_failures, s->n.frames_in, s->n.bytes_in,
               s->n.bytes_out, cpu_seconds(&ru.ru_utime), cpu_seconds(&ru.ru_stime), ru.ru_maxrss);
        fflush(stdout);
}

static void handle_closed(uv_handle_t *h)
{
        struct sim *s = h->data;

        s->open_handles--;
}

static void timer_closed(uv_handle_t *h)
{
        struct node *nd = container_of((uv_timer_t *)h, struct node, timer);

        nd->sim->open_handles--;
}

static void on_signal(uv_signal_t *sig, int signum)
{
        struct sim *s = sig->data;

        if (s->stopping)
                return;
        s->stopping = true;
        print_summary(s);
        for (uint32_t i = 0; i < s->n_nodes; i++) {
                struct node *nd = &s->nodes[i];
                if (nd->state != NODE_IDLE && nd->state != NODE_CLOSING)
                        node_drop(nd, NULL);
                uv_close((uv_handle_t *)&nd->timer, timer_closed);
        }
        s->progress.data = s->sigterm.data = s->sigint.data = s;
        uv_close((uv_handle_t *)&s->progress, handle_closed);
        uv_close((uv_handle_t *)&s->sigterm, handle_closed);
        uv_close((uv_handle_t *)&s->sigint, handle_closed);
}

/* --- setup ---------------------------------------------------------------------------------- */

static int parse_server(const char *str, struct sockaddr_storage *ss)
{
        char host[256];
        const char *colon = strrchr(str, ':');
        uint32_t port;

        if (!colon || (size_t)(colon - str) >= sizeof host || orch_parse_u32(colon + 1, &port) < 0 ||
            port == 0 || port > 65535)
                return -EINVAL;
        memcpy(host, str, (size_t)(colon - str));
        host[colon - str] = '\0';
        if (host[0] == '[' && orch_endswith(host, "]")) {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
                return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) < 0 ? -EINVAL : 0;
        }
        return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) < 0 ? -EINVAL : 0;
}

/* One descriptor per node plus a few: raise the soft limit towards the hard one (and the hard one
 * where we may). */
static int raise_nofile(uint32_t nodes)
{
        rlim_t want = (rlim_t)nodes + 64;
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -errno;
        if (rl.rlim_cur >= want)
                return 0;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
                struct rlimit up = {want, want};
                if (setrlimit(RLIMIT_NOFILE, &up) == 0)
                        return 0;
                log_error("%" PRIu32
                          " nodes need %llu descriptors; the hard limit is %llu (raise it with ulimit -Hn)",
                          nodes, (unsigned long long)want, (unsigned long long)rl.rlim_max);
                return -EMFILE;
        }
        rl.rlim_cur = want;
        return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

static int read_token(const char *path, char **ret)
{
        char *buf = NULL;
        size_t len;
        int r = orch_read_file(path, 4096, &buf, &len);

        if (r < 0)
                return r;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
                buf[--len] = '\0';
        if (len == 0) {
                free(buf);
                return -EINVAL;
        }
        *ret = buf;
        return 0;
}

static _noreturn_ void usage(int status)
{
        fprintf(status ? stderr : stdout,
                "usage: sched-sim --server HOST:PORT --token-file FILE [options]\n"
                "  --nodes N         simulated nodes [%u]\n"
                "  --cpu CORES       capacity of each node [%u]\n"
                "  --memory SIZE     capacity of each node [128Gi]\n"
                "  --zones Z         label zone=z1..zZ, round robin [%u]\n"
                "  --prefix NAME     node names NAME-00001... [sim]\n"
                "  --in-flight K     nodes connecting at once until welcomed [%u]\n"
                "  --expect M        print 'acked' once M starts are acked\n"
                "  --decode-all      decode every spec in full, not only a revision's first\n"
                "  --quiet           no progress lines on stderr\n",
                DEFAULT_NODES, DEFAULT_CPU / 1000, DEFAULT_ZONES, DEFAULT_IN_FLIGHT);
        exit(status);
}

static int parse_args(struct sim *s, int argc, char **argv, const char **ret_token_file)
{
        static const struct option opts[] = {
                {"server", required_argument, NULL, 's'}, {"token-file", required_argument, NULL, 't'},
                {"nodes", required_argument, NULL, 'n'},  {"cpu", required_argument, NULL, 'c'},
                {"memory", required_argument, NULL, 'm'}, {"zones", required_argument, NULL, 'z'},
                {"prefix", required_argument, NULL, 'p'}, {"in-flight", required_argument, NULL, 'k'},
                {"expect", required_argument, NULL, 'e'}, {"quiet", no_argument, NULL, 'q'},
                {"help", no_argument, NULL, 'h'},         {},
        };
        int c, li = -1;

        while ((c = getopt_long(argc, argv, "h", opts, &li)) >= 0) {
                int r = 0;
                switch (c) {
                case 's':
                        s->server_str = optarg;
                        r = parse_server(optarg, &s->server);
                        break;
                case 't':
                        *ret_token_file = optarg;
                        break;
                case 'n':
                        r = orch_parse_u32(optarg, &s->n_nodes);
                        if (r >= 0 && (s->n_nodes == 0 || s->n_nodes > 99999))
                                r = -ERANGE;
                        break;
                case 'c':
                        r = orch_parse_cpu(optarg, &s->cpu_millis);
                        if (r >= 0 && s->cpu_millis == 0)
                                r = -ERANGE;
                        break;
                case 'm':
                        r = orch_parse_size(optarg, &s->memory);
                        if (r >= 0 && s->memory == 0)
                                r = -ERANGE;
                        break;
                case 'z':
                        r = orch_parse_u32(optarg, &s->zones);
                        if (r >= 0 && (s->zones == 0 || s->zones > 999))
                                r = -ERANGE;
                        break;
                case 'p':
                        s->prefix = optarg;
                        break;
                case 'k':
                        r = orch_parse_u32(optarg, &s->in_flight);
                        if (r >= 0 && s->in_flight == 0)
                                r = -ERANGE;
                        break;
                case 'e':
                        r = orch_parse_u64(optarg, &s->expect);
                        break;
                case 'q':
                        s->quiet = true;
                        break;
                case 'd':
                        s->decode_all = true;
                        break;
                case 'h':
                        usage(EXIT_SUCCESS);
                default:
                        usage(2);
                }
                if (r < 0) {
                        fprintf(stderr, "sched-sim: --%s: invalid value '%s'\n",
                                li >= 0 ? opts[li].name : "?", optarg);
                        return -EINVAL;
                }
        }
        if (optind != argc || !s->server_str || !*ret_token_file)
                usage(2);
        return 0;
}

int main(int argc, char **argv)
{
        struct sim s = {
                .n_nodes = DEFAULT_NODES,
                .cpu_millis = DEFAULT_CPU,
                .memory = DEFAULT_MEMORY,
                .zones = DEFAULT_ZONES,
                .in_flight = DEFAULT_IN_FLIGHT,
                .prefix = "sim",
                .next_pid = 1000,
        };
        const char *token_file = NULL;
        int r;

        orch_log_set_program("sched-sim");
        signal(SIGPIPE, SIG_IGN);
        if (parse_args(&s, argc, argv, &token_file) < 0)
                return 2;
        r = read_token(token_file, &s.token);
        if (r < 0) {
                log_error_errno(r, "cannot read the join token from %s", token_file);
                return 1;
        }
        if (raise_nofile(s.n_nodes) < 0)
                return 1;
        s.nodes = calloc(s.n_nodes, sizeof *s.nodes);
        if (!s.nodes) {
                log_error("out of memory");
                return 1;
        }
        s.loop = uv_default_loop();
        for (uint32_t i = 0; i < s.n_nodes; i++) {
                struct node *nd = &s.nodes[i];
                nd->sim = &s;
                nd->index = i;
                if (orch_snprintf(nd->name, sizeof nd->name, "%s-%05" PRIu32, s.prefix, i + 1) < 0 ||
                    !orch_proto_node_name_valid(nd->name)) {
                        log_error("--prefix '%s' does not make valid node names", s.prefix);
                        return 2;
                }
                orch_snprintf(nd->zone, sizeof nd->zone, "z%" PRIu32, i % s.zones + 1);
                nd->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
                nd->ttl_ms = DEFAULT_TTL_MS;
                uv_timer_init(s.loop, &nd->timer);
                s.open_handles++;
        }
        uv_timer_init(s.loop, &s.progress);
        uv_signal_init(s.loop, &s.sigterm);
        uv_signal_init(s.loop, &s.sigint);
        s.open_handles += 3;
        s.sigterm.data = s.sigint.data = &s;
        uv_signal_start(&s.sigterm, on_signal, SIGTERM);
        uv_signal_start(&s.sigint, on_signal, SIGINT);
        if (!s.quiet)
                uv_timer_start(&s.progress, progress_cb, 1000, 1000);
        s.started_usec = orch_now_usec();
        connect_more(&s);

        uv_run(s.loop, UV_RUN_DEFAULT);

        /* every handle is closed: what they referred to can go */
        for (uint32_t i = 0; i < s.n_nodes; i++) {
                forget_all(&s.nodes[i]);
                free(s.nodes[i].have_spec);
        }
        for (size_t i = 0; i < s.n_specs; i++) {
                orch_strv_free(s.spec_list[i]->ports);
                free(s.spec_list[i]);
        }
        free(s.spec_list);
        orch_hmap_release(&s.specs);
        free(s.nodes);
        free(s.token);
        uv_loop_close(s.loop);
        return 0;
}
