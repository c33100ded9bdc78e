/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <limits.h>

#include "hashmap.h"
#include "scheduler.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/*
 * Layout of the view (docs/scheduler.md explains the algorithm):
 *
 *   - three string tables (node names, label strings, service names) hand out small ids; a
 *     node's handle is the id of its name, labels are compared as ids;
 *   - every node sits at one position of a random permutation; a max-tree over positions keeps,
 *     per subtree and per class of free memory, the largest free CPU among ready nodes, so a scan
 *     skips whole runs of nodes that cannot fit the request in O(log N) instead of visiting them;
 *   - each service has a small hash table node -> instances, holding only the nodes it runs on.
 */

#define ID_NONE                UINT32_MAX

#define DEFAULT_EXHAUSTIVE_MAX 64
#define DEFAULT_SAMPLE_MIN     8

/* Keeps every sum of bytes and millicores far from int64 overflow in the tree's arithmetic. */
#define QUANTITY_MAX (UINT64_C(1) << 62)

/* Free capacity of a node that takes nothing (down, draining): below any request. */
#define UNSCHEDULABLE INT64_MIN

/* ---- string tables ---- */

struct sched_string {
        struct orch_hmap_node hnode;
        uint32_t id;
        uint32_t refs;
        char str[];
};

/* Strings with reference counts and small dense ids that are reused once freed, so that arrays
 * indexed by id stay as small as the number of live strings. */
struct strtab {
        struct orch_hmap map;
        struct sched_string **by_id; /* NULL: a free id */
        uint32_t n_ids;              /* ids handed out (the high-water mark) */
        uint32_t cap_ids;
        uint32_t *free_ids; /* a stack of cap_ids entries */
        uint32_t n_free;
};

static void strtab_release(struct strtab *t)
{
        for (uint32_t id = 0; id < t->n_ids; id++)
                free(t->by_id[id]);
        free(t->by_id);
        free(t->free_ids);
        orch_hmap_release(&t->map);
        *t = (struct strtab){0};
}

static uint32_t strtab_find(const struct strtab *t, const char *s)
{
        struct orch_hmap_node *n = orch_hmap_get(&t->map, s);

        return n ? orch_hmap_entry(n, struct sched_string, hnode)->id : ID_NONE;
}

/* Adds a string that is not in the table yet, with one reference. */
static int strtab_add(struct strtab *t, const char *s, uint32_t *ret_id)
{
        _cleanup_(freep) struct sched_string *e = NULL;
        size_t len = strlen(s);
        uint32_t id;
        int r;

        if (t->n_free == 0 && t->n_ids == t->cap_ids) {
                uint32_t cap = t->cap_ids ? t->cap_ids * 2 : 16;
                struct sched_string **by_id;
                uint32_t *free_ids;

                if (t->cap_ids > UINT32_MAX / 4)
                        return -ENOMEM;
                by_id = reallocarray(t->by_id, cap, sizeof *by_id);
                if (!by_id)
                        return -ENOMEM;
                t->by_id = by_id;
                free_ids = reallocarray(t->free_ids, cap, sizeof *free_ids);
                if (!free_ids)
                        return -ENOMEM;
                t->free_ids = free_ids;
                t->cap_ids = cap;
        }
        e = malloc(sizeof *e + len + 1);
        if (!e)
                return -ENOMEM;
        memcpy(e->str, s, len + 1);
        id = t->n_free ? t->free_ids[t->n_free - 1] : t->n_ids;
        e->id = id;
        e->refs = 1;
        r = orch_hmap_insert(&t->map, &e->hnode, e->str);
        if (r < 0)
                return r;
        if (t->n_free)
                t->n_free--;
        else
                t->n_ids++;
        t->by_id[id] = TAKE_PTR(e);
        *ret_id = id;
        return 0;
}

static int strtab_ref(struct strtab *t, const char *s, uint32_t *ret_id)
{
        uint32_t id = strtab_find(t, s);

        if (id == ID_NONE)
                return strtab_add(t, s, ret_id);
        t->by_id[id]->refs++;
        *ret_id = id;
        return 0;
}

static void strtab_unref(struct strtab *t, uint32_t id)
{
        struct sched_string *e = t->by_id[id];

        if (--e->refs > 0)
                return;
        orch_hmap_remove(&t->map, &e->hnode);
        free(e);
        t->by_id[id] = NULL;
        t->free_ids[t->n_free++] = id;
}

static const char *strtab_str(const struct strtab *t, uint32_t id)
{
        return t->by_id[id]->str;
}

/* The id the next strtab_add() hands out is below this. */
static uint32_t strtab_id_bound(const struct strtab *t)
{
        return t->n_free ? t->n_ids : t->n_ids + 1;
}

/* Grows an array kept parallel to a string table's ids, zero-filling the new part. Returns the
 * array (moved or not), or NULL when out of memory (the old one is untouched). */
static void *grow_parallel(void *array, uint32_t *cap, uint32_t need, size_t elem)
{
        uint32_t n;
        void *p;

        if (need <= *cap)
                return array;
        n = MAX(need, *cap * 2);
        p = reallocarray(array, n, elem);
        if (!p)
                return NULL;
        memset((char *)p + (size_t)*cap * elem, 0, (size_t)(n - *cap) * elem);
        *cap = n;
        return p;
}

/* ---- per-service instance counts ---- */

struct svc_slot {
        uint32_t node_plus1; /* 0: empty */
        uint32_t count;
};

/* Sparse by design: a service of 3 replicas costs 16 slots, not one counter per node, so
 * thousands of small services on thousands of nodes stay cheap. */
struct sched_service {
        struct svc_slot *slots;
        uint32_t mask;
        uint32_t used;
        uint64_t total;
};

static uint32_t hash_u32(uint32_t x)
{
        x *= 0x9e3779b1u;
        return x ^ (x >> 15);
}

static uint32_t svc_get(const struct sched_service *svc, uint32_t node)
{
        if (!svc->slots)
                return 0;
        for (uint32_t i = hash_u32(node) & svc->mask; svc->slots[i].node_plus1; i = (i + 1) & svc->mask)
                if (svc->slots[i].node_plus1 == node + 1)
                        return svc->slots[i].count;
        return 0;
}

static int svc_grow(struct sched_service *svc)
{
        uint32_t slots = svc->slots ? (svc->mask + 1) * 2 : 16;
        struct svc_slot *n;

        if (slots == 0 || slots > UINT32_MAX / 2)
                return -ENOMEM;
        n = calloc(slots, sizeof *n);
        if (!n)
                return -ENOMEM;
        for (uint32_t k = 0; svc->slots && k <= svc->mask; k++) {
                uint32_t i;

                if (!svc->slots[k].node_plus1)
                        continue;
                for (i = hash_u32(svc->slots[k].node_plus1 - 1) & (slots - 1); n[i].node_plus1;
                     i = (i + 1) & (slots - 1))
                        ;
                n[i] = svc->slots[k];
        }
        free(svc->slots);
        svc->slots = n;
        svc->mask = slots - 1;
        return 0;
}

static int svc_increment(struct sched_service *svc, uint32_t node)
{
        uint32_t i;
        int r;

        if (!svc->slots || (uint64_t)(svc->used + 1) * 4 > (uint64_t)(svc->mask + 1) * 3) {
                r = svc_grow(svc);
                if (r < 0)
                        return r;
        }
        for (i = hash_u32(node) & svc->mask; svc->slots[i].node_plus1; i = (i + 1) & svc->mask)
                if (svc->slots[i].node_plus1 == node + 1) {
                        svc->slots[i].count++;
                        svc->total++;
                        return 0;
                }
        svc->slots[i] = (struct svc_slot){.node_plus1 = node + 1, .count = 1};
        svc->used++;
        svc->total++;
        return 0;
}

static void svc_delete_slot(struct sched_service *svc, uint32_t i)
{
        uint32_t j;

        for (j = i;;) {
                uint32_t home;

                j = (j + 1) & svc->mask;
                if (!svc->slots[j].node_plus1)
                        break;
                home = hash_u32(svc->slots[j].node_plus1 - 1) & svc->mask;
                if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                        continue;
                svc->slots[i] = svc->slots[j];
                i = j;
        }
        svc->slots[i] = (struct svc_slot){0};
        svc->used--;
}

/* Removes `count` instances on `node` (all of them when count is UINT32_MAX); -ERANGE when fewer
 * are there. */
static int svc_decrement(struct sched_service *svc, uint32_t node, uint32_t count)
{
        if (!svc->slots)
                return -ERANGE;
        for (uint32_t i = hash_u32(node) & svc->mask; svc->slots[i].node_plus1; i = (i + 1) & svc->mask) {
                if (svc->slots[i].node_plus1 != node + 1)
                        continue;
                if (count == UINT32_MAX)
                        count = svc->slots[i].count;
                if (svc->slots[i].count < count)
                        return -ERANGE;
                svc->slots[i].count -= count;
                svc->total -= count;
                if (svc->slots[i].count == 0)
                        svc_delete_slot(svc, i);
                return 0;
        }
        return count == UINT32_MAX ? 0 : -ERANGE;
}

/* ---- nodes ---- */

struct sched_label {
        uint32_t key; /* ids in the label table */
        uint32_t value;
};

struct sched_node {
        uint32_t pos; /* position in the placement order; ID_NONE: the handle is free */
        enum orch_node_state state;
        unsigned drivers;
        uint32_t n_labels;
        struct sched_label *labels;
        uint32_t cpu_cap;
        uint64_t mem_cap;
        uint64_t cpu_alloc;
        uint64_t mem_alloc;
        uint32_t instances;
};

/*
 * The capacity tree prunes on both dimensions at once. Separate maxima of free CPU and of free
 * memory would not: on a full cluster most nodes run out of one of them, and a subtree holding one
 * node with CPU left and another with memory left passes both maxima while no node in it fits, so
 * scans would crawl through such subtrees. Instead a cell holds, for each class of free memory,
 * the most free CPU among the ready nodes that have at least that much memory free: class 0 is
 * any free memory, class k >= 1 at least 2^(k+23) bytes (16Mi, 32Mi, ... 256Gi). A request looks
 * at the largest class its memory reaches, exact for requests of a power of two (128Mi, 1Gi) and
 * never pruning a node that fits otherwise; the leaf then checks memory exactly. Sixteen classes
 * of 32-bit millicores make a cell one cache line, which is what an update touches per level.
 */
#define MEM_CLASSES     16
#define MEM_CLASS_SHIFT 23

struct tree_cell {
        int32_t cpu[MEM_CLASSES];
};
_Static_assert(sizeof(struct tree_cell) == 64, "a tree cell is one cache line");

/* A cell's CPU for no fitting node: below any request (requests are unsigned). */
#define CELL_NONE INT32_MIN

struct resolved_constraint {
        uint32_t key;   /* ID_NONE: no node has this label */
        uint32_t value; /* ID_NONE: no node has this value for any label */
        bool negate;
};

struct orch_sched {
        struct strtab node_names; /* id = node handle */
        struct sched_node *nodes;
        uint32_t cap_nodes;

        struct strtab labels;

        struct strtab service_names; /* id = index in services */
        struct sched_service *services;
        uint32_t cap_services;

        /* Positions 0..n_nodes-1 hold a uniformly random permutation of the nodes (kept so by
         * inserting at a random position and removing by moving the last one into the hole):
         * scans start at a random position for spread and at 0 for binpack (first fit). */
        uint32_t n_nodes;
        uint32_t leaves; /* a power of two >= n_nodes; the tree has 2 * leaves cells, root at 1 */
        struct tree_cell *tree;
        int64_t *leaf_mem; /* by position: free memory of a ready node, else UNSCHEDULABLE */
        uint32_t *pos_node;

        uint64_t rng;
        uint64_t epoch;
        uint64_t version; /* rises on every change of the view */
        uint32_t exhaustive_max;
        uint32_t sample_min;

        /* The last failure (see place_one()). */
        struct last_failure {
                uint64_t version; /* 0: none */
                int64_t cpu, mem;
                unsigned driver_bit;
                uint32_t exclude;
                size_t n_constraints;
                struct resolved_constraint *constraints;
                char reason[ORCH_SCHED_REASON_MAX];
        } last_failure;
};

/* splitmix64: tiny, seedable with any value, good enough to pick scan starts. */
static uint64_t rng_next(uint64_t *state)
{
        return orch_hash_mix64(*state += UINT64_C(0x9e3779b97f4a7c15));
}

static uint32_t rng_below(uint64_t *state, uint32_t n)
{
        return (uint32_t)(((unsigned __int128)rng_next(state) * n) >> 64);
}

static bool node_valid(const struct orch_sched *s, uint32_t node)
{
        return node < s->node_names.n_ids && s->nodes[node].pos != ID_NONE;
}

static unsigned mem_class(int64_t mem)
{
        if (mem < ((int64_t)1 << (MEM_CLASS_SHIFT + 1)))
                return 0;
        return MIN((unsigned)(63 - __builtin_clzll((uint64_t)mem)) - MEM_CLASS_SHIFT, MEM_CLASSES - 1);
}

/* Free memory of a node as the tree sees it. */
static int64_t node_free_mem(const struct sched_node *n)
{
        if (n->state != ORCH_NODE_READY || n->mem_alloc > n->mem_cap)
                return UNSCHEDULABLE;
        return (int64_t)(n->mem_cap - n->mem_alloc);
}

static void leaf_cell(const struct sched_node *n, int64_t free_mem, struct tree_cell *ret)
{
        unsigned top = free_mem == UNSCHEDULABLE ? 0 : mem_class(free_mem) + 1;
        /* Over-committed CPU is -1: fails every request, even of 0, as the exact check does.
         * Capacities are below 2^31 millicores (orch_sched_node_add checks). */
        int32_t cpu = n->cpu_alloc > n->cpu_cap ? -1 : (int32_t)(n->cpu_cap - n->cpu_alloc);

        for (unsigned k = 0; k < MEM_CLASSES; k++)
                ret->cpu[k] = k < top ? cpu : CELL_NONE;
}

static void cell_max(const struct tree_cell *a, const struct tree_cell *b, struct tree_cell *ret)
{
        for (unsigned k = 0; k < MEM_CLASSES; k++)
                ret->cpu[k] = MAX(a->cpu[k], b->cpu[k]);
}

static void empty_cell(struct tree_cell *ret)
{
        for (unsigned k = 0; k < MEM_CLASSES; k++)
                ret->cpu[k] = CELL_NONE;
}

/* Writes the leaf of `pos` (node ID_NONE: an empty position) and fixes its ancestors. */
static void tree_set(struct orch_sched *s, uint32_t pos, uint32_t node)
{
        size_t i = (size_t)s->leaves + pos;

        if (node == ID_NONE) {
                s->leaf_mem[pos] = UNSCHEDULABLE;
                empty_cell(&s->tree[i]);
        } else {
                s->leaf_mem[pos] = node_free_mem(&s->nodes[node]);
                leaf_cell(&s->nodes[node], s->leaf_mem[pos], &s->tree[i]);
        }
        /* An ancestor whose maxima did not change means none above it changes either. */
        for (i >>= 1; i >= 1; i >>= 1) {
                struct tree_cell m;

                cell_max(&s->tree[2 * i], &s->tree[2 * i + 1], &m);
                if (memcmp(&m, &s->tree[i], sizeof m) == 0)
                        break;
                s->tree[i] = m;
        }
}

/* Every change of a node's capacity, allocation, state or labels goes through here. */
static void tree_update_node(struct orch_sched *s, uint32_t node)
{
        tree_set(s, s->nodes[node].pos, node);
        s->version++;
}

static int tree_grow(struct orch_sched *s)
{
        uint32_t leaves = s->leaves ? s->leaves * 2 : 16;
        struct tree_cell *tree;
        int64_t *leaf_mem;
        uint32_t *pos_node;

        if (leaves == 0 || leaves > UINT32_MAX / 4)
                return -ENOMEM;
        pos_node = reallocarray(s->pos_node, leaves, sizeof *pos_node);
        if (!pos_node)
                return -ENOMEM;
        s->pos_node = pos_node;
        tree = aligned_alloc(sizeof *tree, 2 * (size_t)leaves * sizeof *tree);
        leaf_mem = reallocarray(NULL, leaves, sizeof *leaf_mem);
        if (!tree || !leaf_mem) {
                free(tree);
                free(leaf_mem);
                return -ENOMEM;
        }
        for (uint32_t p = 0; p < leaves; p++) {
                const struct sched_node *n = p < s->n_nodes ? &s->nodes[pos_node[p]] : NULL;

                leaf_mem[p] = n ? node_free_mem(n) : UNSCHEDULABLE;
                if (n)
                        leaf_cell(n, leaf_mem[p], &tree[leaves + p]);
                else
                        empty_cell(&tree[leaves + p]);
        }
        for (size_t i = leaves - 1; i >= 1; i--)
                cell_max(&tree[2 * i], &tree[2 * i + 1], &tree[i]);
        free(s->tree);
        free(s->leaf_mem);
        s->tree = tree;
        s->leaf_mem = leaf_mem;
        s->leaves = leaves;
        return 0;
}

/* The first position >= from whose node is ready and has at least this much free CPU and memory,
 * or ID_NONE: climbs to the next subtree on the right that may hold one and descends into it. A
 * descent can still fail (the memory class is coarser than the request), and then climbs again. */
static uint32_t tree_next(const struct orch_sched *s, uint32_t from, int64_t cpu, int64_t mem)
{
        unsigned k = mem_class(mem);
        size_t i;

        if (from >= s->n_nodes)
                return ID_NONE;
        i = (size_t)s->leaves + from;
        for (;;) {
                if (s->tree[i].cpu[k] >= cpu) {
                        if (i < s->leaves) {
                                i = 2 * i;
                                continue;
                        }
                        if (s->leaf_mem[i - s->leaves] >= mem)
                                return (uint32_t)(i - s->leaves);
                }
                while (i & 1)
                        i >>= 1;
                if (i == 0)
                        return ID_NONE;
                i++;
        }
}

static void place_at(struct orch_sched *s, uint32_t node, uint32_t pos)
{
        s->nodes[node].pos = pos;
        s->pos_node[pos] = node;
        tree_update_node(s, node);
}

static void labels_release(struct orch_sched *s, struct sched_label *labels, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                strtab_unref(&s->labels, labels[i].key);
                strtab_unref(&s->labels, labels[i].value);
        }
        free(labels);
}

static int label_cmp(const void *a, const void *b)
{
        const struct sched_label *x = a, *y = b;
        return x->key < y->key ? -1 : x->key > y->key;
}

static int labels_build(struct orch_sched *s, const struct orch_sched_node_spec *spec,
                        struct sched_label **ret, uint32_t *ret_n)
{
        struct sched_label *labels = NULL;
        uint32_t n = 0;
        int r;

        if (spec->n_labels > ORCH_SCHED_LABELS_MAX || (spec->n_labels && !spec->labels))
                return -EINVAL;
        for (size_t i = 0; i < spec->n_labels; i++) {
                if (!spec->labels[i].key || !*spec->labels[i].key || !spec->labels[i].value)
                        return -EINVAL;
                for (size_t j = 0; j < i; j++)
                        if (streq(spec->labels[i].key, spec->labels[j].key))
                                return -EINVAL;
        }
        if (spec->n_labels) {
                labels = calloc(spec->n_labels, sizeof *labels);
                if (!labels)
                        return -ENOMEM;
        }
        for (; n < spec->n_labels; n++) {
                r = strtab_ref(&s->labels, spec->labels[n].key, &labels[n].key);
                if (r < 0)
                        goto fail;
                r = strtab_ref(&s->labels, spec->labels[n].value, &labels[n].value);
                if (r < 0) {
                        strtab_unref(&s->labels, labels[n].key);
                        goto fail;
                }
        }
        if (n > 1)
                qsort(labels, n, sizeof *labels, label_cmp);
        *ret = labels;
        *ret_n = n;
        return 0;
fail:
        labels_release(s, labels, n);
        return r;
}

static int spec_check(const struct orch_sched_node_spec *spec)
{
        if (!spec)
                return -EINVAL;
        if ((unsigned)spec->state >= _ORCH_NODE_STATE_MAX)
                return -EINVAL;
        if (spec->memory > QUANTITY_MAX || spec->cpu_millis > INT32_MAX)
                return -ERANGE;
        return 0;
}

int orch_sched_new(const struct orch_sched_options *opts, struct orch_sched **ret)
{
        _cleanup_(orch_sched_freep) struct orch_sched *s = NULL;

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->rng = opts ? opts->seed : 0;
        s->exhaustive_max = opts && opts->exhaustive_max ? opts->exhaustive_max : DEFAULT_EXHAUSTIVE_MAX;
        s->sample_min = opts && opts->sample_min ? opts->sample_min : DEFAULT_SAMPLE_MIN;
        *ret = TAKE_PTR(s);
        return 0;
}

struct orch_sched *orch_sched_free(struct orch_sched *s)
{
        if (!s)
                return NULL;
        for (uint32_t id = 0; id < s->node_names.n_ids; id++)
                if (s->nodes[id].pos != ID_NONE)
                        free(s->nodes[id].labels);
        for (uint32_t id = 0; id < s->service_names.n_ids; id++)
                free(s->services[id].slots);
        strtab_release(&s->node_names);
        strtab_release(&s->labels);
        strtab_release(&s->service_names);
        free(s->nodes);
        free(s->services);
        free(s->tree);
        free(s->leaf_mem);
        free(s->pos_node);
        free(s->last_failure.constraints);
        free(s);
        return NULL;
}

int orch_sched_node_add(struct orch_sched *s, const struct orch_sched_node_spec *spec, uint32_t *ret_node)
{
        struct sched_label *labels = NULL;
        uint32_t n_labels = 0, id, pos;
        struct sched_node *nodes;
        int r;

        r = spec_check(spec);
        if (r < 0)
                return r;
        if (!spec->name || !*spec->name)
                return -EINVAL;
        if (strtab_find(&s->node_names, spec->name) != ID_NONE)
                return -EEXIST;
        if (s->n_nodes == UINT32_MAX / 4)
                return -ENOSPC;
        if (s->n_nodes == s->leaves) {
                r = tree_grow(s);
                if (r < 0)
                        return r;
        }
        /* Room in the parallel array first, so that every id the table hands out has its entry. */
        nodes = grow_parallel(s->nodes, &s->cap_nodes, strtab_id_bound(&s->node_names), sizeof *s->nodes);
        if (!nodes)
                return -ENOMEM;
        s->nodes = nodes;
        r = labels_build(s, spec, &labels, &n_labels);
        if (r < 0)
                return r;
        r = strtab_add(&s->node_names, spec->name, &id);
        if (r < 0) {
                labels_release(s, labels, n_labels);
                return r;
        }
        s->nodes[id] = (struct sched_node){
                .state = spec->state,
                .drivers = spec->drivers,
                .labels = labels,
                .n_labels = n_labels,
                .cpu_cap = spec->cpu_millis,
                .mem_cap = spec->memory,
        };

        /* Inside-out Fisher-Yates: the newcomer takes a random position and the node that held
         * it moves to the end, so the order stays a uniformly random permutation. */
        pos = rng_below(&s->rng, s->n_nodes + 1);
        if (pos != s->n_nodes)
                place_at(s, s->pos_node[pos], s->n_nodes);
        s->n_nodes++;
        place_at(s, id, pos);
        if (spec->state == ORCH_NODE_READY)
                s->epoch++;
        *ret_node = id;
        return 0;
}

int orch_sched_node_update(struct orch_sched *s, uint32_t node, const struct orch_sched_node_spec *spec)
{
        struct sched_label *labels;
        uint32_t n_labels;
        struct sched_node *n;
        int r;

        r = spec_check(spec);
        if (r < 0)
                return r;
        if (!node_valid(s, node))
                return -ENOENT;
        if (spec->name && !streq(spec->name, strtab_str(&s->node_names, node)))
                return -EINVAL;
        /* New references first, so strings the node keeps are not freed and re-added. */
        r = labels_build(s, spec, &labels, &n_labels);
        if (r < 0)
                return r;
        n = &s->nodes[node];
        /* Agents re-register and orchd re-syncs nodes often with nothing changed; the epoch only
         * moves when the node may take something it could not take before. */
        if (spec->state == ORCH_NODE_READY &&
            (n->state != ORCH_NODE_READY || spec->cpu_millis > n->cpu_cap || spec->memory > n->mem_cap ||
             (spec->drivers & ~n->drivers) || n_labels != n->n_labels ||
             (n_labels && memcmp(labels, n->labels, n_labels * sizeof *labels) != 0)))
                s->epoch++;
        labels_release(s, n->labels, n->n_labels);
        n->labels = labels;
        n->n_labels = n_labels;
        n->state = spec->state;
        n->drivers = spec->drivers;
        n->cpu_cap = spec->cpu_millis;
        n->mem_cap = spec->memory;
        tree_update_node(s, node);
        return 0;
}

int orch_sched_node_set_state(struct orch_sched *s, uint32_t node, enum orch_node_state state)
{
        if (!node_valid(s, node))
                return -ENOENT;
        if ((unsigned)state >= _ORCH_NODE_STATE_MAX)
                return -EINVAL;
        if (s->nodes[node].state == state)
                return 0;
        s->nodes[node].state = state;
        tree_update_node(s, node);
        if (state == ORCH_NODE_READY)
                s->epoch++;
        return 0;
}

static void service_forget_if_empty(struct orch_sched *s, uint32_t svc)
{
        if (s->services[svc].total > 0)
                return;
        free(s->services[svc].slots);
        s->services[svc] = (struct sched_service){0};
        strtab_unref(&s->service_names, svc);
}

int orch_sched_node_remove(struct orch_sched *s, uint32_t node)
{
        struct sched_node *n;
        uint32_t pos, last;

        if (!node_valid(s, node))
                return -ENOENT;
        n = &s->nodes[node];
        if (n->instances > 0)
                for (uint32_t svc = 0; svc < s->service_names.n_ids; svc++) {
                        if (!s->services[svc].slots)
                                continue;
                        (void)svc_decrement(&s->services[svc], node, UINT32_MAX);
                        service_forget_if_empty(s, svc);
                }
        labels_release(s, n->labels, n->n_labels);
        pos = n->pos;
        last = s->n_nodes - 1;
        if (pos != last)
                place_at(s, s->pos_node[last], pos);
        tree_set(s, last, ID_NONE);
        s->n_nodes--;
        s->version++;
        *n = (struct sched_node){.pos = ID_NONE};
        strtab_unref(&s->node_names, node);
        return 0;
}

int orch_sched_node_find(const struct orch_sched *s, const char *name, uint32_t *ret_node)
{
        uint32_t id;

        if (!name)
                return -EINVAL;
        id = strtab_find(&s->node_names, name);
        if (id == ID_NONE)
                return -ENOENT;
        *ret_node = id;
        return 0;
}

int orch_sched_node_get(const struct orch_sched *s, uint32_t node, struct orch_sched_node_info *ret)
{
        const struct sched_node *n;

        if (!node_valid(s, node))
                return -ENOENT;
        n = &s->nodes[node];
        *ret = (struct orch_sched_node_info){
                .name = strtab_str(&s->node_names, node),
                .state = n->state,
                .cpu_millis = n->cpu_cap,
                .memory = n->mem_cap,
                .cpu_allocated = n->cpu_alloc,
                .memory_allocated = n->mem_alloc,
                .instances = n->instances,
        };
        return 0;
}

size_t orch_sched_node_count(const struct orch_sched *s)
{
        return s->n_nodes;
}

uint64_t orch_sched_epoch(const struct orch_sched *s)
{
        return s->epoch;
}

/* ---- accounting ---- */

static int account_add(struct orch_sched *s, uint32_t node, uint32_t *svc_id, const char *service,
                       uint32_t cpu, uint64_t mem)
{
        struct sched_node *n = &s->nodes[node];
        uint32_t id = *svc_id;
        bool created = false;
        int r;

        if (n->instances == UINT32_MAX || mem > QUANTITY_MAX - n->mem_alloc)
                return -ERANGE;
        if (id == ID_NONE) {
                /* Room in the parallel array first, so that every id the table hands out has its
                 * entry. */
                struct sched_service *services =
                        grow_parallel(s->services, &s->cap_services, strtab_id_bound(&s->service_names),
                                      sizeof *s->services);
                if (!services)
                        return -ENOMEM;
                s->services = services;
                r = strtab_add(&s->service_names, service, &id);
                if (r < 0)
                        return r;
                created = true;
        }
        r = svc_increment(&s->services[id], node);
        if (r < 0) {
                if (created)
                        service_forget_if_empty(s, id);
                return r;
        }
        n->cpu_alloc += cpu;
        n->mem_alloc += mem;
        n->instances++;
        tree_update_node(s, node);
        *svc_id = id;
        return 0;
}

static int account_release(struct orch_sched *s, uint32_t node, uint32_t svc, uint32_t cpu, uint64_t mem)
{
        struct sched_node *n = &s->nodes[node];
        int r;

        if (svc == ID_NONE || n->cpu_alloc < cpu || n->mem_alloc < mem || n->instances == 0)
                return -ERANGE;
        r = svc_decrement(&s->services[svc], node, 1);
        if (r < 0)
                return r;
        service_forget_if_empty(s, svc);
        n->cpu_alloc -= cpu;
        n->mem_alloc -= mem;
        n->instances--;
        tree_update_node(s, node);
        s->epoch++;
        return 0;
}

int orch_sched_account(struct orch_sched *s, uint32_t node, const char *service, uint32_t cpu_millis,
                       uint64_t memory, int delta)
{
        uint32_t svc;

        if (!service || !*service || (delta != 1 && delta != -1))
                return -EINVAL;
        if (!node_valid(s, node))
                return -ENOENT;
        svc = strtab_find(&s->service_names, service);
        if (delta > 0)
                return account_add(s, node, &svc, service, cpu_millis, memory);
        return account_release(s, node, svc, cpu_millis, memory);
}

uint32_t orch_sched_service_count(const struct orch_sched *s, const char *service, uint32_t node)
{
        uint32_t svc;

        if (!service || !node_valid(s, node))
                return 0;
        svc = strtab_find(&s->service_names, service);
        return svc == ID_NONE ? 0 : svc_get(&s->services[svc], node);
}

/* ---- placement ---- */

#define INLINE_CONSTRAINTS 8

/* A request with its strings turned into ids once, so a node check compares integers. */
struct resolved {
        const struct orch_sched_request *req;
        uint32_t svc; /* ID_NONE: the service has no instances yet */
        int64_t cpu, mem;
        unsigned driver_bit; /* 0: any driver */
        uint32_t exclude;    /* ID_NONE: none */
        struct resolved_constraint *constraints;
        struct resolved_constraint inline_constraints[INLINE_CONSTRAINTS];
};

static void resolved_release(struct resolved *rr)
{
        if (rr->constraints != rr->inline_constraints)
                free(rr->constraints);
}

static int resolve(const struct orch_sched *s, const struct orch_sched_request *req, struct resolved *rr)
{
        *rr = (struct resolved){.req = req, .exclude = ID_NONE, .svc = ID_NONE};
        rr->constraints = rr->inline_constraints;

        if (!req || !req->service || !*req->service || (req->n_constraints && !req->constraints))
                return -EINVAL;
        if ((unsigned)req->strategy >= _ORCH_STRATEGY_MAX || (unsigned)req->driver >= _ORCH_DRIVER_MAX)
                return -EINVAL;
        if (req->memory > QUANTITY_MAX)
                return -ERANGE;
        rr->svc = strtab_find(&s->service_names, req->service);
        rr->cpu = req->cpu_millis;
        rr->mem = (int64_t)req->memory;
        rr->driver_bit = req->driver == ORCH_DRIVER_DEFAULT ? 0 : ORCH_SCHED_DRIVER_BIT(req->driver);
        if (req->exclude_node)
                rr->exclude = strtab_find(&s->node_names, req->exclude_node);
        if (req->n_constraints > INLINE_CONSTRAINTS) {
                rr->constraints = calloc(req->n_constraints, sizeof *rr->constraints);
                if (!rr->constraints) {
                        rr->constraints = rr->inline_constraints;
                        return -ENOMEM;
                }
        }
        for (size_t i = 0; i < req->n_constraints; i++) {
                const struct orch_constraint *c = &req->constraints[i];

                if (!c->key || !c->value)
                        return -EINVAL;
                rr->constraints[i] = (struct resolved_constraint){
                        .key = strtab_find(&s->labels, c->key),
                        .value = strtab_find(&s->labels, c->value),
                        .negate = c->negate,
                };
        }
        return 0;
}

static bool constraint_ok(const struct sched_node *n, const struct resolved_constraint *c)
{
        bool equal = false;

        if (c->key != ID_NONE && c->value != ID_NONE)
                for (uint32_t i = 0; i < n->n_labels && n->labels[i].key <= c->key; i++)
                        if (n->labels[i].key == c->key) {
                                equal = n->labels[i].value == c->value;
                                break;
                        }
        return equal != c->negate;
}

/* Index of the first constraint the node fails, or -1. */
static ssize_t first_failed_constraint(const struct sched_node *n, const struct resolved *rr)
{
        for (size_t i = 0; i < rr->req->n_constraints; i++)
                if (!constraint_ok(n, &rr->constraints[i]))
                        return (ssize_t)i;
        return -1;
}

/* Everything the tree does not know: exclusion, driver, constraints. */
static bool node_matches(const struct orch_sched *s, uint32_t node, const struct resolved *rr)
{
        const struct sched_node *n = &s->nodes[node];

        if (node == rr->exclude)
                return false;
        if (rr->driver_bit && !(n->drivers & rr->driver_bit))
                return false;
        return first_failed_constraint(n, rr) < 0;
}

/* Fraction of CPU plus fraction of memory in use once the instance is added: 0 (empty) to 2 (full). */
static double utilization(const struct sched_node *n, const struct resolved *rr)
{
        double u = 0;

        if (n->cpu_cap)
                u += (double)(n->cpu_alloc + (uint64_t)rr->cpu) / n->cpu_cap;
        if (n->mem_cap)
                u += (double)(n->mem_alloc + (uint64_t)rr->mem) / (double)n->mem_cap;
        return u;
}

static uint32_t ceil_log2(uint32_t n)
{
        return n <= 1 ? 0 : 32 - (uint32_t)__builtin_clz(n - 1);
}

static uint32_t sample_limit(const struct orch_sched *s)
{
        if (s->n_nodes <= s->exhaustive_max)
                return s->n_nodes;
        return MAX(2 * ceil_log2(s->n_nodes), s->sample_min);
}

struct candidate {
        uint32_t node;
        uint32_t count; /* instances of the service on it; UINT32_MAX: not looked up yet */
        double util;
};

static uint32_t candidate_count(const struct orch_sched *s, const struct resolved *rr, struct candidate *c)
{
        if (c->count == UINT32_MAX)
                c->count = rr->svc == ID_NONE ? 0 : svc_get(&s->services[rr->svc], c->node);
        return c->count;
}

/* spread: fewest instances of the service, then least allocated.
 * binpack: most allocated, then fewest instances of the service (a tie keeps replicas apart). */
static bool candidate_better(const struct orch_sched *s, const struct resolved *rr, struct candidate *c,
                             struct candidate *best)
{
        if (best->node == ID_NONE)
                return true;
        if (rr->req->strategy == ORCH_STRATEGY_SPREAD) {
                uint32_t a = candidate_count(s, rr, c), b = candidate_count(s, rr, best);
                if (a != b)
                        return a < b;
                return c->util < best->util;
        }
        if (c->util != best->util)
                return c->util > best->util;
        return candidate_count(s, rr, c) < candidate_count(s, rr, best);
}

/*
 * Visits ready nodes with enough free capacity (the tree skips the others) in placement order,
 * from a random position for spread and from the start for binpack (first fit over a random
 * permutation packs the same nodes first), scores the first `limit` that match, and keeps
 * scanning past the sample when it found none, so a single feasible node is always found.
 */
static uint32_t scan(struct orch_sched *s, const struct resolved *rr, uint32_t *ret_examined,
                     uint32_t *ret_feasible)
{
        struct candidate best = {.node = ID_NONE};
        uint32_t limit = sample_limit(s), examined = 0, feasible = 0, start = 0, pos;
        bool wrapped = false;

        if (s->n_nodes == 0)
                goto done;
        if (rr->req->strategy == ORCH_STRATEGY_SPREAD)
                start = rng_below(&s->rng, s->n_nodes);
        for (pos = start;;) {
                struct candidate c;
                uint32_t p = tree_next(s, pos, rr->cpu, rr->mem);

                if (!wrapped && p == ID_NONE) {
                        if (start == 0)
                                break;
                        wrapped = true;
                        p = tree_next(s, 0, rr->cpu, rr->mem);
                }
                if (p == ID_NONE || (wrapped && p >= start))
                        break;
                pos = p + 1;
                examined++;
                c = (struct candidate){.node = s->pos_node[p], .count = UINT32_MAX};
                if (!node_matches(s, c.node, rr))
                        continue;
                feasible++;
                c.util = utilization(&s->nodes[c.node], rr);
                if (candidate_better(s, rr, &c, &best))
                        best = c;
                if (feasible >= limit)
                        break;
        }
done:
        *ret_examined = examined;
        *ret_feasible = feasible;
        return best.node;
}

static const char *plural(uint32_t n, const char *one, const char *many)
{
        return n == 1 ? one : many;
}

/* Free memory for a message: rounded down to a whole Mi (or Ki), so "the most free: 1536Mi" never
 * claims more than there is and does not print 1610612737. */
static void format_free_memory(uint64_t bytes, char *buf, size_t size)
{
        if (bytes >= (UINT64_C(1) << 20))
                bytes &= ~((UINT64_C(1) << 20) - 1);
        else if (bytes >= 1024)
                bytes &= ~(UINT64_C(1023));
        (void)orch_format_size(bytes, buf, size);
}

static void reason_sep(struct orch_buf *b, bool *first)
{
        orch_buf_puts(b, *first ? "no node fits: " : ", ");
        *first = false;
}

/* Copies into the fixed result buffer, cutting at a character boundary with "..." if needed. */
static void reason_store(const struct orch_buf *b, char *out)
{
        size_t len = b->len;

        if (len < ORCH_SCHED_REASON_MAX) {
                memcpy(out, b->data, len + 1);
                return;
        }
        len = ORCH_SCHED_REASON_MAX - 4;
        while (len > 0 && ((unsigned char)b->data[len] & 0xc0) == 0x80)
                len--;
        memcpy(out, b->data, len);
        memcpy(out + len, "...", 4);
}

/*
 * Why nothing fits: one pass over every node, each counted under the first filter it fails, in
 * the order a person would fix things (a down node first; a node that lacks memory only when
 * nothing else rules it out, so "lack memory" means adding memory there would help). O(N), only
 * paid when a placement fails.
 */
static int build_reason(const struct orch_sched *s, const struct resolved *rr, char *out)
{
        _cleanup_(freep) uint32_t *per_constraint = NULL;
        uint32_t down = 0, draining = 0, excluded = 0, driver = 0, cpu_only = 0, mem_only = 0, both = 0;
        uint64_t most_cpu = 0, most_mem = 0;
        char cpu_s[32], mem_s[32], free_s[32];
        struct orch_buf b = {0};
        bool first = true;
        int r = 0;

        if (s->n_nodes == 0) {
                orch_strlcpy(out, "no nodes are registered", ORCH_SCHED_REASON_MAX);
                return 0;
        }
        if (rr->req->n_constraints) {
                per_constraint = calloc(rr->req->n_constraints, sizeof *per_constraint);
                if (!per_constraint)
                        return -ENOMEM;
        }
        for (uint32_t p = 0; p < s->n_nodes; p++) {
                uint32_t id = s->pos_node[p];
                const struct sched_node *n = &s->nodes[id];
                bool cpu_short, mem_short;
                ssize_t c;

                if (n->state == ORCH_NODE_DOWN) {
                        down++;
                        continue;
                }
                if (n->state == ORCH_NODE_DRAINING) {
                        draining++;
                        continue;
                }
                if (id == rr->exclude) {
                        excluded++;
                        continue;
                }
                if (rr->driver_bit && !(n->drivers & rr->driver_bit)) {
                        driver++;
                        continue;
                }
                c = first_failed_constraint(n, rr);
                if (c >= 0) {
                        per_constraint[c]++;
                        continue;
                }
                cpu_short = n->cpu_alloc + (uint64_t)rr->cpu > n->cpu_cap;
                mem_short = n->mem_alloc + (uint64_t)rr->mem > n->mem_cap;
                if (cpu_short)
                        most_cpu = MAX(most_cpu, n->cpu_alloc < n->cpu_cap ? n->cpu_cap - n->cpu_alloc : 0);
                if (mem_short)
                        most_mem = MAX(most_mem, n->mem_alloc < n->mem_cap ? n->mem_cap - n->mem_alloc : 0);
                if (cpu_short && mem_short)
                        both++;
                else if (cpu_short)
                        cpu_only++;
                else if (mem_short)
                        mem_only++;
        }

        (void)orch_format_cpu(rr->req->cpu_millis, cpu_s, sizeof cpu_s);
        (void)orch_format_size(rr->req->memory, mem_s, sizeof mem_s);
        if (mem_only) {
                format_free_memory(most_mem, free_s, sizeof free_s);
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s %s of free memory (the most free: %s)", mem_only,
                                plural(mem_only, "node lacks", "nodes lack"), mem_s, free_s);
        }
        if (cpu_only) {
                (void)orch_format_cpu((uint32_t)MIN(most_cpu, UINT32_MAX), free_s, sizeof free_s);
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s %s of free CPU (the most free: %s)", cpu_only,
                                plural(cpu_only, "node lacks", "nodes lack"), cpu_s, free_s);
        }
        if (both) {
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s both %s of free CPU and %s of free memory", both,
                                plural(both, "node lacks", "nodes lack"), cpu_s, mem_s);
        }
        for (size_t i = 0; i < rr->req->n_constraints; i++) {
                const struct orch_constraint *c = &rr->req->constraints[i];

                if (!per_constraint[i])
                        continue;
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s filtered by %s%s%s", per_constraint[i],
                                plural(per_constraint[i], "node", "nodes"), c->key, c->negate ? "!=" : "=",
                                c->value);
        }
        if (driver) {
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s the %s driver", driver,
                                plural(driver, "node lacks", "nodes lack"),
                                orch_driver_to_string(rr->req->driver));
        }
        if (draining) {
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s draining", draining, plural(draining, "node", "nodes"));
        }
        if (down) {
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s down", down, plural(down, "node", "nodes"));
        }
        if (excluded) {
                reason_sep(&b, &first);
                orch_buf_printf(&b, "%" PRIu32 " %s excluded for this instance", excluded,
                                plural(excluded, "node", "nodes"));
        }
        if (first)
                /* Every node passed every filter yet the scan found none: the tree and the nodes
                 * disagree, which accounting must never allow. */
                r = -EUCLEAN;
        else if (b.oom)
                r = -ENOMEM;
        else
                reason_store(&b, out);
        orch_buf_release(&b);
        return r;
}

static bool same_failure(const struct last_failure *f, const struct resolved *rr)
{
        if (f->cpu != rr->cpu || f->mem != rr->mem || f->driver_bit != rr->driver_bit ||
            f->exclude != rr->exclude || f->n_constraints != rr->req->n_constraints)
                return false;
        for (size_t i = 0; i < f->n_constraints; i++)
                if (f->constraints[i].key != rr->constraints[i].key ||
                    f->constraints[i].value != rr->constraints[i].value ||
                    f->constraints[i].negate != rr->constraints[i].negate)
                        return false;
        return true;
}

static void remember_failure(struct orch_sched *s, const struct resolved *rr, const char *reason)
{
        struct last_failure *f = &s->last_failure;
        struct resolved_constraint *c = NULL;

        if (rr->req->n_constraints) {
                c = reallocarray(NULL, rr->req->n_constraints, sizeof *c);
                if (!c)
                        return; /* only an optimization */
                memcpy(c, rr->constraints, rr->req->n_constraints * sizeof *c);
        }
        free(f->constraints);
        *f = (struct last_failure){
                .version = s->version,
                .cpu = rr->cpu,
                .mem = rr->mem,
                .driver_bit = rr->driver_bit,
                .exclude = rr->exclude,
                .n_constraints = rr->req->n_constraints,
                .constraints = c,
        };
        orch_strlcpy(f->reason, reason, sizeof f->reason);
}

/*
 * A failure costs a visit of every node, twice (the scan and the reason). The reconciler meets
 * it once per pending instance, typically many of one service in a row with nothing changed in
 * between; a request that failed fails again, with the same reason, as long as the view has not
 * changed (feasibility does not depend on the service or on the random start), so the last
 * failure is remembered with the view's version and answered again in O(constraints).
 */
static int place_one(struct orch_sched *s, const struct resolved *rr, struct orch_sched_result *ret)
{
        uint32_t examined, feasible, node;
        int r;

        if (s->last_failure.version == s->version && s->version != 0 && same_failure(&s->last_failure, rr)) {
                ret->node = ORCH_SCHED_NODE_NONE;
                ret->node_name = NULL;
                ret->examined = ret->feasible = 0;
                memcpy(ret->reason, s->last_failure.reason, sizeof ret->reason);
                return 0;
        }
        node = scan(s, rr, &examined, &feasible);
        ret->examined = examined;
        ret->feasible = feasible;
        if (node != ID_NONE) {
                ret->node = node;
                ret->node_name = strtab_str(&s->node_names, node);
                ret->reason[0] = '\0';
                return 1;
        }
        ret->node = ORCH_SCHED_NODE_NONE;
        ret->node_name = NULL;
        r = build_reason(s, rr, ret->reason);
        if (r < 0)
                return r;
        remember_failure(s, rr, ret->reason);
        return 0;
}

int orch_sched_place(struct orch_sched *s, const struct orch_sched_request *req,
                     struct orch_sched_result *ret)
{
        struct resolved rr;
        int r;

        r = resolve(s, req, &rr);
        if (r >= 0)
                r = place_one(s, &rr, ret);
        resolved_release(&rr);
        return r;
}

int orch_sched_place_batch(struct orch_sched *s, const struct orch_sched_request *req, size_t n,
                           uint32_t *ret_nodes, struct orch_sched_result *ret_last)
{
        struct resolved rr;
        size_t placed = 0;
        int r;

        if (n > INT_MAX || (n && !ret_nodes))
                return -EINVAL;
        r = resolve(s, req, &rr);
        for (; r >= 0 && placed < n; placed++) {
                r = place_one(s, &rr, ret_last);
                if (r <= 0)
                        break;
                r = account_add(s, ret_last->node, &rr.svc, req->service, req->cpu_millis, req->memory);
                if (r < 0)
                        break;
                ret_nodes[placed] = ret_last->node;
        }
        if (r < 0)
                /* All or an error: the caller cannot tell which placements of a failed batch were
                 * accounted, so none stay. Releasing allocates nothing and cannot fail. */
                while (placed > 0)
                        (void)account_release(s, ret_nodes[--placed], rr.svc, req->cpu_millis, req->memory);
        resolved_release(&rr);
        return r < 0 ? r : (int)placed;
}

/* ---- scale-down ---- */

/* Instances that serve no traffic go first: ended or stopping ones cost nothing to drop, then
 * those waiting for a node, those not started, and those starting or running but failing (both
 * serve nothing yet), before running ones. */
static int victim_tier(const struct orch_sched_victim *v)
{
        switch (v->state) {
        case ORCH_INSTANCE_STOPPING:
        case ORCH_INSTANCE_EXITED:
        case ORCH_INSTANCE_FAILED:
        case ORCH_INSTANCE_LOST:
                return 0;
        case ORCH_INSTANCE_PENDING:
                return v->placed ? 2 : 1;
        case ORCH_INSTANCE_STARTING:
                return 3;
        case ORCH_INSTANCE_RUNNING:
                return v->health == ORCH_HEALTH_FAILING ? 3 : 4;
        default:
                return 0;
        }
}

static int health_rank(enum orch_health_state h)
{
        switch (h) {
        case ORCH_HEALTH_FAILING:
                return 0;
        case ORCH_HEALTH_PASSING:
                return 2;
        default:
                return 1;
        }
}

static int victim_cmp(const void *a, const void *b, void *userdata)
{
        const struct orch_sched_victim *v = userdata;
        size_t i = *(const size_t *)a, j = *(const size_t *)b;
        int x, y;

        x = victim_tier(&v[i]);
        y = victim_tier(&v[j]);
        if (x != y)
                return x < y ? -1 : 1;
        x = health_rank(v[i].health);
        y = health_rank(v[j].health);
        if (x != y)
                return x < y ? -1 : 1;
        if (v[i].generation != v[j].generation)
                return v[i].generation > v[j].generation ? -1 : 1;
        return i < j ? -1 : i > j;
}

int orch_sched_scale_down(const struct orch_sched_victim *instances, size_t n, size_t k, size_t *ret_victims)
{
        _cleanup_(freep) size_t *order = NULL;

        if ((n && !instances) || (k && !ret_victims) || n > INT_MAX)
                return -EINVAL;
        k = MIN(k, n);
        if (k == 0)
                return 0;
        order = reallocarray(NULL, n, sizeof *order);
        if (!order)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                order[i] = i;
        qsort_r(order, n, sizeof *order, victim_cmp, (void *)instances);
        memcpy(ret_victims, order, k * sizeof *order);
        return (int)k;
}
