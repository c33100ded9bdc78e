/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The embedded API gateway (SPEC §5, docs/gateway.md): an HTTP/1.1 reverse
 * proxy that routes client traffic to the healthy instances of services with
 * a `route`, following the registry without restarts.
 *
 * orchd's main loop owns the registry; the gateway's worker threads each run
 * their own loop and listener (SO_REUSEPORT) and share an immutable routing
 * table, rebuilt on the main loop at every registry change and swapped
 * atomically (requests in flight finish on the table they started with).
 */

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "util.h"

struct orch_gateway;
struct orch_registry;
struct orch_store;

/* Limits and timeouts; 0 in a field means the default in brackets (docs/gateway.md, "Limits"). */
struct orch_gateway_limits {
        uint64_t header_timeout_ms;     /* [10 s] a request head must be complete this long after its first
                                         * byte, or after the connect (slowloris): 408 */
        uint64_t idle_timeout_ms;       /* [60 s] a kept-alive client connection without a request */
        uint64_t body_timeout_ms;       /* [30 s] the longest silence while a request body arrives: 408 */
        uint64_t write_timeout_ms;      /* [30 s] a client that takes no bytes of its answer this long */
        uint64_t connect_timeout_ms;    /* [5 s] to an upstream; then the next endpoint, or 504 */
        uint64_t pool_idle_ms;          /* [15 s] an idle pooled upstream connection is closed */
        uint64_t tunnel_idle_ms;        /* [1 h] an upgraded connection (WebSocket) without traffic */
        uint64_t drain_timeout_ms;      /* [5 s] at stop: requests in flight get this long to finish */
        size_t max_header_bytes;        /* [16 KiB] request line and fields: 431 */
        size_t max_headers;             /* [100] field lines: 431 */
        unsigned max_connections;       /* [65536] client connections, all workers together: 503 beyond */
        unsigned max_idle_per_endpoint; /* [256] pooled connections per endpoint and worker */
        size_t ratelimit_entries;       /* [262144] rate-limit buckets kept (least recently used reused) */
};

struct orch_gateway_config {
        const char *listen; /* HOST:PORT */
        unsigned workers;   /* worker threads; 0: one per core */
        bool access_log;    /* one logfmt line per request */
        struct orch_registry *registry;
        struct orch_store *store; /* API keys (stored hashed) live here */
        struct orch_gateway_limits limits;
};

/* Binds, starts the workers and subscribes to the registry. -errno with a logged reason. */
int orch_gateway_start(uv_loop_t *loop, const struct orch_gateway_config *cfg, struct orch_gateway **ret);
/* Stops accepting, lets the workers finish and joins them, then frees the gateway. Accepts NULL.
 * The registry keeps its subscribers until it is freed: stop the gateway after orch_registry_free(),
 * or at least once nothing can change the registry any more. Handles on `loop` are closed here; the
 * caller runs the loop once more to release them. */
void orch_gateway_stop(struct orch_gateway *gw);
/* The port bound (port 0 in `listen` picks a free one). */
int orch_gateway_port(const struct orch_gateway *gw);
/* Rebuilds the routing table now rather than on the next loop iteration (tests). */
void orch_gateway_sync(struct orch_gateway *gw);
/* Appends the gateway's Prometheus metrics (per route: requests by status class, latency, upstream
 * errors, ejections). */
void orch_gateway_metrics(struct orch_gateway *gw, struct orch_buf *out);
