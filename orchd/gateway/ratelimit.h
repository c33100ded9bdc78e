/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Rate limits of the gateway: one token bucket per route and client address,
 * shared by every worker thread. With per-worker buckets a client whose
 * connections land on W workers (SO_REUSEPORT spreads them by port) would get
 * W times the rate its route allows; the limit a user writes must hold, so
 * the buckets live in one table split into shards, each behind its own
 * mutex: workers contend only when two of them look up clients of the same
 * shard at the same moment, for the few instructions a bucket update takes.
 *
 * Memory is bounded: beyond max_entries the least recently used bucket is
 * reused. A client idle long enough for its bucket to be full again loses
 * nothing by that; only an attacker with more addresses than the table holds
 * could make buckets restart full.
 */

#include <stdbool.h>
#include <stdint.h>

#define GW_RATELIMIT_DEFAULT_ENTRIES (256U * 1024U)

struct gw_ratelimit;

/* max_entries 0: the default. */
int gw_ratelimit_new(size_t max_entries, struct gw_ratelimit **ret);
void gw_ratelimit_free(struct gw_ratelimit *rl);

struct gw_rate {
        uint32_t count;     /* tokens per period, at least 1 */
        uint64_t period_ms; /* at least 1 */
        uint32_t burst;     /* the bucket's size, at least 1 */
};

/* Takes a token from the bucket of (route_id, addr) at time now_usec (monotonic). True when the request
 * may go on; otherwise *ret_retry_after_ms says when the next token comes. A bucket starts full. */
bool gw_ratelimit_take(struct gw_ratelimit *rl, uint64_t route_id, const void *addr, size_t addr_len,
                       const struct gw_rate *rate, uint64_t now_usec, uint64_t *ret_retry_after_ms);
/* Buckets in use (for tests and metrics). */
size_t gw_ratelimit_entries(struct gw_ratelimit *rl);
