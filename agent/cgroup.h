/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Instance cgroups: one per instance, <parent>/<service>/<instance>, on v1,
 * hybrid and v2 hosts (docs/agent.md, "Confinement").
 *
 *   v1      the instance directory is made in each of the cpu, cpuacct, memory
 *           and pids hierarchies that is mounted (co-mounted controllers share
 *           one directory), under <mount>/<parent>.
 *   hybrid  as v1 for the controllers, plus a directory in the controller-less
 *           cgroup2 hierarchy (/sys/fs/cgroup/unified): the process is created
 *           there (CLONE_INTO_CGROUP), which gives an atomic cgroup.kill and a
 *           recursive "populated" flag that v1 lacks.
 *   v2      one directory; <parent> is placed under the agent's own cgroup when
 *           it is delegated (systemd Delegate=yes marks it with the
 *           trusted.delegate xattr), else under the root. A relative <parent>
 *           follows that rule; an absolute one ("/x") is taken from the root of
 *           every hierarchy.
 *
 * Functions return 0 (or a positive answer where documented) on success and
 * -errno on failure. Those that take `reason` (at least 256 bytes; NULL is
 * accepted) describe there what failed with the file and the value, for the
 * caller to log or report once.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum orch_cgroup_mode {
        ORCH_CGROUP_V1,
        ORCH_CGROUP_HYBRID,
        ORCH_CGROUP_V2,
        _ORCH_CGROUP_MODE_MAX,
        _ORCH_CGROUP_MODE_INVALID = -1,
};

const char *orch_cgroup_mode_to_string(enum orch_cgroup_mode m);

/* The controllers orch uses. On v2, cpu usage comes from the core cpu.stat: CPUACCT is then implied. */
enum orch_cgroup_controller {
        ORCH_CGROUP_CPU,
        ORCH_CGROUP_CPUACCT,
        ORCH_CGROUP_MEMORY,
        ORCH_CGROUP_PIDS,
        _ORCH_CGROUP_CONTROLLER_MAX,
};

#define ORCH_CGROUP_MASK(c) (1U << (c))

/* The cgroup layout of the host and the parent under which instances are made. */
struct orch_cgroup_root;

enum {
        /* Treat a hybrid host as v1: ignore its cgroup2 hierarchy (tests of the v1 paths; hosts where the
         * unified mount is not usable). */
        ORCH_CGROUP_ROOT_V1_ONLY = 1U << 0,
};

/*
 * Detects the layout (statfs of /sys/fs/cgroup and /sys/fs/cgroup/unified, as
 * crun does) and the controllers, and creates the parent directories. On v2
 * with a delegated agent cgroup, the agent first moves itself into the leaf
 * <own>/agent: a cgroup with processes cannot enable controllers for its
 * children (the "no internal processes" rule). Nothing is removed by
 * orch_cgroup_root_free(); orch_cgroup_root_remove() removes the (empty)
 * parent directories.
 */
int orch_cgroup_root_open(const char *parent, unsigned flags, struct orch_cgroup_root **ret, char *reason,
                          size_t reason_size);
struct orch_cgroup_root *orch_cgroup_root_free(struct orch_cgroup_root *root);
int orch_cgroup_root_remove(struct orch_cgroup_root *root, char *reason, size_t reason_size);
enum orch_cgroup_mode orch_cgroup_root_mode(const struct orch_cgroup_root *root);
/* ORCH_CGROUP_MASK() bits of the controllers instances get. */
unsigned orch_cgroup_root_controllers(const struct orch_cgroup_root *root);

struct orch_cgroup_limits {
        uint32_t cpu_millis;   /* quota per 100 ms period; 0: none. Below 10m it is raised to 10m, the
                                * kernel's minimum quota of 1 ms per period. */
        uint64_t memory_bytes; /* hard limit, swap capped so that it cannot be exceeded; 0: none */
        uint64_t pids_max;     /* 0: none */
};

/* One instance's cgroup. */
struct orch_cgroup;

/*
 * Creates <parent>/<service>/<instance> with the limits (the service directory
 * as needed). -EEXIST when the instance directory exists in any hierarchy (a
 * leftover: open and remove it first); -EOPNOTSUPP when a limit needs a
 * controller the host does not offer. On failure nothing it made is left.
 */
int orch_cgroup_create(struct orch_cgroup_root *root, const char *service, const char *instance,
                       const struct orch_cgroup_limits *limits, struct orch_cgroup **ret, char *reason,
                       size_t reason_size);
/* Opens an existing instance cgroup (re-adoption, leftovers); -ENOENT when it exists in no hierarchy. */
/* False for an opened leftover that misses a hierarchy (something removed part of it). */
bool orch_cgroup_is_complete(const struct orch_cgroup *cg);
int orch_cgroup_open(struct orch_cgroup_root *root, const char *service, const char *instance,
                     struct orch_cgroup **ret);
/* Frees memory and descriptors; the cgroup itself stays. Accepts NULL, returns NULL. */
struct orch_cgroup *orch_cgroup_free(struct orch_cgroup *cg);

/* The path as /proc/<pid>/cgroup shows it for the resource controllers, e.g. "/orch/web/web-1". */
const char *orch_cgroup_path(const struct orch_cgroup *cg);

/*
 * SIGKILLs every process in the cgroup and in any cgroup below it, then waits
 * up to timeout_usec for it to be empty. v2 and hybrid: cgroup.kill, which the
 * kernel applies to the whole subtree at once, so a process that forks
 * concurrently cannot escape. v1: rounds of kill() over cgroup.procs until a
 * round finds nothing; each round gets every process that existed when it
 * read the files, and a process with a pending SIGKILL cannot fork, so the
 * rounds converge (pids.max bounds how many a fork bomb can add meanwhile).
 * Returns 0 when empty, -EBUSY when processes are still there after the
 * timeout (exiting, or stuck in uninterruptible sleep): call it again later.
 * An empty cgroup is left alone, so that restarting into it stays as cheap as
 * the first start (see orch_cgroup_attach).
 */
int orch_cgroup_kill(struct orch_cgroup *cg, uint64_t timeout_usec, char *reason, size_t reason_size);
/* 1 when no process is in the cgroup or below it, 0 when there is one, or -errno. */
int orch_cgroup_is_empty(const struct orch_cgroup *cg);
/*
 * Kills (as orch_cgroup_kill with a 1 s timeout), removes the directories
 * bottom-up in every hierarchy and checks that they are gone; then removes the
 * service directory if that was its last instance. The object stays valid
 * until orch_cgroup_free().
 */
int orch_cgroup_remove(struct orch_cgroup *cg, char *reason, size_t reason_size);

#define ORCH_CGROUP_USAGE_UNKNOWN UINT64_MAX

struct orch_cgroup_usage {
        uint64_t cpu_usec;     /* CPU time used, user + system */
        uint64_t memory_bytes; /* memory charged now (page cache included) */
        uint64_t pids;         /* tasks now */
};

/* Fields whose controller is missing are ORCH_CGROUP_USAGE_UNKNOWN. */
int orch_cgroup_usage(const struct orch_cgroup *cg, struct orch_cgroup_usage *ret);

/*
 * OOM kills. The counter is cumulative over the cgroup's life (it survives
 * restarts into the same cgroup): compare it with the value read at spawn.
 * -EOPNOTSUPP without a memory controller.
 */
int orch_cgroup_oom_count(const struct orch_cgroup *cg, uint64_t *ret);
/*
 * A descriptor that becomes ready on an OOM event, owned by `cg` (made on the
 * first call): v1 an eventfd registered through cgroup.event_control for
 * memory.oom_control (ready for POLLIN), v2 memory.events itself (POLLPRI, as
 * the kernel notifies changes of that file). `ret_events` is what to poll for
 * (UV_READABLE for POLLIN, UV_PRIORITIZED for POLLPRI with uv_poll).
 */
int orch_cgroup_oom_fd(struct orch_cgroup *cg, int *ret_fd, int *ret_events);
/* After a wake-up: consumes the notification (so the poll does not fire again) and reads the counter. The
 * event comes when the cgroup runs out of memory, which can be a moment before the kernel has chosen and
 * killed a victim: decide "OOM-killed" when the process has exited, from the counter read then. */
int orch_cgroup_oom_drain(struct orch_cgroup *cg, uint64_t *ret_count);

/*
 * Re-adoption: 1 when `pid` is in this cgroup in every hierarchy, 0 when not.
 * With a pidfd of that pid (pidfd >= 0), the answer is confirmed to be about
 * that process: it is checked to be still alive after /proc was read, so a
 * recycled pid cannot give a wrong yes.
 */
int orch_cgroup_has_process(const struct orch_cgroup *cg, pid_t pid, int pidfd);

/* A leftover found under the parent. */
struct orch_cgroup_name {
        char *service;
        char *instance;
};

/* Every <service>/<instance> directory under the parent, in any hierarchy, sorted and without duplicates. */
int orch_cgroup_list(struct orch_cgroup_root *root, struct orch_cgroup_name **ret, size_t *ret_n);
void orch_cgroup_names_free(struct orch_cgroup_name *names, size_t n);

/*
 * What orch_spawn() needs to put a child into the cgroup, opened by the
 * parent (O_CLOEXEC) so that the child does no path lookups:
 *   clone_path  the instance's cgroup2 directory (v2, hybrid), else NULL
 *   clone_fd    that directory, for clone3(CLONE_INTO_CGROUP), or -1. Also -1
 *               for a cgroup that has been through cgroup.kill: recent kernels
 *               SIGKILL every child cloned into such a cgroup at birth. When it
 *               is -1 with a clone_path, or CLONE_INTO_CGROUP is unavailable
 *               (kernel before 5.7, a seccomp filter refusing clone3), the
 *               child joins by writing its pid into <clone_path>/cgroup.procs,
 *               which costs a migration (below)
 *   join_fd[i]  v1 only: the instance's `tasks` file in each hierarchy. The
 *               child writes "0" there. It is single-threaded, so moving its
 *               one thread moves the whole process, and the kernel moves the
 *               writing thread without taking the global
 *               cgroup_threadgroup_rwsem in write mode, whose RCU grace
 *               period costs about 8 ms after an idle period (cgroup.procs,
 *               or `tasks` with an explicit pid, take it).
 */
#define ORCH_CGROUP_MAX_JOIN 4

struct orch_cgroup_attach {
        int clone_fd;
        const char *clone_path;
        int join_fd[ORCH_CGROUP_MAX_JOIN];
        const char *join_path[ORCH_CGROUP_MAX_JOIN];
        size_t n_join;
};

int orch_cgroup_attach_open(const struct orch_cgroup *cg, struct orch_cgroup_attach *ret);
void orch_cgroup_attach_close(struct orch_cgroup_attach *a);
