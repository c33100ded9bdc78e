/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The reconciler: level-triggered. Whatever may change the answer marks services dirty
 * (orch_state_mark_dirty); once per loop iteration every dirty service is compared with what
 * runs, placements and stops are decided, persisted in one transaction, and only then handed to
 * the agents through the callbacks. Rollouts step under max_surge / max_unavailable /
 * min_healthy and fail (and revert) past their deadline. See docs/control-plane.md.
 */

#include <uv.h>

#include "state.h"

struct orch_reconciler;

struct orch_reconciler_ops {
        /* The instance was placed on inst->node: the agent must start it. */
        void (*start)(void *userdata, struct orch_inst *inst);
        /* The instance must stop on inst->node. */
        void (*stop)(void *userdata, struct orch_inst *inst, const char *reason);
        /* Everything decided in this pass has been handed over: write the frames. */
        void (*flush)(void *userdata);
};

int orch_reconciler_new(uv_loop_t *loop, struct orch_state *st, const struct orch_reconciler_ops *ops,
                        void *userdata, struct orch_reconciler **ret);
/* Stops the handles; the object is freed in their close callbacks. */
void orch_reconciler_close(struct orch_reconciler *rc);

/* Runs one pass now (tests, and callers that need the answer before replying). */
int orch_reconciler_run(struct orch_reconciler *rc);

/*
 * Dry run for `apply --dry-run`: where would `n` new instances of this spec go right now?
 * Fills `ret` with an array of {"service", "node"} or {"service", "pending": reason} objects and
 * changes nothing.
 */
int orch_reconciler_preview(struct orch_reconciler *rc, const struct orch_service *spec, uint32_t n, json_t *ret);

/* Rollback to the previous revision (`orch rollout undo`). -ENOENT when there is none. */
int orch_reconciler_undo(struct orch_reconciler *rc, struct orch_svc *svc);

/* Number of placements made so far, and a histogram of placement latency (for /metrics). */
struct orch_reconciler_stats {
        uint64_t placements;
        uint64_t placement_failures;
        uint64_t stops;
        /* microseconds per placement decision, buckets: 1, 5, 10, 50, 100, 500, 1000, 5000, +inf */
        uint64_t latency_buckets[9];
        double latency_sum_sec;
};
const struct orch_reconciler_stats *orch_reconciler_stats(const struct orch_reconciler *rc);
extern const double orch_reconciler_latency_bounds[8];
