/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <pthread.h>

#include "hashmap.h"
#include "list.h"
#include "ratelimit.h"
#include "util.h"
#include "banned.h"

#define SHARDS   64U /* a power of two */
#define ADDR_MAX 16U /* an IPv6 address */

/* One token is period_usec units of credit and every microsecond adds `count` units: integer arithmetic,
 * exact for any rate, no drift. */
struct bucket {
        struct bucket *next; /* hash chain */
        struct orch_list lru;
        uint64_t hash;
        uint64_t route_id;
        uint8_t addr[ADDR_MAX];
        uint8_t addr_len;
        uint64_t credit;
        uint64_t last_usec;
};

struct shard {
        pthread_mutex_t lock;
        struct bucket **buckets;
        size_t n_buckets; /* a power of two */
        size_t n, max;
        struct orch_list lru; /* most recently used first */
} __attribute__((aligned(64)));

struct gw_ratelimit {
        uint64_t seed;
        struct shard shards[SHARDS];
};

int gw_ratelimit_new(size_t max_entries, struct gw_ratelimit **ret)
{
        struct gw_ratelimit *rl;
        size_t per_shard;

        if (max_entries == 0)
                max_entries = GW_RATELIMIT_DEFAULT_ENTRIES;
        per_shard = MAX((size_t)1, max_entries / SHARDS);
        rl = aligned_alloc(64, sizeof *rl);
        if (!rl)
                return -ENOMEM;
        memset(rl, 0, sizeof *rl);
        /* The seed keeps clients from choosing addresses that all fall in one chain. */
        if (orch_random_bytes(&rl->seed, sizeof rl->seed) < 0)
                rl->seed = orch_now_usec() * 0x9e3779b97f4a7c15ULL;
        for (size_t i = 0; i < SHARDS; i++) {
                struct shard *s = &rl->shards[i];
                size_t nb = 16;

                while (nb < per_shard)
                        nb *= 2;
                pthread_mutex_init(&s->lock, NULL);
                orch_list_init(&s->lru);
                s->max = per_shard;
                s->n_buckets = nb;
                s->buckets = calloc(nb, sizeof *s->buckets);
                if (!s->buckets) {
                        for (size_t j = 0; j <= i; j++) {
                                free(rl->shards[j].buckets);
                                pthread_mutex_destroy(&rl->shards[j].lock);
                        }
                        free(rl);
                        return -ENOMEM;
                }
        }
        *ret = rl;
        return 0;
}

void gw_ratelimit_free(struct gw_ratelimit *rl)
{
        if (!rl)
                return;
        for (size_t i = 0; i < SHARDS; i++) {
                struct shard *s = &rl->shards[i];
                struct orch_list *p, *t;

                orch_list_foreach_safe (p, t, &s->lru)
                        free(orch_list_entry(p, struct bucket, lru));
                free(s->buckets);
                pthread_mutex_destroy(&s->lock);
        }
        free(rl);
}

static uint64_t key_hash(uint64_t seed, uint64_t route_id, const uint8_t *addr, size_t len)
{
        uint64_t h = orch_hash_mix64(seed ^ route_id);

        for (size_t i = 0; i < len; i++)
                h = (h ^ addr[i]) * 0x100000001b3ULL;
        return orch_hash_mix64(h);
}

static void unlink_bucket(struct shard *s, struct bucket *b)
{
        struct bucket **pp = &s->buckets[b->hash & (s->n_buckets - 1)];

        while (*pp != b)
                pp = &(*pp)->next;
        *pp = b->next;
        orch_list_remove(&b->lru);
        s->n--;
}

bool gw_ratelimit_take(struct gw_ratelimit *rl, uint64_t route_id, const void *addr, size_t addr_len,
                       const struct gw_rate *rate, uint64_t now_usec, uint64_t *ret_retry_after_ms)
{
        uint64_t period_usec = rate->period_ms * 1000, count = rate->count;
        uint64_t cap = (uint64_t)MAX(rate->burst, 1U) * period_usec;
        uint64_t h;
        struct shard *s;
        struct bucket *b;
        bool ok;

        if (count == 0 || period_usec == 0)
                return true;
        addr_len = MIN(addr_len, (size_t)ADDR_MAX);
        h = key_hash(rl->seed, route_id, addr, addr_len);
        /* The high bits pick the shard, the low bits the chain: independent. */
        s = &rl->shards[h >> 58 & (SHARDS - 1)];
        pthread_mutex_lock(&s->lock);
        for (b = s->buckets[h & (s->n_buckets - 1)]; b; b = b->next)
                if (b->hash == h && b->route_id == route_id && b->addr_len == addr_len &&
                    memcmp(b->addr, addr, addr_len) == 0)
                        break;
        if (b) {
                uint64_t elapsed = now_usec > b->last_usec ? now_usec - b->last_usec : 0;

                /* elapsed * count could overflow: past the time to fill the bucket it is full anyway */
                if (elapsed >= cap / count || b->credit + elapsed * count >= cap)
                        b->credit = cap;
                else
                        b->credit += elapsed * count;
                b->credit = MIN(b->credit, cap); /* the rate may have shrunk since */
                b->last_usec = now_usec;
                orch_list_remove(&b->lru);
        } else {
                if (s->n >= s->max) {
                        b = orch_list_entry(s->lru.prev, struct bucket, lru);
                        unlink_bucket(s, b);
                } else {
                        b = malloc(sizeof *b);
                        if (!b) {
                                /* Without memory the limit cannot be kept: let the request through. */
                                pthread_mutex_unlock(&s->lock);
                                return true;
                        }
                }
                *b = (struct bucket){.hash = h,
                                     .route_id = route_id,
                                     .addr_len = (uint8_t)addr_len,
                                     .credit = cap,
                                     .last_usec = now_usec};
                memcpy(b->addr, addr, addr_len);
                b->next = s->buckets[h & (s->n_buckets - 1)];
                s->buckets[h & (s->n_buckets - 1)] = b;
                s->n++;
        }
        orch_list_insert_after(&s->lru, &b->lru);
        ok = b->credit >= period_usec;
        if (ok)
                b->credit -= period_usec;
        else if (ret_retry_after_ms)
                /* the units missing for one token, at `count` units per microsecond, rounded up */
                *ret_retry_after_ms = ((period_usec - b->credit + count - 1) / count + 999) / 1000;
        pthread_mutex_unlock(&s->lock);
        return ok;
}

size_t gw_ratelimit_entries(struct gw_ratelimit *rl)
{
        size_t n = 0;

        for (size_t i = 0; i < SHARDS; i++) {
                pthread_mutex_lock(&rl->shards[i].lock);
                n += rl->shards[i].n;
                pthread_mutex_unlock(&rl->shards[i].lock);
        }
        return n;
}
