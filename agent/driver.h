/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Drivers: how one instance's process tree is confined, started, stopped and watched
 * (docs/agent.md, "Drivers"). The supervisor keeps everything else — the state machine,
 * restarts and backoff, health checks, ports, logs, events and state files — so that an
 * instance behaves the same whichever driver runs it.
 *
 *   exec     orch_spawn() into a cgroup of the agent's own (agent/cgroup.h); the exit is seen
 *            through a pidfd on the loop, OOM kills through the cgroup's counter.
 *   systemd  a transient service unit orch-<instance>.service per instance, started over
 *            sd-bus (StartTransientUnit); starts and exits are seen through the manager's
 *            JobRemoved and PropertiesChanged signals, read on the loop.
 *
 * A unit is one instance's handle in its driver:
 *
 *   prepare ─▶ start ─▶ [started] ─▶ stop / kill ─▶ [exited] ─▶ start ... ─▶ cleanup ─▶ free
 *   prepare ─▶ adopt (an instance a previous agent left running) ─▶ [exited] ...
 *
 * [started] and [exited] are callbacks (struct orch_driver_events). start() either returns the
 * pid of a process that runs (exec) or 0, and `started` follows once the driver knows the
 * process runs (systemd: when the start job is done). After a start() or adopt() that returned
 * success, exactly one `exited` follows, also when the process never ran (then `start_failed`
 * is set, with a reason). Callbacks never run from inside a call into the driver; the exited
 * callback may free the unit.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "cgroup.h"
#include "manifest.h"

struct orch_driver_impl;
struct orch_driver_unit;

#define ORCH_DRIVER_REASON_MAX 512

struct orch_driver_exit {
        bool have_status;   /* false: the status is unknown (a re-adopted process is not our child) */
        int code;           /* exit code, or -1 when killed by a signal or unknown */
        int signal;         /* the signal that killed it, or 0 */
        bool oom;           /* the kernel's OOM killer killed a process of the instance */
        bool start_failed;  /* the command never ran: `reason` says why */
        const char *reason; /* for start_failed, or NULL; valid during the callback */
};

struct orch_driver_events {
        /* The process of a start() that returned pid 0 runs now. */
        void (*started)(void *userdata, pid_t pid);
        /* The instance ended: its main process exited and nothing of it is left running. */
        void (*exited)(void *userdata, const struct orch_driver_exit *e);
};

/* What the supervisor resolved for an instance. Everything is borrowed and must outlive the unit. */
struct orch_driver_params {
        const char *id;
        const struct orch_service *spec; /* limits, stop signal and timeout, sandbox */
        char *const *argv;
        char *const *envp;   /* the complete environment */
        const char *workdir; /* NULL: the driver's default (systemd: a StateDirectory with dynamic_user) */
        const char *user;    /* for drivers that take names (systemd); NULL with dynamic_user */
        const char *group;   /* NULL: the user's primary group */
        uid_t uid;
        gid_t gid;
        const gid_t *groups;
        size_t n_groups;
        bool set_ids;         /* false: keep the agent's credentials */
        int nofile_limit;     /* RLIMIT_NOFILE, soft and hard */
        int log_fd;           /* stdout and stderr; -1: /dev/null */
        const char *log_path; /* the file behind log_fd */
        const struct orch_driver_events *events;
        void *userdata;
};

struct orch_driver_ops {
        enum orch_driver kind;

        /* The instance's confinement (exec: its cgroup, replacing a leftover). existing: a
         * previous agent's instance, to adopt(): its confinement is opened, not made. */
        int (*prepare)(struct orch_driver_impl *d, const struct orch_driver_params *p, bool existing,
                       struct orch_driver_unit **ret, char *reason, size_t reason_size);
        /* Removes what a previous agent left of an instance that is not adopted: its processes
         * are killed. */
        int (*discard)(struct orch_driver_impl *d, const char *service, const char *id, char *reason,
                       size_t reason_size);
        /* End of recovery: kills and removes what belongs to this node and no instance the
         * supervisor holds (`known` says which ids it holds). */
        void (*sweep)(struct orch_driver_impl *d, bool (*known)(void *userdata, const char *id),
                      void *userdata);
        void (*free)(struct orch_driver_impl *d);

        /* Starts the process: 0 with *ret_pid > 0 when it runs, or 0 with *ret_pid = 0 when
         * `started` (or `exited` with start_failed) follows. -errno with a reason when nothing
         * was started (no `exited` follows). */
        int (*start)(struct orch_driver_unit *u, pid_t *ret_pid, char *reason, size_t reason_size);
        /* Asks it to stop: the stop signal (exec: to the main process's group; systemd: StopUnit,
         * KillSignal to every process of the unit, SIGKILL after TimeoutStopUSec). */
        void (*stop)(struct orch_driver_unit *u);
        /* SIGKILL to every process of the instance. */
        void (*kill)(struct orch_driver_unit *u);
        /* Re-adoption: 1 when the instance described by the saved state still runs and is now
         * watched (*ret_pid: its main process), 0 when it does not (whatever was left of it is
         * killed), -errno when that cannot be told. */
        int (*adopt)(struct orch_driver_unit *u, const json_t *saved, pid_t *ret_pid, char *reason,
                     size_t reason_size);
        /* Adds what adopt() needs to the instance's state object. */
        int (*save)(const struct orch_driver_unit *u, json_t *state);
        /* What the instance uses now; fields not known are ORCH_CGROUP_USAGE_UNKNOWN. */
        int (*usage)(struct orch_driver_unit *u, struct orch_cgroup_usage *ret);
        /* The instance's cgroup as /proc/PID/cgroup shows it, or NULL while it is not known. */
        const char *(*cgroup_path)(const struct orch_driver_unit *u);
        /* The cgroup to run health-check commands in, or NULL (the agent's own). */
        const struct orch_cgroup *(*cgroup)(const struct orch_driver_unit *u);
        /* The instance is over: its confinement goes (exec: the cgroup). forget: it leaves the node
         * (driver-owned directories go too). Only after `exited`, or when nothing was started. */
        int (*cleanup)(struct orch_driver_unit *u, bool forget, char *reason, size_t reason_size);
        /* No callback after this; memory goes when the unit's handles are closed. Accepts NULL. */
        void (*free_unit)(struct orch_driver_unit *u);
};

struct orch_driver_impl {
        const struct orch_driver_ops *ops;
};

struct orch_driver_unit {
        const struct orch_driver_ops *ops;
};

/* exec: always available. `cgroups` NULL: no confinement (unprivileged tests). */
int orch_driver_exec_new(uv_loop_t *loop, struct orch_cgroup_root *cgroups, struct orch_driver_impl **ret);

/*
 * systemd: connects to a manager and subscribes to its signals.
 *   address  "unix:path=..." of a manager's private socket (a user manager for tests:
 *            unix:path=$XDG_RUNTIME_DIR/systemd/private), or NULL: $ORCH_SYSTEMD_ADDRESS when set,
 *            else the system manager (its private socket /run/systemd/private when root, else
 *            the system bus).
 *   node     the node name, written into each unit's Description: units of other agents
 *            sharing the manager are never swept or adopted.
 * Returns 0 and a driver even when no manager answers: orch_driver_systemd_available() then
 * says why, and prepare() refuses every instance with that reason.
 */
int orch_driver_systemd_new(uv_loop_t *loop, const char *address, const char *node,
                            struct orch_driver_impl **ret);
/* 1 when connected to a manager, 0 when not (with a reason: "no systemd manager reachable at
 * ADDRESS: ERROR"). */
int orch_driver_systemd_available(const struct orch_driver_impl *d, char *reason, size_t reason_size);
