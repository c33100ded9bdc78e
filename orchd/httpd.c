/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>

#include "httpd.h"
#include "net.h"
#include "json.h"
#include "list.h"
#include "log.h"
#include "util.h"
#include "banned.h"

/* One read buffer for the whole server: a read callback parses it (or copies what is left over)
 * before it returns, so idle connections hold no buffer at all. */
#define READ_BUFFER_SIZE (64U * 1024U)
/* Connections over the limit still being told 503; past this many they are closed without a word. */
#define MAX_REJECTING 64U
/* After the last answer on a connection: how long, and how much, to read and discard before closing.
 * Closing with unread input makes the kernel send RST, which can destroy the answer (an error for a
 * body still being sent, say) before the client reads it. */
#define LINGER_MS         2000U
#define LINGER_MAX_BYTES  (1024U * 1024U)
#define MAX_EXTRA_HEADERS 16U
/* A streaming handler that ignores orch_httpd_stream_congested() cannot make a client's backlog grow
 * past this many high-water marks: the client is dropped on the spot rather than after write_timeout_ms. */
#define STREAM_BACKLOG_MARKS 8U

enum req_state {
        REQ_READING,   /* head seen, body arriving */
        REQ_HANDLER,   /* the handler has it */
        REQ_STREAMING, /* the handler started a streamed answer */
        REQ_DONE,      /* answered; freed when the connection moves on */
};

struct orch_httpd_req {
        struct conn *conn;
        enum req_state state;
        const struct orch_http_head *head;
        struct orch_buf body;
        bool head_only;   /* HEAD: answers carry no body */
        bool chunked;     /* streamed answer framing (HTTP/1.1) */
        bool close_after; /* the answer says Connection: close */
        struct orch_http_header extra[MAX_EXTRA_HEADERS];
        size_t n_extra;
        orch_httpd_close_fn close_cb;
        void *close_userdata;
};

enum timer_kind {
        TIMER_NONE,
        TIMER_HEAD,   /* a request's head is due (absolute from its first byte, or from the connect) */
        TIMER_BODY,   /* the next piece of a body is due */
        TIMER_IDLE,   /* keep-alive: the next request is due */
        TIMER_RESUME, /* a deferred answer completed: go on with pipelined input, from the loop */
        TIMER_LINGER,
};

struct conn {
        struct orch_httpd *server;
        struct orch_list link;
        uv_tcp_t tcp;
        uv_timer_t timer;
        uv_timer_t write_timer;
        uv_shutdown_t shutdown;
        unsigned open_handles;
        enum timer_kind timer_kind;
        struct orch_http_parser *parser;
        struct orch_buf in; /* read but not parsed yet: pipelined requests waiting for their turn */
        struct orch_httpd_req *req;
        size_t writes_pending;
        size_t lingered;
        bool reading;
        bool processing; /* inside conn_parse(): answers need no resume */
        bool close_after_write;
        bool shutting_down;
        bool lingering;
        bool closing;
        bool rejecting;
        char peer[64];
};

struct orch_httpd {
        uv_loop_t *loop;
        uv_tcp_t listener;
        struct orch_httpd_config cfg;
        struct orch_list conns;
        size_t n_conns, n_rejecting;
        int port;
        bool closing, listener_closed, warned_full;
        void (*done)(void *userdata);
        void *done_userdata;
        time_t date_sec;
        char date[40];
        char readbuf[READ_BUFFER_SIZE];
};

struct write_req {
        uv_write_t w;
        struct conn *conn;
        char *data;
};

static void conn_close(struct conn *c);
static void conn_parse_pending(struct conn *c);

/* ---- helpers ---- */

static uint64_t pick(uint64_t v, uint64_t def)
{
        return v ? v : def;
}

static const char *http_date(struct orch_httpd *h)
{
        time_t now = time(NULL);
        struct tm tm;

        /* IMF-fixdate (RFC 9110 §5.6.7); the C locale's day and month names are the right ones. */
        if (now != h->date_sec && gmtime_r(&now, &tm)) {
                strftime(h->date, sizeof h->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
                h->date_sec = now;
        }
        return h->date;
}

static void format_peer(const struct sockaddr_storage *sa, char *buf, size_t size)
{
        char ip[INET6_ADDRSTRLEN] = "?";

        if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
                uv_ip6_name(a, ip, sizeof ip);
                snprintf(buf, size, "[%s]:%u", ip, ntohs(a->sin6_port));
        } else if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
                uv_ip4_name(a, ip, sizeof ip);
                snprintf(buf, size, "%s:%u", ip, ntohs(a->sin_port));
        } else {
                snprintf(buf, size, "unknown");
        }
}

/* A JSON string for an error message: jansson refuses invalid UTF-8, so such bytes become '?'. */
static json_t *error_json(const char *msg)
{
        _cleanup_(freep) char *copy = strdup(msg);
        size_t len;
        ssize_t bad;

        if (!copy)
                return NULL;
        len = strlen(copy);
        while ((bad = orch_utf8_invalid_offset(copy, len)) >= 0)
                copy[bad] = '?';
        return json_pack("{s:s}", "error", copy);
}

static void req_free(struct orch_httpd_req *req)
{
        if (!req)
                return;
        orch_buf_release(&req->body);
        for (size_t i = 0; i < req->n_extra; i++) {
                free((char *)req->extra[i].name);
                free((char *)req->extra[i].value);
        }
        free(req);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t);

static void conn_arm(struct conn *c, enum timer_kind kind, uint64_t ms)
{
        if (c->closing)
                return;
        c->timer_kind = kind;
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void conn_disarm(struct conn *c)
{
        c->timer_kind = TIMER_NONE;
        uv_timer_stop(&c->timer);
}

/* ---- writing ---- */

static bool conn_congested(const struct conn *c)
{
        return c->tcp.write_queue_size > c->server->cfg.write_high_water;
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
        struct conn *c = container_of((uv_tcp_t *)handle, struct conn, tcp);

        buf->base = c->server->readbuf;
        buf->len = sizeof c->server->readbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_set_reading(struct conn *c)
{
        bool want;

        if (c->closing)
                return;
        if (c->lingering)
                want = true;
        else
                want = !c->close_after_write && !c->rejecting && !conn_congested(c) &&
                       c->in.len < c->server->cfg.max_header_bytes + READ_BUFFER_SIZE;
        if (want == c->reading)
                return;
        if (want && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
                conn_close(c);
                return;
        }
        if (!want)
                uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = want;
}

static void on_shutdown(uv_shutdown_t *sh, int status)
{
        struct conn *c = container_of(sh, struct conn, shutdown);

        if (c->closing)
                return;
        if (status < 0) {
                conn_close(c);
                return;
        }
        c->lingering = true;
        conn_arm(c, TIMER_LINGER, LINGER_MS);
        conn_set_reading(c);
}

/* Everything is written and nothing more will be: half-close, then linger. */
static void conn_finish_writing(struct conn *c)
{
        if (c->shutting_down || c->closing)
                return;
        c->shutting_down = true;
        conn_disarm(c);
        uv_timer_stop(&c->write_timer);
        if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
                conn_close(c);
}

static void on_write_timeout(uv_timer_t *t)
{
        struct conn *c = container_of(t, struct conn, write_timer);

        if (!conn_congested(c))
                return;
        log_debug("http: dropping %s: %zu unsent bytes for %" PRIu64 " ms", c->peer, c->tcp.write_queue_size,
                  c->server->cfg.write_timeout_ms);
        conn_close(c);
}

static void on_write(uv_write_t *w, int status)
{
        struct write_req *wr = container_of(w, struct write_req, w);
        struct conn *c = wr->conn;

        free(wr->data);
        free(wr);
        c->writes_pending--;
        if (c->closing)
                return;
        if (status < 0) {
                log_debug("http: write to %s: %s", c->peer, uv_strerror(status));
                conn_close(c);
                return;
        }
        if (!conn_congested(c)) {
                uv_timer_stop(&c->write_timer);
                /* Pipelined requests waited for the client to read its answers. A write callback never runs
                 * inside a handler's call, so parsing (and calling handlers) from here is safe. */
                if (!c->close_after_write && !c->shutting_down) {
                        if (c->in.len && (!c->req || c->req->state == REQ_DONE))
                                conn_parse_pending(c);
                        else
                                conn_set_reading(c);
                }
        }
        if (c->close_after_write && c->writes_pending == 0)
                conn_finish_writing(c);
}

/* Queues out's bytes (taking them). -EPIPE when the connection is gone or the write fails. */
static int conn_write(struct conn *c, struct orch_buf *out)
{
        struct write_req *wr;
        uv_buf_t b;
        size_t len = out->len;
        int r;

        if (out->oom) {
                orch_buf_release(out);
                return -ENOMEM;
        }
        if (c->closing || c->shutting_down) {
                orch_buf_release(out);
                return -EPIPE;
        }
        if (len == 0) {
                orch_buf_release(out);
                return 0;
        }
        if (len > UINT32_MAX) {
                orch_buf_release(out);
                return -E2BIG;
        }
        wr = calloc(1, sizeof *wr);
        if (!wr) {
                orch_buf_release(out);
                return -ENOMEM;
        }
        wr->conn = c;
        wr->data = orch_buf_steal(out);
        b = uv_buf_init(wr->data, (unsigned)len);
        r = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
        if (r < 0) {
                free(wr->data);
                free(wr);
                conn_close(c);
                return -EPIPE;
        }
        c->writes_pending++;
        if (conn_congested(c)) {
                if (!uv_is_active((uv_handle_t *)&c->write_timer))
                        uv_timer_start(&c->write_timer, on_write_timeout, c->server->cfg.write_timeout_ms,
                                       0);
                conn_set_reading(c);
        }
        return 0;
}

/* An answer from the server itself (parse errors, timeouts, limits): JSON, then close. */
static void conn_send_error(struct conn *c, int status, const char *reason)
{
        struct orch_http_header hs[3];
        _cleanup_json_ json_t *j = error_json(reason);
        _cleanup_(freep) char *body = j ? orch_json_dumps_compact(j) : NULL;
        struct orch_buf out = {0};
        size_t n = 0;

        hs[n++] = (struct orch_http_header){"Content-Type", "application/json"};
        hs[n++] = (struct orch_http_header){"Date", http_date(c->server)};
        hs[n++] = (struct orch_http_header){"Connection", "close"};
        if (!body)
                body = strdup("{\"error\":\"internal error\"}");
        if (!body || orch_http_response_head(&out, status, hs, n, (int64_t)strlen(body) + 1) < 0) {
                orch_buf_release(&out);
                conn_close(c);
                return;
        }
        orch_buf_puts(&out, body);
        orch_buf_putc(&out, '\n');
        conn_disarm(c);
        /* The request being read never reached a handler. */
        if (c->req && c->req->state == REQ_READING) {
                req_free(c->req);
                c->req = NULL;
        }
        c->close_after_write = true;
        conn_set_reading(c);
        if (conn_write(c, &out) < 0)
                conn_close(c);
}

/* ---- the request cycle ---- */

static void conn_next_request(struct conn *c)
{
        req_free(c->req);
        c->req = NULL;
        orch_http_parser_next(c->parser);
        if (c->close_after_write || c->closing)
                return;
        conn_arm(c, TIMER_IDLE, c->server->cfg.idle_timeout_ms);
}

static void req_answered(struct orch_httpd_req *req)
{
        struct conn *c = req->conn;

        req->state = REQ_DONE;
        if (req->close_after) {
                c->close_after_write = true;
                conn_set_reading(c);
                if (c->writes_pending == 0)
                        conn_finish_writing(c);
                return;
        }
        /* Inside conn_parse() the loop moves on by itself; a deferred answer resumes from the event loop,
         * never from inside the handler's own call (it may be iterating its waiters). */
        if (!c->processing)
                conn_arm(c, TIMER_RESUME, 0);
}

static void conn_dispatch(struct conn *c, bool upgrade)
{
        struct orch_httpd_req *req = c->req;
        struct orch_httpd *h = c->server;

        conn_disarm(c);
        if (upgrade && streq(req->head->method, "CONNECT")) {
                conn_send_error(c, 501, "CONNECT is not supported");
                return;
        }
        /* Any other upgrade is ignored (RFC 9110 §7.8): the answer is plain HTTP, and so is what follows. */
        /* Handlers get a string even for an empty body. */
        if (orch_buf_put(&req->body, "", 0) < 0) {
                conn_send_error(c, 503, "out of memory");
                return;
        }
        req->state = REQ_HANDLER;
        h->cfg.handler(req, h->cfg.userdata);
}

static bool conn_handle_event(struct conn *c, const struct orch_http_event *ev)
{
        struct orch_httpd *h = c->server;
        const struct orch_http_head *head;

        switch (ev->type) {
        case ORCH_HTTP_EVENT_HEAD:
                head = orch_http_parser_head(c->parser);
                c->req = calloc(1, sizeof *c->req);
                if (!c->req) {
                        conn_send_error(c, 503, "out of memory");
                        return false;
                }
                c->req->conn = c;
                c->req->head = head;
                c->req->head_only = streq(head->method, "HEAD");
                if (head->chunked || head->content_length > 0) {
                        conn_arm(c, TIMER_BODY, h->cfg.body_timeout_ms);
                        /* Ask for the body only when it will be accepted; otherwise the 413 follows. */
                        if (head->expect_continue &&
                            (!head->has_content_length || head->content_length <= h->cfg.max_body_bytes)) {
                                struct orch_buf out = {0};
                                orch_buf_puts(&out, "HTTP/1.1 100 Continue\r\n\r\n");
                                conn_write(c, &out);
                        }
                }
                return true;
        case ORCH_HTTP_EVENT_BODY:
                if (orch_buf_put(&c->req->body, ev->body, ev->body_len) < 0) {
                        conn_send_error(c, 503, "out of memory");
                        return false;
                }
                conn_arm(c, TIMER_BODY, h->cfg.body_timeout_ms);
                return true;
        case ORCH_HTTP_EVENT_COMPLETE:
        case ORCH_HTTP_EVENT_UPGRADE:
                conn_dispatch(c, ev->type == ORCH_HTTP_EVENT_UPGRADE);
                return true;
        case ORCH_HTTP_EVENT_ERROR:
                log_debug("http: %s: %d %s", c->peer, ev->status, ev->reason);
                conn_send_error(c, ev->status, ev->reason);
                return false;
        default:
                return false;
        }
}

/* Parses data until a request goes to its handler or the input runs out; returns the bytes used. */
static size_t conn_parse(struct conn *c, const char *data, size_t len)
{
        size_t off = 0;
        bool was_in_message;

        c->processing = true;
        for (;;) {
                struct orch_http_event ev;
                int r;

                if (c->closing || c->close_after_write)
                        break;
                if (c->req && c->req->state == REQ_DONE)
                        conn_next_request(c);
                if (c->req && c->req->state != REQ_READING)
                        break;
                /* Pipelined answers pile up on a client that does not read them: wait for it. */
                if (conn_congested(c))
                        break;
                was_in_message = orch_http_parser_in_message(c->parser);
                r = orch_http_parser_execute(c->parser, data + off, len - off, &ev);
                if (r < 0) {
                        conn_send_error(c, 503, "out of memory");
                        break;
                }
                off += ev.consumed;
                /* The head's deadline runs from the first byte of the request, whatever comes later. */
                if (!was_in_message && orch_http_parser_in_message(c->parser) && !c->req &&
                    c->timer_kind != TIMER_HEAD)
                        conn_arm(c, TIMER_HEAD, c->server->cfg.header_timeout_ms);
                if (ev.type == ORCH_HTTP_EVENT_NEED_MORE)
                        break;
                if (!conn_handle_event(c, &ev))
                        break;
        }
        c->processing = false;
        return off;
}

static void conn_parse_pending(struct conn *c)
{
        size_t used = conn_parse(c, c->in.data, c->in.len);

        orch_buf_consume(&c->in, used);
        /* Parsing stops when a request is being answered: if the buffer was full, reading stopped. */
        conn_set_reading(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct conn *c = container_of((uv_tcp_t *)s, struct conn, tcp);

        if (c->closing || nread == 0)
                return;
        if (nread < 0) {
                /* EOF or an error. A request still with its handler: the client is gone. Answers still
                 * queued for a client that half-closed after its last request: finish them first. */
                if (nread == UV_EOF && !c->lingering && c->writes_pending > 0 &&
                    (!c->req || c->req->state == REQ_DONE)) {
                        c->close_after_write = true;
                        conn_set_reading(c);
                        return;
                }
                conn_close(c);
                return;
        }
        if (c->lingering) {
                c->lingered += (size_t)nread;
                if (c->lingered > LINGER_MAX_BYTES)
                        conn_close(c);
                return;
        }
        if (c->in.len == 0) {
                size_t used = conn_parse(c, buf->base, (size_t)nread);

                if (used < (size_t)nread && !c->closing && !c->close_after_write &&
                    orch_buf_put(&c->in, buf->base + used, (size_t)nread - used) < 0)
                        conn_send_error(c, 503, "out of memory");
        } else {
                if (orch_buf_put(&c->in, buf->base, (size_t)nread) < 0) {
                        conn_send_error(c, 503, "out of memory");
                        return;
                }
                conn_parse_pending(c);
        }
        conn_set_reading(c);
}

static void on_timer(uv_timer_t *t)
{
        struct conn *c = container_of(t, struct conn, timer);
        enum timer_kind kind = c->timer_kind;
        char msg[96];

        c->timer_kind = TIMER_NONE;
        switch (kind) {
        case TIMER_HEAD:
                /* Nothing at all since the connect or the last answer: just close. */
                if (!orch_http_parser_in_message(c->parser)) {
                        conn_close(c);
                        return;
                }
                snprintf(msg, sizeof msg, "request head not complete within %" PRIu64 " ms",
                         c->server->cfg.header_timeout_ms);
                conn_send_error(c, 408, msg);
                return;
        case TIMER_BODY:
                snprintf(msg, sizeof msg, "no request body data for %" PRIu64 " ms",
                         c->server->cfg.body_timeout_ms);
                conn_send_error(c, 408, msg);
                return;
        case TIMER_IDLE:
        case TIMER_LINGER:
                conn_close(c);
                return;
        case TIMER_RESUME:
                conn_parse_pending(c);
                return;
        case TIMER_NONE:
                return;
        }
}

/* ---- connections ---- */

static void server_maybe_done(struct orch_httpd *h)
{
        void (*done)(void *) = h->done;
        void *ud = h->done_userdata;

        if (!h->closing || !h->listener_closed || !orch_list_empty(&h->conns))
                return;
        free(h);
        if (done)
                done(ud);
}

static void conn_free(struct conn *c)
{
        struct orch_httpd *h = c->server;
        struct orch_httpd_req *req = c->req;

        /* The handler still holds the request: this is where it learns that the client is gone. Never
         * inside one of its own calls: this runs from a libuv close callback. */
        if (req && (req->state == REQ_HANDLER || req->state == REQ_STREAMING) && req->close_cb)
                req->close_cb(req, req->close_userdata);
        req_free(req);
        orch_http_parser_free(c->parser);
        orch_buf_release(&c->in);
        orch_list_remove(&c->link);
        h->n_conns--;
        if (c->rejecting)
                h->n_rejecting--;
        free(c);
        server_maybe_done(h);
}

static void on_handle_close(uv_handle_t *handle)
{
        struct conn *c = handle->data;

        if (--c->open_handles == 0)
                conn_free(c);
}

static void conn_close(struct conn *c)
{
        if (c->closing)
                return;
        c->closing = true;
        c->timer_kind = TIMER_NONE;
        uv_close((uv_handle_t *)&c->tcp, on_handle_close);
        uv_close((uv_handle_t *)&c->timer, on_handle_close);
        uv_close((uv_handle_t *)&c->write_timer, on_handle_close);
}

static void conn_reject(struct conn *c)
{
        static const char body[] = "{\"error\":\"too many connections\"}\n";
        struct orch_httpd *h = c->server;
        struct orch_http_header hs[] = {
                {"Content-Type", "application/json"},
                {"Retry-After", "1"},
                {"Date", http_date(h)},
                {"Connection", "close"},
        };
        struct orch_buf out = {0};

        if (!h->warned_full) {
                log_warn("http: %u connections open, refusing more with 503 (max_connections)",
                         h->cfg.max_connections);
                h->warned_full = true;
        }
        if (h->n_rejecting >= MAX_REJECTING) {
                conn_close(c);
                return;
        }
        c->rejecting = true;
        h->n_rejecting++;
        c->close_after_write = true;
        if (orch_http_response_head(&out, 503, hs, ELEMENTSOF(hs), (int64_t)sizeof body - 1) < 0 ||
            orch_buf_put(&out, body, sizeof body - 1) < 0) {
                orch_buf_release(&out);
                conn_close(c);
                return;
        }
        if (conn_write(c, &out) < 0)
                conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
        struct orch_httpd *h = container_of((uv_tcp_t *)listener, struct orch_httpd, listener);
        struct orch_http_limits limits = {
                .max_header_bytes = h->cfg.max_header_bytes,
                .max_headers = h->cfg.max_headers,
                .max_body_bytes = h->cfg.max_body_bytes,
        };
        struct sockaddr_storage sa;
        int salen = sizeof sa;
        struct conn *c;

        if (status < 0) {
                log_warn("http: accept: %s", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
                log_error("http: out of memory accepting a connection");
                return;
        }
        c->server = h;
        orch_list_append(&h->conns, &c->link);
        h->n_conns++;
        uv_tcp_init(h->loop, &c->tcp);
        uv_timer_init(h->loop, &c->timer);
        uv_timer_init(h->loop, &c->write_timer);
        c->tcp.data = c->timer.data = c->write_timer.data = c;
        c->open_handles = 3;
        if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
                conn_close(c);
                return;
        }
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0)
                format_peer(&sa, c->peer, sizeof c->peer);
        else
                snprintf(c->peer, sizeof c->peer, "unknown");
        if (h->n_conns - h->n_rejecting > h->cfg.max_connections) {
                conn_reject(c);
                return;
        }
        if (h->warned_full && h->n_conns - h->n_rejecting < h->cfg.max_connections)
                h->warned_full = false;
        if (orch_http_parser_new(ORCH_HTTP_REQUEST, &limits, &c->parser) < 0) {
                conn_close(c);
                return;
        }
        /* Answers are small and whole: do not let Nagle hold their last segment back. */
        uv_tcp_nodelay(&c->tcp, 1);
        conn_arm(c, TIMER_HEAD, h->cfg.header_timeout_ms);
        conn_set_reading(c);
}

/* ---- the server ---- */

static void free_on_close(uv_handle_t *handle)
{
        free(container_of((uv_tcp_t *)handle, struct orch_httpd, listener));
}

int orch_httpd_new(uv_loop_t *loop, const struct orch_httpd_config *config, struct orch_httpd **ret)
{
        struct sockaddr_storage sa, bound;
        int salen = sizeof bound;
        struct orch_httpd *h;
        int r;

        if (!config->handler)
                return -EINVAL;
        r = orch_parse_listen(config->listen, &sa, NULL);
        if (r < 0)
                return r;
        /* libuv writes with write(2), not send(MSG_NOSIGNAL): a write that races a client's reset would
         * raise SIGPIPE and kill the daemon. Leave alone a disposition someone already chose. */
        {
                struct sigaction old_sa;

                if (sigaction(SIGPIPE, NULL, &old_sa) == 0 && old_sa.sa_handler == SIG_DFL)
                        signal(SIGPIPE, SIG_IGN);
        }
        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->loop = loop;
        h->cfg = *config;
        h->cfg.max_connections = (unsigned)pick(config->max_connections, ORCH_HTTPD_DEFAULT_MAX_CONNECTIONS);
        h->cfg.max_header_bytes = pick(config->max_header_bytes, ORCH_HTTP_DEFAULT_MAX_HEADER_BYTES);
        h->cfg.max_headers = pick(config->max_headers, ORCH_HTTP_DEFAULT_MAX_HEADERS);
        h->cfg.max_body_bytes = pick(config->max_body_bytes, ORCH_HTTP_DEFAULT_MAX_BODY_BYTES);
        h->cfg.header_timeout_ms = pick(config->header_timeout_ms, ORCH_HTTPD_DEFAULT_HEADER_TIMEOUT_MS);
        h->cfg.body_timeout_ms = pick(config->body_timeout_ms, ORCH_HTTPD_DEFAULT_BODY_TIMEOUT_MS);
        h->cfg.idle_timeout_ms = pick(config->idle_timeout_ms, ORCH_HTTPD_DEFAULT_IDLE_TIMEOUT_MS);
        h->cfg.write_timeout_ms = pick(config->write_timeout_ms, ORCH_HTTPD_DEFAULT_WRITE_TIMEOUT_MS);
        h->cfg.write_high_water = pick(config->write_high_water, ORCH_HTTPD_DEFAULT_WRITE_HIGH_WATER);
        h->cfg.listen = NULL;
        orch_list_init(&h->conns);

        r = uv_tcp_init(loop, &h->listener);
        if (r < 0) {
                free(h);
                return r;
        }
        r = uv_tcp_bind(&h->listener, (const struct sockaddr *)&sa, 0);
        if (r == 0)
                r = uv_listen((uv_stream_t *)&h->listener, 511, on_connection);
        if (r == 0)
                r = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &salen);
        if (r < 0) {
                /* The handle's memory must outlive its close: the server goes in the close callback. */
                uv_close((uv_handle_t *)&h->listener, free_on_close);
                return r;
        }
        h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
        *ret = h;
        return 0;
}

static void on_listener_close(uv_handle_t *handle)
{
        struct orch_httpd *h = container_of((uv_tcp_t *)handle, struct orch_httpd, listener);

        h->listener_closed = true;
        server_maybe_done(h);
}

void orch_httpd_free(struct orch_httpd *h, void (*done)(void *userdata), void *userdata)
{
        struct orch_list *pos, *tmp;

        if (!h || h->closing)
                return;
        h->closing = true;
        h->done = done;
        h->done_userdata = userdata;
        orch_list_foreach_safe (pos, tmp, &h->conns)
                conn_close(orch_list_entry(pos, struct conn, link));
        uv_close((uv_handle_t *)&h->listener, on_listener_close);
}

int orch_httpd_port(const struct orch_httpd *h)
{
        return h->port;
}

size_t orch_httpd_connections(const struct orch_httpd *h)
{
        return h->n_conns - h->n_rejecting;
}

/* ---- requests ---- */

const struct orch_http_head *orch_httpd_req_head(const struct orch_httpd_req *req)
{
        return req->head;
}

const char *orch_httpd_req_body(const struct orch_httpd_req *req, size_t *ret_len)
{
        if (ret_len)
                *ret_len = req->body.len;
        return req->body.data;
}

const char *orch_httpd_req_peer(const struct orch_httpd_req *req)
{
        return req->conn->peer;
}

int orch_httpd_req_query(const struct orch_httpd_req *req, const char *name, char **ret)
{
        return orch_http_query_get(req->head->query, name, ret);
}

void orch_httpd_req_set_close_cb(struct orch_httpd_req *req, orch_httpd_close_fn cb, void *userdata)
{
        req->close_cb = cb;
        req->close_userdata = userdata;
}

int orch_httpd_req_add_header(struct orch_httpd_req *req, const char *name, const char *value)
{
        static const char *const reserved[] = {"Content-Length", "Transfer-Encoding", "Connection", "Date",
                                               "Content-Type"};
        char *n, *v;

        if (req->state != REQ_HANDLER)
                return -EALREADY;
        if (!orch_http_token_valid(name) || !orch_http_field_value_valid(value))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
                if (strcasecmp(name, reserved[i]) == 0)
                        return -EINVAL;
        if (req->n_extra >= MAX_EXTRA_HEADERS)
                return -ENOSPC;
        n = strdup(name);
        v = strdup(value);
        if (!n || !v) {
                free(n);
                free(v);
                return -ENOMEM;
        }
        req->extra[req->n_extra++] = (struct orch_http_header){n, v};
        return 0;
}

static int req_writable(const struct orch_httpd_req *req, enum req_state expected)
{
        if (!req)
                return -EINVAL;
        if (req->state != expected)
                return req->state == REQ_DONE || req->state == REQ_STREAMING ? -EALREADY : -EINVAL;
        if (req->conn->closing || req->conn->shutting_down)
                return -EPIPE;
        return 0;
}

/* The head of an answer: the handler's fields, then Content-Type, Date and Connection. */
static int req_head(struct orch_httpd_req *req, struct orch_buf *out, int status, const char *content_type,
                    int64_t body_length)
{
        struct orch_http_header hs[MAX_EXTRA_HEADERS + 3];
        size_t n = 0;
        bool close;

        if (!req->head->keep_alive || req->conn->server->closing)
                req->close_after = true;
        close = req->close_after;

        for (size_t i = 0; i < req->n_extra; i++)
                hs[n++] = req->extra[i];
        if (content_type)
                hs[n++] = (struct orch_http_header){"Content-Type", content_type};
        hs[n++] = (struct orch_http_header){"Date", http_date(req->conn->server)};
        if (close)
                hs[n++] = (struct orch_http_header){"Connection", "close"};
        else if (req->head->version_minor == 0)
                hs[n++] = (struct orch_http_header){"Connection", "keep-alive"};
        return orch_http_response_head(out, status, hs, n, body_length);
}

int orch_httpd_respond(struct orch_httpd_req *req, int status, const char *content_type, const void *body,
                       size_t len)
{
        struct orch_buf out = {0};
        bool no_body = status == 204 || status == 304;
        int r;

        r = req_writable(req, REQ_HANDLER);
        if (r < 0)
                return r;
        if (status < 200 || status > 599 || (no_body && len > 0))
                return -EINVAL;
        r = req_head(req, &out, status, content_type, no_body ? ORCH_HTTP_BODY_NONE : (int64_t)len);
        if (r < 0) {
                orch_buf_release(&out);
                return r;
        }
        if (!req->head_only && len > 0)
                orch_buf_put(&out, body, len);
        r = conn_write(req->conn, &out);
        req_answered(req);
        return r;
}

int orch_httpd_respond_json(struct orch_httpd_req *req, int status, const json_t *body)
{
        _cleanup_(freep) char *s = orch_json_dumps_compact(body);
        struct orch_buf b = {0};
        int r;

        if (!s)
                return -ENOMEM;
        orch_buf_puts(&b, s);
        orch_buf_putc(&b, '\n');
        if (b.oom) {
                orch_buf_release(&b);
                return -ENOMEM;
        }
        r = orch_httpd_respond(req, status, "application/json", b.data, b.len);
        orch_buf_release(&b);
        return r;
}

int orch_httpd_respond_error(struct orch_httpd_req *req, int status, const char *fmt, ...)
{
        _cleanup_(freep) char *msg = NULL;
        _cleanup_json_ json_t *j = NULL;
        struct orch_buf b = {0};
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        msg = orch_buf_steal(&b);
        if (!msg)
                return -ENOMEM;
        j = error_json(msg);
        if (!j)
                return -ENOMEM;
        return orch_httpd_respond_json(req, status, j);
}

int orch_httpd_stream_start(struct orch_httpd_req *req, int status, const char *content_type)
{
        struct orch_buf out = {0};
        int r;

        r = req_writable(req, REQ_HANDLER);
        if (r < 0)
                return r;
        if (status < 200 || status > 599 || status == 204 || status == 304)
                return -EINVAL;
        /* HTTP/1.0 has no chunked coding: the body ends when the connection does. */
        req->chunked = req->head->version_minor == 1;
        if (!req->chunked)
                req->close_after = true;
        r = req_head(req, &out, status, content_type,
                     req->chunked ? ORCH_HTTP_BODY_CHUNKED : ORCH_HTTP_BODY_NONE);
        if (r < 0) {
                orch_buf_release(&out);
                return r;
        }
        req->state = REQ_STREAMING;
        return conn_write(req->conn, &out);
}

int orch_httpd_stream_write(struct orch_httpd_req *req, const void *data, size_t len)
{
        struct orch_buf out = {0};
        int r;

        r = req_writable(req, REQ_STREAMING);
        if (r < 0)
                return r;
        if (req->head_only || len == 0)
                return 0;
        if (req->conn->tcp.write_queue_size >
            STREAM_BACKLOG_MARKS * req->conn->server->cfg.write_high_water) {
                log_debug("http: dropping %s: %zu bytes of a stream not taken", req->conn->peer,
                          req->conn->tcp.write_queue_size);
                conn_close(req->conn);
                return -EPIPE;
        }
        if (req->chunked)
                r = orch_http_chunk(&out, data, len);
        else
                r = orch_buf_put(&out, data, len);
        if (r < 0) {
                orch_buf_release(&out);
                return r;
        }
        return conn_write(req->conn, &out);
}

bool orch_httpd_stream_congested(const struct orch_httpd_req *req)
{
        return conn_congested(req->conn);
}

int orch_httpd_stream_end(struct orch_httpd_req *req)
{
        struct orch_buf out = {0};
        int r;

        r = req_writable(req, REQ_STREAMING);
        if (r < 0)
                return r;
        if (req->chunked && !req->head_only) {
                r = orch_http_chunk_end(&out);
                if (r >= 0)
                        r = conn_write(req->conn, &out);
                else
                        orch_buf_release(&out);
        }
        req_answered(req);
        return r;
}
