/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "driver.h"
#include "json.h"
#include "log.h"
#include "spawn.h"
#include "util.h"
#include "banned.h"

/*
 * The exec driver: the agent creates the process itself (orch_spawn) inside a cgroup of its own,
 * watches it through a pidfd on the loop, and reads OOM kills from the cgroup's counter.
 */

/* What is left in a cgroup after the main process exited gets this long to die of SIGKILL. */
#define KILL_WAIT_USEC (200 * 1000)

struct exec_driver {
        struct orch_driver_impl base;
        uv_loop_t *loop;
        struct orch_cgroup_root *cgroups;
};

struct exec_unit {
        struct orch_driver_unit base;
        struct exec_driver *d;
        struct orch_driver_params p;
        struct orch_log_ctx log_ctx;
        struct orch_cgroup *cg;

        pid_t pid; /* 0 when no process runs */
        int pidfd;
        uint64_t start_time; /* of pid, in clock ticks since boot: with the pid it names the process */
        bool adopted;        /* not our child: its exit status went to its old parent */
        uv_poll_t exit_poll;
        bool exit_poll_active;
        uv_poll_t oom_poll;
        bool oom_poll_active;
        uint64_t oom_base; /* the cgroup's OOM counter when the process started */
        int open_handles;
        bool freeing;

        /* A spawn on libuv's thread pool (see exec_start): its result, filled by the worker. */
        uv_work_t work;
        bool spawning;
        int spawn_r;
        struct orch_spawn_result spawn_res;
        char spawn_reason[ORCH_DRIVER_REASON_MAX];
        bool stop_pending, kill_pending; /* asked while the spawn was in flight */
};

static const struct orch_driver_ops exec_ops;

/* Start time of a process in clock ticks since boot (/proc/PID/stat field 22): with the pid it
 * names the process uniquely, so a recycled pid is never mistaken for the instance. -ESRCH for a
 * process that has exited but is not reaped: an instance orphaned by a dead agent is reparented to
 * PID 1, which may leave it a zombie, and a zombie is not a running instance. */
static int proc_start_time(pid_t pid, uint64_t *ret)
{
        char path[64], *p, *save = NULL;
        _cleanup_(freep) char *buf = NULL;
        int field = 3, r;

        orch_snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        r = orch_read_file(path, 4096, &buf, NULL);
        if (r < 0)
                return r;
        p = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
        if (!p)
                return -EINVAL;
        for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
                if (field == 3 && (streq(tok, "Z") || streq(tok, "X")))
                        return -ESRCH;
                if (field == 22)
                        return orch_parse_u64(tok, ret);
        }
        return -EINVAL;
}

/* --- handles ---------------------------------------------------------------------------------- */

static void unit_free_now(struct exec_unit *u)
{
        orch_cgroup_free(u->cg);
        free(u);
}

static void handle_closed(uv_handle_t *h)
{
        struct exec_unit *u = h->data;

        if (--u->open_handles == 0 && u->freeing)
                unit_free_now(u);
}

static void close_handle(struct exec_unit *u, uv_handle_t *h)
{
        h->data = u;
        uv_close(h, handle_closed);
}

static void stop_watching(struct exec_unit *u)
{
        if (u->exit_poll_active) {
                close_handle(u, (uv_handle_t *)&u->exit_poll);
                u->exit_poll_active = false;
        }
        if (u->oom_poll_active) {
                close_handle(u, (uv_handle_t *)&u->oom_poll);
                u->oom_poll_active = false;
        }
        if (u->pidfd >= 0) {
                close(u->pidfd);
                u->pidfd = -1;
        }
}

/* --- exits -------------------------------------------------------------------------------------- */

/* Kills what the main process left behind (a double-forked daemon, workers). */
static void kill_leftovers(struct exec_unit *u)
{
        char reason[256];

        if (!u->cg || orch_cgroup_is_empty(u->cg) == 1)
                return;
        if (orch_cgroup_kill(u->cg, KILL_WAIT_USEC, reason, sizeof reason) < 0)
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "leftover processes: %s", reason);
}

/* The main process is gone: clean up after it, then tell the supervisor (which may free u). */
static void process_ended(struct exec_unit *u, bool have_status, int code, int sig)
{
        struct orch_driver_exit e = {.have_status = have_status,
                                     .code = have_status ? code : -1,
                                     .signal = have_status ? sig : 0};
        uint64_t oom = 0;

        stop_watching(u);
        u->pid = 0;
        u->start_time = 0;
        kill_leftovers(u);
        /* the OOM event can come a moment before the kernel picked its victim: the counter, read
         * once everything is dead, decides */
        e.oom = u->cg && u->p.spec->resources.memory > 0 && orch_cgroup_oom_count(u->cg, &oom) >= 0 &&
                oom > u->oom_base;
        u->p.events->exited(u->p.userdata, &e);
}

static void exit_poll_cb(uv_poll_t *h, int status, int events)
{
        struct exec_unit *u = container_of(h, struct exec_unit, exit_poll);
        siginfo_t si = {0};

        if (u->adopted) {
                /* not our child: the status went to its old parent (or init) */
                process_ended(u, false, -1, 0);
                return;
        }
        if (waitid((idtype_t)P_PIDFD, (id_t)u->pidfd, &si, WEXITED | WNOHANG) < 0) {
                if (errno == ECHILD)
                        process_ended(u, false, -1, 0);
                else
                        orch_log(ORCH_LOG_WARN, &u->log_ctx, "waitid pid %d: %s", (int)u->pid,
                                 strerror(errno));
                return;
        }
        if (si.si_pid == 0)
                return; /* a wake-up before the exit is reapable */
        if (si.si_code == CLD_EXITED)
                process_ended(u, true, si.si_status, 0);
        else
                process_ended(u, true, -1, si.si_status);
}

static void oom_poll_cb(uv_poll_t *h, int status, int events)
{
        struct exec_unit *u = container_of(h, struct exec_unit, oom_poll);
        uint64_t count = 0;

        if (orch_cgroup_oom_drain(u->cg, &count) >= 0 && count > u->oom_base)
                orch_log(ORCH_LOG_WARN, &u->log_ctx,
                         "the kernel's OOM killer killed a process of the instance (memory limit reached)");
}

static int watch_process(struct exec_unit *u)
{
        int r, oom_fd, oom_events;

        r = uv_poll_init(u->d->loop, &u->exit_poll, u->pidfd);
        if (r < 0)
                return r;
        u->open_handles++;
        u->exit_poll_active = true;
        r = uv_poll_start(&u->exit_poll, UV_READABLE, exit_poll_cb);
        if (r < 0)
                return r;
        /* the OOM notification only adds a log line at the moment it happens; the exit decides */
        if (u->cg && u->p.spec->resources.memory > 0 &&
            orch_cgroup_oom_fd(u->cg, &oom_fd, &oom_events) >= 0 &&
            uv_poll_init(u->d->loop, &u->oom_poll, oom_fd) >= 0) {
                u->open_handles++;
                u->oom_poll_active = true;
                if (uv_poll_start(&u->oom_poll, oom_events, oom_poll_cb) < 0)
                        orch_log(ORCH_LOG_WARN, &u->log_ctx, "OOM kills will be seen only at the exit");
        }
        return 0;
}

/* --- the unit --------------------------------------------------------------------------------- */

static int exec_start_sync(struct exec_unit *u, pid_t *ret_pid, char *reason, size_t reason_size);
static void exec_stop(struct orch_driver_unit *base);
static void exec_kill(struct orch_driver_unit *base);

/* The unit's cgroup, made now; a leftover of a copy that was replaced is killed and made again. */
static int unit_make_cgroup(struct exec_unit *u, char *reason, size_t reason_size)
{
        const struct orch_service *spec = u->p.spec;
        struct orch_cgroup_limits lim = {
                .cpu_millis = spec->resources.cpu_millis,
                .memory_bytes = spec->resources.memory,
                .pids_max = spec->resources.pids,
        };
        int r;

        r = orch_cgroup_create(u->d->cgroups, spec->name, u->p.id, &lim, &u->cg, reason, reason_size);
        if (r == -EEXIST) {
                struct orch_cgroup *old = NULL;
                if (orch_cgroup_open(u->d->cgroups, spec->name, u->p.id, &old) >= 0) {
                        orch_cgroup_remove(old, reason, reason_size);
                        orch_cgroup_free(old);
                }
                r = orch_cgroup_create(u->d->cgroups, spec->name, u->p.id, &lim, &u->cg, reason, reason_size);
        }
        return r;
}

static void spawn_params(struct exec_unit *u, struct orch_spawn_params *sp)
{
        *sp = (struct orch_spawn_params){
                .argv = u->p.argv,
                .envp = u->p.envp,
                .workdir = u->p.workdir,
                .uid = u->p.uid,
                .gid = u->p.gid,
                .groups = u->p.groups,
                .n_groups = u->p.n_groups,
                .set_ids = u->p.set_ids,
                .no_new_privs = u->p.spec->sandbox.no_new_privileges,
                .stdin_fd = -1,
                .stdout_fd = u->p.log_fd,
                .stderr_fd = u->p.log_fd,
                .cgroup = u->cg,
                .nofile_limit = u->p.nofile_limit,
        };
}

/* Takes over a spawned child: watched by its pidfd from now on. */
static int adopt_child(struct exec_unit *u, const struct orch_spawn_result *res, char *reason,
                       size_t reason_size)
{
        siginfo_t si;
        int r;

        u->pid = res->pid;
        u->pidfd = res->pidfd;
        u->adopted = false;
        if (proc_start_time(u->pid, &u->start_time) < 0)
                u->start_time = 0; /* it died already: the exit poll tells */
        r = watch_process(u);
        if (r < 0) {
                /* a process nobody watches would never be restarted or stopped: do not keep it */
                orch_snprintf(reason, reason_size, "cannot watch pid %d: %s", (int)u->pid, uv_strerror(r));
                kill(u->pid, SIGKILL);
                waitid((idtype_t)P_PIDFD, (id_t)u->pidfd, &si, WEXITED);
                stop_watching(u);
                u->pid = 0;
                kill_leftovers(u);
                return r;
        }
        return 0;
}

static void spawn_work(uv_work_t *w)
{
        struct exec_unit *u = container_of(w, struct exec_unit, work);
        struct orch_spawn_params sp;

        /* orch_spawn keeps no shared state: several run at once on the pool's threads */
        spawn_params(u, &sp);
        u->spawn_r = orch_spawn(&sp, &u->spawn_res, u->spawn_reason, sizeof u->spawn_reason);
}

static void spawn_done(uv_work_t *w, int status)
{
        struct exec_unit *u = container_of(w, struct exec_unit, work);
        struct orch_driver_exit e = {.code = -1, .start_failed = true};
        char reason[ORCH_DRIVER_REASON_MAX];
        int r = u->spawn_r;

        u->spawning = false;
        u->open_handles--;
        if (u->freeing) {
                /* nobody wants it any more: a child that started anyway is killed and reaped */
                if (r >= 0) {
                        siginfo_t si;
                        kill(u->spawn_res.pid, SIGKILL);
                        waitid((idtype_t)P_PIDFD, (id_t)u->spawn_res.pidfd, &si, WEXITED);
                        close(u->spawn_res.pidfd);
                }
                if (u->open_handles == 0)
                        unit_free_now(u);
                return;
        }
        if (r >= 0 && status >= 0)
                r = adopt_child(u, &u->spawn_res, reason, sizeof reason);
        else if (r >= 0) {
                siginfo_t si;
                kill(u->spawn_res.pid, SIGKILL);
                waitid((idtype_t)P_PIDFD, (id_t)u->spawn_res.pidfd, &si, WEXITED);
                close(u->spawn_res.pidfd);
                orch_snprintf(reason, sizeof reason, "spawn cancelled");
                r = -ECANCELED;
        } else
                orch_strlcpy(reason, u->spawn_reason, sizeof reason);
        if (r < 0) {
                e.reason = reason;
                u->p.events->exited(u->p.userdata, &e);
                return;
        }
        u->p.events->started(u->p.userdata, u->pid);
        /* a stop or kill that came while the spawn ran applies now */
        if (u->kill_pending)
                exec_kill(&u->base);
        else if (u->stop_pending)
                exec_stop(&u->base);
        u->stop_pending = u->kill_pending = false;
}

/* Spawning waits for the child to exec (vfork semantics): with a burst of starts on a busy host
 * most of that wait is the child waiting for a CPU. The spawn therefore runs on libuv's thread
 * pool, several at once, and the loop goes on; `started` (or `exited` with start_failed) follows. */
static int exec_start(struct orch_driver_unit *base, pid_t *ret_pid, char *reason, size_t reason_size)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);
        int r;

        if (u->spawning)
                return -EBUSY;
        /* A unit prepared to adopt a previous agent's instance whose cgroup was gone has none, or one
         * that misses a hierarchy (removed in part): the instance is confined like any other before it
         * runs again, in a cgroup made anew (what is left of the old one is killed and removed). */
        if (u->d->cgroups && (!u->cg || !orch_cgroup_is_complete(u->cg))) {
                u->cg = orch_cgroup_free(u->cg);
                r = unit_make_cgroup(u, reason, reason_size);
                if (r < 0)
                        return r;
        }
        if (u->cg && u->p.spec->resources.memory > 0)
                orch_cgroup_oom_count(u->cg, &u->oom_base);
        u->stop_pending = u->kill_pending = false;
        r = uv_queue_work(u->d->loop, &u->work, spawn_work, spawn_done);
        if (r >= 0) {
                u->spawning = true;
                u->open_handles++; /* the unit outlives the work */
                *ret_pid = 0;
                return 0;
        }
        return exec_start_sync(u, ret_pid, reason, reason_size);
}

/* Without a thread for the spawn (uv_queue_work failed): the same, on the loop. */
static int exec_start_sync(struct exec_unit *u, pid_t *ret_pid, char *reason, size_t reason_size)
{
        struct orch_spawn_params sp;
        struct orch_spawn_result res;
        int r;

        spawn_params(u, &sp);
        r = orch_spawn(&sp, &res, reason, reason_size);
        if (r < 0)
                return r;
        r = adopt_child(u, &res, reason, reason_size);
        if (r < 0)
                return r;
        *ret_pid = u->pid;
        return 0;
}

static void exec_stop(struct orch_driver_unit *base)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);
        int sig = u->p.spec->stop.signal;

        if (u->spawning)
                u->stop_pending = true;
        if (u->pid <= 0)
                return;
        /* the whole process group of the main process: shells and their children hear it too */
        if (kill(-u->pid, sig) < 0)
                kill(u->pid, sig);
}

static void exec_kill(struct orch_driver_unit *base)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);
        char reason[256];

        if (u->spawning)
                u->kill_pending = true;
        if (u->cg) {
                if (orch_cgroup_kill(u->cg, KILL_WAIT_USEC, reason, sizeof reason) < 0)
                        orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s", reason);
        } else if (u->pid > 0 && kill(-u->pid, SIGKILL) < 0)
                kill(u->pid, SIGKILL);
}

/* Is the process of the state file still the instance? Its pid, its start time and, when the agent
 * confines instances, its cgroup must agree; the pidfd is opened first, so the checks are about the
 * process it refers to and a pid recycled meanwhile cannot pass. */
static int open_live_process(struct exec_unit *u, pid_t pid, uint64_t start_time)
{
        uint64_t st;
        int pidfd;

        if (pid <= 0 || start_time == 0)
                return -ESRCH;
        if (u->d->cgroups && !u->cg)
                return -ESRCH; /* its cgroup is gone, so it cannot be in it */
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0)
                return -errno;
        if (proc_start_time(pid, &st) < 0 || st != start_time ||
            (u->cg && orch_cgroup_has_process(u->cg, pid, pidfd) != 1)) {
                close(pidfd);
                return -ESRCH;
        }
        return pidfd;
}

static int exec_adopt(struct orch_driver_unit *base, const json_t *saved, pid_t *ret_pid, char *reason,
                      size_t reason_size)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);
        int64_t pid = 0;
        uint64_t start_time = 0;
        int pidfd, r;

        orch_json_get_i64(saved, "pid", &pid);
        orch_json_get_u64(saved, "start_time", &start_time);
        orch_json_get_u64(saved, "oom_base", &u->oom_base);
        pidfd = open_live_process(u, (pid_t)pid, start_time);
        if (pidfd < 0) {
                kill_leftovers(u);
                return 0;
        }
        u->pid = (pid_t)pid;
        u->pidfd = pidfd;
        u->start_time = start_time;
        u->adopted = true;
        r = watch_process(u);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot watch pid %d: %s; killing it", (int)u->pid,
                              uv_strerror(r));
                stop_watching(u);
                u->pid = 0;
                if (u->cg)
                        orch_cgroup_kill(u->cg, KILL_WAIT_USEC, NULL, 0);
                return r;
        }
        *ret_pid = u->pid;
        return 1;
}

static int exec_save(const struct orch_driver_unit *base, json_t *state)
{
        const struct exec_unit *u = container_of(base, struct exec_unit, base);

        if (json_object_set_new(state, "start_time", json_integer((json_int_t)u->start_time)) < 0 ||
            json_object_set_new(state, "oom_base", json_integer((json_int_t)u->oom_base)) < 0)
                return -ENOMEM;
        return 0;
}

static int exec_usage(struct orch_driver_unit *base, struct orch_cgroup_usage *ret)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);

        if (!u->cg)
                return -ENODATA;
        return orch_cgroup_usage(u->cg, ret);
}

static const char *exec_cgroup_path(const struct orch_driver_unit *base)
{
        const struct exec_unit *u = container_of(base, struct exec_unit, base);

        return u->cg ? orch_cgroup_path(u->cg) : NULL;
}

static const struct orch_cgroup *exec_cgroup(const struct orch_driver_unit *base)
{
        const struct exec_unit *u = container_of(base, struct exec_unit, base);

        return u->cg;
}

static int exec_cleanup(struct orch_driver_unit *base, bool forget, char *reason, size_t reason_size)
{
        struct exec_unit *u = container_of(base, struct exec_unit, base);
        int r = 0;

        if (u->cg) {
                r = orch_cgroup_remove(u->cg, reason, reason_size);
                u->cg = orch_cgroup_free(u->cg);
        }
        return r;
}

static void exec_free_unit(struct orch_driver_unit *base)
{
        struct exec_unit *u;

        if (!base)
                return;
        u = container_of(base, struct exec_unit, base);
        u->freeing = true;
        stop_watching(u);
        if (u->open_handles == 0)
                unit_free_now(u);
}

/* --- the driver ------------------------------------------------------------------------------- */

static int exec_prepare(struct orch_driver_impl *base, const struct orch_driver_params *p, bool existing,
                        struct orch_driver_unit **ret, char *reason, size_t reason_size)
{
        struct exec_driver *d = container_of(base, struct exec_driver, base);
        struct exec_unit *u = calloc(1, sizeof *u);
        int r = 0;

        if (!u)
                return -ENOMEM;
        u->base.ops = &exec_ops;
        u->d = d;
        u->p = *p;
        u->pidfd = -1;
        u->log_ctx = (struct orch_log_ctx){.service = p->spec->name, .instance = p->id};
        if (d->cgroups && existing) {
                /* a missing cgroup is an answer, not an error: adopt() finds nothing to adopt (and a
                 * start makes one) */
                r = orch_cgroup_open(d->cgroups, p->spec->name, p->id, &u->cg);
                if (r == -ENOENT)
                        r = 0;
        } else if (d->cgroups)
                r = unit_make_cgroup(u, reason, reason_size);
        if (r < 0) {
                unit_free_now(u);
                return r;
        }
        *ret = &u->base;
        return 0;
}

static int exec_discard(struct orch_driver_impl *base, const char *service, const char *id, char *reason,
                        size_t reason_size)
{
        struct exec_driver *d = container_of(base, struct exec_driver, base);
        struct orch_cgroup *cg = NULL;
        int r;

        if (!d->cgroups)
                return 0;
        r = orch_cgroup_open(d->cgroups, service, id, &cg);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot open the cgroup of %s: %s", id, strerror(-r));
                return r;
        }
        r = orch_cgroup_remove(cg, reason, reason_size);
        orch_cgroup_free(cg);
        return r;
}

/* Cgroups no state file explains: orphans of a crash between cgroup creation and the first state
 * write, or of an older installation. */
static void exec_sweep(struct orch_driver_impl *base, bool (*known)(void *userdata, const char *id),
                       void *userdata)
{
        struct exec_driver *d = container_of(base, struct exec_driver, base);
        struct orch_cgroup_name *names = NULL;
        size_t n_names = 0;

        if (!d->cgroups || orch_cgroup_list(d->cgroups, &names, &n_names) < 0)
                return;
        for (size_t i = 0; i < n_names; i++) {
                struct orch_cgroup *cg = NULL;
                char why[256];

                if (known(userdata, names[i].instance) ||
                    orch_cgroup_open(d->cgroups, names[i].service, names[i].instance, &cg) < 0)
                        continue;
                log_info("removing orphaned cgroup %s of a previous agent run", orch_cgroup_path(cg));
                if (orch_cgroup_remove(cg, why, sizeof why) < 0)
                        log_error("%s", why);
                orch_cgroup_free(cg);
        }
        orch_cgroup_names_free(names, n_names);
}

static void exec_free(struct orch_driver_impl *base)
{
        if (base)
                free(container_of(base, struct exec_driver, base));
}

static const struct orch_driver_ops exec_ops = {
        .kind = ORCH_DRIVER_EXEC,
        .prepare = exec_prepare,
        .discard = exec_discard,
        .sweep = exec_sweep,
        .free = exec_free,
        .start = exec_start,
        .stop = exec_stop,
        .kill = exec_kill,
        .adopt = exec_adopt,
        .save = exec_save,
        .usage = exec_usage,
        .cgroup_path = exec_cgroup_path,
        .cgroup = exec_cgroup,
        .cleanup = exec_cleanup,
        .free_unit = exec_free_unit,
};

int orch_driver_exec_new(uv_loop_t *loop, struct orch_cgroup_root *cgroups, struct orch_driver_impl **ret)
{
        struct exec_driver *d = calloc(1, sizeof *d);

        if (!d)
                return -ENOMEM;
        d->base.ops = &exec_ops;
        d->loop = loop;
        d->cgroups = cgroups;
        *ret = &d->base;
        return 0;
}
