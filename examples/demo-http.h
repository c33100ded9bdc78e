/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A small HTTP/1.1 server and client on libuv and llhttp, shared by the demo
 * (orch-demo) and the test workload (tests/fixtures/orch-testprog).
 *
 * Server: requests on one connection are handled strictly one after the
 * other, which keeps pipelined responses in order: once a request is
 * complete the parser pauses, reading stops, and the handler owns the
 * request until it calls exactly one of demo_http_respond(),
 * demo_http_respond_end() (after demo_http_respond_start()) or
 * demo_http_upgrade(). It may do so later, from a timer of its own
 * (demo_http_defer) or from a client callback; if the connection goes away
 * first, the request's on_abort hook runs and the handler must forget the
 * request. Every buffer has a cap: request line, headers, body, the input
 * kept while a request is handled, and the output queued to a slow reader.
 *
 * Client: one request per connection ("Connection: close"), with a timeout.
 */

#include <stdint.h>

#include <uv.h>

#include "util.h"

#define DEMO_HTTP_MAX_TARGET          8192u          /* request target; longer: 414 */
#define DEMO_HTTP_MAX_HEAD            (32u * 1024)   /* request line and headers; more: 431 */
#define DEMO_HTTP_MAX_HEADERS         100u           /* header lines; more: 431 */
#define DEMO_HTTP_MAX_BODY            (1024u * 1024) /* request and client response bodies; more: 413 */
#define DEMO_HTTP_MAX_CONNS           1024u          /* per server; more are closed at once */
#define DEMO_HTTP_REQUEST_TIMEOUT_MS  (30u * 1000)   /* to deliver a whole request, idle time included */
#define DEMO_HTTP_RAW_IDLE_TIMEOUT_MS (300u * 1000)  /* an upgraded connection with no traffic */

struct demo_http_header {
        char *name;
        char *value;
};

struct demo_http_request {
        const char *method; /* "GET", ... */
        char *target;       /* as received: path and query */
        char *path;         /* target without the query */
        const char *query;  /* what follows '?' in target, or NULL */
        unsigned http_major;
        unsigned http_minor;
        struct demo_http_header *headers; /* in the order received */
        size_t n_headers;
        struct orch_buf body; /* decoded (Content-Length or chunked) */
        char peer[64];        /* "ADDRESS:PORT" of the client */

        /* For the handler: its state while the request is pending, and what to do when the
         * connection is gone before it answered (cancel its timers and clients; do not answer). */
        void *userdata;
        void (*on_abort)(struct demo_http_request *req);
};

typedef void (*demo_http_handler)(struct demo_http_request *req, void *userdata);
typedef void (*demo_http_defer_cb)(struct demo_http_request *req);
/* Bytes received on an upgraded connection. */
typedef void (*demo_http_raw_cb)(struct demo_http_request *req, const char *data, size_t len);

struct demo_http_server_config {
        const char *bind;    /* an IPv4 or IPv6 address; NULL: 0.0.0.0 */
        uint16_t port;       /* 0: any free port (see demo_http_server_port) */
        const char *name;    /* the Server header */
        const char *headers; /* NULL or "Name: value\r\n" lines added to every response */
        demo_http_handler handler;
        void *userdata;
};

struct demo_http_server;

int demo_http_server_start(uv_loop_t *loop, const struct demo_http_server_config *config,
                           struct demo_http_server **ret);
int demo_http_server_port(const struct demo_http_server *s);
/* Stops listening and closes every connection (pending requests are aborted); frees the server
 * once its handles are closed. Accepts NULL. */
void demo_http_server_close(struct demo_http_server *s);

/* Value of the first header with that name (case-insensitive), or NULL. */
const char *demo_http_request_header(const struct demo_http_request *req, const char *name);
/* Value of a query parameter, copied into buf (no percent-decoding); -ENOENT or -ENOBUFS. */
int demo_http_query_param(const struct demo_http_request *req, const char *name, char *buf, size_t size);

/* A complete response. extra_headers: NULL or "Name: value\r\n" lines. */
int demo_http_respond(struct demo_http_request *req, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len);
/* A streamed response: the head now, the body in chunks (chunked encoding, or until the
 * connection closes for an HTTP/1.0 client), then the end. */
int demo_http_respond_start(struct demo_http_request *req, int status, const char *content_type);
int demo_http_respond_chunk(struct demo_http_request *req, const void *data, size_t len);
int demo_http_respond_end(struct demo_http_request *req);
/* Answers 101 Switching Protocols (with the request's Upgrade value) and hands the connection
 * over to raw bytes: what the client sends goes to cb, demo_http_raw_write sends back. */
int demo_http_upgrade(struct demo_http_request *req, demo_http_raw_cb cb);
int demo_http_raw_write(struct demo_http_request *req, const void *data, size_t len);
/* Calls cb after ms milliseconds, unless the connection closes first (then on_abort runs). */
int demo_http_defer(struct demo_http_request *req, uint64_t ms, demo_http_defer_cb cb);

const char *demo_http_status_reason(int status);

/* http://HOST[:PORT][/PATH]: HOST a name, an IPv4 address or [IPv6]. */
struct demo_http_url {
        char host[256];
        char port[6];
        char path[2048];
};
int demo_http_url_parse(const char *url, struct demo_http_url *ret);

struct demo_http_client;
/* r < 0: no answer, as a libuv error code for uv_strerror() (UV_ETIMEDOUT, UV_ECONNREFUSED,
 * UV_EPROTO for a malformed answer, UV_EMSGSIZE for a body above DEMO_HTTP_MAX_BODY, a resolver
 * error, ...); otherwise the status and the body (valid during the call). */
typedef void (*demo_http_client_cb)(int r, int status, const char *body, size_t len, void *userdata);

/* Sends one request. *ret (may be NULL) stays valid until cb runs or the request is cancelled. */
int demo_http_client_request(uv_loop_t *loop, const char *method, const char *url, const char *content_type,
                             const void *body, size_t len, uint64_t timeout_ms, demo_http_client_cb cb,
                             void *userdata, struct demo_http_client **ret);
/* cb will not run. */
void demo_http_client_cancel(struct demo_http_client *c);

/* A TCP port: a number (0-65535), or the value of an environment variable given as env:NAME,
 * $NAME or ${NAME} (for a command line where no shell expanded it). */
int demo_parse_port(const char *s, uint16_t *ret);
