/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "balance.h"
#include "banned.h"

/* Random probes before falling back to a scan: with few endpoints ejected, one or two suffice. */
#define PROBES 8

static void eject(struct gw_health *h, uint64_t now_ms)
{
        uint64_t ms = GW_EJECT_BASE_MS;

        for (unsigned i = 0; i < h->ejections && ms < GW_EJECT_MAX_MS; i++)
                ms *= 2;
        h->ejected_until_ms = now_ms + MIN(ms, (uint64_t)GW_EJECT_MAX_MS);
        h->ejections++;
        h->fails_5xx = 0;
}

void gw_health_connect_failed(struct gw_health *h, uint64_t now_ms)
{
        eject(h, now_ms);
}

bool gw_health_answered(struct gw_health *h, int status, uint64_t now_ms)
{
        if (status < 500) {
                h->fails_5xx = 0;
                /* an answer after the ejection ended: the series is over */
                if (!gw_health_ejected(h, now_ms))
                        h->ejections = 0;
                return false;
        }
        if (++h->fails_5xx < GW_EJECT_AFTER_5XX)
                return false;
        eject(h, now_ms);
        return true;
}

static bool was_tried(size_t i, const size_t *tried, size_t n_tried)
{
        for (size_t k = 0; k < n_tried; k++)
                if (tried[k] == i)
                        return true;
        return false;
}

static bool eligible(struct gw_health *const *health, size_t i, const size_t *tried, size_t n_tried,
                     bool panic, uint64_t now_ms)
{
        return !was_tried(i, tried, n_tried) && (panic || !gw_health_ejected(health[i], now_ms));
}

/* A random eligible endpoint other than `not`, or -1. */
static int draw(struct gw_health *const *health, size_t n, const size_t *tried, size_t n_tried, bool panic,
                int not, uint64_t *rng, uint64_t now_ms)
{
        size_t start;

        for (int k = 0; k < PROBES; k++) {
                size_t i = (size_t)(gw_rand(rng) % n);
                if ((int)i != not &&eligible(health, i, tried, n_tried, panic, now_ms))
                        return (int)i;
        }
        start = (size_t)(gw_rand(rng) % n);
        for (size_t k = 0; k < n; k++) {
                size_t i = (start + k) % n;
                if ((int)i != not &&eligible(health, i, tried, n_tried, panic, now_ms))
                        return (int)i;
        }
        return -1;
}

int gw_balance_pick(struct gw_health *const *health, size_t n, const size_t *tried, size_t n_tried,
                    uint32_t *rr, uint64_t *rng, uint64_t now_ms)
{
        bool panic = false;
        int a, b;

        if (n == 0)
                return -1;
        /* one endpoint: nothing to choose (ejected or not: it is all there is) */
        if (n == 1)
                return was_tried(0, tried, n_tried) ? -1 : 0;
        a = draw(health, n, tried, n_tried, false, -1, rng, now_ms);
        if (a < 0) {
                panic = true;
                a = draw(health, n, tried, n_tried, true, -1, rng, now_ms);
                if (a < 0)
                        return -1;
        }
        b = draw(health, n, tried, n_tried, panic, a, rng, now_ms);
        if (b < 0)
                return a;
        if (health[a]->outstanding != health[b]->outstanding)
                return health[a]->outstanding < health[b]->outstanding ? a : b;
        /* A tie: the next endpoint in round-robin order, unless it is busier than the two drawn (P2C never
         * picks worse than the better of its two choices). When all are idle this is plain round robin. */
        for (size_t k = 0; k < n; k++) {
                size_t i = (*rr + k) % n;
                if (eligible(health, i, tried, n_tried, panic, now_ms)) {
                        *rr = (uint32_t)((i + 1) % n);
                        return health[i]->outstanding <= health[a]->outstanding ? (int)i : a;
                }
        }
        return a;
}
