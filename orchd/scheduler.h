/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Placement decisions (docs/scheduler.md, "Scheduling").
 *
 * The scheduler is a pure module: no I/O, no event loop, no logging. orchd's state module owns
 * nodes and instances and keeps the scheduler's view of them current, incrementally:
 *
 *   - a node joins, changes (labels, capacity, drivers, state) or leaves: orch_sched_node_*();
 *   - an instance is placed, or leaves a node (stopped, exited, failed, lost):
 *     orch_sched_account() with +1 / -1, so allocations and per-service counts stay exact.
 *
 * orch_sched_place() answers "where does one more instance of this service go?" without changing
 * the view; orch_sched_place_batch() places several, accounting each one as it goes so that spread
 * sees its own earlier decisions. When nothing fits, the result carries a reason a person can act
 * on ("no node fits: 2 nodes lack 2Gi of free memory (the most free: 1536Mi), 3 nodes filtered by
 * zone=eu-1, 1 node draining").
 *
 * Nodes are named by a small integer handle (stable while the node is registered; a handle may
 * be reused after orch_sched_node_remove()). One thread (orchd's loop) uses a scheduler.
 */

#include <stdint.h>

#include "macro.h"
#include "manifest.h"
#include "types.h"

#define ORCH_SCHED_NODE_NONE  UINT32_MAX
#define ORCH_SCHED_REASON_MAX 512
#define ORCH_SCHED_LABELS_MAX 256 /* per node */

struct orch_sched;

struct orch_sched_options {
        /* Seeds the placement order: the same seed and the same calls give the same placements.
         * orchd passes a random seed; tests pass a fixed one. */
        uint64_t seed;
        /* Clusters of at most this many nodes are examined in full (0: the default, 64). */
        uint32_t exhaustive_max;
        /* Larger clusters score the first max(2*ceil(log2 N), sample_min) feasible nodes met in
         * placement order (0: the default, 8). */
        uint32_t sample_min;
};

struct orch_sched_label {
        const char *key;
        const char *value;
};

/* What the scheduler needs to know about a node; the strings are copied. */
struct orch_sched_node_spec {
        const char *name;
        const struct orch_sched_label *labels; /* keys unique */
        size_t n_labels;
        uint32_t cpu_millis;        /* capacity, below 2^31 (-ERANGE otherwise) */
        uint64_t memory;            /* capacity, bytes, at most 2^62 */
        unsigned drivers;           /* bitmask of 1u << enum orch_driver (ORCH_DRIVER_EXEC, ...) */
        enum orch_node_state state; /* only ready nodes take new instances */
};

#define ORCH_SCHED_DRIVER_BIT(d) (1u << (unsigned)(d))

struct orch_sched_node_info {
        const char *name;
        enum orch_node_state state;
        uint32_t cpu_millis;    /* capacity */
        uint64_t memory;        /* capacity */
        uint64_t cpu_allocated; /* sum of the requests of the instances accounted on the node */
        uint64_t memory_allocated;
        uint32_t instances;
};

struct orch_sched_request {
        const char *service; /* spread counts instances per service name */
        uint32_t cpu_millis; /* 0: no CPU request */
        uint64_t memory;     /* 0: no memory request */
        /* On node labels; a node without the label fails "key=value" and passes "key!=value". */
        const struct orch_constraint *constraints;
        size_t n_constraints;
        enum orch_strategy strategy;
        enum orch_driver driver;  /* ORCH_DRIVER_DEFAULT: any node (the agent's default driver runs it) */
        const char *exclude_node; /* NULL, or a node not to use (where the instance was just lost) */
};

struct orch_sched_result {
        uint32_t node;         /* placed: the node's handle; else ORCH_SCHED_NODE_NONE */
        const char *node_name; /* placed: the node's name, valid until the node is removed; else NULL */
        /* Nodes looked at one by one (those with room for the request), for metrics and tests;
         * 0 when the answer is the last failure again (the same request on an unchanged view). */
        uint32_t examined;
        uint32_t feasible;                  /* feasible nodes among them that were scored */
        char reason[ORCH_SCHED_REASON_MAX]; /* not placed: why, for `orch describe` and events */
};

int orch_sched_new(const struct orch_sched_options *opts, struct orch_sched **ret);
struct orch_sched *orch_sched_free(struct orch_sched *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_sched *, orch_sched_free)

/* -EEXIST when a node of that name is registered, -EINVAL for an empty name or duplicate label keys. */
int orch_sched_node_add(struct orch_sched *s, const struct orch_sched_node_spec *spec, uint32_t *ret_node);
/* Replaces labels, capacity, drivers and state; allocations and counts stay. spec->name must be
 * NULL or the node's name. Capacity may drop below what is allocated: the node then takes nothing
 * until enough is released. */
int orch_sched_node_update(struct orch_sched *s, uint32_t node, const struct orch_sched_node_spec *spec);
int orch_sched_node_set_state(struct orch_sched *s, uint32_t node, enum orch_node_state state);
/* Forgets the node and everything accounted on it. */
int orch_sched_node_remove(struct orch_sched *s, uint32_t node);
/* -ENOENT when no node has that name. */
int orch_sched_node_find(const struct orch_sched *s, const char *name, uint32_t *ret_node);
int orch_sched_node_get(const struct orch_sched *s, uint32_t node, struct orch_sched_node_info *ret);
size_t orch_sched_node_count(const struct orch_sched *s);

/* An instance of `service` with these requests starts (+1) or stops occupying (-1) `node`.
 * -ENOENT for an unknown node, -ERANGE when -1 has nothing to release. */
int orch_sched_account(struct orch_sched *s, uint32_t node, const char *service, uint32_t cpu_millis,
                       uint64_t memory, int delta);
/* How many instances of `service` are accounted on `node` (0 for unknown names and handles). */
uint32_t orch_sched_service_count(const struct orch_sched *s, const char *service, uint32_t node);

/*
 * Rises whenever a request that did not fit might fit now (an instance released; a ready node
 * added; a node made ready, or given more capacity, new drivers or other labels), and only then:
 * an instance left pending at epoch E needs no new attempt while the epoch is still E.
 */
uint64_t orch_sched_epoch(const struct orch_sched *s);

/*
 * Chooses a node for one instance; changes nothing but the placement order's random state.
 * Returns 1 and fills ret->node when placed, 0 and fills ret->reason when no node fits,
 * -EINVAL for a malformed request, -ERANGE for a memory request above 2^62, -ENOMEM.
 */
int orch_sched_place(struct orch_sched *s, const struct orch_sched_request *req,
                     struct orch_sched_result *ret);

/*
 * Places up to n instances of one request, accounting each placement at once (so spread sees the
 * earlier ones) and writing their nodes to ret_nodes[0..placed). Returns how many were placed;
 * when fewer than n, ret_last->reason says why the next one did not fit. On an error (< 0) none
 * of this call's placements stay accounted. A caller that does not commit the placements (a dry
 * run, a failed store write) releases each with orch_sched_account(..., -1).
 */
int orch_sched_place_batch(struct orch_sched *s, const struct orch_sched_request *req, size_t n,
                           uint32_t *ret_nodes, struct orch_sched_result *ret_last);

/* One instance of a service, as scale-down sees it. */
struct orch_sched_victim {
        enum orch_instance_state state;
        enum orch_health_state health;
        bool placed;         /* has a node (a pending instance waiting for capacity has none) */
        uint64_t generation; /* higher is newer */
};

/*
 * Scale-down: which k of the n instances go first. Instances that already ended or are stopping
 * come first, then pending ones without a node, pending ones with one, those that serve nothing
 * yet (starting, or running with failing health), then running ones; within each group failing
 * before unknown before passing health, then the newest. Writes min(k, n) indices into
 * ret_victims in removal order and returns that count.
 */
int orch_sched_scale_down(const struct orch_sched_victim *instances, size_t n, size_t k,
                          size_t *ret_victims);
