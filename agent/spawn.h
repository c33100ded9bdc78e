/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Creating a confined process. orch_spawn() returns only when the child has
 * either exec'd the command or failed to; in the second case it returns the
 * error with a reason a person can act on ("exec /usr/bin/x: No such file or
 * directory", "setuid 65534: Operation not permitted"), never "exit 127".
 *
 * The child is inside its cgroup before it runs a single instruction of the
 * workload: on v2 it is created there (clone3 CLONE_INTO_CGROUP); on v1 and
 * hybrid hosts it writes itself into every controller's cgroup.procs first,
 * then sets rlimits, no_new_privs, groups, gid, uid and the working
 * directory, closes every inherited descriptor, and execs. No helper process
 * stays behind: the child becomes the workload.
 */

#include <stdbool.h>
#include <sys/resource.h>
#include <sys/types.h>

struct orch_cgroup;

struct orch_spawn_params {
        char *const *argv; /* argv[0] is resolved with the PATH of envp when it has no '/' */
        char *const *envp; /* the complete environment: nothing of the caller's is inherited */
        const char *workdir; /* NULL: "/" */
        uid_t uid;
        gid_t gid;
        const gid_t *groups; /* supplementary groups */
        size_t n_groups;
        bool set_ids;      /* false: keep the caller's credentials (tests, root instances) */
        bool no_new_privs;
        /* -1: /dev/null. Duplicated onto 0, 1, 2 in the child. */
        int stdin_fd;
        int stdout_fd;
        int stderr_fd;
        const struct orch_cgroup *cgroup; /* NULL: stay in the caller's cgroup (tests only) */
        int nofile_limit; /* RLIMIT_NOFILE soft and hard for the child; 0 keeps the caller's */
};

struct orch_spawn_result {
        pid_t pid;
        int pidfd; /* owned by the caller; poll it for the exit, waitid(P_PIDFD) for the status */
};

/*
 * Returns 0, or -errno with `reason` (at least 256 bytes) describing which step failed.
 *
 * It blocks the calling thread until the child has exec'd (CLONE_VFORK): tens to hundreds of microseconds
 * on an idle host, a scheduling slice or so under CPU contention, when the child waits for a CPU in its
 * new cgroup. It keeps no shared state, so several threads may spawn at once (different params and
 * cgroups) to overlap those waits; bench/spawn-confine --threads shows the effect (docs/agent.md).
 */
int orch_spawn(const struct orch_spawn_params *p, struct orch_spawn_result *ret, char *reason, size_t reason_size);
