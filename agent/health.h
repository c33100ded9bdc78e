/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Health checks of one instance (SPEC §2 `health`), run on the agent's event loop.
 *
 *   http  GET <path> on 127.0.0.1:<port>; a 2xx or 3xx status passes. Only the status line is
 *         read (at most ORCH_HEALTH_STATUS_LINE_MAX bytes); anything that is not an HTTP
 *         status line fails.
 *   tcp   a connection to 127.0.0.1:<port> is accepted.
 *   exec  the command exits 0 within the timeout. It is spawned with orch_spawn() into the
 *         instance's cgroup with the instance's credentials and environment; at the timeout
 *         its process group and the process itself are killed with SIGKILL.
 *
 * No thread and no process per check (except the exec check's own command): a check is a
 * timer plus, while an attempt runs, one TCP handle or one poll handle on the command's pidfd.
 * Attempts never overlap: the next starts `interval` after the previous one finished or timed
 * out. The first attempt starts right away.
 *
 * State starts `unknown`; `healthy_threshold` consecutive passes make it `passing`,
 * `unhealthy_threshold` consecutive failures make it `failing`. A failure within `grace` of the
 * instance's start does not count towards the failures (but does break a run of passes).
 * Each change of state is reported once through the callback with the result that caused it,
 * e.g. "GET /healthz: 503", "connect 127.0.0.1:20001: Connection refused", "timeout after 1s".
 * Acting on it (`on_unhealthy`) is the supervisor's business.
 */

#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "macro.h"
#include "manifest.h"
#include "types.h"

#define ORCH_HEALTH_STATUS_LINE_MAX 256
#define ORCH_HEALTH_REASON_MAX      256

struct orch_cgroup;
struct orch_health_check;

/* `reason` is only valid during the call. The callback may call orch_health_stop() on `c`. */
typedef void (*orch_health_cb)(struct orch_health_check *c, enum orch_health_state old_state,
                               enum orch_health_state new_state, const char *reason, void *userdata);

struct orch_health_params {
        /* The manifest's block: type, path, command, interval, timeout, grace, thresholds. Copied. */
        const struct orch_health *spec;
        /* http, tcp: the port the manifest's port name resolved to. */
        uint16_t port;
        /* When the instance started, CLOCK_REALTIME milliseconds (orch_realtime_msec()); 0 means
         * now. A re-adopted instance passes its recorded start so its grace is not restarted. */
        uint64_t started_at_ms;

        /* exec only. envp, workdir and groups are copied; the cgroup is borrowed and must outlive
         * the check (the instance owns both). NULL cgroup: the agent's own (tests). */
        char *const *envp;
        const char *workdir;
        uid_t uid;
        gid_t gid;
        const gid_t *groups;
        size_t n_groups;
        bool set_ids;
        bool no_new_privs;
        const struct orch_cgroup *cgroup;
        /* Where the command's stdout and stderr go (the instance's log, say); -1: /dev/null. The
         * descriptor is borrowed: it must stay open while the check runs. */
        int output_fd;

        /* For log lines (copied; may be NULL). */
        const char *instance;

        orch_health_cb cb;
        void *userdata;
};

/*
 * Validates the parameters and schedules the first attempt. -EINVAL (with a log line naming the
 * bad value) for a spec of type ORCH_HEALTH_NONE, a zero interval or timeout, a missing port or
 * command, or a path that is not a valid request target.
 */
int orch_health_start(uv_loop_t *loop, const struct orch_health_params *params,
                      struct orch_health_check **ret);

/*
 * Stops the check: cancels the attempt in flight (an exec check's command is killed with
 * SIGKILL and reaped), and frees everything once libuv has closed the handles. The callback is
 * not called again after this returns. Accepts NULL.
 */
void orch_health_stop(struct orch_health_check *c);

enum orch_health_state orch_health_get_state(const struct orch_health_check *c);
/* The result of the last finished attempt ("" before the first one). */
const char *orch_health_get_last_result(const struct orch_health_check *c);
