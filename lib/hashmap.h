/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * An intrusive hash map keyed by strings. The node lives inside the object and points at the
 * object's own key, so a map of a million instances costs one pointer per bucket plus the nodes,
 * with no allocation per insert. The hash is seeded per process so keys chosen by a client
 * cannot be aimed at one bucket.
 */

#include <stdint.h>

#include "macro.h"

struct orch_hmap_node {
        struct orch_hmap_node *next;
        const char *key; /* owned by the containing object; must not change while inserted */
        uint64_t hash;
};

struct orch_hmap {
        struct orch_hmap_node **buckets;
        size_t n_buckets; /* a power of two, or 0 before the first insert */
        size_t n;
};

/* Releases the bucket array; the nodes belong to their objects. */
void orch_hmap_release(struct orch_hmap *m);
/* Inserts node under key; -EEXIST when the key is present, -ENOMEM when growing failed. */
int orch_hmap_insert(struct orch_hmap *m, struct orch_hmap_node *node, const char *key);
struct orch_hmap_node *orch_hmap_get(const struct orch_hmap *m, const char *key);
/* Removes a node that is in the map. */
void orch_hmap_remove(struct orch_hmap *m, struct orch_hmap_node *node);

/* Iteration: `for (node = orch_hmap_first(m, &it); node; node = orch_hmap_next(m, &it))`; the
 * current node may be removed during the walk; nothing may be inserted. */
struct orch_hmap_iter {
        size_t bucket;
        struct orch_hmap_node *next;
};
struct orch_hmap_node *orch_hmap_first(const struct orch_hmap *m, struct orch_hmap_iter *it);
struct orch_hmap_node *orch_hmap_next(const struct orch_hmap *m, struct orch_hmap_iter *it);

#define orch_hmap_entry(ptr, type, member) ((ptr) ? container_of(ptr, type, member) : NULL)

uint64_t orch_hash_string(const char *s);

/* splitmix64's finalizer: every output bit depends on every input bit. */
static inline uint64_t orch_hash_mix64(uint64_t h)
{
        h ^= h >> 30;
        h *= UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h *= UINT64_C(0x94d049bb133111eb);
        return h ^ (h >> 31);
}
