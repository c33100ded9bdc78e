/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "json.h"
#include "log.h"
#include "reconciler.h"
#include "scheduler.h"
#include "store.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* A new instance restarted this often without becoming available is a crash loop. */
#define CRASH_LOOP_RESTARTS 3
/* How often rollouts, pending placements and deadlines are looked at without any event. */
#define TICK_MSEC 250
/* Instance creations plus placements in one pass. A pass runs inside one loop iteration: until
 * it and the store transaction after it end, orchd reads no heartbeat, ack or API request, and
 * every frame it decides waits in memory. Creating and placing an instance costs about 100 us
 * with its store writes, so 5,000 of them keep a pass near half a second, far inside the
 * shortest TTL; the rest follows in the next iterations, between which the loop serves
 * everything else. */
#define PASS_MAX 10000

const double orch_reconciler_latency_bounds[8] = {1e-6, 5e-6, 10e-6, 50e-6, 100e-6, 500e-6, 1e-3, 5e-3};

struct action {
        struct orch_inst *inst;
        bool start;
        const char *reason; /* stops: a static string */
};

struct orch_reconciler {
        uv_check_t check;
        uv_timer_t tick;
        uv_idle_t more; /* active while a pass left work: the loop polls without blocking */
        int open_handles;
        struct orch_state *st;
        const struct orch_reconciler_ops *ops;
        void *userdata;
        uint64_t sched_epoch; /* the scheduler epoch of the last pending retry */
        struct action *actions;
        size_t n_actions, cap_actions;
        size_t pass_budget; /* instances this pass may still create or place */
        struct orch_reconciler_stats stats;
        bool running;
};

static int queue_action(struct orch_reconciler *rc, struct orch_inst *inst, bool start, const char *reason)
{
        if (rc->n_actions == rc->cap_actions) {
                size_t cap = rc->cap_actions ? rc->cap_actions * 2 : 256;
                struct action *a = realloc(rc->actions, cap * sizeof *a);
                if (!a)
                        return -ENOMEM;
                rc->actions = a;
                rc->cap_actions = cap;
        }
        rc->actions[rc->n_actions++] = (struct action){inst, start, reason};
        return 0;
}

static const struct orch_service *inst_spec(const struct orch_inst *inst)
{
        const struct orch_svc_rev *rev = orch_state_service_revision(inst->svc, inst->revision);
        return rev ? rev->spec : inst->svc->spec;
}

static void build_request(const struct orch_service *spec, struct orch_sched_request *req)
{
        *req = (struct orch_sched_request){
                .service = spec->name,
                .cpu_millis = spec->resources.cpu_millis,
                .memory = spec->resources.memory,
                .constraints = spec->placement.constraints,
                .n_constraints = spec->placement.n_constraints,
                .strategy = spec->placement.strategy,
                .driver = spec->driver,
        };
}

static void observe_latency(struct orch_reconciler *rc, uint64_t usec, size_t n)
{
        double per = n ? (double)usec / 1e6 / (double)n : 0;
        size_t b = 0;

        while (b < ELEMENTSOF(orch_reconciler_latency_bounds) && per > orch_reconciler_latency_bounds[b])
                b++;
        rc->stats.latency_buckets[b] += n;
        rc->stats.latency_sum_sec += per * (double)n;
}

/*
 * Places as many of the service's unplaced live instances as fit. Instances of the current
 * revision and of older ones (a rollout in progress) are placed with their own revision's
 * requests.
 */
static int place_pending(struct orch_reconciler *rc, struct orch_svc *svc)
{
        struct orch_state *st = rc->st;
        struct orch_list *p, *t;
        /* revisions that found no node in this pass: their other instances would not fit either */
        char failed[4][ORCH_REVISION_LEN + 1];
        char failed_reason[4][ORCH_SCHED_REASON_MAX];
        size_t n_failed = 0;
        int r;

        if (svc->n_pending == 0)
                return 0;
        orch_list_foreach_safe (p, t, &svc->unplaced) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, unplaced_link);
                struct orch_sched_request req;
                struct orch_sched_result res;
                uint64_t t0;
                size_t k;

                if (inst->node || !orch_inst_is_live(inst))
                        continue;
                for (k = 0; k < n_failed && !streq(failed[k], inst->revision); k++)
                        ;
                if (k < n_failed) {
                        if (!streq_ptr(inst->reason, failed_reason[k]))
                                orch_state_set_reason(st, inst, failed_reason[k]);
                        continue;
                }
                if (rc->pass_budget == 0) {
                        /* the next pass goes on with this service */
                        orch_state_mark_dirty(st, svc);
                        return 0;
                }
                build_request(inst_spec(inst), &req);
                t0 = orch_now_usec();
                r = orch_sched_place(st->sched, &req, &res);
                observe_latency(rc, orch_now_usec() - t0, 1);
                if (r < 0)
                        return r;
                if (r == 0) {
                        rc->stats.placement_failures++;
                        if (!streq_ptr(inst->reason, res.reason)) {
                                orch_state_set_reason(st, inst, res.reason);
                                orch_state_event(st, ORCH_EVENT_INSTANCE_PENDING,
                                                 json_pack("{s:s, s:s, s:s}", "service", svc->name,
                                                           "instance", inst->id, "reason", res.reason),
                                                 "instance %s of %s cannot be placed: %s", inst->id,
                                                 svc->name, res.reason);
                        }
                        if (n_failed < ELEMENTSOF(failed)) {
                                orch_strlcpy(failed[n_failed], inst->revision, sizeof failed[0]);
                                orch_strlcpy(failed_reason[n_failed++], res.reason, sizeof failed_reason[0]);
                        }
                        continue;
                }
                orch_state_place_instance(st, inst, orch_state_node(st, res.node_name));
                if (!inst->node)
                        return -EIO; /* the scheduler named a node orchd does not know */
                rc->stats.placements++;
                rc->pass_budget--;
                orch_state_event(st, ORCH_EVENT_INSTANCE_PLACED,
                                 json_pack("{s:s, s:s, s:s, s:I}", "service", svc->name, "instance",
                                           inst->id, "node", inst->node->name, "generation",
                                           (json_int_t)inst->generation),
                                 "instance %s of %s placed on %s", inst->id, svc->name, inst->node->name);
                r = queue_action(rc, inst, true, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Makes n new (pending) instances, or what the pass has room for; the service stays dirty for the
 * rest. */
static int new_instances(struct orch_reconciler *rc, struct orch_svc *svc, uint32_t n)
{
        if (n > rc->pass_budget / 2) {
                /* room to place what is made, in this pass */
                n = (uint32_t)(rc->pass_budget / 2);
                orch_state_mark_dirty(rc->st, svc);
        }
        rc->pass_budget -= n;
        for (uint32_t i = 0; i < n; i++) {
                struct orch_inst *inst;
                int r = orch_state_new_instance(rc->st, svc, &inst);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Orchd no longer wants the instance: unplaced ones go at once (returns 1), placed ones are told
 * to stop (returns 0). */
static int stop_instance(struct orch_reconciler *rc, struct orch_inst *inst, const char *reason)
{
        if (!inst->desired_run)
                return 0;
        inst->desired_run = false;
        inst->healthy_since = 0;
        orch_state_instance_changed(rc->st, inst);
        /* the event takes it out of the registry before its stop signal (after the drain delay) */
        orch_state_event(rc->st, ORCH_EVENT_INSTANCE_STOPPING,
                         json_pack("{s:s, s:s, s:s}", "service", inst->svc->name, "instance", inst->id,
                                   "reason", reason),
                         "instance %s stopping: %s", inst->id, reason);
        if (!inst->node) {
                orch_state_remove_instance(rc->st, inst);
                return 1;
        }
        rc->stats.stops++;
        return queue_action(rc, inst, false, reason);
}

/* Scale-down victims among `cands` (live instances), chosen by the scheduler's rule. */
static int stop_victims(struct orch_reconciler *rc, struct orch_inst **cands, size_t n, size_t k,
                        const char *reason)
{
        _cleanup_(freep) struct orch_sched_victim *v = calloc(n + 1, sizeof *v);
        _cleanup_(freep) size_t *idx = calloc(k + 1, sizeof *idx);
        int m, r;

        if (!v || !idx)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                v[i] = (struct orch_sched_victim){
                        .state = cands[i]->state,
                        .health = cands[i]->health,
                        .placed = cands[i]->node != NULL,
                        .generation = cands[i]->generation,
                };
        m = orch_sched_scale_down(v, n, k, idx);
        for (int i = 0; i < m; i++) {
                r = stop_instance(rc, cands[idx[i]], reason);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool available_long_enough(const struct orch_inst *inst, uint64_t now, uint64_t min_healthy)
{
        return orch_inst_is_available(inst) && inst->healthy_since &&
               now >= inst->healthy_since + min_healthy;
}

static void rollout_message(struct orch_svc *svc, const char *msg)
{
        if (streq_ptr(svc->rollout.message, msg))
                return;
        free(svc->rollout.message);
        svc->rollout.message = msg ? strdup(msg) : NULL;
}

/* Rollout fields are part of the service record: whatever changes them writes it. */
static void rollout_changed(struct orch_reconciler *rc, struct orch_svc *svc)
{
        orch_state_service_changed(rc->st, svc);
}

/* Puts the previous revision back as a new rollout (auto-revert, `rollout undo`). */
static int revert(struct orch_reconciler *rc, struct orch_svc *svc, bool automatic)
{
        struct orch_service *spec = NULL;
        const struct orch_svc_rev *prev = NULL;
        const char *change;
        uint32_t replicas = svc->spec->replicas;
        int r;

        for (size_t i = 1; i < svc->n_revs; i++)
                if (!streq(svc->revs[i].revision, svc->revision)) {
                        prev = &svc->revs[i];
                        break;
                }
        if (!prev)
                return -ENOENT;
        r = orch_service_dup(prev->spec, &spec);
        if (r < 0)
                return r;
        /* a rollback restores the previous spec, but not how many instances run */
        spec->replicas = replicas;
        r = orch_state_apply_service(rc->st, spec, &change);
        if (r < 0) {
                orch_service_free(spec);
                return r;
        }
        svc->rollout.reverting = automatic;
        return 0;
}

static int fail_rollout(struct orch_reconciler *rc, struct orch_svc *svc, const char *why)
{
        struct orch_state *st = rc->st;
        char to[ORCH_REVISION_LEN + 1];
        bool auto_revert = svc->spec->update.auto_revert && !svc->rollout.reverting;

        orch_strlcpy(to, svc->rollout.to_revision, sizeof to);
        svc->rollout.state = ORCH_ROLLOUT_FAILED;
        rollout_message(svc, why);
        rollout_changed(rc, svc);
        orch_strlcpy(svc->rollout.failed_revision, to, sizeof svc->rollout.failed_revision);
        free(svc->rollout.failed_reason);
        svc->rollout.failed_reason = strdup(why);
        orch_state_event(st, ORCH_EVENT_ROLLOUT,
                         json_pack("{s:s, s:s, s:s, s:s}", "service", svc->name, "revision", to, "state",
                                   "failed", "reason", why),
                         "rollout of %s to revision %s failed: %s%s", svc->name, to, why,
                         auto_revert ? "; reverting to the previous revision" : "");
        if (!auto_revert)
                return 0;
        {
                int r = revert(rc, svc, true);
                if (r == -ENOENT)
                        return 0;
                return r;
        }
}

/*
 * One rollout step. New instances (the service's revision) are started while the total stays
 * within replicas + max_surge; old ones are stopped while the available count stays at least
 * replicas - max_unavailable, where a new instance counts only after min_healthy of health.
 * Old instances that are not available go first: removing them costs no availability.
 */
/* An instance to replace: of an older revision (a rollout), or on a draining node (a drain). */
static bool is_old(const struct orch_svc *svc, const struct orch_inst *inst)
{
        return !streq(inst->revision, svc->revision) || (inst->node && inst->node->cordoned);
}

static int rollout_step(struct orch_reconciler *rc, struct orch_svc *svc, struct orch_inst **live,
                        size_t n_live)
{
        bool rollout = svc->rollout.state == ORCH_ROLLOUT_PROGRESSING;
        const struct orch_service *spec = svc->spec;
        uint32_t R = spec->replicas, surge = spec->update.max_surge, unavail = spec->update.max_unavailable;
        uint64_t now = orch_realtime_msec();
        size_t n_new = 0, n_old = 0, new_avail = 0, old_avail = 0;
        _cleanup_(freep) struct orch_inst **old_unavail = calloc(n_live + 1, sizeof *old_unavail);
        _cleanup_(freep) struct orch_inst **old_ok = calloc(n_live + 1, sizeof *old_ok);
        size_t n_old_unavail = 0, n_old_ok = 0;
        int r;

        if (!old_unavail || !old_ok)
                return -ENOMEM;
        for (size_t i = 0; i < n_live; i++) {
                struct orch_inst *inst = live[i];
                if (!is_old(svc, inst)) {
                        n_new++;
                        if (available_long_enough(inst, now, spec->update.min_healthy_ms))
                                new_avail++;
                        else if (rollout && inst->restarts >= CRASH_LOOP_RESTARTS &&
                                 streq(inst->revision, svc->rollout.to_revision))
                                return fail_rollout(rc, svc, "new instances crash-loop");
                } else {
                        n_old++;
                        if (orch_inst_is_available(inst)) {
                                old_avail++;
                                old_ok[n_old_ok++] = inst;
                        } else
                                old_unavail[n_old_unavail++] = inst;
                }
        }

        /* done when nothing old is left and enough new instances serve (pending ones do not) */
        if (n_old == 0 && n_new >= R && (!rollout || new_avail >= R)) {
                if (rollout) {
                        svc->rollout.state = ORCH_ROLLOUT_COMPLETE;
                        rollout_message(svc, NULL);
                        rollout_changed(rc, svc);
                        /* a forward rollout that succeeded makes an older failure history */
                        if (!svc->rollout.reverting) {
                                free(svc->rollout.failed_reason);
                                svc->rollout.failed_reason = NULL;
                                svc->rollout.failed_revision[0] = '\0';
                        }
                        orch_state_event(rc->st, ORCH_EVENT_ROLLOUT,
                                         json_pack("{s:s, s:s, s:s}", "service", svc->name, "revision",
                                                   svc->revision, "state", "complete"),
                                         "rollout of %s to revision %s complete", svc->name, svc->revision);
                }
                if (n_new > R)
                        return stop_victims(rc, live, n_live, n_new - R, "scaled down");
                return 0;
        }

        /* progress: a new instance became available, or an old one went (rollouts have a deadline;
         * a drain waits as long as it takes) */
        if (rollout) {
                static const char fmt[] = "%zu of %u new instances available, %zu old left";
                char msg[128];

                orch_snprintf(msg, sizeof msg, fmt, new_avail, R, n_old);
                if (!streq_ptr(svc->rollout.message, msg)) {
                        svc->rollout.last_progress = now;
                        rollout_message(svc, msg);
                        rollout_changed(rc, svc);
                }
                if (now > svc->rollout.last_progress + spec->update.progress_deadline_ms) {
                        char why[160], d[32];
                        orch_format_duration(spec->update.progress_deadline_ms, d, sizeof d);
                        orch_snprintf(why, sizeof why, "no progress within the progress deadline (%s)", d);
                        return fail_rollout(rc, svc, why);
                }
        }

        /* Old instances that are not available cost no availability: they go at once. */
        for (size_t i = 0; i < n_old_unavail; i++) {
                r = stop_instance(rc, old_unavail[i], "replaced by a new revision");
                if (r < 0)
                        return r;
                n_old--;
        }
        /* Available old ones go while availability stays at replicas - max_unavailable. */
        {
                size_t min_avail = R > unavail ? R - unavail : 0, avail = new_avail + old_avail;
                for (size_t i = 0; i < n_old_ok && avail > min_avail; i++, avail--) {
                        r = stop_instance(rc, old_ok[i], "replaced by a new revision");
                        if (r < 0)
                                return r;
                        n_old--;
                }
        }
        /* New ones start while the total stays within replicas + max_surge. */
        if (n_new < R) {
                size_t total = n_new + n_old,
                       budget = (size_t)R + surge > total ? (size_t)R + surge - total : 0;
                r = new_instances(rc, svc, (uint32_t)MIN(budget, (size_t)R - n_new));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int keep_count_at(struct orch_reconciler *rc, struct orch_svc *svc, struct orch_inst **live,
                         size_t n_live, const char *revision)
{
        uint32_t replicas = svc->spec->replicas;

        if (n_live > replicas)
                return stop_victims(rc, live, n_live, n_live - replicas, "scaled down");
        for (size_t i = n_live; i < replicas; i++) {
                struct orch_inst *inst;
                int r = orch_state_new_instance_at(rc->st, svc, revision, &inst);
                if (r == -ENOENT) /* that revision is no longer kept: the current one */
                        r = orch_state_new_instance(rc->st, svc, &inst);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int reconcile_service(struct orch_reconciler *rc, struct orch_svc *svc)
{
        struct orch_state *st = rc->st;
        struct orch_list *p, *t;
        _cleanup_(freep) struct orch_inst **live = NULL;
        size_t n_live = 0, n_all = 0;
        bool rolling = false;
        int r;

        /* records of instances that were stopped and are gone everywhere */
        orch_list_foreach_safe (p, t, &svc->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                if (!inst->desired_run && !inst->node)
                        orch_state_remove_instance(st, inst);
        }

        if (svc->deleting) {
                orch_list_foreach_safe (p, t, &svc->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                        /* the stop queued in this pass refers to the instance until it is sent:
                         * only one stopped in an earlier pass may be forgotten (and freed) now */
                        bool stopped_before = !inst->desired_run;
                        r = stop_instance(rc, inst, "service deleted");
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue; /* already forgotten */
                        /* nothing runs it any more: forget it */
                        if (stopped_before && (!inst->node || inst->state == ORCH_INSTANCE_LOST ||
                                               (inst->confirmed && (inst->state == ORCH_INSTANCE_EXITED ||
                                                                    inst->state == ORCH_INSTANCE_FAILED))))
                                orch_state_remove_instance(st, inst);
                }
                if (orch_list_empty(&svc->instances))
                        orch_state_remove_service(st, svc);
                return 0;
        }

        orch_list_foreach (p, &svc->instances)
                n_all++;
        live = calloc(n_all + 1, sizeof *live);
        if (!live)
                return -ENOMEM;
        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *inst = orch_list_entry(p, struct orch_inst, svc_link);
                /* terminal instances ended by their restart policy count towards replicas */
                if (orch_inst_is_live(inst) ||
                    (inst->desired_run &&
                     (inst->state == ORCH_INSTANCE_EXITED || inst->state == ORCH_INSTANCE_FAILED))) {
                        live[n_live++] = inst;
                        if (is_old(svc, inst))
                                rolling = true; /* a rollout, or a drain */
                }
        }

        if (rolling || svc->rollout.state == ORCH_ROLLOUT_PROGRESSING) {
                bool revisions_differ = false;
                for (size_t i = 0; i < n_live && !revisions_differ; i++)
                        revisions_differ = !streq(live[i]->revision, svc->revision);
                if (svc->rollout.state != ORCH_ROLLOUT_FAILED || !revisions_differ) {
                        if (svc->rollout.state != ORCH_ROLLOUT_PROGRESSING && revisions_differ) {
                                /* old instances but no rollout record (orchd restarted mid-way) */
                                svc->rollout.state = ORCH_ROLLOUT_PROGRESSING;
                                svc->rollout.last_progress = orch_realtime_msec();
                                orch_strlcpy(svc->rollout.to_revision, svc->revision,
                                             sizeof svc->rollout.to_revision);
                        }
                        r = rollout_step(rc, svc, live, n_live);
                        if (r < 0)
                                return r;
                } else {
                        /* A failed rollout without revert leaves the mix as it is, but the count
                         * still holds: what is lost is replaced at the revision that served
                         * (as Kubernetes' old ReplicaSet keeps its count), extras stop. */
                        r = keep_count_at(rc, svc, live, n_live, svc->rollout.from_revision);
                        if (r < 0)
                                return r;
                }
        } else if (n_live < svc->spec->replicas) {
                r = new_instances(rc, svc, svc->spec->replicas - (uint32_t)n_live);
                if (r < 0)
                        return r;
        } else if (n_live > svc->spec->replicas) {
                r = stop_victims(rc, live, n_live, n_live - svc->spec->replicas, "scaled down");
                if (r < 0)
                        return r;
        }
        return place_pending(rc, svc);
}

static void idle_cb(uv_idle_t *h)
{
        /* nothing: an active idle handle only makes the loop poll with a zero timeout, so that
         * the check handle runs the next pass right after the I/O that is ready */
}

int orch_reconciler_run(struct orch_reconciler *rc)
{
        struct orch_state *st = rc->st;
        uint64_t epoch = orch_sched_epoch(st->sched);
        int r = 0;

        if (rc->running)
                return 0;
        rc->running = true;
        /* capacity may have appeared: services with unplaced instances get another try */
        if (epoch != rc->sched_epoch) {
                struct orch_hmap_iter it;
                struct orch_hmap_node *n;
                rc->sched_epoch = epoch;
                for (n = orch_hmap_first(&st->services, &it); n; n = orch_hmap_next(&st->services, &it)) {
                        struct orch_svc *svc = container_of(n, struct orch_svc, hnode);
                        if (svc->n_pending > 0)
                                orch_state_mark_dirty(st, svc);
                }
        }
        rc->pass_budget = PASS_MAX;
        while (!orch_list_empty(&st->dirty_services) && rc->pass_budget > 1) {
                struct orch_svc *svc = orch_list_entry(st->dirty_services.next, struct orch_svc, dirty_link);
                orch_list_remove(&svc->dirty_link);
                r = reconcile_service(rc, svc);
                if (r < 0) {
                        log_error_errno(r, "reconcile of service %s failed", svc->name);
                        break;
                }
        }
        /* persisted before anything is sent (docs/control-plane.md) */
        r = orch_state_flush(st);
        if (r < 0) {
                log_error_errno(r, "could not persist placements; nothing is sent until the store works: %s",
                                orch_store_last_error(st->store));
                rc->running = false;
                return r;
        }
        for (size_t i = 0; i < rc->n_actions; i++) {
                struct action *a = &rc->actions[i];
                if (a->start)
                        rc->ops->start(rc->userdata, a->inst);
                else
                        rc->ops->stop(rc->userdata, a->inst, a->reason);
        }
        if (rc->n_actions > 0 && rc->ops->flush)
                rc->ops->flush(rc->userdata);
        rc->n_actions = 0;
        rc->running = false;
        /* work left for the next pass: the loop must not sleep in poll until then */
        if (!orch_list_empty(&st->dirty_services))
                uv_idle_start(&rc->more, idle_cb);
        else
                uv_idle_stop(&rc->more);
        return 0;
}

static void check_cb(uv_check_t *h)
{
        struct orch_reconciler *rc = container_of(h, struct orch_reconciler, check);

        if (!orch_list_empty(&rc->st->dirty_services) ||
            orch_sched_epoch(rc->st->sched) != rc->sched_epoch ||
            !orch_list_empty(&rc->st->store_instances) || !orch_list_empty(&rc->st->store_reports) ||
            json_array_size(rc->st->pending_events) > 0)
                orch_reconciler_run(rc);
}

/* Rollouts wait on time (min_healthy, deadlines) as well as on events. */
static void tick_cb(uv_timer_t *t)
{
        struct orch_reconciler *rc = container_of(t, struct orch_reconciler, tick);
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&rc->st->services, &it); n; n = orch_hmap_next(&rc->st->services, &it)) {
                struct orch_svc *svc = container_of(n, struct orch_svc, hnode);
                if (svc->rollout.state == ORCH_ROLLOUT_PROGRESSING || svc->deleting)
                        orch_state_mark_dirty(rc->st, svc);
        }
        /* a drain waits for min_healthy of the replacements, like a rollout */
        for (n = orch_hmap_first(&rc->st->nodes, &it); n; n = orch_hmap_next(&rc->st->nodes, &it)) {
                struct orch_node *node = container_of(n, struct orch_node, hnode);
                struct orch_list *p;
                if (!node->cordoned)
                        continue;
                orch_list_foreach (p, &node->instances) {
                        struct orch_inst *inst = orch_list_entry(p, struct orch_inst, node_link);
                        if (inst->desired_run)
                                orch_state_mark_dirty(rc->st, inst->svc);
                }
        }
}

int orch_reconciler_new(uv_loop_t *loop, struct orch_state *st, const struct orch_reconciler_ops *ops,
                        void *userdata, struct orch_reconciler **ret)
{
        struct orch_reconciler *rc = calloc(1, sizeof *rc);
        int r;

        if (!rc)
                return -ENOMEM;
        rc->st = st;
        rc->ops = ops;
        rc->userdata = userdata;
        rc->sched_epoch = UINT64_MAX;
        r = uv_check_init(loop, &rc->check);
        if (r < 0) {
                free(rc);
                return r;
        }
        rc->open_handles++;
        r = uv_timer_init(loop, &rc->tick);
        if (r < 0) {
                orch_reconciler_close(rc);
                return r;
        }
        rc->open_handles++;
        r = uv_idle_init(loop, &rc->more);
        if (r < 0) {
                orch_reconciler_close(rc);
                return r;
        }
        rc->open_handles++;
        uv_check_start(&rc->check, check_cb);
        uv_timer_start(&rc->tick, tick_cb, TICK_MSEC, TICK_MSEC);
        uv_unref((uv_handle_t *)&rc->tick);
        *ret = rc;
        return 0;
}

static void close_cb(uv_handle_t *h)
{
        struct orch_reconciler *rc = h->data;

        if (--rc->open_handles == 0) {
                free(rc->actions);
                free(rc);
        }
}

void orch_reconciler_close(struct orch_reconciler *rc)
{
        if (!rc)
                return;
        rc->check.data = rc;
        rc->tick.data = rc;
        rc->more.data = rc;
        if (uv_is_active((uv_handle_t *)&rc->check) || rc->open_handles >= 1)
                uv_close((uv_handle_t *)&rc->check, close_cb);
        if (rc->open_handles >= 2)
                uv_close((uv_handle_t *)&rc->tick, close_cb);
        if (rc->open_handles >= 3)
                uv_close((uv_handle_t *)&rc->more, close_cb);
}

int orch_reconciler_preview(struct orch_reconciler *rc, const struct orch_service *spec, uint32_t n,
                            json_t *ret)
{
        struct orch_sched_request req;
        struct orch_sched_result last;
        _cleanup_(freep) uint32_t *nodes = calloc(n + 1, sizeof *nodes);
        int placed;

        bool epoch_seen = rc->sched_epoch == orch_sched_epoch(rc->st->sched);

        if (!nodes)
                return -ENOMEM;
        build_request(spec, &req);
        placed = orch_sched_place_batch(rc->st->sched, &req, n, nodes, &last);
        if (placed < 0)
                return placed;
        for (int i = 0; i < placed; i++) {
                struct orch_sched_node_info info;
                if (orch_sched_node_get(rc->st->sched, nodes[i], &info) >= 0)
                        json_array_append_new(
                                ret, json_pack("{s:s, s:s}", "service", spec->name, "node", info.name));
        }
        for (uint32_t i = (uint32_t)placed; i < n; i++)
                json_array_append_new(
                        ret, json_pack("{s:s, s:s}", "service", spec->name, "pending", last.reason));
        /* a dry run leaves no trace in the scheduler */
        for (int i = 0; i < placed; i++)
                orch_sched_account(rc->st->sched, nodes[i], spec->name, spec->resources.cpu_millis,
                                   spec->resources.memory, -1);
        /* releasing what the preview took raised the epoch, but nothing fits now that did not
         * before: no retry of every pending placement for it */
        if (epoch_seen)
                rc->sched_epoch = orch_sched_epoch(rc->st->sched);
        return 0;
}

int orch_reconciler_undo(struct orch_reconciler *rc, struct orch_svc *svc)
{
        int r = revert(rc, svc, false);
        if (r < 0)
                return r;
        orch_state_mark_dirty(rc->st, svc);
        return 0;
}

const struct orch_reconciler_stats *orch_reconciler_stats(const struct orch_reconciler *rc)
{
        return &rc->stats;
}
