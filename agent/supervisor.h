/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The supervisor owns every instance of this node: its state machine
 * (docs/agent.md, "Lifecycle"), restarts with backoff, health checks, ports,
 * log files and cgroup. Its interface is narrow — start an instance from a
 * spec, stop it, list, subscribe to events — and is driven either by the
 * connection to orchd or, with --standalone, by manifests directly.
 *
 *   pending ──spawn──▶ starting ──first passing check──▶ running
 *      ▲                  │  (no check: at once)            │
 *      └──backoff── exit ─┴─────────────────────────────────┤
 *                                                            ▼
 *   exited / failed ◀── exit (policy says no more) ◀── stopping ◀── stop / unhealthy
 *
 * Every transition is emitted as an event through the callback.
 */

#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "manifest.h"
#include "types.h"

struct orch_supervisor;
struct orch_cgroup_root;
struct orch_ports;
struct orch_logs;

#define ORCH_SV_REASON_MAX 512

struct orch_sv_port {
        const char *name;
        uint16_t port;
};

/* A snapshot of one instance; valid during the callback (or until the next supervisor call). */
struct orch_sv_info {
        const char *id;
        const char *service;
        const char *revision;
        uint64_t generation;
        enum orch_instance_state state;
        enum orch_health_state health;
        pid_t pid; /* 0 when not running */
        const struct orch_sv_port *ports;
        size_t n_ports;
        uint32_t restarts;
        uint64_t started_at; /* realtime ms of the current (or last) start; 0 never */
        bool has_exit;
        int exit_code;   /* the last exit: code, or -1 when killed by a signal or unknown */
        int exit_signal; /* 0 when none */
        bool exit_oom;
        const char *reason; /* why it is in this state, or NULL */
        const char *cgroup;
        /* `forgotten`: the last event of this instance (stopped and removed from the supervisor) */
        bool forgotten;
};

typedef void (*orch_sv_event_fn)(void *userdata, const struct orch_sv_info *info);

struct orch_supervisor_config {
        const char *data_dir;  /* instances/<id>/ (work dirs) and instances/<id>.json (state) live here */
        const char *node_name; /* ORCH_NODE */
        struct orch_cgroup_root *cgroups; /* NULL: no confinement (tests that run unprivileged) */
        struct orch_ports *ports;
        struct orch_logs *logs;
        bool allow_root; /* instances may run as root */
        enum orch_driver default_driver;
        /* Driver systemd: the manager to talk to, "unix:path=..." (a user manager's private socket,
         * for tests), or NULL: $ORCH_SYSTEMD_ADDRESS when set, else the system manager. */
        const char *systemd_address;
        orch_sv_event_fn on_event;
        void *userdata;
};

int orch_supervisor_new(uv_loop_t *loop, const struct orch_supervisor_config *cfg,
                        struct orch_supervisor **ret);
/* Frees what is left; call after orch_supervisor_shutdown() completed (or with no instances). */
void orch_supervisor_free(struct orch_supervisor *sv);

/*
 * Starts an instance. `revision` is the spec's orch_service_revision() (NULL: computed here). The
 * spec is copied once per service and revision and the copy shared by their instances: a later
 * start with the same revision uses the copy first given, whatever its replicas, update and route
 * (which the revision leaves out, and which say nothing about an instance); the caller keeps
 * `spec`. Returns 0 once the instance is accepted (its events
 * follow: pending, starting, running...), or -errno with a reason for a person: a user that does
 * not exist, root without --allow-root, a driver this agent cannot run (with the driver's reason,
 * "driver systemd: no systemd manager reachable at ..."), a systemd-only sandbox option with the
 * exec driver, no free port. Starting an id that exists with the same generation is a no-op (0);
 * with a lower one, -ESTALE; with a higher one the old copy is stopped and the new one started.
 */
int orch_supervisor_start(struct orch_supervisor *sv, const char *id, uint64_t generation,
                          const struct orch_service *spec, const char *revision, char *reason,
                          size_t reason_size);

typedef void (*orch_sv_done_fn)(void *userdata, const char *id);

/*
 * Stops an instance and forgets it: stop signal, stop timeout, SIGKILL to everything left in its
 * cgroup, cgroup removed, ports released, work dir and logs removed. `done` (may be NULL) runs
 * when all of that is finished; a stop asked again while one is under way adds its `done`, and
 * each runs once. -ENOENT for an unknown id, -ENOMEM (done is not called).
 */
int orch_supervisor_stop(struct orch_supervisor *sv, const char *id, const char *reason,
                         orch_sv_done_fn done, void *userdata);

/* The generation held for an id, 0 when unknown. */
uint64_t orch_supervisor_generation(const struct orch_supervisor *sv, const char *id);
int orch_supervisor_info(const struct orch_supervisor *sv, const char *id, struct orch_sv_info *ret);
typedef void (*orch_sv_foreach_fn)(void *userdata, const struct orch_sv_info *info);
void orch_supervisor_foreach(const struct orch_supervisor *sv, orch_sv_foreach_fn fn, void *userdata);
size_t orch_supervisor_count(const struct orch_supervisor *sv);
/* Counts per state, for STATUS= lines. */
void orch_supervisor_counts(const struct orch_supervisor *sv, size_t ret[_ORCH_INSTANCE_STATE_MAX]);

struct orch_sv_usage {
        uint64_t cpu_usec;
        uint64_t memory;
        uint64_t pids;
};
int orch_supervisor_usage(const struct orch_supervisor *sv, const char *id, struct orch_sv_usage *ret);

/*
 * Agent start: finds what a previous agent left in the data dir, the cgroup tree and the systemd
 * manager (docs/agent.md, "Re-adoption"). With `adopt`, live instances are re-adopted — exec: pid,
 * start time and cgroup still match, watched with a pidfd; systemd: found again by unit name —
 * with health checks and log rotation resumed and reported as they are; instances that had ended
 * are restored as ended, a stop in progress is finished, and the dead ones are restarted per their
 * policy (reason: exited while the agent was away); without it every leftover is killed and
 * cleaned up. Each case is logged. Returns the number re-adopted. Call it before the loop runs:
 * it makes synchronous calls to the systemd manager.
 */
int orch_supervisor_recover(struct orch_supervisor *sv, bool adopt);

/*
 * Whether instances can run with `driver` (ORCH_DRIVER_DEFAULT: the agent's default) on this agent:
 * exec always; systemd when a manager answered at start, else false with the reason ("no systemd
 * manager reachable at ADDRESS: ERROR"). What the agent advertises to orchd.
 */
bool orch_supervisor_driver_available(const struct orch_supervisor *sv, enum orch_driver driver,
                                      char *reason, size_t reason_size);

/*
 * Agent stop. keep_instances: leave them running for the next agent (their state files stay);
 * otherwise stop every instance (stop signal, timeout, kill) and forget it. `done` runs when
 * finished.
 */
void orch_supervisor_shutdown(struct orch_supervisor *sv, bool keep_instances, void (*done)(void *userdata),
                              void *userdata);

/* Expands ${PORT}, ${PORT_<NAME>}, ${ORCH_SERVICE}, ${ORCH_INSTANCE} and ${ORCH_NODE} in `in`;
 * other ${...} are left for the program (a shell) to expand. The caller frees the result. */
char *orch_sv_expand(const char *in, const char *service, const char *instance, const char *node,
                     const struct orch_sv_port *ports, size_t n_ports);
