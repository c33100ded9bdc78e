/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * orchd's HTTP/1.1 server on libuv (the API; docs/http.md).
 *
 * Connections are kept alive and may pipeline: requests are parsed and
 * answered strictly one after the other, so answers go out in order. A
 * request reaches the handler once its whole body has arrived (bodies of
 * the API are small and capped). The handler answers in one of three ways:
 *
 *   immediate  orch_httpd_respond*() from inside the handler;
 *   deferred   return without answering and answer later (blocking queries);
 *   streamed   orch_httpd_stream_start(), _write() as data comes, _end()
 *              (chunked; follow modes of events and logs).
 *
 * Ownership: the handler may use a request until it has answered it
 * (respond*() or stream_end()), or until the request's close callback ran.
 * The close callback tells that the client went away (or was dropped, or
 * the server is shutting down) before the answer was complete; it is never
 * called from inside an orch_httpd_* call, only from the event loop, and
 * the request is freed when it returns. A handler that keeps a request
 * past its return (deferred or streamed) must set a close callback.
 *
 * Limits protect the server from slow and hostile clients: a cap on
 * connections (503 beyond it), on header bytes and count (431), on bodies
 * (413), a deadline for the head (against slowloris) and for each read of
 * a body (408), an idle keep-alive timeout, and a write high-water mark: a
 * streaming handler can ask whether a client is congested, a client that
 * stays above the mark for write_timeout_ms is dropped, and so is one whose
 * backlog a stream pushes past 8 marks.
 */

#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "http.h"
#include "macro.h"

struct orch_httpd;
struct orch_httpd_req;

typedef void (*orch_httpd_handler_fn)(struct orch_httpd_req *req, void *userdata);
typedef void (*orch_httpd_close_fn)(struct orch_httpd_req *req, void *userdata);

struct orch_httpd_config {
        /* "127.0.0.1:7070" or "[::1]:7070" (literal addresses; port 0 picks a free one). */
        const char *listen;
        /* 0 in any of these means the default in brackets. */
        unsigned max_connections;   /* [1024] beyond it a new connection gets 503 and is closed */
        size_t max_header_bytes;    /* [16 KiB] 431 */
        size_t max_headers;         /* [100] 431 */
        uint64_t max_body_bytes;    /* [8 MiB] 413 */
        uint64_t header_timeout_ms; /* [10 s] from a request's first byte (or the connect): 408 */
        uint64_t body_timeout_ms;   /* [30 s] the longest silence while a body is read: 408 */
        uint64_t idle_timeout_ms; /* [60 s] a kept-alive connection waiting for its next request is closed */
        uint64_t write_timeout_ms; /* [30 s] a client above the write high-water mark this long is dropped */
        size_t write_high_water;   /* [1 MiB] queued response bytes per client */
        orch_httpd_handler_fn handler;
        void *userdata;
};

#define ORCH_HTTPD_DEFAULT_MAX_CONNECTIONS   1024U
#define ORCH_HTTPD_DEFAULT_HEADER_TIMEOUT_MS (10U * 1000U)
#define ORCH_HTTPD_DEFAULT_BODY_TIMEOUT_MS   (30U * 1000U)
#define ORCH_HTTPD_DEFAULT_IDLE_TIMEOUT_MS   (60U * 1000U)
#define ORCH_HTTPD_DEFAULT_WRITE_TIMEOUT_MS  (30U * 1000U)
#define ORCH_HTTPD_DEFAULT_WRITE_HIGH_WATER  (1024U * 1024U)

/* Binds and listens. -EINVAL for a malformed address; bind errors as -errno (-EADDRINUSE, ...).
 * Sets SIGPIPE to ignored when it is at its default: libuv writes with write(2), and a write racing a
 * client's reset would otherwise kill the process. */
int orch_httpd_new(uv_loop_t *loop, const struct orch_httpd_config *config, struct orch_httpd **ret);
/* Stops listening, drops every connection (running close callbacks) and frees the server once all its
 * handles are closed; then calls done (optional). */
void orch_httpd_free(struct orch_httpd *h, void (*done)(void *userdata), void *userdata);
/* The port actually bound (tests listen on port 0). */
int orch_httpd_port(const struct orch_httpd *h);
/* Open connections, for metrics. */
size_t orch_httpd_connections(const struct orch_httpd *h);

/* ---- a request ---- */

const struct orch_http_head *orch_httpd_req_head(const struct orch_httpd_req *req);
/* The body, NUL-terminated (the NUL is not counted in *ret_len). */
const char *orch_httpd_req_body(const struct orch_httpd_req *req, size_t *ret_len);
/* "127.0.0.1:51234" or "[::1]:51234". */
const char *orch_httpd_req_peer(const struct orch_httpd_req *req);
/* A decoded query parameter: -ENOENT when absent, -EINVAL when malformed. */
int orch_httpd_req_query(const struct orch_httpd_req *req, const char *name, char **ret);
/* The close callback (see above); NULL to clear it. */
void orch_httpd_req_set_close_cb(struct orch_httpd_req *req, orch_httpd_close_fn cb, void *userdata);
/* An extra response header field (Allow, Cache-Control, X-Orch-Index, ...), before the answer starts.
 * -EINVAL for an invalid field or one the server writes itself (framing, Connection, Date). */
int orch_httpd_req_add_header(struct orch_httpd_req *req, const char *name, const char *value);

/* ---- answers ----
 * They return 0, -EINVAL (bad status or field), -EALREADY (already answered), -ENOMEM, or -EPIPE when
 * the client is already gone (the close callback is on its way: stop using the request after it). */

int orch_httpd_respond(struct orch_httpd_req *req, int status, const char *content_type, const void *body,
                       size_t len);
/* application/json, the value dumped compactly with a final newline. */
int orch_httpd_respond_json(struct orch_httpd_req *req, int status, const json_t *body);
/* {"error": "MESSAGE"} as application/json. */
_printf_(3, 4) int orch_httpd_respond_error(struct orch_httpd_req *req, int status, const char *fmt, ...);

/* A streamed answer: chunked for HTTP/1.1 clients, delimited by closing the connection for HTTP/1.0. */
int orch_httpd_stream_start(struct orch_httpd_req *req, int status, const char *content_type);
int orch_httpd_stream_write(struct orch_httpd_req *req, const void *data, size_t len);
/* True while the client's unsent bytes exceed the high-water mark: skip or coalesce output. */
bool orch_httpd_stream_congested(const struct orch_httpd_req *req);
int orch_httpd_stream_end(struct orch_httpd_req *req);
