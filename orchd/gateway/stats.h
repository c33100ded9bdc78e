/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Per-route counters of the gateway. Each worker writes only its own slot
 * (one cache line apart from the others), with relaxed atomic loads and
 * stores rather than read-modify-write instructions, so counting costs a few
 * plain moves; /metrics sums the slots on orchd's main loop. A route's
 * counters outlive table rebuilds: the gateway keeps them by service name,
 * and each table holds a reference to the ones its routes use.
 */

#include <stdatomic.h>
#include <stdint.h>

#include "util.h"

/* Upper bounds of the latency histogram, in seconds (Prometheus "le"). */
#define GW_LATENCY_BUCKETS 14
extern const double gw_latency_bounds[GW_LATENCY_BUCKETS];

enum gw_status_class {
        GW_CLASS_NONE, /* the client went away or the exchange was aborted before a status was sent */
        GW_CLASS_1XX,
        GW_CLASS_2XX,
        GW_CLASS_3XX,
        GW_CLASS_4XX,
        GW_CLASS_5XX,
        _GW_CLASS_MAX,
};

struct gw_counters {
        _Atomic uint64_t requests[_GW_CLASS_MAX];
        _Atomic uint64_t latency[GW_LATENCY_BUCKETS + 1]; /* the last: above every bound */
        _Atomic uint64_t latency_sum_usec;
        _Atomic uint64_t upstream_errors; /* connect failures, resets, malformed answers, timeouts */
        _Atomic uint64_t ejections;
        _Atomic uint64_t retries;
} __attribute__((aligned(64)));

struct gw_stats {
        atomic_uint refs;
        char *route; /* the service name; "" for requests no route took */
        unsigned n_workers;
        struct gw_counters w[];
};

int gw_stats_new(const char *route, unsigned n_workers, struct gw_stats **ret);
struct gw_stats *gw_stats_ref(struct gw_stats *s);
/* Callable from any thread; accepts NULL. */
void gw_stats_unref(struct gw_stats *s);

/* Only the owning worker writes a slot: a load and a store, no locked instruction. */
static inline void gw_count(_Atomic uint64_t *c, uint64_t n)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* One finished request: its status (0 when none was sent) and how long it took. */
void gw_stats_request(struct gw_counters *c, int status, uint64_t usec);

/* Appends every family's HELP and TYPE lines, each followed by the samples of all n routes. */
void gw_stats_render(struct gw_stats *const *all, size_t n, struct orch_buf *out);
