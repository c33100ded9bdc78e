/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The heads the gateway sends: a client's request rewritten for an upstream,
 * and an upstream's response rewritten for the client (docs/gateway.md).
 * Both drop the hop-by-hop fields (Connection and every field it names,
 * Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade)
 * and write the body framing themselves, so what the strict parser accepted
 * on one side cannot be read differently on the other. Requests also get
 * X-Forwarded-For (appended to what came in), X-Forwarded-Proto and
 * X-Request-Id; answers carry the same X-Request-Id.
 *
 * Pure functions over parsed heads: no I/O, no allocation beyond `out`.
 */

#include <stdint.h>

#include "http.h"
#include "util.h"

/* X-Request-Id values kept from clients: 1 to 128 of [A-Za-z0-9._:+/=-]; others are replaced. */
#define GW_REQUEST_ID_MAX 128
/* Connection may name at most this many fields; more is a 400 (each name is checked against each field). */
#define GW_MAX_CONNECTION_OPTIONS 32

struct gw_request_out {
        const struct orch_http_head *head; /* the client's */
        const char *path;                  /* normalized, and stripped of the route's prefix */
        const char *client_addr;           /* the peer's IP address, for X-Forwarded-For */
        const char *request_id;
        const char *default_host; /* Host for an HTTP/1.0 request that had none */
        bool drop_api_key;        /* the route checked X-API-Key: the upstream does not see it */
        bool drop_authorization;  /* ... or a bearer key in Authorization */
        bool upgrade;             /* ask the upstream to switch protocols too */
        int64_t body_length;      /* a length, ORCH_HTTP_BODY_CHUNKED or ORCH_HTTP_BODY_NONE */
};

/* Appends the upstream request head. -E2BIG when Connection names too many fields, -ENOMEM. */
int gw_rewrite_request(struct orch_buf *out, const struct gw_request_out *r);

struct gw_response_out {
        const struct orch_http_head *head; /* the upstream's */
        const char *request_id;            /* added unless the upstream set X-Request-Id */
        bool upgrade;                      /* a 101 that the gateway passes on: keep Upgrade */
        bool close;                        /* the client's connection ends after this answer */
        bool http10_keep_alive;            /* an HTTP/1.0 client stays connected: say so */
        int64_t body_length; /* the Content-Length to announce, ORCH_HTTP_BODY_CHUNKED or _NONE */
};

int gw_rewrite_response(struct orch_buf *out, const struct gw_response_out *r);

/* How an upstream's answer is framed towards the client: the Content-Length to announce (also for HEAD and
 * 304, which announce what a GET would get), ORCH_HTTP_BODY_CHUNKED (*ret_chunked: the body is chunked
 * again on the way), or ORCH_HTTP_BODY_NONE (no body, or, for an HTTP/1.0 client, a body that ends with
 * the connection: *ret_close). head: a final answer (status >= 200, or 101). */
int64_t gw_response_framing(const struct orch_http_head *head, bool head_request, bool client_http11,
                            bool *ret_chunked, bool *ret_close);

/* Whether a client's X-Request-Id may be passed on as it is. */
bool gw_request_id_valid(const char *s);

/* The API key a request presents: X-API-Key, else a bearer token in Authorization (*ret_bearer set).
 * NULL when there is none. */
const char *gw_request_api_key(const struct orch_http_head *head, bool *ret_bearer);
