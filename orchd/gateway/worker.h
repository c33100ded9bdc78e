/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A gateway worker: one thread with its own libuv loop and its own
 * listening socket on the gateway's address (SO_REUSEPORT: the kernel
 * spreads connections over the workers). A worker proxies client
 * connections to the endpoints of the routing table it was last given,
 * with per-worker connection pools, balancing state and passive health;
 * nothing on the request path takes a lock but a rate-limited route's
 * bucket shard.
 *
 * Threads: gw_worker_new, _start, _stop_and_join and _free run on the
 * thread that owns the gateway (orchd's main loop); gw_worker_publish may
 * run on any thread; everything else inside worker.c runs on the worker's
 * thread.
 */

#include <stdatomic.h>
#include <stdint.h>

#include "gateway.h"
#include "table.h"

struct gw_ratelimit;

/* What the workers share: set before they start and read-only afterwards, but for the counters. */
struct gw_shared {
        struct orch_gateway_limits lim; /* defaults filled in */
        bool access_log;
        unsigned n_workers;
        struct gw_ratelimit *ratelimit;
        atomic_size_t connections; /* open client connections, all workers */
        atomic_size_t upstreams;   /* open upstream connections, all workers */
};

struct gw_worker;

/* listen_fd: a bound, not yet listening socket; it is the worker's from now on, also on failure. */
int gw_worker_new(struct gw_shared *sh, unsigned id, int listen_fd, struct gw_worker **ret);
/* Starts the thread; it serves `table` (a reference is taken) until another is published. */
int gw_worker_start(struct gw_worker *w, struct gw_table *table);
/* Hands the worker a new table (a reference is taken); requests already routed finish on the old one. */
void gw_worker_publish(struct gw_worker *w, struct gw_table *table);
/* Stops accepting, lets requests in flight finish (up to lim.drain_timeout_ms, then closes what is
 * left) and waits for the thread. */
void gw_worker_stop_and_join(struct gw_worker *w);
void gw_worker_free(struct gw_worker *w);
