/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>

#include <uv.h>

#include "apikeys.h"
#include "balance.h"
#include "http.h"
#include "json.h"
#include "list.h"
#include "log.h"
#include "ratelimit.h"
#include "rewrite.h"
#include "stats.h"
#include "worker.h"
#include "banned.h"

/*
 * One worker's proxy. Objects and who owns them:
 *
 *   client    a client connection; freed when its handles are closed.
 *   exchange  one request and its answer, owned by its client (one at a time: pipelined requests wait
 *             in the client's input until the exchange before them has ended, so answers go out in
 *             order). It holds a user count on the view it was routed with and a reference on the
 *             endpoint (host) it was sent to.
 *   upstream  a connection to an endpoint: busy with one exchange, or idle in its host's pool.
 *   host      per worker and endpoint address: the pool, the outstanding count for balancing, the
 *             passive health. Referenced by the views that list it and by the exchanges and
 *             connections that use it.
 *   view      the worker's use of one routing table: the table, the host of each endpoint, the
 *             round-robin cursors. The current view serves new requests; older ones live on until
 *             their last exchange ends (requests in flight finish on the table they started with).
 *
 * Buffers are bounded: a client's unparsed input by one head plus a read, what waits for a slow
 * reader by WRITE_HIGH_WATER before the other side stops being read. Every read lands in one
 * per-worker buffer and is parsed (or copied) before the callback returns, so an idle connection
 * holds only its structs and its parser.
 */

#define READ_BUFFER_SIZE          (64U * 1024U)
#define WRITE_HIGH_WATER          (256U * 1024U)
#define LINGER_MS                 2000U
#define LINGER_MAX_BYTES          (1024U * 1024U)
#define ACCESS_LOG_FLUSH_BYTES    (32U * 1024U)
#define UPSTREAM_MAX_HEADER_BYTES (64U * 1024U)
#define UPSTREAM_MAX_HEADERS      256U
#define MAX_ATTEMPTS              3U
#define MAX_ERROR_BODY            512U
/* Below this many client connections per worker, an idle connection keeps its parser (about 700 bytes). */
#define PARSERS_KEPT_BELOW 1024U
/* Ended exchanges kept for the next requests (with their head buffers): no allocation per request. */
#define SPARE_EXCHANGES 256U

enum client_timer {
        CT_NONE,
        CT_HEAD,   /* the request head is due: absolute from its first byte (or the connect) */
        CT_IDLE,   /* keep-alive: the next request is due */
        CT_BODY,   /* the next piece of a request body is due */
        CT_WRITE,  /* the client has not taken its answer */
        CT_TUNNEL, /* an upgraded connection without traffic */
        CT_LINGER, /* after the last answer: reading and discarding before the close */
};

enum up_state {
        UP_CONNECTING,
        UP_BUSY,
        UP_IDLE,
};

/* Why an attempt failed: decides the retry and the answer (502 or 504). */
enum up_failure {
        F_CONNECT,
        F_CONNECT_TIMEOUT,
        F_RESET,
        F_PROTOCOL,
        F_TIMEOUT,
};

struct gw_host {
        struct orch_hmap_node hnode;
        struct gw_worker *w;
        char *key;
        struct sockaddr_storage addr;
        struct gw_health health;
        unsigned refs;         /* views that list it, exchanges and upstream connections that use it */
        unsigned listed;       /* views that list it: at 0 its pool is closed */
        struct orch_list idle; /* most recently used first */
        unsigned n_idle;
};

struct view {
        struct gw_table *t;
        struct gw_host **hosts;    /* by endpoint index */
        struct gw_health **health; /* by endpoint index: a route's endpoints are consecutive */
        uint32_t *rr;              /* by route index */
        unsigned users;
        struct orch_list link; /* on the worker's old views */
};

struct upstream {
        struct gw_worker *w;
        struct gw_host *host;
        struct exchange *x;
        uv_tcp_t tcp;
        uv_connect_t connect;
        uv_timer_t timer;
        uv_shutdown_t *shutdown;
        uint64_t deadline;     /* loop time; 0: no timeout */
        uint64_t timer_due;    /* when the uv timer fires; 0: not started */
        struct orch_list link; /* on host->idle */
        struct orch_http_parser *parser;
        struct orch_buf in; /* response bytes not passed on yet (the client is congested) */
        enum up_state state;
        unsigned open_handles;
        unsigned writes;
        bool reading;
        bool closing;
        bool reused; /* it served a request before: a reset may just be the upstream's idle close */
        bool eof;    /* tunnel: the upstream half-closed */
};

struct exchange {
        struct client *c;
        struct view *v;
        const struct gw_route *route;
        const struct gw_endpoint *ep;
        struct gw_host *host;
        struct upstream *up;
        struct orch_buf head; /* the upstream request head, kept for a retry */
        char *path_owned;     /* the normalized path when it differs from the request's */
        const char *path;
        uint64_t start_ns;
        uint64_t bytes_in, bytes_out;
        int status;
        unsigned attempts;
        unsigned stale_retries; /* attempts on pooled connections the upstream had closed */
        size_t tried[GW_BALANCE_MAX_TRIED];
        size_t n_tried;
        bool idempotent;
        bool head_method;
        bool has_body;
        bool chunked_in;   /* the request body is chunked: sent on chunked */
        bool upgrade_req;  /* the client asks to switch protocols */
        bool head_sent;    /* this attempt's head went to the upstream */
        bool body_started; /* request body bytes went upstream: no retry */
        bool req_complete; /* the whole request was read (and passed on) */
        bool got_response; /* response bytes arrived in this attempt: no retry */
        bool interim;      /* a 1xx answer is being skipped */
        bool resp_started; /* the client got a byte of the answer */
        bool chunk_out;    /* the answer goes to the client chunked */
        bool close_client; /* the client's connection ends after this exchange */
        bool tunnel;
        bool continue_sent;
        bool head_pending; /* the answer's head waits in the worker's scratch buffer for the body */
        struct exchange *next_spare;
        char id[GW_REQUEST_ID_MAX + 1];
};

struct client {
        struct gw_worker *w;
        struct orch_list link;
        uv_tcp_t tcp;
        uv_timer_t timer;
        uv_shutdown_t *shutdown;
        enum client_timer timer_kind;
        uint64_t deadline;               /* loop time when timer_kind expires */
        uint64_t timer_due;              /* loop time the uv timer fires at; 0: not started */
        struct orch_http_parser *parser; /* NULL while the connection is idle */
        struct orch_buf in;              /* read, not parsed yet */
        struct exchange *x;
        size_t lingered;
        unsigned open_handles;
        unsigned writes;
        bool reading;
        bool in_parse;  /* client_parse() is on the stack: do not re-enter */
        bool closing;   /* uv_close() was called */
        bool finishing; /* no more requests: close once the answers are written */
        bool shut;      /* half-closed */
        bool lingering;
        bool eof;
        bool tunnel;
        uint8_t ip_len;
        uint8_t ip_raw[16];
        char ip[INET6_ADDRSTRLEN];
};

struct gw_worker {
        struct gw_shared *sh;
        unsigned id;
        uv_loop_t loop;
        uv_thread_t thread;
        bool thread_started;
        uv_tcp_t listener;
        uv_async_t wake;
        uv_check_t flush;
        uv_timer_t drain;
        int listen_fd;
        _Atomic(struct gw_table *) next_table;
        atomic_bool stop_requested;
        bool stopping;
        bool done;
        struct view *cur;
        struct orch_list old_views;
        struct orch_hmap hosts;
        struct orch_list clients;
        size_t n_clients, n_upstreams, max_clients;
        uint64_t rng;
        struct exchange *spare;
        unsigned n_spare;
        struct orch_buf scratch; /* response heads: built here, written at once */
        struct orch_buf log;
        time_t log_sec;
        char log_ts[32];
        char readbuf[READ_BUFFER_SIZE];
};

struct wreq {
        uv_write_t req;
        size_t len;
        char data[];
};

static void client_close(struct client *c);
static void client_finish(struct client *c);
static void client_parse_pending(struct client *c);
static void client_set_reading(struct client *c);
static void upstream_close(struct upstream *up);
static int up_write(struct upstream *up, const uv_buf_t *bufs, unsigned n);
static void up_arm(struct upstream *up, uint64_t ms);
static void up_disarm(struct upstream *up);
static void upstream_failed(struct upstream *up, enum up_failure kind, const char *why);
static void upstream_set_reading(struct upstream *up);
static void upstream_resume(struct upstream *up);
static void exchange_attempt(struct exchange *x);
static void worker_maybe_done(struct gw_worker *w);

/* ---- small helpers ---- */

static uint64_t now_ms(struct gw_worker *w)
{
        return uv_now(&w->loop);
}

static struct gw_counters *counters(struct gw_worker *w, const struct view *v, const struct gw_route *r)
{
        struct gw_stats *s = r ? r->stats : v ? v->t->unrouted : NULL;

        return s ? &s->w[w->id] : NULL;
}

static void request_id(struct gw_worker *w, const struct orch_http_head *h, char *out)
{
        static const char hex[] = "0123456789abcdef";
        const char *theirs = h ? orch_http_head_header(h, "X-Request-Id") : NULL;
        uint64_t a, b;

        if (theirs && gw_request_id_valid(theirs)) {
                orch_strlcpy(out, theirs, GW_REQUEST_ID_MAX + 1);
                return;
        }
        a = gw_rand(&w->rng);
        b = gw_rand(&w->rng);
        for (int i = 0; i < 16; i++) {
                out[i] = hex[(a >> (60 - 4 * i)) & 15];
                out[16 + i] = hex[(b >> (60 - 4 * i)) & 15];
        }
        out[32] = '\0';
}

static bool method_idempotent(const char *m)
{
        return streq(m, "GET") || streq(m, "HEAD") || streq(m, "OPTIONS") || streq(m, "TRACE") ||
               streq(m, "PUT") || streq(m, "DELETE");
}

/* Writes bufs, handing the kernel what it takes at once and copying only the rest (the common answer
 * goes out without a copy). -errno when the stream is broken. */
static int stream_write(uv_stream_t *s, const uv_buf_t *bufs, unsigned n, uv_write_cb cb, unsigned *pending)
{
        size_t total = 0, done = 0, off = 0;
        struct wreq *wr;
        uv_buf_t b;
        int r;

        for (unsigned i = 0; i < n; i++)
                total += bufs[i].len;
        if (total == 0)
                return 0;
        r = uv_try_write(s, bufs, n);
        if (r >= 0 && (size_t)r == total)
                return 0;
        if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS)
                return r;
        if (r > 0)
                done = (size_t)r;
        wr = malloc(sizeof *wr + total - done);
        if (!wr)
                return -ENOMEM;
        wr->len = total - done;
        for (unsigned i = 0; i < n; i++) {
                size_t len = bufs[i].len;

                if (done >= len) {
                        done -= len;
                        continue;
                }
                memcpy(wr->data + off, bufs[i].base + done, len - done);
                off += len - done;
                done = 0;
        }
        b = uv_buf_init(wr->data, (unsigned)wr->len);
        r = uv_write(&wr->req, s, &b, 1, cb);
        if (r < 0) {
                free(wr);
                return r;
        }
        (*pending)++;
        return 0;
}

/* ---- access log ---- */

static void log_flush(struct gw_worker *w)
{
        if (w->log.len > 0)
                (void)!write(STDERR_FILENO, w->log.data, w->log.len);
        orch_buf_reset(&w->log);
}

static void on_flush(uv_check_t *check)
{
        log_flush(container_of(check, struct gw_worker, flush));
}

/* One logfmt line per request (docs/gateway.md, "Access log"); written once per loop iteration. */
static void access_log(struct gw_worker *w, const struct client *c, const struct orch_http_head *h,
                       const char *id, const struct gw_route *r, const struct exchange *x, int status,
                       uint64_t usec)
{
        struct orch_buf *b = &w->log;
        struct timespec now;
        char num[64];

        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec != w->log_sec) {
                struct tm tm;
                gmtime_r(&now.tv_sec, &tm);
                strftime(w->log_ts, sizeof w->log_ts, "%Y-%m-%dT%H:%M:%S", &tm);
                w->log_sec = now.tv_sec;
        }
        orch_buf_printf(b, "ts=%s.%03ldZ level=info prog=orchd msg=request", w->log_ts,
                        now.tv_nsec / 1000000L);
        orch_log_append_field(b, "id", id);
        orch_log_append_field(b, "client", c->ip);
        if (h) {
                orch_log_append_field(b, "method", h->method);
                orch_log_append_field(b, "host", h->authority ? h->authority : h->host);
                orch_log_append_field(b, "target", h->target);
        }
        orch_log_append_field(b, "route", r ? r->service : NULL);
        if (x && x->ep) {
                orch_log_append_field(b, "instance", x->ep->instance);
                orch_log_append_field(b, "upstream", x->ep->addr_text);
        }
        orch_snprintf(num, sizeof num, "%d", status);
        orch_log_append_field(b, "status", num);
        if (x) {
                orch_snprintf(num, sizeof num, "%" PRIu64, x->bytes_in);
                orch_log_append_field(b, "bytes_in", num);
                orch_snprintf(num, sizeof num, "%" PRIu64, x->bytes_out);
                orch_log_append_field(b, "bytes_out", num);
                orch_snprintf(num, sizeof num, "%u", x->attempts);
                orch_log_append_field(b, "attempts", num);
        }
        orch_snprintf(num, sizeof num, "%" PRIu64 ".%03" PRIu64, usec / 1000, usec % 1000);
        orch_log_append_field(b, "duration_ms", num);
        orch_buf_putc(b, '\n');
        if (b->oom)
                orch_buf_release(b);
        else if (b->len >= ACCESS_LOG_FLUSH_BYTES)
                log_flush(w);
}

/* ---- hosts and views ---- */

static void host_unref(struct gw_host *h)
{
        if (--h->refs > 0)
                return;
        orch_hmap_remove(&h->w->hosts, &h->hnode);
        free(h->key);
        free(h);
}

static void host_close_idle(struct gw_host *h)
{
        while (!orch_list_empty(&h->idle))
                upstream_close(orch_list_entry(h->idle.next, struct upstream, link));
}

static void host_unlist(struct gw_host *h)
{
        /* No table lists the endpoint any more: its pooled connections will never be used. */
        if (--h->listed == 0)
                host_close_idle(h);
        host_unref(h);
}

static struct gw_host *host_get(struct gw_worker *w, const struct gw_endpoint *e)
{
        struct gw_host *h = orch_hmap_entry(orch_hmap_get(&w->hosts, e->addr_text), struct gw_host, hnode);

        if (!h) {
                h = calloc(1, sizeof *h);
                if (!h || !(h->key = strdup(e->addr_text))) {
                        free(h);
                        return NULL;
                }
                h->w = w;
                h->addr = e->addr;
                orch_list_init(&h->idle);
                if (orch_hmap_insert(&w->hosts, &h->hnode, h->key) < 0) {
                        free(h->key);
                        free(h);
                        return NULL;
                }
        }
        h->refs++;
        h->listed++;
        return h;
}

static void view_free(struct view *v)
{
        for (size_t i = 0; i < v->t->n_endpoints; i++)
                if (v->hosts[i])
                        host_unlist(v->hosts[i]);
        free(v->hosts);
        free(v->health);
        free(v->rr);
        gw_table_unref(v->t);
        free(v);
}

/* Takes over the reference on t, also on failure. */
static int view_new(struct gw_worker *w, struct gw_table *t, struct view **ret)
{
        struct view *v = calloc(1, sizeof *v);

        if (!v) {
                gw_table_unref(t);
                return -ENOMEM;
        }
        v->t = t;
        orch_list_init(&v->link);
        v->hosts = calloc(t->n_endpoints + 1, sizeof *v->hosts);
        v->health = calloc(t->n_endpoints + 1, sizeof *v->health);
        v->rr = calloc(t->n_routes + 1, sizeof *v->rr);
        if (!v->hosts || !v->health || !v->rr) {
                view_free(v);
                return -ENOMEM;
        }
        for (size_t i = 0; i < t->n_routes; i++) {
                const struct gw_route *r = &t->routes[i];

                /* start the cursors apart, so that workers do not all begin with the same endpoint */
                v->rr[i] = r->n_eps ? (uint32_t)(gw_rand(&w->rng) % r->n_eps) : 0;
                for (size_t e = 0; e < r->n_eps; e++) {
                        struct gw_host *h = host_get(w, &r->eps[e]);
                        if (!h) {
                                view_free(v);
                                return -ENOMEM;
                        }
                        v->hosts[r->eps[e].index] = h;
                        v->health[r->eps[e].index] = &h->health;
                }
        }
        *ret = v;
        return 0;
}

static void view_release(struct gw_worker *w, struct view *v)
{
        if (--v->users == 0 && v != w->cur) {
                orch_list_remove(&v->link);
                view_free(v);
        }
}

static void view_retire(struct gw_worker *w, struct view *v)
{
        if (!v)
                return;
        if (v->users == 0)
                view_free(v);
        else
                orch_list_append(&w->old_views, &v->link);
}

static void adopt_table(struct gw_worker *w, struct gw_table *t)
{
        struct view *v, *old = w->cur;
        int r = view_new(w, t, &v);

        if (r < 0) {
                /* keep serving the previous table; the next change brings another chance */
                log_error("gateway worker %u: out of memory taking a new routing table", w->id);
                return;
        }
        w->cur = v;
        view_retire(w, old);
}

/* ---- the client's timer ---- */

static void on_client_timer(uv_timer_t *t);

/*
 * Timers are lazy: arming one sets a deadline, and the libuv timer is started only when it would fire
 * too late for it; when it fires early it starts again for what is left. A request moves a connection
 * through several deadlines (head, upstream answer, keep-alive) without a timer heap operation, and an
 * idle connection wakes once per timeout at most.
 */
static void client_arm(struct client *c, enum client_timer kind, uint64_t ms)
{
        uint64_t due = uv_now(&c->w->loop) + ms;

        if (c->closing)
                return;
        c->timer_kind = kind;
        c->deadline = due;
        if (c->timer_due == 0 || c->timer_due > due) {
                uv_timer_start(&c->timer, on_client_timer, ms, 0);
                c->timer_due = due;
        }
}

static void client_disarm(struct client *c)
{
        c->timer_kind = CT_NONE;
}

/* A byte of a request was read and its answer has not started. */
static bool client_in_message(const struct client *c)
{
        return c->parser && orch_http_parser_in_message(c->parser);
}

/* The parser exists only while a connection has a request to read: an idle kept-alive connection holds
 * its two structs and nothing else. */
static int client_parser(struct client *c)
{
        const struct orch_http_limits limits = {
                .max_header_bytes = c->w->sh->lim.max_header_bytes,
                .max_headers = c->w->sh->lim.max_headers,
        };

        if (c->parser)
                return 0;
        return orch_http_parser_new(ORCH_HTTP_REQUEST, &limits, &c->parser);
}

/* ---- client: writing and closing ---- */

static bool client_congested(const struct client *c)
{
        return c->tcp.write_queue_size > WRITE_HIGH_WATER;
}

static void client_shutdown(struct client *c);

static void on_client_write(uv_write_t *req, int status)
{
        struct client *c = container_of((uv_tcp_t *)req->handle, struct client, tcp);

        free(container_of(req, struct wreq, req));
        c->writes--;
        if (c->closing)
                return;
        if (status < 0) {
                client_close(c);
                return;
        }
        if (!client_congested(c)) {
                if (c->timer_kind == CT_WRITE)
                        client_disarm(c);
                /* the side that waited for this client may go on: the upstream of its answer, or the next
                 * pipelined request */
                if (c->x && c->x->up)
                        upstream_resume(c->x->up);
                else if (!c->x && !c->finishing && c->in.len > 0)
                        client_parse_pending(c);
                if (!c->closing)
                        client_set_reading(c);
        }
        if (!c->closing && c->finishing && c->writes == 0)
                client_shutdown(c);
}

static int client_write(struct client *c, const uv_buf_t *bufs, unsigned n)
{
        int r;

        if (c->closing || c->shut)
                return -EPIPE;
        r = stream_write((uv_stream_t *)&c->tcp, bufs, n, on_client_write, &c->writes);
        if (r < 0) {
                client_close(c);
                return r;
        }
        if (client_congested(c) && c->timer_kind != CT_WRITE && !c->tunnel)
                client_arm(c, CT_WRITE, c->w->sh->lim.write_timeout_ms);
        return 0;
}

static int client_write1(struct client *c, const void *data, size_t len)
{
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

        return client_write(c, &b, 1);
}

static void on_client_handle_closed(uv_handle_t *h)
{
        struct client *c = h->data;
        struct gw_worker *w = c->w;

        if (--c->open_handles > 0)
                return;
        orch_list_remove(&c->link);
        w->n_clients--;
        atomic_fetch_sub_explicit(&w->sh->connections, 1, memory_order_relaxed);
        orch_http_parser_free(c->parser);
        orch_buf_release(&c->in);
        free(c->shutdown);
        free(c);
        worker_maybe_done(w);
}

static void exchange_end(struct exchange *x);

/* Closes at once; an exchange in progress ends without (the rest of) its answer. */
static void client_close(struct client *c)
{
        if (c->closing)
                return;
        c->closing = true;
        if (c->x)
                exchange_end(c->x);
        c->timer_kind = CT_NONE;
        uv_close((uv_handle_t *)&c->tcp, on_client_handle_closed);
        uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
        struct client *c = container_of((uv_tcp_t *)req->handle, struct client, tcp);

        if (c->closing)
                return;
        if (status < 0) {
                client_close(c);
                return;
        }
        /* Closing with unread input makes the kernel send a reset, which can destroy the answer before the
         * client reads it: read and discard for a while first. */
        c->lingering = true;
        client_arm(c, CT_LINGER, LINGER_MS);
        client_set_reading(c);
}

static void client_shutdown(struct client *c)
{
        if (c->shut || c->closing)
                return;
        c->shut = true;
        if (c->eof) {
                client_close(c);
                return;
        }
        c->shutdown = malloc(sizeof *c->shutdown);
        if (!c->shutdown || uv_shutdown(c->shutdown, (uv_stream_t *)&c->tcp, on_client_shutdown) < 0)
                client_close(c);
}

/* No more requests on this connection: close it once what is queued has been written. */
static void client_finish(struct client *c)
{
        if (c->closing || c->finishing)
                return;
        c->finishing = true;
        client_disarm(c);
        client_set_reading(c);
        if (c->writes == 0)
                client_shutdown(c);
        else
                client_arm(c, CT_WRITE, c->w->sh->lim.write_timeout_ms);
}

/* An answer from the gateway itself: {"error": ...} as JSON, with the request's id. */
static void client_error_answer(struct client *c, int status, const char *id, bool close,
                                const char *extra_name, const char *extra_value, const char *msg)
{
        _cleanup_json_ json_t *j = json_pack("{s:s}", "error", msg);
        _cleanup_(freep) char *body = j ? orch_json_dumps_compact(j) : NULL;
        struct orch_http_header hs[5];
        struct orch_buf out = {0};
        size_t n = 0;

        hs[n++] = (struct orch_http_header){"Content-Type", "application/json"};
        if (id)
                hs[n++] = (struct orch_http_header){"X-Request-Id", id};
        if (extra_name)
                hs[n++] = (struct orch_http_header){extra_name, extra_value};
        if (close)
                hs[n++] = (struct orch_http_header){"Connection", "close"};
        if (!body || orch_http_response_head(&out, status, hs, n, (int64_t)strlen(body) + 1) < 0 ||
            orch_buf_puts(&out, body) < 0 || orch_buf_putc(&out, '\n') < 0) {
                orch_buf_release(&out);
                client_close(c);
                return;
        }
        client_write1(c, out.data, out.len);
        orch_buf_release(&out);
}

/* A request the gateway answers itself (no route, limits, keys, malformed input): counted and logged under
 * its route (or none). The connection is kept only when nothing of the request is left unread. */
_printf_(7, 8) static void client_local(struct client *c, const struct gw_route *r, int status, bool close,
                                        const char *extra_name, const char *extra_value, const char *fmt,
                                        ...)
{
        struct gw_worker *w = c->w;
        const struct orch_http_head *h = c->parser ? orch_http_parser_head(c->parser) : NULL;
        struct gw_counters *k = counters(w, w->cur, r);
        char id[GW_REQUEST_ID_MAX + 1], msg[MAX_ERROR_BODY];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        request_id(w, h, id);
        if (!h || !h->keep_alive || h->chunked || h->content_length > 0 || w->stopping)
                close = true;
        client_error_answer(c, status, id, close, extra_name, extra_value, msg);
        if (k)
                gw_stats_request(k, status, 0);
        if (w->sh->access_log)
                access_log(w, c, h, id, r, NULL, status, 0);
        if (close)
                client_finish(c);
}

/* ---- exchanges ---- */

static struct exchange *exchange_new(struct gw_worker *w)
{
        struct exchange *x = w->spare;
        struct orch_buf head;

        if (!x)
                return calloc(1, sizeof *x);
        w->spare = x->next_spare;
        w->n_spare--;
        head = x->head;
        memset(x, 0, sizeof *x);
        x->head = head;
        orch_buf_reset(&x->head);
        return x;
}

static void exchange_recycle(struct gw_worker *w, struct exchange *x)
{
        free(x->path_owned);
        x->path_owned = NULL;
        if (w->n_spare >= SPARE_EXCHANGES || x->head.cap > 16U * 1024U)
                orch_buf_release(&x->head);
        if (w->n_spare >= SPARE_EXCHANGES) {
                free(x);
                return;
        }
        x->next_spare = w->spare;
        w->spare = x;
        w->n_spare++;
}

/* Ends the exchange: counts it, logs it, releases the upstream (closing it unless it went back to the pool
 * already), the endpoint and the view. The client goes on (or not) as the caller decides. */
static void exchange_end(struct exchange *x)
{
        struct client *c = x->c;
        struct gw_worker *w = c->w;
        uint64_t usec = (uv_hrtime() - x->start_ns) / 1000;
        struct gw_counters *k = counters(w, x->v, x->route);

        if (k)
                gw_stats_request(k, x->resp_started ? x->status : 0, usec);
        if (w->sh->access_log)
                access_log(w, c, orch_http_parser_head(c->parser), x->id, x->route, x,
                           x->resp_started ? x->status : 0, usec);
        if (x->up) {
                struct upstream *up = x->up;
                up->x = NULL;
                x->up = NULL;
                upstream_close(up);
        }
        if (x->host) {
                x->host->health.outstanding--;
                host_unref(x->host);
        }
        view_release(w, x->v);
        exchange_recycle(w, x);
        c->x = NULL;
}

/* The client's next request, or the close. */
static void client_next(struct client *c, bool close)
{
        if (c->closing)
                return;
        if (close || c->eof || c->w->stopping) {
                client_finish(c);
                return;
        }
        /* With many connections most are idle: they give their parser back. With few, allocating one per
         * request would cost more than it saves. */
        if (c->in.len == 0 && c->w->n_clients > PARSERS_KEPT_BELOW)
                c->parser = orch_http_parser_free(c->parser);
        else
                orch_http_parser_next(c->parser);
        client_arm(c, CT_IDLE, c->w->sh->lim.idle_timeout_ms);
        client_parse_pending(c);
        if (!c->closing)
                client_set_reading(c);
}

static void exchange_complete(struct exchange *x)
{
        struct client *c = x->c;
        bool close = x->close_client || !x->req_complete || x->tunnel;

        exchange_end(x);
        client_next(c, close);
}

/* The attempt cannot go on and nothing was sent to the client yet: answer the error. */
static void exchange_fail(struct exchange *x, int status, const char *msg)
{
        struct client *c = x->c;
        bool close = !x->req_complete || x->close_client || !orch_http_parser_head(c->parser)->keep_alive;

        client_error_answer(c, status, x->id, close, status == 503 ? "Retry-After" : NULL, "1", msg);
        x->status = status;
        x->resp_started = true;
        exchange_end(x);
        client_next(c, close);
}

static void exchange_abort(struct exchange *x)
{
        client_close(x->c);
}

static struct upstream *pool_take(struct gw_host *h)
{
        struct upstream *up;

        if (orch_list_empty(&h->idle))
                return NULL;
        up = orch_list_entry(h->idle.next, struct upstream, link);
        orch_list_remove(&up->link);
        h->n_idle--;
        up_disarm(up);
        up->state = UP_BUSY;
        return up;
}

static void exchange_send_head(struct exchange *x)
{
        struct upstream *up = x->up;
        struct client *c = x->c;
        const struct orch_http_head *h = orch_http_parser_head(c->parser);

        x->head_sent = true;
        x->got_response = false;
        orch_http_parser_set_head_request(up->parser, x->head_method);
        up_arm(up, x->route->timeout_ms);
        if (up_write(up, &(uv_buf_t){.base = x->head.data, .len = x->head.len}, 1) < 0)
                return;
        /* the upstream is ready for the body: now the client may send it */
        if (h->expect_continue && x->has_body && !x->continue_sent && !x->req_complete) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                x->continue_sent = true;
                client_write1(c, cont, sizeof cont - 1);
        }
        if (x->has_body && !x->req_complete)
                client_arm(c, CT_BODY, c->w->sh->lim.body_timeout_ms);
        client_parse_pending(c);
}

static void on_up_timer(uv_timer_t *t);

/* The upstream's one (lazy) timer: connect, then the answer's silence, then the pool's idle time. */
static void up_arm(struct upstream *up, uint64_t ms)
{
        uint64_t due = uv_now(&up->w->loop) + ms;

        up->deadline = due;
        if (up->timer_due == 0 || up->timer_due > due) {
                uv_timer_start(&up->timer, on_up_timer, ms, 0);
                up->timer_due = due;
        }
}

static void up_disarm(struct upstream *up)
{
        up->deadline = 0;
}

static void on_up_connect(uv_connect_t *req, int status);

static void on_up_handle_closed(uv_handle_t *h)
{
        struct upstream *up = h->data;
        struct gw_worker *w = up->w;

        if (--up->open_handles > 0)
                return;
        w->n_upstreams--;
        atomic_fetch_sub_explicit(&w->sh->upstreams, 1, memory_order_relaxed);
        orch_http_parser_free(up->parser);
        orch_buf_release(&up->in);
        free(up->shutdown);
        host_unref(up->host);
        free(up);
        worker_maybe_done(w);
}

static int upstream_connect(struct gw_worker *w, struct gw_host *h, struct upstream **ret)
{
        const struct orch_http_limits limits = {
                .max_header_bytes = UPSTREAM_MAX_HEADER_BYTES,
                .max_headers = UPSTREAM_MAX_HEADERS,
                .max_body_bytes = UINT64_MAX,
        };
        struct upstream *up = calloc(1, sizeof *up);
        int r;

        if (!up)
                return -ENOMEM;
        up->w = w;
        up->host = h;
        h->refs++;
        orch_list_init(&up->link);
        uv_tcp_init(&w->loop, &up->tcp);
        uv_timer_init(&w->loop, &up->timer);
        up->tcp.data = up->timer.data = up;
        up->open_handles = 2;
        w->n_upstreams++;
        atomic_fetch_add_explicit(&w->sh->upstreams, 1, memory_order_relaxed);
        up->state = UP_CONNECTING;
        r = orch_http_parser_new(ORCH_HTTP_RESPONSE, &limits, &up->parser);
        if (r >= 0) {
                uv_tcp_nodelay(&up->tcp, 1);
                r = uv_tcp_connect(&up->connect, &up->tcp, (const struct sockaddr *)&h->addr, on_up_connect);
        }
        if (r < 0) {
                upstream_close(up);
                return r;
        }
        up_arm(up, w->sh->lim.connect_timeout_ms);
        *ret = up;
        return 0;
}

static void exchange_attempt(struct exchange *x)
{
        struct gw_worker *w = x->c->w;
        const struct gw_route *r = x->route;
        struct upstream *up;
        struct gw_host *h;
        int i, k;

        i = gw_balance_pick(&x->v->health[r->eps[0].index], r->n_eps, x->tried, x->n_tried,
                            &x->v->rr[r->index], &w->rng, now_ms(w));
        if (i < 0) {
                exchange_fail(x, 502, "no instance of the service could be reached");
                return;
        }
        if (x->n_tried < GW_BALANCE_MAX_TRIED)
                x->tried[x->n_tried++] = (size_t)i;
        x->ep = &r->eps[i];
        h = x->v->hosts[x->ep->index];
        h->refs++;
        h->health.outstanding++;
        x->host = h;
        x->attempts++;
        x->head_sent = false;

        up = pool_take(h);
        if (up) {
                up->x = x;
                x->up = up;
                exchange_send_head(x);
                return;
        }
        k = upstream_connect(w, h, &up);
        if (k < 0) {
                /* cannot even start a connect (out of file descriptors, say): as good as refused */
                gw_health_connect_failed(&h->health, now_ms(w));
                gw_count(&counters(w, x->v, r)->upstream_errors, 1);
                x->host = NULL;
                h->health.outstanding--;
                host_unref(h);
                if (x->attempts < MAX_ATTEMPTS) {
                        exchange_attempt(x);
                        return;
                }
                exchange_fail(x, 502, "cannot connect to an instance of the service");
                return;
        }
        up->x = x;
        x->up = up;
}

static void exchange_request_body(struct exchange *x, const char *data, size_t len)
{
        struct client *c = x->c;

        x->body_started = true;
        x->bytes_in += len;
        if (x->chunked_in) {
                char line[24];
                int n = snprintf(line, sizeof line, "%zx\r\n", len);
                uv_buf_t bufs[3] = {uv_buf_init(line, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                                    uv_buf_init((char *)"\r\n", 2)};
                if (up_write(x->up, bufs, 3) < 0)
                        return;
        } else if (up_write(x->up, &(uv_buf_t){.base = (char *)data, .len = len}, 1) < 0) {
                return;
        }
        /* the upstream's silence counts from the last byte it was sent */
        up_arm(x->up, x->route->timeout_ms);
        client_arm(c, CT_BODY, c->w->sh->lim.body_timeout_ms);
}

static void exchange_request_complete(struct exchange *x)
{
        struct client *c = x->c;

        x->req_complete = true;
        if (c->timer_kind == CT_BODY)
                client_disarm(c);
        if (x->chunked_in) {
                uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
                up_write(x->up, &b, 1);
        }
}

/* ---- the answer ---- */

static void exchange_response_head(struct exchange *x, struct upstream *up)
{
        struct client *c = x->c;
        struct gw_worker *w = c->w;
        const struct orch_http_head *h = orch_http_parser_head(up->parser);
        const struct orch_http_head *ch = orch_http_parser_head(c->parser);
        bool client11 = ch->version_minor == 1, close;
        struct gw_response_out out = {.head = h, .request_id = x->id};
        int64_t len;

        if (h->status < 200 && h->status != 101) {
                /* 100 Continue (the gateway answered the client's Expect itself), 102, 103: not passed on */
                x->interim = true;
                return;
        }
        if (h->status == 101 && !x->upgrade_req) {
                upstream_failed(up, F_PROTOCOL, "101 Switching Protocols without an Upgrade request");
                return;
        }
        if (gw_health_answered(&x->host->health, h->status, now_ms(w)))
                gw_count(&counters(w, x->v, x->route)->ejections, 1);
        x->status = h->status;
        len = gw_response_framing(h, x->head_method, client11, &x->chunk_out, &close);
        if (close)
                x->close_client = true;
        /* A request still arriving, a refused upgrade: the connection cannot carry another request. */
        if (!x->req_complete || (x->upgrade_req && h->status != 101) || !ch->keep_alive || w->stopping)
                x->close_client = true;
        out.upgrade = h->status == 101;
        out.close = x->close_client && !out.upgrade;
        out.http10_keep_alive = !client11 && !x->close_client;
        out.body_length = len;
        orch_buf_reset(&w->scratch);
        if (gw_rewrite_response(&w->scratch, &out) < 0) {
                upstream_failed(up, F_PROTOCOL, "the answer's Connection field names too many fields");
                return;
        }
        x->resp_started = true;
        /* written with the first piece of the body, or at the end of this read: one write for both */
        x->head_pending = true;
}

/* Writes the answer's head if it is still pending, then bufs, in one call. */
static void client_send(struct exchange *x, const uv_buf_t *bufs, unsigned n)
{
        struct gw_worker *w = x->c->w;
        uv_buf_t all[4];
        unsigned k = 0;

        if (x->head_pending) {
                all[k++] = uv_buf_init(w->scratch.data, (unsigned)w->scratch.len);
                x->head_pending = false;
        }
        for (unsigned i = 0; i < n && k < ELEMENTSOF(all); i++)
                all[k++] = bufs[i];
        if (k > 0)
                client_write(x->c, all, k);
        if (w->scratch.cap > 64 * 1024)
                orch_buf_release(&w->scratch);
}

static void exchange_response_body(struct exchange *x, const char *data, size_t len)
{
        x->bytes_out += len;
        if (x->chunk_out) {
                char line[24];
                int n = snprintf(line, sizeof line, "%zx\r\n", len);
                uv_buf_t bufs[3] = {uv_buf_init(line, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                                    uv_buf_init((char *)"\r\n", 2)};
                client_send(x, bufs, 3);
        } else {
                client_send(x, &(uv_buf_t){.base = (char *)data, .len = len}, 1);
        }
}

static void pool_put(struct upstream *up)
{
        struct gw_worker *w = up->w;
        struct gw_host *h = up->host;

        if (w->stopping || h->listed == 0 || h->n_idle >= w->sh->lim.max_idle_per_endpoint) {
                upstream_close(up);
                return;
        }
        up->state = UP_IDLE;
        up->reused = true;
        orch_http_parser_next(up->parser);
        orch_list_insert_after(&h->idle, &up->link);
        h->n_idle++;
        up_arm(up, w->sh->lim.pool_idle_ms);
        /* keep reading: an upstream that closes an idle connection is noticed before it is reused */
        upstream_set_reading(up);
}

/* The answer is complete. `rest`: bytes the upstream sent after it (the connection cannot be reused). */
static void exchange_response_complete(struct exchange *x, struct upstream *up, size_t rest, bool eof)
{
        bool reuse = !eof && rest == 0 && x->req_complete && orch_http_parser_head(up->parser)->keep_alive &&
                     up->writes == 0;

        if (x->chunk_out)
                client_send(x, &(uv_buf_t){.base = (char *)"0\r\n\r\n", .len = 5}, 1);
        else
                client_send(x, NULL, 0);
        up->x = NULL;
        x->up = NULL;
        if (reuse)
                pool_put(up);
        else
                upstream_close(up);
        exchange_complete(x);
}

/* The 101 went to the client: from here on both connections carry raw bytes. */
static void exchange_tunnel(struct exchange *x, struct upstream *up)
{
        struct client *c = x->c;

        client_send(x, NULL, 0);
        x->tunnel = true;
        c->tunnel = true;
        up_disarm(up);
        client_arm(c, CT_TUNNEL, c->w->sh->lim.tunnel_idle_ms);
        /* what the client sent after its request is already for the new protocol */
        if (c->in.len > 0) {
                uv_buf_t b = uv_buf_init(c->in.data, (unsigned)c->in.len);
                x->bytes_in += c->in.len;
                up_write(up, &b, 1);
                orch_buf_release(&c->in);
        }
        client_set_reading(c);
}

/* Both directions of a tunnel ended: the exchange is over. */
static void tunnel_maybe_done(struct exchange *x)
{
        if (x->c->eof && x->up && x->up->eof)
                exchange_abort(x);
}

/* ---- upstream I/O ---- */

static bool up_congested(const struct upstream *up)
{
        return up->tcp.write_queue_size > WRITE_HIGH_WATER;
}

static void on_up_write(uv_write_t *req, int status)
{
        struct upstream *up = container_of((uv_tcp_t *)req->handle, struct upstream, tcp);

        free(container_of(req, struct wreq, req));
        up->writes--;
        if (up->closing)
                return;
        if (status < 0) {
                upstream_failed(up, F_RESET, uv_strerror(status));
                return;
        }
        if (up->x && !up_congested(up)) {
                struct client *c = up->x->c;
                if (up->x->tunnel)
                        client_set_reading(c);
                else
                        client_parse_pending(c);
        }
}

static int up_write(struct upstream *up, const uv_buf_t *bufs, unsigned n)
{
        int r;

        if (up->closing)
                return -EPIPE;
        r = stream_write((uv_stream_t *)&up->tcp, bufs, n, on_up_write, &up->writes);
        if (r < 0) {
                upstream_failed(up, F_RESET, uv_strerror(r));
                return r;
        }
        return 0;
}

static void upstream_close(struct upstream *up)
{
        if (up->closing)
                return;
        up->closing = true;
        if (up->state == UP_IDLE) {
                orch_list_remove(&up->link);
                up->host->n_idle--;
        }
        if (up->x) {
                up->x->up = NULL;
                up->x = NULL;
        }
        uv_close((uv_handle_t *)&up->tcp, on_up_handle_closed);
        uv_close((uv_handle_t *)&up->timer, on_up_handle_closed);
}

static void upstream_failed(struct upstream *up, enum up_failure kind, const char *why)
{
        struct exchange *x = up->x;
        struct gw_worker *w = up->w;
        struct gw_counters *k;
        bool retry, reused = up->reused;

        upstream_close(up);
        if (!x)
                return;
        k = counters(w, x->v, x->route);
        gw_count(&k->upstream_errors, 1);
        if (kind == F_CONNECT || kind == F_CONNECT_TIMEOUT) {
                gw_health_connect_failed(&x->host->health, now_ms(w));
                gw_count(&k->ejections, 1);
        }
        log_debug("gateway: %s %s via %s: %s", x->route->service, x->ep->instance, x->ep->addr_text, why);
        /* Again elsewhere when the request surely did not reach an application (connect failures), or when
         * it may safely run twice: idempotent, no body sent, and no answer begun. */
        retry = !x->resp_started && !x->got_response && !x->tunnel && x->attempts < MAX_ATTEMPTS &&
                !w->stopping &&
                (kind == F_CONNECT || kind == F_CONNECT_TIMEOUT ||
                 (kind == F_RESET && x->idempotent && !x->body_started));
        /* A pooled connection the upstream had closed meanwhile says little about the endpoint, but its
         * siblings were likely closed too (the process went away): they go, the endpoint may be picked again
         * with a fresh connection, and the attempt does not count. */
        if (retry && kind == F_RESET && reused && x->stale_retries < GW_BALANCE_MAX_TRIED) {
                x->stale_retries++;
                x->attempts--;
                if (x->n_tried > 0)
                        x->n_tried--;
                host_close_idle(x->host);
        }
        if (retry && x->n_tried < x->route->n_eps) {
                x->host->health.outstanding--;
                host_unref(x->host);
                x->host = NULL;
                gw_count(&k->retries, 1);
                exchange_attempt(x);
                return;
        }
        if (x->resp_started) {
                exchange_abort(x);
                return;
        }
        if (kind == F_TIMEOUT || kind == F_CONNECT_TIMEOUT)
                exchange_fail(x, 504,
                              kind == F_TIMEOUT ? "the service did not answer in time"
                                                : "timed out connecting to the service");
        else
                exchange_fail(x, 502, "the service's instance failed to answer");
}

static void on_up_connect(uv_connect_t *req, int status)
{
        struct upstream *up = container_of(req, struct upstream, connect);

        if (up->closing)
                return;
        if (status < 0) {
                upstream_failed(up, F_CONNECT, uv_strerror(status));
                return;
        }
        up->state = UP_BUSY;
        upstream_set_reading(up);
        if (up->x)
                exchange_send_head(up->x);
}

static void on_up_timer(uv_timer_t *t)
{
        struct upstream *up = t->data;
        uint64_t now = uv_now(&up->w->loop);

        up->timer_due = 0;
        if (up->deadline == 0 || up->closing)
                return;
        if (now < up->deadline) {
                up->timer_due = up->deadline;
                uv_timer_start(&up->timer, on_up_timer, up->deadline - now, 0);
                return;
        }
        up->deadline = 0;
        switch (up->state) {
        case UP_CONNECTING:
                upstream_failed(up, F_CONNECT_TIMEOUT, "connect timeout");
                break;
        case UP_BUSY:
                upstream_failed(up, F_TIMEOUT, "no answer in time");
                break;
        case UP_IDLE:
                upstream_close(up);
                break;
        }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
        struct gw_worker *w = handle->loop->data;

        buf->base = w->readbuf;
        buf->len = sizeof w->readbuf;
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void upstream_set_reading(struct upstream *up)
{
        bool want;

        if (up->closing)
                return;
        if (up->state == UP_IDLE)
                want = true;
        else if (up->state == UP_BUSY && up->x)
                want = !up->eof && up->in.len == 0 && !client_congested(up->x->c);
        else
                want = false;
        if (want == up->reading)
                return;
        if (want && uv_read_start((uv_stream_t *)&up->tcp, on_alloc, on_up_read) < 0) {
                upstream_failed(up, F_RESET, "cannot read");
                return;
        }
        if (!want)
                uv_read_stop((uv_stream_t *)&up->tcp);
        up->reading = want;
}

/* Passes on what the upstream sent, up to what the client can take; returns the bytes used. */
static size_t upstream_process(struct upstream *up, const char *data, size_t len)
{
        size_t off = 0;

        while (!up->closing && up->x && up->state == UP_BUSY) {
                struct exchange *x = up->x;
                struct orch_http_event ev;

                if (x->tunnel) {
                        x->bytes_out += len - off;
                        client_write1(x->c, data + off, len - off);
                        client_arm(x->c, CT_TUNNEL, up->w->sh->lim.tunnel_idle_ms);
                        return len;
                }
                if (client_congested(x->c)) {
                        if (x->head_pending)
                                client_send(x, NULL, 0);
                        break;
                }
                if (orch_http_parser_execute(up->parser, data + off, len - off, &ev) < 0) {
                        upstream_failed(up, F_PROTOCOL, "out of memory");
                        break;
                }
                off += ev.consumed;
                if (ev.consumed > 0)
                        x->got_response = true;
                switch (ev.type) {
                case ORCH_HTTP_EVENT_NEED_MORE:
                        if (x->head_pending)
                                client_send(x, NULL, 0);
                        return off;
                case ORCH_HTTP_EVENT_HEAD:
                        exchange_response_head(x, up);
                        break;
                case ORCH_HTTP_EVENT_BODY:
                        exchange_response_body(x, ev.body, ev.body_len);
                        break;
                case ORCH_HTTP_EVENT_COMPLETE:
                        if (x->interim) {
                                x->interim = false;
                                orch_http_parser_next(up->parser);
                                break;
                        }
                        exchange_response_complete(x, up, len - off, false);
                        return off;
                case ORCH_HTTP_EVENT_UPGRADE:
                        exchange_tunnel(x, up);
                        break;
                case ORCH_HTTP_EVENT_ERROR: {
                        char why[256];
                        snprintf(why, sizeof why, "malformed answer: %d %s", ev.status, ev.reason);
                        upstream_failed(up, F_PROTOCOL, why);
                        return off;
                }
                default:
                        return off;
                }
        }
        return off;
}

static void upstream_on_eof(struct upstream *up, ssize_t err)
{
        struct exchange *x = up->x;
        struct orch_http_event ev;

        if (x && x->tunnel) {
                up->eof = true;
                uv_read_stop((uv_stream_t *)&up->tcp);
                up->reading = false;
                /* half-close towards the client, and wait for the other direction */
                if (err != UV_EOF) {
                        exchange_abort(x);
                        return;
                }
                if (!x->c->shut) {
                        x->c->shut = true;
                        x->c->shutdown = malloc(sizeof *x->c->shutdown);
                        if (!x->c->shutdown ||
                            uv_shutdown(x->c->shutdown, (uv_stream_t *)&x->c->tcp, NULL) < 0) {
                                exchange_abort(x);
                                return;
                        }
                }
                tunnel_maybe_done(x);
                return;
        }
        if (x && err == UV_EOF && x->got_response && orch_http_parser_finish(up->parser, &ev) >= 0 &&
            (ev.type == ORCH_HTTP_EVENT_COMPLETE)) {
                /* a body delimited by the close */
                exchange_response_complete(x, up, 0, true);
                return;
        }
        upstream_failed(up, F_RESET,
                        err == UV_EOF ? "connection closed before the answer was complete"
                                      : uv_strerror((int)err));
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct upstream *up = container_of((uv_tcp_t *)s, struct upstream, tcp);
        size_t used;

        if (up->closing || nread == 0)
                return;
        if (up->state == UP_IDLE) {
                /* the upstream closed its idle connection, or sent bytes nobody asked for */
                upstream_close(up);
                return;
        }
        if (nread < 0) {
                upstream_on_eof(up, nread);
                return;
        }
        if (up->x && !up->x->tunnel)
                up_arm(up, up->x->route->timeout_ms);
        used = upstream_process(up, buf->base, (size_t)nread);
        if (!up->closing && up->state == UP_BUSY && up->x && used < (size_t)nread &&
            orch_buf_put(&up->in, buf->base + used, (size_t)nread - used) < 0) {
                upstream_failed(up, F_PROTOCOL, "out of memory");
                return;
        }
        upstream_set_reading(up);
}

/* The client took its bytes: go on with what the upstream sent meanwhile, then read again. */
static void upstream_resume(struct upstream *up)
{
        if (up->closing)
                return;
        if (up->in.len > 0 && up->x) {
                /* process a copy's worth in place: nothing appends to `in` while it is processed */
                size_t used = upstream_process(up, up->in.data, up->in.len);
                if (up->closing)
                        return;
                orch_buf_consume(&up->in, used);
                if (up->in.len == 0)
                        orch_buf_release(&up->in);
        }
        upstream_set_reading(up);
}

/* ---- the request ---- */

static bool needs_normalizing(const char *path)
{
        for (const char *p = path; (p = strchr(p, '/')); p++)
                if (p[1] == '.' || p[1] == '%')
                        return true;
        return false;
}

static void client_on_head(struct client *c)
{
        struct gw_worker *w = c->w;
        const struct orch_http_head *h = orch_http_parser_head(c->parser);
        struct view *v = w->cur;
        const struct gw_route *r;
        _cleanup_(freep) char *owned = NULL;
        const char *path = h->path, *host = h->authority ? h->authority : h->host;
        struct exchange *x;
        bool has_body = h->chunked || h->content_length > 0, bearer;
        int k;

        client_disarm(c);
        if (!path || streq(h->method, "CONNECT")) {
                client_local(c, NULL, 501, true, NULL, NULL, "CONNECT is not supported");
                return;
        }
        if (!v || path[0] != '/') {
                client_local(c, NULL, 404, false, NULL, NULL, "no route for %s", h->target);
                return;
        }
        if (needs_normalizing(path)) {
                owned = strdup(path);
                if (!owned) {
                        client_local(c, NULL, 503, true, NULL, NULL, "out of memory");
                        return;
                }
                if (gw_path_normalize(owned) < 0) {
                        client_local(c, NULL, 400, true, NULL, NULL, "invalid path: '..' above the root");
                        return;
                }
                path = owned;
        }
        r = gw_table_lookup(v->t, host, path);
        if (!r) {
                client_local(c, NULL, 404, false, NULL, NULL, "no route for %s%s", strempty(host), path);
                return;
        }
        if (r->rate_count) {
                const struct gw_rate rate = {r->rate_count, r->rate_period_ms, r->rate_burst};
                uint64_t retry_ms = 0;

                if (!gw_ratelimit_take(w->sh->ratelimit, orch_hash_string(r->service), c->ip_raw, c->ip_len,
                                       &rate, uv_hrtime() / 1000, &retry_ms)) {
                        char after[24];
                        orch_snprintf(after, sizeof after, "%" PRIu64,
                                      MAX((uint64_t)1, (retry_ms + 999) / 1000));
                        client_local(c, r, 429, false, "Retry-After", after, "rate limit of %s exceeded",
                                     r->service);
                        return;
                }
        }
        if (r->api_key) {
                const char *key = gw_request_api_key(h, &bearer);
                uint8_t digest[GW_DIGEST_LEN];

                if (!key || orch_apikey_digest(key, strlen(key), digest) < 0 ||
                    !orch_apikey_match((const uint8_t(*)[ORCH_APIKEY_DIGEST_LEN])r->keys, r->n_keys,
                                       digest)) {
                        client_local(c, r, 401, false, "WWW-Authenticate", "Bearer realm=\"orch\"",
                                     key ? "invalid API key" : "an API key is required (X-API-Key: KEY)");
                        return;
                }
        }
        if (h->has_content_length && h->content_length > r->max_body) {
                client_local(c, r, 413, true, NULL, NULL,
                             "body of %" PRIu64 " bytes is larger than the route's limit of %" PRIu64
                             " bytes",
                             h->content_length, r->max_body);
                return;
        }
        if (r->n_eps == 0) {
                client_local(c, r, 503, false, "Retry-After", "1", "no healthy instance of %s", r->service);
                return;
        }
        orch_http_parser_set_body_limit(c->parser, r->max_body);

        x = exchange_new(w);
        if (!x) {
                client_local(c, r, 503, true, NULL, NULL, "out of memory");
                return;
        }
        x->c = c;
        x->v = v;
        x->route = r;
        x->start_ns = uv_hrtime();
        x->head_method = streq(h->method, "HEAD");
        x->idempotent = method_idempotent(h->method);
        x->has_body = has_body;
        x->chunked_in = h->chunked;
        x->upgrade_req = h->upgrade;
        x->path_owned = TAKE_PTR(owned);
        x->path = x->path_owned ? x->path_owned : h->path;
        request_id(w, h, x->id);
        {
                bool key = r->api_key && gw_request_api_key(h, &bearer);
                const struct gw_request_out out = {
                        .head = h,
                        .path = gw_route_upstream_path(r, x->path),
                        .client_addr = c->ip,
                        .request_id = x->id,
                        .default_host = r->host ? r->host : r->service,
                        .drop_api_key = key && !bearer,
                        .drop_authorization = key && bearer,
                        .upgrade = h->upgrade,
                        .body_length = h->chunked              ? ORCH_HTTP_BODY_CHUNKED
                                       : h->has_content_length ? (int64_t)h->content_length
                                                               : ORCH_HTTP_BODY_NONE,
                };
                k = gw_rewrite_request(&x->head, &out);
        }
        if (k < 0) {
                exchange_recycle(w, x);
                if (k == -E2BIG)
                        client_local(c, r, 400, true, NULL, NULL, "Connection names too many fields");
                else
                        client_local(c, r, 503, true, NULL, NULL, "out of memory");
                return;
        }
        v->users++;
        c->x = x;
        exchange_attempt(x);
}

static void client_on_parse_error(struct client *c, const struct orch_http_event *ev)
{
        struct exchange *x = c->x;

        log_debug("gateway: %s: %d %s", c->ip, ev->status, ev->reason);
        if (!x) {
                client_local(c, NULL, ev->status, true, NULL, NULL, "%s", ev->reason);
                return;
        }
        /* a body that turned out malformed or too large */
        if (x->resp_started) {
                exchange_abort(x);
                return;
        }
        /* what follows a malformed message cannot be trusted to be a request */
        x->req_complete = true;
        x->close_client = true;
        exchange_fail(x, ev->status, ev->reason);
}

/* Parses data until a request waits (for its upstream, for its answer) or the input runs out; returns the
 * bytes used. */
static size_t client_parse(struct client *c, const char *data, size_t len)
{
        size_t off = 0;

        if (client_parser(c) < 0) {
                client_close(c);
                return 0;
        }
        c->in_parse = true;
        for (;;) {
                struct exchange *x = c->x;
                struct orch_http_event ev;
                bool was_in;

                if (c->closing || c->finishing || c->tunnel)
                        break;
                if (x && (x->req_complete || !x->head_sent || !x->up || up_congested(x->up)))
                        break;
                /* pipelined answers pile up on a client that does not read them: wait for it */
                if (!x && client_congested(c))
                        break;
                was_in = orch_http_parser_in_message(c->parser);
                if (orch_http_parser_execute(c->parser, data + off, len - off, &ev) < 0) {
                        client_local(c, NULL, 503, true, NULL, NULL, "out of memory");
                        break;
                }
                off += ev.consumed;
                if (!was_in && !x && orch_http_parser_in_message(c->parser))
                        client_arm(c, CT_HEAD, c->w->sh->lim.header_timeout_ms);
                switch (ev.type) {
                case ORCH_HTTP_EVENT_NEED_MORE:
                        goto out;
                case ORCH_HTTP_EVENT_HEAD:
                        client_on_head(c);
                        break;
                case ORCH_HTTP_EVENT_BODY:
                        exchange_request_body(x, ev.body, ev.body_len);
                        break;
                case ORCH_HTTP_EVENT_COMPLETE:
                case ORCH_HTTP_EVENT_UPGRADE:
                        if (x) {
                                exchange_request_complete(x);
                                break;
                        }
                        /* the gateway answered it itself */
                        orch_http_parser_next(c->parser);
                        client_arm(c, CT_IDLE, c->w->sh->lim.idle_timeout_ms);
                        break;
                case ORCH_HTTP_EVENT_ERROR:
                        client_on_parse_error(c, &ev);
                        goto out;
                default:
                        goto out;
                }
        }
out:
        c->in_parse = false;
        return off;
}

static void client_parse_pending(struct client *c)
{
        size_t used;

        /* also without input: the parser may hold an event that takes no bytes (the end of a GET); but an
         * idle connection has neither */
        if (c->in_parse || c->closing || (!c->parser && c->in.len == 0))
                return;
        used = client_parse(c, c->in.data, c->in.len);
        if (c->closing)
                return;
        orch_buf_consume(&c->in, used);
        if (c->in.len == 0)
                orch_buf_release(&c->in);
        client_set_reading(c);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_set_reading(struct client *c)
{
        bool want;

        if (c->closing)
                return;
        if (c->lingering)
                want = true;
        else if (c->finishing || c->eof)
                want = false;
        else if (c->tunnel)
                want = c->x && c->x->up && !up_congested(c->x->up);
        else
                want = c->in.len < c->w->sh->lim.max_header_bytes + READ_BUFFER_SIZE && !client_congested(c);
        if (want == c->reading)
                return;
        if (want && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_client_read) < 0) {
                client_close(c);
                return;
        }
        if (!want)
                uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = want;
}

static void client_on_eof(struct client *c, ssize_t err)
{
        struct exchange *x = c->x;

        if (err == UV_EOF) {
                c->eof = true;
                if (x && x->tunnel) {
                        uv_read_stop((uv_stream_t *)&c->tcp);
                        c->reading = false;
                        if (x->up && !x->up->closing) {
                                x->up->shutdown = malloc(sizeof *x->up->shutdown);
                                if (!x->up->shutdown ||
                                    uv_shutdown(x->up->shutdown, (uv_stream_t *)&x->up->tcp, NULL) < 0) {
                                        exchange_abort(x);
                                        return;
                                }
                        }
                        tunnel_maybe_done(x);
                        return;
                }
                /* A client that half-closes after a whole request still gets its answer. */
                if (x && x->req_complete) {
                        x->close_client = true;
                        uv_read_stop((uv_stream_t *)&c->tcp);
                        c->reading = false;
                        return;
                }
                if (!x && !client_in_message(c) && c->writes > 0) {
                        c->reading = false;
                        uv_read_stop((uv_stream_t *)&c->tcp);
                        client_finish(c);
                        return;
                }
        }
        client_close(c);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct client *c = container_of((uv_tcp_t *)s, struct client, tcp);

        if (c->closing || nread == 0)
                return;
        if (nread < 0) {
                client_on_eof(c, nread);
                return;
        }
        if (c->lingering) {
                c->lingered += (size_t)nread;
                if (c->lingered > LINGER_MAX_BYTES)
                        client_close(c);
                return;
        }
        if (c->tunnel) {
                struct exchange *x = c->x;
                if (!x || !x->up) {
                        client_close(c);
                        return;
                }
                x->bytes_in += (size_t)nread;
                client_arm(c, CT_TUNNEL, c->w->sh->lim.tunnel_idle_ms);
                if (up_write(x->up, &(uv_buf_t){.base = buf->base, .len = (size_t)nread}, 1) >= 0)
                        client_set_reading(c);
                return;
        }
        if (c->in.len == 0) {
                size_t used = client_parse(c, buf->base, (size_t)nread);

                if (c->closing)
                        return;
                if (used < (size_t)nread && !c->finishing &&
                    orch_buf_put(&c->in, buf->base + used, (size_t)nread - used) < 0) {
                        client_close(c);
                        return;
                }
        } else {
                if (orch_buf_put(&c->in, buf->base, (size_t)nread) < 0) {
                        client_close(c);
                        return;
                }
                client_parse_pending(c);
        }
        if (!c->closing)
                client_set_reading(c);
}

static void on_client_timer(uv_timer_t *t)
{
        struct client *c = t->data;
        enum client_timer kind = c->timer_kind;
        uint64_t now = uv_now(&c->w->loop);

        c->timer_due = 0;
        if (kind == CT_NONE)
                return;
        if (now < c->deadline) {
                c->timer_due = c->deadline;
                uv_timer_start(&c->timer, on_client_timer, c->deadline - now, 0);
                return;
        }
        c->timer_kind = CT_NONE;
        switch (kind) {
        case CT_HEAD:
                /* nothing at all since the connect or the last answer: just close */
                if (!client_in_message(c)) {
                        client_close(c);
                        return;
                }
                client_local(c, NULL, 408, true, NULL, NULL,
                             "request head not complete within %" PRIu64 " ms",
                             c->w->sh->lim.header_timeout_ms);
                return;
        case CT_BODY:
                if (c->x && !c->x->resp_started) {
                        c->x->req_complete = true;
                        c->x->close_client = true;
                        exchange_fail(c->x, 408, "no request body data in time");
                        return;
                }
                client_close(c);
                return;
        case CT_IDLE:
        case CT_WRITE:
        case CT_TUNNEL:
        case CT_LINGER:
        case CT_NONE:
                client_close(c);
                return;
        }
}

/* ---- accepting ---- */

static void client_reject(struct client *c)
{
        static const char answer[] =
                "HTTP/1.1 503 Service Unavailable\r\n"
                "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                "Content-Length: 33\r\n\r\n{\"error\":\"too many connections\"}\n";
        uv_buf_t b = uv_buf_init((char *)answer, sizeof answer - 1);

        /* best effort, without queueing anything for a client the gateway has no room for */
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        client_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
        struct gw_worker *w = container_of((uv_tcp_t *)listener, struct gw_worker, listener);
        struct sockaddr_storage sa;
        int salen = sizeof sa;
        struct client *c;

        if (status < 0) {
                log_warn("gateway worker %u: accept: %s", w->id, uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
                log_error("gateway worker %u: out of memory accepting a connection", w->id);
                return;
        }
        c->w = w;
        orch_list_append(&w->clients, &c->link);
        w->n_clients++;
        atomic_fetch_add_explicit(&w->sh->connections, 1, memory_order_relaxed);
        uv_tcp_init(&w->loop, &c->tcp);
        uv_timer_init(&w->loop, &c->timer);
        c->tcp.data = c->timer.data = c;
        c->open_handles = 2;
        if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
                client_close(c);
                return;
        }
        if (w->n_clients > w->max_clients || w->stopping) {
                client_reject(c);
                return;
        }
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
                if (sa.ss_family == AF_INET6) {
                        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa;
                        uv_ip6_name(a, c->ip, sizeof c->ip);
                        memcpy(c->ip_raw, &a->sin6_addr, 16);
                        c->ip_len = 16;
                } else {
                        const struct sockaddr_in *a = (const struct sockaddr_in *)&sa;
                        uv_ip4_name(a, c->ip, sizeof c->ip);
                        memcpy(c->ip_raw, &a->sin_addr, 4);
                        c->ip_len = 4;
                }
        } else {
                orch_strlcpy(c->ip, "unknown", sizeof c->ip);
        }
        uv_tcp_nodelay(&c->tcp, 1);
        /* a connection that never sends a byte is a slowloris too */
        client_arm(c, CT_HEAD, w->sh->lim.header_timeout_ms);
        client_set_reading(c);
}

/* ---- the thread ---- */

static void on_handle_closed_noop(uv_handle_t *h)
{
}

static void worker_maybe_done(struct gw_worker *w)
{
        if (!w->stopping || w->done || w->n_clients > 0 || w->n_upstreams > 0)
                return;
        w->done = true;
        uv_close((uv_handle_t *)&w->wake, on_handle_closed_noop);
        uv_close((uv_handle_t *)&w->drain, on_handle_closed_noop);
        if (w->sh->access_log)
                uv_close((uv_handle_t *)&w->flush, on_handle_closed_noop);
}

static void on_drain_timeout(uv_timer_t *t)
{
        struct gw_worker *w = t->data;
        struct orch_list *p, *n;

        orch_list_foreach_safe (p, n, &w->clients)
                client_close(orch_list_entry(p, struct client, link));
}

static void worker_begin_stop(struct gw_worker *w)
{
        struct orch_list *p, *n;
        struct orch_hmap_iter it;
        struct orch_hmap_node *hn;

        w->stopping = true;
        uv_close((uv_handle_t *)&w->listener, on_handle_closed_noop);
        orch_list_foreach_safe (p, n, &w->clients) {
                struct client *c = orch_list_entry(p, struct client, link);

                if (c->x)
                        c->x->close_client = true;
                else if (client_in_message(c) || c->writes > 0)
                        client_finish(c);
                else
                        client_close(c);
        }
        for (hn = orch_hmap_first(&w->hosts, &it); hn; hn = orch_hmap_next(&w->hosts, &it))
                host_close_idle(container_of(hn, struct gw_host, hnode));
        uv_timer_start(&w->drain, on_drain_timeout, w->sh->lim.drain_timeout_ms, 0);
        uv_unref((uv_handle_t *)&w->drain);
        worker_maybe_done(w);
}

static void on_wake(uv_async_t *a)
{
        struct gw_worker *w = a->data;
        struct gw_table *t = atomic_exchange(&w->next_table, NULL);

        if (t) {
                if (w->stopping)
                        gw_table_unref(t);
                else
                        adopt_table(w, t);
        }
        if (atomic_load(&w->stop_requested) && !w->stopping)
                worker_begin_stop(w);
}

static void worker_main(void *arg)
{
        struct gw_worker *w = arg;

        uv_run(&w->loop, UV_RUN_DEFAULT);
        log_flush(w);
}

int gw_worker_new(struct gw_shared *sh, unsigned id, int listen_fd, struct gw_worker **ret)
{
        struct gw_worker *w = aligned_alloc(64, (sizeof(struct gw_worker) + 63) / 64 * 64);
        int r;

        if (!w) {
                close(listen_fd);
                return -ENOMEM;
        }
        memset(w, 0, sizeof *w);
        w->sh = sh;
        w->id = id;
        w->listen_fd = listen_fd;
        w->max_clients = (sh->lim.max_connections + sh->n_workers - 1) / sh->n_workers;
        orch_list_init(&w->clients);
        orch_list_init(&w->old_views);
        atomic_init(&w->next_table, NULL);
        atomic_init(&w->stop_requested, false);
        if (orch_random_bytes(&w->rng, sizeof w->rng) < 0 || w->rng == 0)
                w->rng = (uv_hrtime() | 1) * 0x9e3779b97f4a7c15ULL + id;
        r = uv_loop_init(&w->loop);
        if (r < 0) {
                close(listen_fd);
                free(w);
                return r;
        }
        w->loop.data = w;
        uv_tcp_init(&w->loop, &w->listener);
        uv_async_init(&w->loop, &w->wake, on_wake);
        uv_timer_init(&w->loop, &w->drain);
        w->wake.data = w->drain.data = w;
        if (sh->access_log) {
                uv_check_init(&w->loop, &w->flush);
                uv_check_start(&w->flush, on_flush);
                uv_unref((uv_handle_t *)&w->flush);
        }
        r = uv_tcp_open(&w->listener, listen_fd);
        if (r < 0)
                close(listen_fd);
        else
                r = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
        if (r < 0) {
                w->stopping = true;
                uv_close((uv_handle_t *)&w->listener, on_handle_closed_noop);
                worker_maybe_done(w);
                uv_run(&w->loop, UV_RUN_DEFAULT);
                uv_loop_close(&w->loop);
                free(w);
                return r;
        }
        *ret = w;
        return 0;
}

int gw_worker_start(struct gw_worker *w, struct gw_table *table)
{
        int r;

        adopt_table(w, gw_table_ref(table));
        r = uv_thread_create(&w->thread, worker_main, w);
        if (r < 0)
                return r;
        w->thread_started = true;
        return 0;
}

void gw_worker_publish(struct gw_worker *w, struct gw_table *table)
{
        struct gw_table *old = atomic_exchange(&w->next_table, gw_table_ref(table));

        /* a table the worker never picked up is superseded */
        gw_table_unref(old);
        uv_async_send(&w->wake);
}

void gw_worker_stop_and_join(struct gw_worker *w)
{
        if (!w->thread_started)
                return;
        atomic_store(&w->stop_requested, true);
        uv_async_send(&w->wake);
        uv_thread_join(&w->thread);
        w->thread_started = false;
}

void gw_worker_free(struct gw_worker *w)
{
        struct orch_list *p, *n;

        if (!w)
                return;
        if (!w->done) {
                /* never started (or start failed): stop here, on this thread */
                if (!w->stopping)
                        worker_begin_stop(w);
                uv_run(&w->loop, UV_RUN_DEFAULT);
        }
        orch_list_foreach_safe (p, n, &w->old_views) {
                struct view *v = orch_list_entry(p, struct view, link);
                orch_list_remove(&v->link);
                view_free(v);
        }
        if (w->cur)
                view_free(w->cur);
        w->cur = NULL;
        gw_table_unref(atomic_exchange(&w->next_table, NULL));
        orch_hmap_release(&w->hosts);
        while (w->spare) {
                struct exchange *x = w->spare;
                w->spare = x->next_spare;
                orch_buf_release(&x->head);
                free(x);
        }
        uv_loop_close(&w->loop);
        orch_buf_release(&w->scratch);
        log_flush(w);
        orch_buf_release(&w->log);
        free(w);
}
