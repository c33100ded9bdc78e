/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Endpoint choice and passive health of the gateway, per worker thread
 * (docs/gateway.md, "Balancing").
 *
 * Choice: power of two choices on outstanding requests. Two endpoints are
 * drawn at random among those not ejected and the one with fewer requests
 * in flight wins; when they tie (always, at light load) the next endpoint in
 * round-robin order is taken, so sequential traffic spreads evenly rather
 * than randomly. Every endpoint has the same weight: a route's instances
 * run the same revision with the same resources.
 *
 * Passive health: a failed connect ejects an endpoint at once, five 5xx
 * answers in a row eject it too. An ejection lasts 1 s, doubling with each
 * consecutive ejection up to 30 s; a good answer ends the series. When every
 * endpoint of a route is ejected they are all used again (the registry, not
 * the passive check, decides what is healthy: a burst of errors must not
 * turn into a 503 for a whole service).
 */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define GW_EJECT_BASE_MS     1000U
#define GW_EJECT_MAX_MS      30000U
#define GW_EJECT_AFTER_5XX   5U
#define GW_BALANCE_MAX_TRIED 4U

struct gw_health {
        unsigned outstanding;      /* requests in flight */
        uint64_t ejected_until_ms; /* loop time; 0 or past: in rotation */
        unsigned fails_5xx;        /* consecutive 5xx answers */
        unsigned ejections;        /* consecutive ejections: the backoff doubles */
};

static inline bool gw_health_ejected(const struct gw_health *h, uint64_t now_ms)
{
        return h->ejected_until_ms > now_ms;
}

/* A connect failure or timeout: ejects at once. */
void gw_health_connect_failed(struct gw_health *h, uint64_t now_ms);
/* An answer's status: true when this answer ejected the endpoint. */
bool gw_health_answered(struct gw_health *h, int status, uint64_t now_ms);

/*
 * Picks one of n endpoints (health[i], i < n) that is not in tried[0..n_tried): the index, or -1 when
 * every endpoint was tried. *rr is the route's round-robin cursor, *rng a xorshift state.
 */
int gw_balance_pick(struct gw_health *const *health, size_t n, const size_t *tried, size_t n_tried,
                    uint32_t *rr, uint64_t *rng, uint64_t now_ms);

/* xorshift64*: fast, per worker, never zero. */
static inline uint64_t gw_rand(uint64_t *s)
{
        uint64_t x = *s;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545f4914f6cdd1dULL;
}
