/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "demo-http.h"
#include "banned.h"

/* Above this much output queued to a peer we stop reading from it (and parsing its pipelined
 * requests) until it catches up: a client that never reads cannot make us buffer without bound. */
#define OUT_HIGH_WATER     (256u * 1024)
#define LINGER_TIMEOUT_MS  5000u          /* to flush the last response before closing */
#define LINGER_MAX_DISCARD (1024u * 1024) /* what a closing connection still reads and drops */
#define READ_BUF_SIZE      (16u * 1024)

enum conn_state {
        CONN_READING,  /* waiting for (the rest of) a request */
        CONN_HANDLING, /* a complete request is with the handler */
        CONN_RAW,      /* upgraded: bytes in both directions */
        CONN_CLOSING,  /* flushing the last response, or closed */
};

struct conn {
        uv_tcp_t tcp;
        uv_timer_t timer; /* request timeout, raw idle timeout, linger timeout */
        uv_timer_t later; /* demo_http_defer, and resuming work outside the caller's stack */
        uv_shutdown_t shutdown;
        unsigned open_handles;
        struct demo_http_server *server;
        struct conn *prev, *next;

        enum conn_state state;
        llhttp_t parser;
        struct orch_buf in; /* received, not parsed yet (pipelined requests wait here) */
        struct demo_http_request req;
        struct orch_buf target, field, value;
        size_t head_bytes;
        int reject_status; /* why a parser callback refused the request */
        bool keep_alive;
        bool paused_upgrade; /* llhttp stopped at an Upgrade request */
        bool streaming;      /* between respond_start and respond_end */
        bool stream_body;    /* the streamed answer has a body (not HEAD, not 204/304) */
        bool chunked;
        bool processing; /* inside conn_process: answers continue its loop instead of recursing */
        bool reading;
        bool eof; /* the peer will send nothing more */
        bool lingering;
        bool shut; /* our side is shut down: everything queued was sent */
        size_t discarded;
        bool closed;
        demo_http_defer_cb defer_cb;
        demo_http_raw_cb raw_cb;
        char rbuf[READ_BUF_SIZE];
};

struct demo_http_server {
        uv_tcp_t tcp;
        demo_http_handler handler;
        void *userdata;
        char *name;
        char *headers;
        int port;
        struct conn *conns;
        size_t n_conns;
        bool closing;
        bool listener_closed;
};

struct write_req {
        uv_write_t req;
        char *data;
};

const char *demo_http_status_reason(int status)
{
        static const struct {
                int status;
                const char *reason;
        } table[] = {
                {100, "Continue"},
                {101, "Switching Protocols"},
                {200, "OK"},
                {201, "Created"},
                {202, "Accepted"},
                {204, "No Content"},
                {206, "Partial Content"},
                {301, "Moved Permanently"},
                {302, "Found"},
                {303, "See Other"},
                {304, "Not Modified"},
                {307, "Temporary Redirect"},
                {308, "Permanent Redirect"},
                {400, "Bad Request"},
                {401, "Unauthorized"},
                {403, "Forbidden"},
                {404, "Not Found"},
                {405, "Method Not Allowed"},
                {408, "Request Timeout"},
                {409, "Conflict"},
                {410, "Gone"},
                {411, "Length Required"},
                {413, "Content Too Large"},
                {414, "URI Too Long"},
                {415, "Unsupported Media Type"},
                {417, "Expectation Failed"},
                {418, "I'm a teapot"},
                {422, "Unprocessable Content"},
                {425, "Too Early"},
                {426, "Upgrade Required"},
                {429, "Too Many Requests"},
                {431, "Request Header Fields Too Large"},
                {500, "Internal Server Error"},
                {501, "Not Implemented"},
                {502, "Bad Gateway"},
                {503, "Service Unavailable"},
                {504, "Gateway Timeout"},
                {505, "HTTP Version Not Supported"},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].status == status)
                        return table[i].reason;
        return "Unknown";
}

/* 1xx, 204 and 304 answers never carry a body, nor a Content-Length. */
static bool status_has_body(int status)
{
        return status >= 200 && status != 204 && status != 304;
}

const char *demo_http_request_header(const struct demo_http_request *req, const char *name)
{
        for (size_t i = 0; i < req->n_headers; i++)
                if (strcasecmp(req->headers[i].name, name) == 0)
                        return req->headers[i].value;
        return NULL;
}

int demo_http_query_param(const struct demo_http_request *req, const char *name, char *buf, size_t size)
{
        size_t nl = strlen(name);

        for (const char *p = req->query; p && *p;) {
                const char *end = strchrnul(p, '&');

                if ((size_t)(end - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
                        size_t vl = (size_t)(end - p) - nl - 1;

                        if (vl >= size)
                                return -ENOBUFS;
                        memcpy(buf, p + nl + 1, vl);
                        buf[vl] = '\0';
                        return 0;
                }
                p = *end ? end + 1 : end;
        }
        return -ENOENT;
}

/* ---- connections ---- */

static void conn_process(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);
static void on_later(uv_timer_t *t);

/* Frees what the request holds; the peer address belongs to the connection and stays. */
static void request_clear(struct demo_http_request *req)
{
        for (size_t i = 0; i < req->n_headers; i++) {
                free(req->headers[i].name);
                free(req->headers[i].value);
        }
        free(req->headers);
        free(req->target);
        free(req->path);
        orch_buf_release(&req->body);
        req->headers = NULL;
        req->n_headers = 0;
        req->target = req->path = NULL;
        req->query = req->method = NULL;
        req->http_major = req->http_minor = 0;
        req->userdata = NULL;
        req->on_abort = NULL;
}

static void server_maybe_free(struct demo_http_server *s)
{
        if (!s->closing || !s->listener_closed || s->conns)
                return;
        free(s->name);
        free(s->headers);
        free(s);
}

static void on_conn_closed(uv_handle_t *h)
{
        struct conn *c = h->data;
        struct demo_http_server *s = c->server;

        if (--c->open_handles > 0)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_conns--;

        request_clear(&c->req);
        orch_buf_release(&c->in);
        orch_buf_release(&c->target);
        orch_buf_release(&c->field);
        orch_buf_release(&c->value);
        free(c);
        server_maybe_free(s);
}

static void conn_close(struct conn *c)
{
        enum conn_state was = c->state;

        if (c->closed)
                return;
        c->closed = true;
        c->state = CONN_CLOSING;
        /* The handler still owns the request: let it cancel what it started for it. */
        if (was == CONN_HANDLING && c->req.on_abort)
                c->req.on_abort(&c->req);
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        uv_close((uv_handle_t *)&c->timer, on_conn_closed);
        uv_close((uv_handle_t *)&c->later, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
        struct conn *c = container_of(req, struct conn, shutdown);

        /* Otherwise wait for the peer to close its side (see conn_linger). */
        if (status < 0 || c->eof)
                conn_close(c);
        else
                c->shut = true;
}

/* Whatever the timer was waiting for (a request, traffic, the last flush) did not come. */
static void on_timeout(uv_timer_t *t)
{
        conn_close(container_of(t, struct conn, timer));
}

static void conn_update_reading(struct conn *c)
{
        bool want;

        if (c->closed)
                return;
        if (c->lingering)
                want = !c->eof;
        else
                want = (c->state == CONN_READING || c->state == CONN_RAW) &&
                       c->tcp.write_queue_size <= OUT_HIGH_WATER;
        if (want && !c->reading) {
                if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
                        conn_close(c);
                        return;
                }
                c->reading = true;
        } else if (!want && c->reading) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading = false;
        }
}

/*
 * Closes once what is queued has been written (uv_close would discard it). Closing a socket
 * with unread input makes the kernel answer with a reset, which can destroy the answer before
 * the client reads it (a 413 or 431 sent while the client is still sending, say): so shut down
 * our side, then read and drop what still comes until the peer closes, as HTTP servers do
 * ("lingering close"), within a time and byte budget.
 */
static void conn_linger(struct conn *c)
{
        if (c->closed || c->lingering)
                return;
        c->lingering = true;
        c->state = CONN_CLOSING;
        uv_timer_stop(&c->later);
        uv_timer_start(&c->timer, on_timeout, LINGER_TIMEOUT_MS, 0);
        if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
                conn_close(c);
                return;
        }
        conn_update_reading(c);
}

static void on_write(uv_write_t *req, int status)
{
        struct write_req *w = container_of(req, struct write_req, req);
        struct conn *c = req->handle->data;

        free(w->data);
        free(w);
        if (status < 0) {
                conn_close(c);
                return;
        }
        if (c->state == CONN_READING)
                conn_process(c);
        else if (c->state == CONN_RAW)
                conn_update_reading(c);
}

/* Queues the buffer's bytes (taking them over). */
static int conn_write(struct conn *c, struct orch_buf *b)
{
        struct write_req *w;
        uv_buf_t buf;
        size_t len = b->len;
        int r;

        if (c->closed || b->oom) {
                orch_buf_release(b);
                return c->closed ? -EPIPE : -ENOMEM;
        }
        w = malloc(sizeof(*w));
        if (!w) {
                orch_buf_release(b);
                return -ENOMEM;
        }
        w->data = orch_buf_steal(b);
        if (!w->data) {
                free(w);
                return -ENOMEM;
        }
        buf = uv_buf_init(w->data, (unsigned)len);
        r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
        if (r < 0) {
                free(w->data);
                free(w);
                conn_close(c);
        }
        return r;
}

static void put_head(struct conn *c, struct orch_buf *b, int status, const char *content_type,
                     const char *extra_headers)
{
        orch_buf_printf(b, "HTTP/1.1 %d %s\r\n", status, demo_http_status_reason(status));
        if (c->server->name[0])
                orch_buf_printf(b, "Server: %s\r\n", c->server->name);
        if (content_type && status_has_body(status))
                orch_buf_printf(b, "Content-Type: %s\r\n", content_type);
        if (!c->keep_alive)
                orch_buf_puts(b, "Connection: close\r\n");
        else if (c->req.http_major == 1 && c->req.http_minor == 0)
                orch_buf_puts(b, "Connection: keep-alive\r\n");
        orch_buf_puts(b, c->server->headers);
        orch_buf_puts(b, strempty(extra_headers));
}

/* Refuses the request being parsed and closes the connection after the answer. */
static void conn_fail(struct conn *c, int status)
{
        struct orch_buf b = {0};
        const char *reason = demo_http_status_reason(status);

        c->keep_alive = false;
        put_head(c, &b, status, "text/plain; charset=utf-8", NULL);
        orch_buf_printf(&b, "Content-Length: %zu\r\n\r\n%s\n", strlen(reason) + 1, reason);
        if (conn_write(c, &b) >= 0)
                conn_linger(c);
}

/* The handler is done with the request: on to the next one, or close. */
static void request_done(struct conn *c)
{
        if (!c->keep_alive) {
                conn_linger(c);
                return;
        }
        c->state = CONN_READING;
        if (c->paused_upgrade)
                llhttp_resume_after_upgrade(&c->parser);
        else
                llhttp_resume(&c->parser);
        c->paused_upgrade = false;
        uv_timer_start(&c->timer, on_timeout, DEMO_HTTP_REQUEST_TIMEOUT_MS, 0);
        /* A pipelined request may be waiting; handle it from the loop, not from inside the
         * handler's call that answered this one. */
        if (!c->processing && c->in.len > 0)
                uv_timer_start(&c->later, on_later, 0, 0);
        conn_update_reading(c);
}

static void dispatch(struct conn *c)
{
        c->state = CONN_HANDLING;
        uv_timer_stop(&c->timer);
        conn_update_reading(c);
        c->server->handler(&c->req, c->server->userdata);
}

static void conn_process(struct conn *c)
{
        if (c->processing)
                return;
        c->processing = true;
        while (c->state == CONN_READING && c->in.len > 0 && c->tcp.write_queue_size <= OUT_HIGH_WATER) {
                enum llhttp_errno e = llhttp_execute(&c->parser, c->in.data, c->in.len);

                if (e == HPE_OK) {
                        orch_buf_reset(&c->in);
                        break;
                }
                if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
                        orch_buf_consume(&c->in, (size_t)(llhttp_get_error_pos(&c->parser) - c->in.data));
                        c->paused_upgrade = e == HPE_PAUSED_UPGRADE;
                        dispatch(c);
                        continue;
                }
                conn_fail(c, c->reject_status ? c->reject_status : 400);
        }
        c->processing = false;
        conn_update_reading(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
        struct conn *c = h->data;

        *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
        struct conn *c = container_of(stream, struct conn, tcp);

        if (n == 0 || c->closed)
                return;
        if (n == UV_EOF) {
                /* libuv stops reading by itself at the end of the stream. */
                c->reading = false;
                c->eof = true;
        }
        if (c->lingering) {
                /* The end of the input closes only once our answer is out (on_shutdown). */
                if (c->eof && c->shut)
                        conn_close(c);
                else if (n < 0 && !c->eof)
                        conn_close(c);
                else if (n > 0 && (c->discarded += (size_t)n) > LINGER_MAX_DISCARD)
                        conn_close(c);
                return;
        }
        if (n < 0) {
                /* The peer finished sending: answers already queued still go out. */
                if (c->eof)
                        conn_linger(c);
                else
                        conn_close(c);
                return;
        }
        if (c->state == CONN_RAW) {
                uv_timer_again(&c->timer);
                c->raw_cb(&c->req, buf->base, (size_t)n);
                return;
        }
        if (orch_buf_put(&c->in, buf->base, (size_t)n) < 0) {
                conn_fail(c, 503);
                return;
        }
        conn_process(c);
}

/* ---- parser callbacks: collect the request, enforce the caps ---- */

static int reject(struct conn *c, int status)
{
        c->reject_status = status;
        return HPE_USER;
}

static int count_head(struct conn *c, size_t len)
{
        c->head_bytes += len;
        return c->head_bytes > DEMO_HTTP_MAX_HEAD ? reject(c, 431) : 0;
}

static int on_message_begin(llhttp_t *p)
{
        struct conn *c = p->data;

        request_clear(&c->req);
        orch_buf_reset(&c->target);
        orch_buf_reset(&c->field);
        orch_buf_reset(&c->value);
        c->head_bytes = 0;
        c->reject_status = 0;
        return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
        struct conn *c = p->data;

        if (c->target.len + len > DEMO_HTTP_MAX_TARGET)
                return reject(c, 414);
        if (orch_buf_put(&c->target, at, len) < 0)
                return reject(c, 503);
        return count_head(c, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
        struct conn *c = p->data;

        if (orch_buf_put(&c->field, at, len) < 0)
                return reject(c, 503);
        return count_head(c, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
        struct conn *c = p->data;

        if (orch_buf_put(&c->value, at, len) < 0)
                return reject(c, 503);
        return count_head(c, len);
}

static int on_header_value_complete(llhttp_t *p)
{
        struct conn *c = p->data;
        struct demo_http_request *req = &c->req;
        struct demo_http_header *h;

        if (req->n_headers >= DEMO_HTTP_MAX_HEADERS)
                return reject(c, 431);
        h = realloc(req->headers, (req->n_headers + 1) * sizeof(*h));
        if (!h)
                return reject(c, 503);
        req->headers = h;
        h[req->n_headers].name = strdup(c->field.data ? c->field.data : "");
        h[req->n_headers].value = strdup(c->value.data ? c->value.data : "");
        req->n_headers++;
        orch_buf_reset(&c->field);
        orch_buf_reset(&c->value);
        if (!h[req->n_headers - 1].name || !h[req->n_headers - 1].value)
                return reject(c, 503);
        return count_head(c, 4); /* ": " and CRLF */
}

static int on_headers_complete(llhttp_t *p)
{
        struct conn *c = p->data;
        struct demo_http_request *req = &c->req;
        const char *expect, *q;

        req->method = llhttp_method_name(llhttp_get_method(p));
        req->http_major = p->http_major;
        req->http_minor = p->http_minor;
        req->target = orch_buf_steal(&c->target);
        if (!req->target)
                return reject(c, 503);
        q = strchr(req->target, '?');
        req->path = q ? strndup(req->target, (size_t)(q - req->target)) : strdup(req->target);
        req->query = q ? q + 1 : NULL;
        if (!req->path)
                return reject(c, 503);

        /* RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host. */
        if (p->http_major == 1 && p->http_minor >= 1) {
                size_t hosts = 0;

                for (size_t i = 0; i < req->n_headers; i++)
                        hosts += strcasecmp(req->headers[i].name, "Host") == 0;
                if (hosts != 1)
                        return reject(c, 400);
        }
        if ((p->flags & F_CONTENT_LENGTH) && p->content_length > DEMO_HTTP_MAX_BODY)
                return reject(c, 413);
        expect = demo_http_request_header(req, "Expect");
        if (expect) {
                struct orch_buf b = {0};

                if (strcasecmp(expect, "100-continue") != 0)
                        return reject(c, 417);
                /* The client waits for this before it sends the body (curl does for large ones). */
                if (p->http_major == 1 && p->http_minor >= 1) {
                        orch_buf_puts(&b, "HTTP/1.1 100 Continue\r\n\r\n");
                        if (conn_write(c, &b) < 0)
                                return reject(c, 503);
                }
        }
        return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
        struct conn *c = p->data;

        if (c->req.body.len + len > DEMO_HTTP_MAX_BODY)
                return reject(c, 413);
        if (orch_buf_put(&c->req.body, at, len) < 0)
                return reject(c, 503);
        return 0;
}

static int on_message_complete(llhttp_t *p)
{
        struct conn *c = p->data;

        c->keep_alive = llhttp_should_keep_alive(p);
        /* Pause after each request so that the next one waits for this answer. llhttp stops
         * by itself (HPE_PAUSED_UPGRADE) after an Upgrade request. */
        return p->upgrade ? 0 : HPE_PAUSED;
}

static const llhttp_settings_t server_settings = {
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_header_value_complete = on_header_value_complete,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
};

/* ---- the handler's side ---- */

static struct conn *handling_conn(struct demo_http_request *req)
{
        struct conn *c = container_of(req, struct conn, req);

        return c->state == CONN_HANDLING ? c : NULL;
}

int demo_http_respond(struct demo_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len)
{
        struct conn *c = handling_conn(req);
        struct orch_buf b = {0};
        int r;

        if (!c || c->streaming || status < 200 || status > 599)
                return -EINVAL;
        put_head(c, &b, status, content_type, extra_headers);
        if (status_has_body(status)) {
                orch_buf_printf(&b, "Content-Length: %zu\r\n\r\n", len);
                if (!streq(req->method, "HEAD"))
                        orch_buf_put(&b, body, len);
        } else
                orch_buf_puts(&b, "\r\n");
        r = conn_write(c, &b);
        if (r < 0)
                return r;
        request_done(c);
        return 0;
}

int demo_http_respond_start(struct demo_http_request *req, int status, const char *content_type)
{
        struct conn *c = handling_conn(req);
        struct orch_buf b = {0};

        if (!c || c->streaming || status < 200 || status > 599)
                return -EINVAL;
        /* HTTP/1.0 has no chunked encoding: the end of the body is the end of the connection. */
        c->chunked = req->http_major == 1 && req->http_minor >= 1;
        if (!c->chunked)
                c->keep_alive = false;
        put_head(c, &b, status, content_type, NULL);
        if (c->chunked && status_has_body(status))
                orch_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
        orch_buf_puts(&b, "\r\n");
        c->streaming = true;
        c->stream_body = status_has_body(status) && !streq(req->method, "HEAD");
        return conn_write(c, &b);
}

int demo_http_respond_chunk(struct demo_http_request *req, const void *data, size_t len)
{
        struct conn *c = handling_conn(req);
        struct orch_buf b = {0};

        if (!c || !c->streaming)
                return -EINVAL;
        if (len == 0 || !c->stream_body)
                return 0;
        if (c->chunked)
                orch_buf_printf(&b, "%zx\r\n", len);
        orch_buf_put(&b, data, len);
        if (c->chunked)
                orch_buf_puts(&b, "\r\n");
        return conn_write(c, &b);
}

int demo_http_respond_end(struct demo_http_request *req)
{
        struct conn *c = handling_conn(req);
        struct orch_buf b = {0};
        int r;

        if (!c || !c->streaming)
                return -EINVAL;
        c->streaming = false;
        if (c->chunked && c->stream_body) {
                orch_buf_puts(&b, "0\r\n\r\n");
                r = conn_write(c, &b);
                if (r < 0)
                        return r;
        }
        request_done(c);
        return 0;
}

int demo_http_upgrade(struct demo_http_request *req, demo_http_raw_cb cb)
{
        struct conn *c = handling_conn(req);
        const char *proto = demo_http_request_header(req, "Upgrade");
        struct orch_buf b = {0};
        int r;

        if (!c || c->streaming || !proto || !cb)
                return -EINVAL;
        orch_buf_printf(&b, "HTTP/1.1 101 %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n",
                        demo_http_status_reason(101), proto);
        orch_buf_puts(&b, c->server->headers);
        orch_buf_puts(&b, "\r\n");
        r = conn_write(c, &b);
        if (r < 0)
                return r;
        c->state = CONN_RAW;
        c->raw_cb = cb;
        uv_timer_start(&c->timer, on_timeout, DEMO_HTTP_RAW_IDLE_TIMEOUT_MS, DEMO_HTTP_RAW_IDLE_TIMEOUT_MS);
        /* Bytes the client sent right after its request belong to the new protocol. */
        if (c->in.len > 0)
                uv_timer_start(&c->later, on_later, 0, 0);
        conn_update_reading(c);
        return 0;
}

int demo_http_raw_write(struct demo_http_request *req, const void *data, size_t len)
{
        struct conn *c = container_of(req, struct conn, req);
        struct orch_buf b = {0};
        int r;

        if (c->state != CONN_RAW)
                return -EINVAL;
        if (orch_buf_put(&b, data, len) < 0)
                return -ENOMEM;
        r = conn_write(c, &b);
        conn_update_reading(c);
        return r;
}

static void on_later(uv_timer_t *t)
{
        struct conn *c = container_of(t, struct conn, later);
        demo_http_defer_cb cb;

        switch (c->state) {
        case CONN_HANDLING:
                cb = TAKE_PTR(c->defer_cb);
                if (cb)
                        cb(&c->req);
                break;
        case CONN_READING:
                conn_process(c);
                break;
        case CONN_RAW:
                if (c->in.len > 0) {
                        struct orch_buf pending = c->in;

                        c->in = (struct orch_buf){0};
                        c->raw_cb(&c->req, pending.data, pending.len);
                        orch_buf_release(&pending);
                }
                break;
        case CONN_CLOSING:
                break;
        }
}

int demo_http_defer(struct demo_http_request *req, uint64_t ms, demo_http_defer_cb cb)
{
        struct conn *c = handling_conn(req);

        if (!c || !cb)
                return -EINVAL;
        c->defer_cb = cb;
        return uv_timer_start(&c->later, on_later, ms, 0);
}

/* ---- listening ---- */

static void on_connection(uv_stream_t *listener, int status)
{
        struct demo_http_server *s = container_of(listener, struct demo_http_server, tcp);
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        struct conn *c;

        if (status < 0)
                return;
        c = calloc(1, sizeof(*c));
        if (!c)
                return;
        c->server = s;
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        s->n_conns++;
        uv_tcp_init(listener->loop, &c->tcp);
        uv_timer_init(listener->loop, &c->timer);
        uv_timer_init(listener->loop, &c->later);
        c->tcp.data = c->timer.data = c->later.data = c;
        c->open_handles = 3;
        if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || s->n_conns > DEMO_HTTP_MAX_CONNS) {
                conn_close(c);
                return;
        }
        uv_tcp_nodelay(&c->tcp, 1);
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
                char ip[INET6_ADDRSTRLEN] = "";
                int port = 0;

                if (ss.ss_family == AF_INET) {
                        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
                        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
                } else if (ss.ss_family == AF_INET6) {
                        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
                        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
                }
                (void)orch_snprintf(c->req.peer, sizeof(c->req.peer), "%s:%d", ip, port);
        }
        llhttp_init(&c->parser, HTTP_REQUEST, &server_settings);
        c->parser.data = c;
        c->keep_alive = true;
        c->state = CONN_READING;
        uv_timer_start(&c->timer, on_timeout, DEMO_HTTP_REQUEST_TIMEOUT_MS, 0);
        conn_update_reading(c);
}

static void on_listener_closed(uv_handle_t *h)
{
        struct demo_http_server *s = container_of((uv_tcp_t *)h, struct demo_http_server, tcp);

        s->listener_closed = true;
        server_maybe_free(s);
}

int demo_http_server_start(uv_loop_t *loop, const struct demo_http_server_config *config,
                           struct demo_http_server **ret)
{
        const char *bind = config->bind ? config->bind : "0.0.0.0";
        struct sockaddr_storage addr;
        struct demo_http_server *s;
        int len = sizeof(addr);
        int r;

        if (!config->handler)
                return -EINVAL;
        if (uv_ip4_addr(bind, config->port, (struct sockaddr_in *)&addr) != 0 &&
            uv_ip6_addr(bind, config->port, (struct sockaddr_in6 *)&addr) != 0)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->handler = config->handler;
        s->userdata = config->userdata;
        s->name = strdup(strempty(config->name));
        s->headers = strdup(strempty(config->headers));
        r = uv_tcp_init(loop, &s->tcp);
        if (r < 0) {
                free(s->name);
                free(s->headers);
                free(s);
                return r;
        }
        s->closing = true; /* until it listens: a failure below frees it in the close callback */
        if (!s->name || !s->headers)
                r = -ENOMEM;
        if (r >= 0)
                r = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
        if (r >= 0)
                r = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
        if (r >= 0)
                r = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&addr, &len);
        if (r < 0) {
                uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
                return r;
        }
        s->closing = false;
        s->port = ntohs(addr.ss_family == AF_INET ? ((struct sockaddr_in *)&addr)->sin_port
                                                  : ((struct sockaddr_in6 *)&addr)->sin6_port);
        *ret = s;
        return 0;
}

int demo_http_server_port(const struct demo_http_server *s)
{
        return s->port;
}

void demo_http_server_close(struct demo_http_server *s)
{
        if (!s || s->closing)
                return;
        s->closing = true;
        for (struct conn *c = s->conns; c; c = c->next)
                conn_close(c);
        uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
}

/* ---- client ---- */

struct demo_http_client {
        uv_getaddrinfo_t resolve;
        uv_connect_t connect;
        uv_write_t write;
        uv_tcp_t tcp;
        uv_timer_t timer;
        unsigned open_handles;
        bool tcp_open;
        bool resolving;
        bool done;
        bool cancelled;
        llhttp_t parser;
        struct orch_buf request;
        struct orch_buf body;
        int error; /* why a parser callback stopped */
        int status;
        demo_http_client_cb cb;
        void *userdata;
        struct demo_http_url url;
        char rbuf[READ_BUF_SIZE];
};

static void client_maybe_free(struct demo_http_client *c)
{
        if (c->open_handles > 0 || c->resolving)
                return;
        orch_buf_release(&c->request);
        orch_buf_release(&c->body);
        free(c);
}

static void on_client_closed(uv_handle_t *h)
{
        struct demo_http_client *c = h->data;

        c->open_handles--;
        client_maybe_free(c);
}

static void client_finish(struct demo_http_client *c, int r)
{
        if (c->done)
                return;
        c->done = true;
        if (!c->cancelled)
                c->cb(r, c->status, c->body.data ? c->body.data : "", c->body.len, c->userdata);
        if (c->resolving)
                uv_cancel((uv_req_t *)&c->resolve);
        uv_close((uv_handle_t *)&c->timer, on_client_closed);
        if (c->tcp_open)
                uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

void demo_http_client_cancel(struct demo_http_client *c)
{
        if (!c)
                return;
        c->cancelled = true;
        client_finish(c, UV_ECANCELED);
}

static int client_on_body(llhttp_t *p, const char *at, size_t len)
{
        struct demo_http_client *c = p->data;

        if (c->body.len + len > DEMO_HTTP_MAX_BODY) {
                c->error = UV_EMSGSIZE;
                return HPE_USER;
        }
        if (orch_buf_put(&c->body, at, len) < 0) {
                c->error = UV_ENOMEM;
                return HPE_USER;
        }
        return 0;
}

static int client_on_message_complete(llhttp_t *p)
{
        struct demo_http_client *c = p->data;

        /* Interim answers (100 Continue) are followed by the real one. */
        if (p->status_code < 200)
                return 0;
        c->status = p->status_code;
        return HPE_PAUSED;
}

static const llhttp_settings_t client_settings = {
        .on_body = client_on_body,
        .on_message_complete = client_on_message_complete,
};

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
        struct demo_http_client *c = h->data;

        *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void client_on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
        struct demo_http_client *c = container_of(stream, struct demo_http_client, tcp);
        enum llhttp_errno e;

        if (n == 0 || c->done)
                return;
        if (n == UV_EOF)
                /* An answer without a length ends with the connection. */
                e = llhttp_finish(&c->parser);
        else if (n < 0) {
                client_finish(c, (int)n);
                return;
        } else
                e = llhttp_execute(&c->parser, buf->base, (size_t)n);

        if (c->status > 0)
                client_finish(c, 0);
        else if (e != HPE_OK || n == UV_EOF)
                client_finish(c, c->error ? c->error : UV_EPROTO);
}

static void client_on_write(uv_write_t *req, int status)
{
        struct demo_http_client *c = container_of(req, struct demo_http_client, write);

        if (status < 0)
                client_finish(c, status);
}

static void client_on_connect(uv_connect_t *req, int status)
{
        struct demo_http_client *c = container_of(req, struct demo_http_client, connect);
        uv_buf_t buf = uv_buf_init(c->request.data, (unsigned)c->request.len);
        int r;

        if (c->done)
                return;
        if (status < 0) {
                client_finish(c, status);
                return;
        }
        r = uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, client_on_write);
        if (r >= 0)
                r = uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_on_read);
        if (r < 0)
                client_finish(c, r);
}

static void client_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
        struct demo_http_client *c = container_of(req, struct demo_http_client, resolve);
        const struct addrinfo *pick = res;
        int r;

        c->resolving = false;
        if (c->done) {
                uv_freeaddrinfo(res);
                client_maybe_free(c);
                return;
        }
        if (status < 0) {
                client_finish(c, status);
                return;
        }
        /* The demo servers listen on 0.0.0.0: prefer IPv4 when a name has both ("localhost"). */
        for (const struct addrinfo *a = res; a; a = a->ai_next)
                if (a->ai_family == AF_INET) {
                        pick = a;
                        break;
                }
        r = uv_tcp_init(req->loop, &c->tcp);
        if (r >= 0) {
                c->tcp.data = c;
                c->tcp_open = true;
                c->open_handles++;
                r = uv_tcp_connect(&c->connect, &c->tcp, pick->ai_addr, client_on_connect);
        }
        uv_freeaddrinfo(res);
        if (r < 0)
                client_finish(c, r);
}

static void client_on_timeout(uv_timer_t *t)
{
        client_finish(container_of(t, struct demo_http_client, timer), UV_ETIMEDOUT);
}

int demo_http_url_parse(const char *url, struct demo_http_url *ret)
{
        struct demo_http_url u = {.port = "80", .path = "/"};
        const char *rest = startswith(url, "http://"), *host_end, *path;
        size_t hl;

        if (!rest)
                return -EINVAL;
        path = rest + strcspn(rest, "/?#");
        if (*path == '#')
                return -EINVAL;
        if (*rest == '[') {
                rest++;
                host_end = memchr(rest, ']', (size_t)(path - rest));
                if (!host_end)
                        return -EINVAL;
        } else
                host_end = rest + strcspn(rest, ":/?#");
        hl = (size_t)(host_end - rest);
        if (hl == 0 || hl >= sizeof(u.host))
                return -EINVAL;
        memcpy(u.host, rest, hl);
        u.host[hl] = '\0';
        for (const char *p = u.host; *p; p++)
                if (!(isalnum((unsigned char)*p) || strchr(".-:_", *p)))
                        return -EINVAL;
        if (*host_end == ']')
                host_end++;
        if (*host_end == ':') {
                size_t pl = (size_t)(path - host_end - 1);
                uint32_t port;

                if (pl == 0 || pl >= sizeof(u.port))
                        return -EINVAL;
                memcpy(u.port, host_end + 1, pl);
                u.port[pl] = '\0';
                if (orch_parse_u32(u.port, &port) < 0 || port == 0 || port > 65535)
                        return -EINVAL;
        } else if (host_end != path)
                return -EINVAL;
        if (*path) {
                if (*path == '?')
                        return -EINVAL;
                if (orch_strlcpy(u.path, path, sizeof(u.path)) >= sizeof(u.path))
                        return -EINVAL;
                for (const char *p = u.path; *p; p++)
                        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#')
                                return -EINVAL;
        }
        *ret = u;
        return 0;
}

int demo_http_client_request(uv_loop_t *loop, const char *method, const char *url, const char *content_type,
                             const void *body, size_t len, uint64_t timeout_ms, demo_http_client_cb cb,
                             void *userdata, struct demo_http_client **ret)
{
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct demo_http_client *c;
        bool ipv6;
        int r;

        if (!cb || !method || !*method || strcspn(method, " \r\n") != strlen(method))
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = demo_http_url_parse(url, &c->url);
        if (r < 0) {
                free(c);
                return r;
        }
        c->cb = cb;
        c->userdata = userdata;
        ipv6 = strchr(c->url.host, ':') != NULL;
        orch_buf_printf(&c->request, "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\n", method, c->url.path,
                        ipv6 ? "[" : "", c->url.host, ipv6 ? "]" : "", c->url.port);
        orch_buf_puts(&c->request, "User-Agent: orch-demo\r\nAccept: */*\r\nConnection: close\r\n");
        if (body || len > 0) {
                orch_buf_printf(&c->request, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                                content_type ? content_type : "application/octet-stream", len);
        }
        orch_buf_puts(&c->request, "\r\n");
        orch_buf_put(&c->request, body, len);
        if (c->request.oom) {
                orch_buf_release(&c->request);
                free(c);
                return -ENOMEM;
        }
        llhttp_init(&c->parser, HTTP_RESPONSE, &client_settings);
        c->parser.data = c;

        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        c->open_handles = 1;
        uv_timer_start(&c->timer, client_on_timeout, timeout_ms, 0);
        r = uv_getaddrinfo(loop, &c->resolve, client_on_resolved, c->url.host, c->url.port, &hints);
        if (r < 0) {
                c->cancelled = true;
                client_finish(c, r);
                return r;
        }
        c->resolving = true;
        if (ret)
                *ret = c;
        return 0;
}

int demo_parse_port(const char *s, uint16_t *ret)
{
        char name[128];
        const char *var = startswith(s, "env:");
        uint32_t port;
        int r;

        if (!var && s[0] == '$') {
                const char *inner = startswith(s, "${");

                if (inner) {
                        size_t l = strlen(inner);

                        if (l == 0 || inner[l - 1] != '}' || l > sizeof(name))
                                return -EINVAL;
                        memcpy(name, inner, l - 1);
                        name[l - 1] = '\0';
                        var = name;
                } else
                        var = s + 1;
        }
        if (var) {
                if (!*var ||
                    strspn(var, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                            strlen(var))
                        return -EINVAL;
                s = getenv(var);
                if (!s)
                        return -ENOENT;
        }
        r = orch_parse_u32(s, &port);
        if (r < 0)
                return r;
        if (port > 65535)
                return -ERANGE;
        *ret = (uint16_t)port;
        return 0;
}
