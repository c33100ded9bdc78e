/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <pthread.h>

#include "hashmap.h"
#include "util.h"
#include "banned.h"

static uint64_t hash_seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
        if (orch_random_bytes(&hash_seed, sizeof hash_seed) < 0)
                hash_seed = (uint64_t)orch_now_usec() * 0x9e3779b97f4a7c15ULL;
}

uint64_t orch_hash_string(const char *s)
{
        /* FNV-1a over the bytes, started from the seed, with a final avalanche (splitmix64) so
         * that the low bits used for the bucket index depend on every input bit. */
        uint64_t h;

        pthread_once(&seed_once, seed_init);
        h = 0xcbf29ce484222325ULL ^ hash_seed;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                h ^= *p;
                h *= 0x100000001b3ULL;
        }
        return orch_hash_mix64(h);
}

void orch_hmap_release(struct orch_hmap *m)
{
        free(m->buckets);
        *m = (struct orch_hmap){0};
}

static int grow(struct orch_hmap *m)
{
        size_t nb = m->n_buckets ? m->n_buckets * 2 : 16;
        struct orch_hmap_node **b = calloc(nb, sizeof *b);

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_buckets; i++) {
                struct orch_hmap_node *n = m->buckets[i];
                while (n) {
                        struct orch_hmap_node *next = n->next;
                        size_t k = n->hash & (nb - 1);
                        n->next = b[k];
                        b[k] = n;
                        n = next;
                }
        }
        free(m->buckets);
        m->buckets = b;
        m->n_buckets = nb;
        return 0;
}

struct orch_hmap_node *orch_hmap_get(const struct orch_hmap *m, const char *key)
{
        uint64_t h;

        if (m->n == 0)
                return NULL;
        h = orch_hash_string(key);
        for (struct orch_hmap_node *n = m->buckets[h & (m->n_buckets - 1)]; n; n = n->next)
                if (n->hash == h && streq(n->key, key))
                        return n;
        return NULL;
}

int orch_hmap_insert(struct orch_hmap *m, struct orch_hmap_node *node, const char *key)
{
        size_t k;

        if (orch_hmap_get(m, key))
                return -EEXIST;
        /* load factor at most 1 */
        if (m->n + 1 > m->n_buckets) {
                int r = grow(m);
                if (r < 0)
                        return r;
        }
        node->key = key;
        node->hash = orch_hash_string(key);
        k = node->hash & (m->n_buckets - 1);
        node->next = m->buckets[k];
        m->buckets[k] = node;
        m->n++;
        return 0;
}

void orch_hmap_remove(struct orch_hmap *m, struct orch_hmap_node *node)
{
        struct orch_hmap_node **p = &m->buckets[node->hash & (m->n_buckets - 1)];

        for (; *p; p = &(*p)->next)
                if (*p == node) {
                        *p = node->next;
                        node->next = NULL;
                        m->n--;
                        return;
                }
}

static struct orch_hmap_node *advance(const struct orch_hmap *m, struct orch_hmap_iter *it)
{
        while (!it->next && ++it->bucket < m->n_buckets)
                it->next = m->buckets[it->bucket];
        return it->next;
}

struct orch_hmap_node *orch_hmap_first(const struct orch_hmap *m, struct orch_hmap_iter *it)
{
        it->bucket = 0;
        it->next = m->n_buckets ? m->buckets[0] : NULL;
        return orch_hmap_next(m, it);
}

struct orch_hmap_node *orch_hmap_next(const struct orch_hmap *m, struct orch_hmap_iter *it)
{
        struct orch_hmap_node *cur;

        if (!m->n_buckets)
                return NULL;
        cur = advance(m, it);
        if (cur)
                it->next = cur->next; /* fetched before the caller may remove cur */
        return cur;
}
