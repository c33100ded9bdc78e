/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "hashmap.h"
#include "health.h"
#include "json.h"
#include "log.h"
#include "logs.h"
#include "ports.h"
#include "spawn.h"
#include "supervisor.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* The PATH instances get when their manifest does not set one. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* What is left in a cgroup after the main process exited gets this long to die of SIGKILL. */
#define KILL_WAIT_USEC        (200 * 1000)
#define RLIMIT_NOFILE_DEFAULT 65536

struct inst {
        struct orch_hmap_node hnode;
        struct orch_supervisor *sv;
        char *id;
        char revision[ORCH_REVISION_LEN + 1];
        uint64_t generation;
        struct orch_service *spec;
        struct orch_log_ctx log_ctx;

        enum orch_instance_state state;
        enum orch_health_state health;
        char *reason;

        /* credentials and environment, resolved once at start */
        uid_t uid;
        gid_t gid;
        gid_t *groups;
        size_t n_groups;
        bool set_ids;
        char **envp;
        char **argv;
        char *workdir;
        bool own_workdir; /* the default per-instance directory: removed when forgotten */

        struct orch_sv_port *ports;
        size_t n_ports;
        struct orch_cgroup *cg;
        struct orch_log_file *log;
        struct orch_health_check *check;

        /* the process */
        pid_t pid;
        int pidfd;
        bool adopted; /* not our child: no exit status */
        uv_poll_t exit_poll;
        bool exit_poll_active;
        uv_poll_t oom_poll;
        bool oom_poll_active;
        uint64_t oom_base;
        uv_timer_t timer; /* backoff, stop timeout */
        bool timer_init;
        int open_handles;

        uint32_t restarts;
        uint32_t failures;     /* consecutive, for the backoff */
        uint64_t started_at;   /* realtime ms */
        uint64_t started_mono; /* usec */
        bool has_exit;
        int exit_code, exit_signal;
        bool exit_oom;

        /* stopping */
        bool stop_requested;     /* stop and forget */
        bool restart_after_stop; /* unhealthy: stop, then restart */
        bool freeing;
        orch_sv_done_fn done;
        void *done_userdata;
};

struct cred_cache {
        char *user;
        char *group;
        uid_t uid;
        gid_t gid;
        gid_t *groups;
        size_t n_groups;
        char *home;
};

struct orch_supervisor {
        uv_loop_t *loop;
        struct orch_supervisor_config cfg;
        char *data_dir;
        char *inst_dir;
        char *node_name;
        struct orch_hmap instances;
        size_t n;
        size_t alive; /* instance objects not yet freed (forgotten ones close their handles first) */
        bool freed;   /* orch_supervisor_free() was called: the last instance object frees sv */
        struct cred_cache *creds;
        size_t n_creds;
        bool shutting_down;
        void (*shutdown_done)(void *);
        void *shutdown_userdata;
};

static void inst_spawn(struct inst *in);
static void supervisor_free_now(struct orch_supervisor *sv);
static void inst_exited(struct inst *in, bool have_status, int code, int sig);
static void inst_persist(struct inst *in);
static void inst_forget(struct inst *in);
static void arm_unhealthy_stop(struct inst *in);

/* --- the state machine ----------------------------------------------------------------------- */

/* Allowed transitions: [from][to]. One table, so that no callback can invent a path. */
static const bool transitions[_ORCH_INSTANCE_STATE_MAX][_ORCH_INSTANCE_STATE_MAX] = {
        [ORCH_INSTANCE_PENDING] = {[ORCH_INSTANCE_STARTING] = true,
                                   [ORCH_INSTANCE_EXITED] = true,
                                   [ORCH_INSTANCE_FAILED] = true,
                                   [ORCH_INSTANCE_STOPPING] = true},
        [ORCH_INSTANCE_STARTING] = {[ORCH_INSTANCE_RUNNING] = true,
                                    [ORCH_INSTANCE_PENDING] = true,
                                    [ORCH_INSTANCE_STOPPING] = true,
                                    [ORCH_INSTANCE_EXITED] = true,
                                    [ORCH_INSTANCE_FAILED] = true},
        [ORCH_INSTANCE_RUNNING] = {[ORCH_INSTANCE_PENDING] = true,
                                   [ORCH_INSTANCE_STOPPING] = true,
                                   [ORCH_INSTANCE_EXITED] = true,
                                   [ORCH_INSTANCE_FAILED] = true},
        [ORCH_INSTANCE_STOPPING] = {[ORCH_INSTANCE_PENDING] = true,
                                    [ORCH_INSTANCE_EXITED] = true,
                                    [ORCH_INSTANCE_FAILED] = true},
        [ORCH_INSTANCE_EXITED] = {[ORCH_INSTANCE_PENDING] = true},
        [ORCH_INSTANCE_FAILED] = {[ORCH_INSTANCE_PENDING] = true},
};

static void fill_info(const struct inst *in, struct orch_sv_info *info)
{
        *info = (struct orch_sv_info){
                .id = in->id,
                .service = in->spec->name,
                .revision = in->revision,
                .generation = in->generation,
                .state = in->state,
                .health = in->health,
                .pid = in->pid,
                .ports = in->ports,
                .n_ports = in->n_ports,
                .restarts = in->restarts,
                .started_at = in->started_at,
                .has_exit = in->has_exit,
                .exit_code = in->exit_code,
                .exit_signal = in->exit_signal,
                .exit_oom = in->exit_oom,
                .reason = in->reason,
                .cgroup = in->cg ? orch_cgroup_path(in->cg) : NULL,
        };
}

static void emit(struct inst *in, bool forgotten)
{
        struct orch_supervisor *sv = in->sv;
        struct orch_sv_info info;

        if (!sv->cfg.on_event)
                return;
        fill_info(in, &info);
        info.forgotten = forgotten;
        sv->cfg.on_event(sv->cfg.userdata, &info);
}

static void set_reason(struct inst *in, const char *reason)
{
        if (streq_ptr(in->reason, reason))
                return;
        free(in->reason);
        in->reason = reason ? strdup(reason) : NULL;
}

static void set_state(struct inst *in, enum orch_instance_state to, const char *reason)
{
        if (in->state != to && !transitions[in->state][to]) {
                /* a bug, not an input: say so loudly and keep the machine consistent */
                orch_log(ORCH_LOG_ERROR, &in->log_ctx, "invalid transition %s -> %s",
                         orch_instance_state_to_string(in->state), orch_instance_state_to_string(to));
        }
        in->state = to;
        set_reason(in, reason);
        emit(in, false);
}

/* --- resolution of users, environment, ports ------------------------------------------------ */

static int resolve_creds(struct orch_supervisor *sv, const char *user, const char *group,
                         const struct cred_cache **ret, char *reason, size_t reason_size)
{
        struct cred_cache *c, *n;
        struct passwd *pw;
        int ngroups = 64;

        for (size_t i = 0; i < sv->n_creds; i++)
                if (streq(sv->creds[i].user, user) && streq_ptr(sv->creds[i].group, group)) {
                        *ret = &sv->creds[i];
                        return 0;
                }
        errno = 0;
        pw = getpwnam(user);
        if (!pw) {
                orch_snprintf(reason, reason_size, "user '%s' does not exist on this node", user);
                return errno ? -errno : -ESRCH;
        }
        n = realloc(sv->creds, (sv->n_creds + 1) * sizeof *n);
        if (!n)
                return -ENOMEM;
        sv->creds = n;
        c = &sv->creds[sv->n_creds];
        *c = (struct cred_cache){.uid = pw->pw_uid, .gid = pw->pw_gid};
        c->user = strdup(user);
        c->group = group ? strdup(group) : NULL;
        c->home = strdup(pw->pw_dir ? pw->pw_dir : "/");
        if (group) {
                struct group *gr = getgrnam(group);
                if (!gr) {
                        orch_snprintf(reason, reason_size, "group '%s' does not exist on this node", group);
                        free(c->user);
                        free(c->group);
                        free(c->home);
                        return -ESRCH;
                }
                c->gid = gr->gr_gid;
        }
        for (;;) {
                gid_t *g = calloc((size_t)ngroups, sizeof *g);
                int k = ngroups;
                if (!g)
                        return -ENOMEM;
                if (getgrouplist(user, c->gid, g, &k) >= 0) {
                        c->groups = g;
                        c->n_groups = (size_t)k;
                        break;
                }
                free(g);
                if (k <= ngroups || k > 65536)
                        break;
                ngroups = k;
        }
        sv->n_creds++;
        *ret = c;
        return 0;
}

char *orch_sv_expand(const char *in, const char *service, const char *instance, const char *node,
                     const struct orch_sv_port *ports, size_t n_ports)
{
        struct orch_buf b = {0};

        for (const char *p = in; *p;) {
                const char *end;
                char name[96], upper[96];
                const char *val = NULL;
                char num[8];
                size_t len;

                if (p[0] != '$' || p[1] != '{' || !(end = strchr(p + 2, '}')) ||
                    (len = (size_t)(end - p - 2)) == 0 || len >= sizeof name) {
                        orch_buf_putc(&b, *p++);
                        continue;
                }
                memcpy(name, p + 2, len);
                name[len] = '\0';
                if (streq(name, "ORCH_SERVICE"))
                        val = service;
                else if (streq(name, "ORCH_INSTANCE"))
                        val = instance;
                else if (streq(name, "ORCH_NODE"))
                        val = node;
                else if (streq(name, "PORT") && n_ports > 0) {
                        orch_snprintf(num, sizeof num, "%u", ports[0].port);
                        val = num;
                } else if (startswith(name, "PORT_")) {
                        for (size_t i = 0; i < n_ports && !val; i++) {
                                size_t k = 0;
                                for (const char *q = ports[i].name; *q && k + 1 < sizeof upper; q++)
                                        upper[k++] = *q == '-'                  ? '_'
                                                     : (*q >= 'a' && *q <= 'z') ? (char)(*q - 32)
                                                                                : *q;
                                upper[k] = '\0';
                                if (streq(name + 5, upper)) {
                                        orch_snprintf(num, sizeof num, "%u", ports[i].port);
                                        val = num;
                                }
                        }
                }
                if (!val) {
                        /* not ours: a shell or the program expands it */
                        orch_buf_put(&b, p, len + 3);
                } else
                        orch_buf_puts(&b, val);
                p = end + 1;
        }
        return orch_buf_steal(&b);
}

static int env_push(char ***envp, const char *name, const char *value)
{
        _cleanup_(freep) char *s = orch_strdup_printf("%s=%s", name, value);
        if (!s)
                return -ENOMEM;
        /* a name set twice: the manifest's value wins over ours, the last one wins within it */
        for (char **p = *envp; p && *p; p++)
                if (startswith(*p, name) && (*p)[strlen(name)] == '=') {
                        free(*p);
                        *p = TAKE_PTR(s);
                        return 0;
                }
        return orch_strv_push(envp, s);
}

/* The environment: orch's variables, a default PATH, HOME/USER/LOGNAME of the user, then the
 * manifest's env — never anything of the agent's own. */
static int build_env(struct inst *in, const struct cred_cache *cred)
{
        struct orch_supervisor *sv = in->sv;
        char num[8];
        int r = 0;

        r |= env_push(&in->envp, "PATH", DEFAULT_PATH);
        r |= env_push(&in->envp, "HOME", cred->home);
        r |= env_push(&in->envp, "USER", cred->user);
        r |= env_push(&in->envp, "LOGNAME", cred->user);
        r |= env_push(&in->envp, "ORCH_SERVICE", in->spec->name);
        r |= env_push(&in->envp, "ORCH_INSTANCE", in->id);
        r |= env_push(&in->envp, "ORCH_NODE", sv->node_name);
        for (size_t i = 0; i < in->n_ports; i++) {
                char name[96];
                size_t k = 0;
                orch_snprintf(num, sizeof num, "%u", in->ports[i].port);
                if (i == 0)
                        r |= env_push(&in->envp, "PORT", num);
                k = (size_t)orch_snprintf(name, sizeof name, "PORT_");
                for (const char *q = in->ports[i].name; *q && k + 1 < sizeof name; q++)
                        name[k++] = *q == '-' ? '_' : (*q >= 'a' && *q <= 'z') ? (char)(*q - 32) : *q;
                name[k] = '\0';
                r |= env_push(&in->envp, name, num);
        }
        for (size_t i = 0; i < in->spec->n_env; i++) {
                _cleanup_(freep) char *v = orch_sv_expand(in->spec->env[i].value, in->spec->name, in->id,
                                                          sv->node_name, in->ports, in->n_ports);
                if (!v)
                        return -ENOMEM;
                r |= env_push(&in->envp, in->spec->env[i].name, v);
        }
        return r < 0 ? -ENOMEM : 0;
}

static int build_argv(struct inst *in)
{
        struct orch_supervisor *sv = in->sv;

        for (char **a = in->spec->command; a && *a; a++) {
                _cleanup_(freep) char *v =
                        orch_sv_expand(*a, in->spec->name, in->id, sv->node_name, in->ports, in->n_ports);
                if (!v || orch_strv_push(&in->argv, v) < 0)
                        return -ENOMEM;
        }
        return in->argv ? 0 : -EINVAL;
}

/* --- lifetime of an instance object ---------------------------------------------------------- */

static void inst_free_now(struct inst *in)
{
        struct orch_supervisor *sv = in->sv;

        orch_cgroup_free(in->cg);
        orch_service_free(in->spec);
        orch_strv_free(in->envp);
        orch_strv_free(in->argv);
        for (size_t i = 0; i < in->n_ports; i++)
                free((char *)in->ports[i].name);
        free(in->ports);
        free(in->groups);
        free(in->workdir);
        free(in->reason);
        free(in->id);
        free(in);
        sv->alive--;
        if (sv->shutting_down && sv->alive == 0 && sv->shutdown_done) {
                void (*done)(void *) = sv->shutdown_done;
                sv->shutdown_done = NULL;
                done(sv->shutdown_userdata);
        }
        if (sv->freed && sv->alive == 0)
                supervisor_free_now(sv);
}

static void handle_closed(uv_handle_t *h)
{
        struct inst *in = h->data;

        if (--in->open_handles == 0 && in->freeing)
                inst_free_now(in);
}

static void close_handle(struct inst *in, uv_handle_t *h)
{
        h->data = in;
        uv_close(h, handle_closed);
}

/* Releases the instance's process watchers (not its cgroup, ports or files). */
static void stop_watching(struct inst *in)
{
        if (in->exit_poll_active) {
                close_handle(in, (uv_handle_t *)&in->exit_poll);
                in->exit_poll_active = false;
        }
        if (in->oom_poll_active) {
                close_handle(in, (uv_handle_t *)&in->oom_poll);
                in->oom_poll_active = false;
        }
        if (in->pidfd >= 0) {
                close(in->pidfd);
                in->pidfd = -1;
        }
        if (in->check) {
                orch_health_stop(in->check);
                in->check = NULL;
        }
}

/* Drops the object once its handles are closed; the caller has already removed it from the map. */
static void inst_release(struct inst *in)
{
        in->freeing = true;
        stop_watching(in);
        if (in->timer_init) {
                uv_timer_stop(&in->timer);
                close_handle(in, (uv_handle_t *)&in->timer);
                in->timer_init = false;
        }
        if (in->log) {
                orch_logs_close(in->log);
                in->log = NULL;
        }
        if (in->open_handles == 0)
                inst_free_now(in);
}

/* --- state files (re-adoption after an agent restart) --------------------------------------- */

static char *state_path(const struct inst *in)
{
        return orch_strdup_printf("%s/%s.json", in->sv->inst_dir, in->id);
}

/* Start time of a process in clock ticks since boot (/proc/PID/stat field 22): with the pid it
 * names the process uniquely, so a recycled pid is never mistaken for the instance. */
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
        for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++)
                if (field == 22)
                        return orch_parse_u64(tok, ret);
        return -EINVAL;
}

/* Written without fsync: it must survive the agent's death, not the machine's (no instance
 * survives a reboot). */
static void inst_persist(struct inst *in)
{
        _cleanup_(freep) char *path = state_path(in), *tmp = NULL, *s = NULL;
        _cleanup_json_ json_t *j = NULL, *spec = NULL, *ports = json_object();
        uint64_t start_time = 0;
        int fd;

        if (!path || !ports || orch_service_to_json(in->spec, &spec) < 0)
                return;
        for (size_t i = 0; i < in->n_ports; i++)
                json_object_set_new(ports, in->ports[i].name, json_integer(in->ports[i].port));
        if (in->pid > 0)
                proc_start_time(in->pid, &start_time);
        j = json_pack("{s:s, s:s, s:I, s:O, s:i, s:I, s:O, s:i, s:i, s:I, s:s, s:b, s:I}", "id", in->id,
                      "revision", in->revision, "generation", (json_int_t)in->generation, "spec", spec,
                      "pid", (json_int_t)in->pid, "start_time", (json_int_t)start_time, "ports", ports,
                      "restarts", (json_int_t)in->restarts, "failures", (json_int_t)in->failures,
                      "started_at", (json_int_t)in->started_at, "health",
                      orch_health_state_to_string(in->health), "own_workdir", in->own_workdir, "oom_base",
                      (json_int_t)in->oom_base);
        if (!j || !(s = orch_json_dumps_compact(j)) || !(tmp = orch_strdup_printf("%s.tmp", path)))
                return;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        if (write(fd, s, strlen(s)) != (ssize_t)strlen(s) || close(fd) < 0 || rename(tmp, path) < 0) {
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "could not write its state file %s", path);
                unlink(tmp);
        }
}

static void remove_tree(const char *path)
{
        DIR *d = opendir(path);
        struct dirent *de;

        if (!d) {
                unlink(path);
                return;
        }
        while ((de = readdir(d))) {
                _cleanup_(freep) char *p = NULL;
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                p = orch_strdup_printf("%s/%s", path, de->d_name);
                if (!p)
                        continue;
                if (de->d_type == DT_DIR)
                        remove_tree(p);
                else
                        unlink(p);
        }
        closedir(d);
        rmdir(path);
}

/* --- spawning (driver exec) ------------------------------------------------------------------ */

static void exit_poll_cb(uv_poll_t *h, int status, int events)
{
        struct inst *in = container_of(h, struct inst, exit_poll);
        siginfo_t si = {0};

        if (in->adopted) {
                /* not our child: the status went to its old parent (or init) */
                inst_exited(in, false, -1, 0);
                return;
        }
        if (waitid((idtype_t)P_PIDFD, (id_t)in->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0) {
                if (errno == ECHILD)
                        inst_exited(in, false, -1, 0);
                return;
        }
        if (si.si_code == CLD_EXITED)
                inst_exited(in, true, si.si_status, 0);
        else
                inst_exited(in, true, -1, si.si_status);
}

static void oom_poll_cb(uv_poll_t *h, int status, int events)
{
        struct inst *in = container_of(h, struct inst, oom_poll);
        uint64_t count = 0;

        if (orch_cgroup_oom_drain(in->cg, &count) >= 0 && count > in->oom_base)
                orch_log(ORCH_LOG_WARN, &in->log_ctx,
                         "the kernel's OOM killer killed a process of the instance "
                         "(memory limit reached)");
}

static void health_cb(struct orch_health_check *c, enum orch_health_state old_state,
                      enum orch_health_state new_state, const char *reason, void *userdata)
{
        struct inst *in = userdata;

        in->health = new_state;
        if (new_state == ORCH_HEALTH_PASSING && in->state == ORCH_INSTANCE_STARTING) {
                /* a reset of the backoff waits for reset_after of running, not for the first check */
                set_state(in, ORCH_INSTANCE_RUNNING, NULL);
        } else if (new_state == ORCH_HEALTH_FAILING &&
                   in->spec->health.on_unhealthy == ORCH_ON_UNHEALTHY_RESTART &&
                   (in->state == ORCH_INSTANCE_RUNNING || in->state == ORCH_INSTANCE_STARTING)) {
                char why[ORCH_SV_REASON_MAX];
                orch_snprintf(why, sizeof why, "unhealthy: %s", reason);
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "restarting: %s", why);
                /* the stop path restarts it once everything is gone */
                in->restart_after_stop = true;
                in->check = NULL;
                orch_health_stop(c);
                set_state(in, ORCH_INSTANCE_STOPPING, why);
                if (in->pid > 0 && kill(-in->pid, in->spec->stop.signal) < 0)
                        kill(in->pid, in->spec->stop.signal);
                arm_unhealthy_stop(in);
                return;
        } else
                emit(in, false);
        inst_persist(in);
}

static void stop_timeout_cb(uv_timer_t *t);

/* Unhealthy with on_unhealthy restart: the stop signal went out; SIGKILL follows at the timeout. */
static void arm_unhealthy_stop(struct inst *in)
{
        if (in->timer_init)
                uv_timer_start(&in->timer, stop_timeout_cb, in->spec->stop.timeout_ms, 0);
}

static int start_health(struct inst *in, uint64_t started_at)
{
        struct orch_health_params p;
        int port_idx;

        if (in->spec->health.type == ORCH_HEALTH_NONE)
                return 0;
        p = (struct orch_health_params){
                .spec = &in->spec->health,
                .started_at_ms = started_at,
                .envp = in->envp,
                .workdir = in->workdir,
                .uid = in->uid,
                .gid = in->gid,
                .groups = in->groups,
                .n_groups = in->n_groups,
                .set_ids = in->set_ids,
                .no_new_privs = in->spec->sandbox.no_new_privileges,
                .cgroup = in->cg,
                .output_fd = in->log ? orch_logs_file_fd(in->log) : -1,
                .instance = in->id,
                .cb = health_cb,
                .userdata = in,
        };
        if (in->spec->health.type != ORCH_HEALTH_EXEC) {
                port_idx = orch_service_port_index(in->spec, in->spec->health.port);
                if (port_idx < 0 || (size_t)port_idx >= in->n_ports)
                        return -EINVAL;
                p.port = in->ports[port_idx].port;
        }
        return orch_health_start(in->sv->loop, &p, &in->check);
}

static int watch_process(struct inst *in)
{
        int r, oom_fd, oom_events;

        r = uv_poll_init(in->sv->loop, &in->exit_poll, in->pidfd);
        if (r < 0)
                return r;
        in->open_handles++;
        in->exit_poll_active = true;
        r = uv_poll_start(&in->exit_poll, UV_READABLE, exit_poll_cb);
        if (r < 0)
                return r;
        if (in->cg && in->spec->resources.memory > 0 &&
            orch_cgroup_oom_fd(in->cg, &oom_fd, &oom_events) >= 0 &&
            uv_poll_init(in->sv->loop, &in->oom_poll, oom_fd) >= 0) {
                in->open_handles++;
                in->oom_poll_active = true;
                uv_poll_start(&in->oom_poll, oom_events, oom_poll_cb);
        }
        return 0;
}

static uint64_t backoff_ms(struct inst *in)
{
        const struct orch_restart *rs = &in->spec->restart;
        uint64_t d = rs->backoff_ms;

        for (uint32_t i = 0; i < in->failures && d < rs->max_backoff_ms; i++)
                d *= 2;
        return MIN(d, rs->max_backoff_ms);
}

static void backoff_cb(uv_timer_t *t)
{
        struct inst *in = container_of(t, struct inst, timer);

        if (in->state == ORCH_INSTANCE_PENDING && !in->stop_requested)
                inst_spawn(in);
}

/* After a failed start or a crash: wait the backoff, then spawn again (or at once with 0). */
static void schedule_restart(struct inst *in, const char *why)
{
        uint64_t delay = backoff_ms(in);
        char reason[ORCH_SV_REASON_MAX], d[32];

        in->failures++;
        orch_format_duration(delay, d, sizeof d);
        orch_snprintf(reason, sizeof reason, "%s; restarting in %s", why, d);
        set_state(in, ORCH_INSTANCE_PENDING, reason);
        if (delay == 0) {
                inst_spawn(in);
                return;
        }
        uv_timer_start(&in->timer, backoff_cb, delay, 0);
}

static bool should_restart(const struct inst *in, bool success)
{
        switch (in->spec->restart.policy) {
        case ORCH_RESTART_ALWAYS:
                return true;
        case ORCH_RESTART_ON_FAILURE:
                return !success;
        default:
                return false;
        }
}

/* Instances get RLIMIT_NOFILE_DEFAULT descriptors, or the agent's hard limit when that is lower
 * (raising a hard limit needs CAP_SYS_RESOURCE, which a confined agent may not have). */
static int nofile_limit(void)
{
        static int limit;
        struct rlimit rl;

        if (limit == 0) {
                limit = RLIMIT_NOFILE_DEFAULT;
                if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
                    rl.rlim_max < (rlim_t)limit)
                        limit = (int)rl.rlim_max;
        }
        return limit;
}

static void inst_spawn(struct inst *in)
{
        struct orch_spawn_params p = {
                .argv = in->argv,
                .envp = in->envp,
                .workdir = in->workdir,
                .uid = in->uid,
                .gid = in->gid,
                .groups = in->groups,
                .n_groups = in->n_groups,
                .set_ids = in->set_ids,
                .no_new_privs = in->spec->sandbox.no_new_privileges,
                .stdin_fd = -1,
                .stdout_fd = in->log ? orch_logs_file_fd(in->log) : -1,
                .stderr_fd = in->log ? orch_logs_file_fd(in->log) : -1,
                .cgroup = in->cg,
                .nofile_limit = nofile_limit(),
        };
        struct orch_spawn_result res;
        char reason[ORCH_SV_REASON_MAX];
        int r;

        if (in->started_at)
                in->restarts++;
        set_state(in, ORCH_INSTANCE_STARTING, NULL);
        if (in->log)
                orch_logs_check(in->log);
        if (in->cg && in->spec->resources.memory > 0)
                orch_cgroup_oom_count(in->cg, &in->oom_base);
        r = orch_spawn(&p, &res, reason, sizeof reason);
        in->started_at = orch_realtime_msec();
        in->started_mono = orch_now_usec();
        in->has_exit = false;
        if (r < 0) {
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "cannot start: %s", reason);
                if (should_restart(in, false) && !in->stop_requested)
                        schedule_restart(in, reason);
                else
                        set_state(in, ORCH_INSTANCE_FAILED, reason);
                inst_persist(in);
                return;
        }
        in->pid = res.pid;
        in->pidfd = res.pidfd;
        in->adopted = false;
        r = watch_process(in);
        if (r < 0) {
                orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cannot watch pid %d: %s", (int)in->pid,
                         strerror(-r));
                kill(in->pid, SIGKILL);
        }
        if (in->spec->health.type == ORCH_HEALTH_NONE) {
                in->health = ORCH_HEALTH_UNKNOWN;
                set_state(in, ORCH_INSTANCE_RUNNING, NULL);
        } else {
                in->health = ORCH_HEALTH_UNKNOWN;
                r = start_health(in, in->started_at);
                if (r < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cannot start its health check: %s",
                                 strerror(-r));
                emit(in, false);
        }
        inst_persist(in);
}

/* Everything the instance holds on the node goes: cgroup, ports, log file, work dir, state file. */
static void release_resources(struct inst *in, bool remove_files)
{
        struct orch_supervisor *sv = in->sv;
        char reason[256];

        if (in->cg) {
                if (orch_cgroup_remove(in->cg, reason, sizeof reason) < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cgroup not removed: %s", reason);
                in->cg = orch_cgroup_free(in->cg);
        }
        for (size_t i = 0; i < in->n_ports; i++)
                if (sv->cfg.ports)
                        orch_ports_release(sv->cfg.ports, in->ports[i].port);
        if (in->log) {
                orch_logs_close(in->log);
                in->log = NULL;
        }
        if (remove_files) {
                _cleanup_(freep) char *path = state_path(in);
                if (sv->cfg.logs)
                        orch_logs_remove(sv->cfg.logs, in->id);
                if (in->own_workdir && in->workdir)
                        remove_tree(in->workdir);
                if (path)
                        unlink(path);
        }
}

/* The stop is complete: the instance leaves the supervisor. */
static void inst_forget(struct inst *in)
{
        struct orch_supervisor *sv = in->sv;
        orch_sv_done_fn done = in->done;
        void *ud = in->done_userdata;
        char *id = strdup(in->id);

        orch_hmap_remove(&sv->instances, &in->hnode);
        sv->n--;
        release_resources(in, true);
        emit(in, true);
        inst_release(in);
        if (done)
                done(ud, id ? id : "");
        free(id);
}

static void stop_timeout_cb(uv_timer_t *t)
{
        struct inst *in = container_of(t, struct inst, timer);
        char reason[256];

        orch_log(ORCH_LOG_WARN, &in->log_ctx,
                 "did not stop within its stop timeout; killing everything in its cgroup");
        if (in->cg) {
                if (orch_cgroup_kill(in->cg, KILL_WAIT_USEC, reason, sizeof reason) < 0)
                        orch_log(ORCH_LOG_WARN, &in->log_ctx, "%s", reason);
        } else if (in->pid > 0)
                kill(-in->pid, SIGKILL);
}

/* Kills what the main process left behind (a double-forked daemon, workers). */
static void kill_leftovers(struct inst *in)
{
        char reason[256];
        int r;

        if (!in->cg)
                return;
        r = orch_cgroup_is_empty(in->cg);
        if (r == 1)
                return;
        r = orch_cgroup_kill(in->cg, KILL_WAIT_USEC, reason, sizeof reason);
        if (r < 0)
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "leftover processes: %s", reason);
}

static void inst_exited(struct inst *in, bool have_status, int code, int sig)
{
        uint64_t oom = 0, ran_usec = orch_now_usec() - in->started_mono;
        char why[ORCH_SV_REASON_MAX];
        bool success;

        stop_watching(in);
        in->pid = 0;
        kill_leftovers(in);
        if (in->cg && in->spec->resources.memory > 0 && orch_cgroup_oom_count(in->cg, &oom) >= 0 &&
            oom > in->oom_base)
                in->exit_oom = true;
        else
                in->exit_oom = false;
        in->has_exit = true;
        in->exit_code = have_status ? code : -1;
        in->exit_signal = have_status ? sig : 0;
        success = have_status && code == 0;

        if (in->exit_oom) {
                char lim[32];
                orch_format_size(in->spec->resources.memory, lim, sizeof lim);
                orch_snprintf(why, sizeof why, "OOM-killed (memory limit %s)", lim);
        } else if (!have_status && in->adopted)
                orch_snprintf(why, sizeof why, "exited (status unknown: re-adopted after an agent restart)");
        else if (!have_status)
                orch_snprintf(why, sizeof why, "exited while the agent was away");
        else if (sig)
                orch_snprintf(why, sizeof why, "killed by signal %s", strna(orch_signal_to_string(sig)));
        else
                orch_snprintf(why, sizeof why, "exited with code %d", code);

        if (in->timer_init)
                uv_timer_stop(&in->timer);
        if (in->stop_requested) {
                set_state(in, ORCH_INSTANCE_EXITED, "stopped");
                inst_forget(in);
                return;
        }
        if (in->restart_after_stop) {
                in->restart_after_stop = false;
                schedule_restart(in, in->reason ? in->reason : "unhealthy");
                inst_persist(in);
                return;
        }
        orch_log(success ? ORCH_LOG_INFO : ORCH_LOG_WARN, &in->log_ctx, "%s", why);
        /* a run longer than reset_after starts the backoff over */
        if (ran_usec >= in->spec->restart.reset_after_ms * USEC_PER_MSEC)
                in->failures = 0;
        if (should_restart(in, success)) {
                schedule_restart(in, why);
        } else {
                if (in->cg)
                        release_resources(in, false);
                set_state(in, success ? ORCH_INSTANCE_EXITED : ORCH_INSTANCE_FAILED, why);
        }
        inst_persist(in);
}

/* --- public: start, stop ------------------------------------------------------------------- */

static struct inst *find(const struct orch_supervisor *sv, const char *id)
{
        return orch_hmap_entry(orch_hmap_get(&sv->instances, id), struct inst, hnode);
}

static int make_workdir(struct inst *in)
{
        if (in->spec->workdir) {
                in->workdir = strdup(in->spec->workdir);
                return in->workdir ? 0 : -ENOMEM;
        }
        in->workdir = orch_strdup_printf("%s/%s", in->sv->inst_dir, in->id);
        if (!in->workdir)
                return -ENOMEM;
        if (mkdir(in->workdir, 0750) < 0 && errno != EEXIST)
                return -errno;
        if (in->set_ids && chown(in->workdir, in->uid, in->gid) < 0)
                return -errno;
        in->own_workdir = true;
        return 0;
}

static int alloc_ports(struct inst *in, const uint16_t *fixed, char *reason, size_t reason_size)
{
        struct orch_supervisor *sv = in->sv;

        in->ports = calloc(in->spec->n_ports + 1, sizeof *in->ports);
        if (!in->ports)
                return -ENOMEM;
        for (size_t i = 0; i < in->spec->n_ports; i++) {
                uint16_t port = fixed ? fixed[i] : 0;
                int r;

                if (!sv->cfg.ports)
                        return -EADDRNOTAVAIL;
                if (fixed)
                        r = orch_ports_reserve(sv->cfg.ports, port);
                else
                        r = orch_ports_allocate(sv->cfg.ports, &port, reason, reason_size);
                if (r < 0 && !(fixed && r == -ERANGE))
                        return r;
                in->ports[i] = (struct orch_sv_port){strdup(in->spec->ports[i].name), port};
                in->n_ports++;
        }
        return 0;
}

/* Everything but the process: credentials, ports, environment, cgroup, log, work dir. */
static int inst_prepare(struct inst *in, const uint16_t *fixed_ports, bool existing_cgroup, char *reason,
                        size_t reason_size)
{
        struct orch_supervisor *sv = in->sv;
        const struct cred_cache *cred;
        int r;

        r = resolve_creds(sv, in->spec->user, in->spec->group, &cred, reason, reason_size);
        if (r < 0)
                return r;
        if (cred->uid == 0 && !sv->cfg.allow_root) {
                orch_snprintf(reason, reason_size,
                              "refusing to run as root (user '%s'): start the agent with --allow-root to "
                              "permit it",
                              in->spec->user);
                return -EPERM;
        }
        in->uid = cred->uid;
        in->gid = cred->gid;
        in->set_ids = geteuid() == 0 && (cred->uid != geteuid() || cred->gid != getegid());
        if (cred->n_groups) {
                in->groups = calloc(cred->n_groups, sizeof *in->groups);
                if (!in->groups)
                        return -ENOMEM;
                memcpy(in->groups, cred->groups, cred->n_groups * sizeof *in->groups);
                in->n_groups = cred->n_groups;
        }
        if (geteuid() != 0)
                in->set_ids = false;
        r = alloc_ports(in, fixed_ports, reason, reason_size);
        if (r < 0) {
                if (!*reason)
                        orch_snprintf(reason, reason_size, "cannot allocate ports: %s", strerror(-r));
                return r;
        }
        r = build_env(in, cred);
        if (r >= 0)
                r = build_argv(in);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot build the environment: %s", strerror(-r));
                return r;
        }
        r = make_workdir(in);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot create the work directory %s: %s",
                              strna(in->workdir), strerror(-r));
                return r;
        }
        if (sv->cfg.logs) {
                r = orch_logs_open(sv->cfg.logs, in->id, in->spec->logs.max_size, in->spec->logs.max_files,
                                   &in->log);
                if (r < 0) {
                        orch_snprintf(reason, reason_size, "cannot open the log file: %s", strerror(-r));
                        return r;
                }
        }
        if (sv->cfg.cgroups) {
                struct orch_cgroup_limits lim = {
                        .cpu_millis = in->spec->resources.cpu_millis,
                        .memory_bytes = in->spec->resources.memory,
                        .pids_max = in->spec->resources.pids,
                };
                if (existing_cgroup)
                        r = orch_cgroup_open(sv->cfg.cgroups, in->spec->name, in->id, &in->cg);
                else {
                        r = orch_cgroup_create(sv->cfg.cgroups, in->spec->name, in->id, &lim, &in->cg,
                                               reason, reason_size);
                        if (r == -EEXIST) {
                                /* a leftover of a copy that was replaced: kill it and start clean */
                                struct orch_cgroup *old = NULL;
                                if (orch_cgroup_open(sv->cfg.cgroups, in->spec->name, in->id, &old) >= 0) {
                                        orch_cgroup_remove(old, reason, reason_size);
                                        orch_cgroup_free(old);
                                }
                                r = orch_cgroup_create(sv->cfg.cgroups, in->spec->name, in->id, &lim,
                                                       &in->cg, reason, reason_size);
                        }
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

static struct inst *inst_new(struct orch_supervisor *sv, const char *id, uint64_t generation,
                             const struct orch_service *spec, const char *revision)
{
        struct inst *in = calloc(1, sizeof *in);

        if (!in)
                return NULL;
        in->sv = sv;
        in->pidfd = -1;
        in->exit_code = -1;
        in->generation = generation;
        in->id = strdup(id);
        orch_strlcpy(in->revision, revision ? revision : "", sizeof in->revision);
        if (!in->id || orch_service_dup(spec, &in->spec) < 0) {
                free(in->id);
                free(in);
                return NULL;
        }
        in->log_ctx = (struct orch_log_ctx){.service = in->spec->name, .instance = in->id};
        sv->alive++;
        in->state = ORCH_INSTANCE_PENDING;
        in->health = ORCH_HEALTH_UNKNOWN;
        if (uv_timer_init(sv->loop, &in->timer) == 0) {
                in->timer_init = true;
                in->open_handles++;
        }
        return in;
}

static enum orch_driver effective_driver(const struct orch_supervisor *sv, const struct orch_service *spec)
{
        return spec->driver == ORCH_DRIVER_DEFAULT ? sv->cfg.default_driver : spec->driver;
}

struct superseding {
        struct orch_supervisor *sv;
        uint64_t generation;
        struct orch_service *spec;
        char revision[ORCH_REVISION_LEN + 1];
};

static void supersede_done(void *userdata, const char *id)
{
        struct superseding *p = userdata;
        char reason[ORCH_SV_REASON_MAX];

        if (!p->sv->shutting_down &&
            orch_supervisor_start(p->sv, id, p->generation, p->spec, p->revision, reason, sizeof reason) < 0)
                log_error("instance %s: cannot start generation %" PRIu64 ": %s", id, p->generation, reason);
        orch_service_free(p->spec);
        free(p);
}

static int supersede(struct orch_supervisor *sv, const char *id, uint64_t generation,
                     const struct orch_service *spec, const char *revision)
{
        struct superseding *p = calloc(1, sizeof *p);

        if (!p)
                return -ENOMEM;
        if (orch_service_dup(spec, &p->spec) < 0) {
                free(p);
                return -ENOMEM;
        }
        p->sv = sv;
        p->generation = generation;
        orch_strlcpy(p->revision, revision ? revision : "", sizeof p->revision);
        return orch_supervisor_stop(sv, id, "superseded by a newer generation", supersede_done, p);
}

int orch_supervisor_start(struct orch_supervisor *sv, const char *id, uint64_t generation,
                          const struct orch_service *spec, const char *revision, char *reason,
                          size_t reason_size)
{
        struct inst *in = find(sv, id), *nin;
        int r;

        *reason = '\0';
        if (sv->shutting_down) {
                orch_snprintf(reason, reason_size, "the agent is shutting down");
                return -ESHUTDOWN;
        }
        if (in) {
                if (in->generation == generation)
                        return 0;
                if (in->generation > generation) {
                        orch_snprintf(reason, reason_size,
                                      "instance %s is held at generation %" PRIu64 ", newer than %" PRIu64,
                                      id, in->generation, generation);
                        return -ESTALE;
                }
                /* a newer placement of the same id replaces the copy we hold: start it once the
                 * old copy is gone */
                return supersede(sv, id, generation, spec, revision);
        }
        if (effective_driver(sv, spec) != ORCH_DRIVER_EXEC) {
                orch_snprintf(reason, reason_size, "driver '%s' is not available on this agent",
                              orch_driver_to_string(effective_driver(sv, spec)));
                return -EOPNOTSUPP;
        }
        nin = inst_new(sv, id, generation, spec, revision);
        if (!nin)
                return -ENOMEM;
        r = inst_prepare(nin, NULL, false, reason, reason_size);
        if (r < 0) {
                if (!*reason)
                        orch_snprintf(reason, reason_size, "%s", strerror(-r));
                release_resources(nin, true);
                inst_release(nin);
                return r;
        }
        r = orch_hmap_insert(&sv->instances, &nin->hnode, nin->id);
        if (r < 0) {
                release_resources(nin, true);
                inst_release(nin);
                return r;
        }
        sv->n++;
        emit(nin, false); /* pending */
        inst_spawn(nin);
        return 0;
}

int orch_supervisor_stop(struct orch_supervisor *sv, const char *id, const char *reason,
                         orch_sv_done_fn done, void *userdata)
{
        struct inst *in = find(sv, id);

        if (!in)
                return -ENOENT;
        in->done = done;
        in->done_userdata = userdata;
        if (in->stop_requested)
                return 0; /* already on its way; the newest callback is called */
        in->stop_requested = true;
        in->restart_after_stop = false;
        if (in->pid <= 0) {
                /* waiting for a restart, or ended: nothing to signal */
                if (in->timer_init)
                        uv_timer_stop(&in->timer);
                if (in->state != ORCH_INSTANCE_EXITED && in->state != ORCH_INSTANCE_FAILED)
                        set_state(in, ORCH_INSTANCE_EXITED, reason ? reason : "stopped");
                inst_forget(in);
                return 0;
        }
        if (in->check) {
                orch_health_stop(in->check);
                in->check = NULL;
        }
        set_state(in, ORCH_INSTANCE_STOPPING, reason);
        /* the whole process group of the main process: shells and their children hear it too */
        if (kill(-in->pid, in->spec->stop.signal) < 0)
                kill(in->pid, in->spec->stop.signal);
        if (in->timer_init)
                uv_timer_start(&in->timer, stop_timeout_cb, in->spec->stop.timeout_ms, 0);
        return 0;
}

/* --- queries ------------------------------------------------------------------------------- */

uint64_t orch_supervisor_generation(const struct orch_supervisor *sv, const char *id)
{
        const struct inst *in = find(sv, id);
        return in ? in->generation : 0;
}

int orch_supervisor_info(const struct orch_supervisor *sv, const char *id, struct orch_sv_info *ret)
{
        const struct inst *in = find(sv, id);

        if (!in)
                return -ENOENT;
        fill_info(in, ret);
        return 0;
}

void orch_supervisor_foreach(const struct orch_supervisor *sv, orch_sv_foreach_fn fn, void *userdata)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&sv->instances, &it); n; n = orch_hmap_next(&sv->instances, &it)) {
                struct orch_sv_info info;
                fill_info(container_of(n, struct inst, hnode), &info);
                fn(userdata, &info);
        }
}

size_t orch_supervisor_count(const struct orch_supervisor *sv)
{
        return sv->n;
}

void orch_supervisor_counts(const struct orch_supervisor *sv, size_t ret[_ORCH_INSTANCE_STATE_MAX])
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        memset(ret, 0, sizeof(size_t) * _ORCH_INSTANCE_STATE_MAX);
        for (n = orch_hmap_first(&sv->instances, &it); n; n = orch_hmap_next(&sv->instances, &it))
                ret[container_of(n, struct inst, hnode)->state]++;
}

int orch_supervisor_usage(const struct orch_supervisor *sv, const char *id, struct orch_sv_usage *ret)
{
        const struct inst *in = find(sv, id);
        struct orch_cgroup_usage u;
        int r;

        if (!in)
                return -ENOENT;
        if (!in->cg)
                return -ENODATA;
        r = orch_cgroup_usage(in->cg, &u);
        if (r < 0)
                return r;
        *ret = (struct orch_sv_usage){u.cpu_usec, u.memory_bytes, u.pids};
        return 0;
}

/* --- recovery after an agent restart --------------------------------------------------------- */

struct saved {
        json_t *j;
        struct orch_service *spec;
        const char *id;
        const char *revision;
        uint64_t generation;
        pid_t pid;
        uint64_t start_time;
};

static int load_saved(struct orch_supervisor *sv, const char *file, struct saved *ret)
{
        _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", sv->inst_dir, file);
        json_t *spec;
        struct orch_diags d = {0};
        int64_t pid = 0;
        int r;

        if (!path)
                return -ENOMEM;
        *ret = (struct saved){0};
        ret->j = json_load_file(path, 0, NULL);
        if (!ret->j || orch_json_get_string(ret->j, "id", &ret->id) < 0 ||
            orch_json_get_string(ret->j, "revision", &ret->revision) < 0 ||
            orch_json_get_u64(ret->j, "generation", &ret->generation) < 0 ||
            orch_json_get_object(ret->j, "spec", &spec) < 0)
                return -EINVAL;
        r = orch_service_from_json(spec, path, &ret->spec, &d);
        orch_diags_release(&d);
        if (r < 0)
                return r;
        orch_json_get_i64(ret->j, "pid", &pid);
        ret->pid = (pid_t)pid;
        orch_json_get_u64(ret->j, "start_time", &ret->start_time);
        return 0;
}

static void saved_release(struct saved *s)
{
        json_decref(s->j);
        orch_service_free(s->spec);
}

/* Is the process of the state file still the instance? pid, start time and cgroup must agree. */
static int open_live_process(struct orch_supervisor *sv, const struct saved *s, struct orch_cgroup *cg)
{
        uint64_t st;
        int pidfd;

        if (s->pid <= 0)
                return -ESRCH;
        pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
        if (pidfd < 0)
                return -errno;
        if (proc_start_time(s->pid, &st) < 0 || st != s->start_time ||
            (cg && orch_cgroup_has_process(cg, s->pid, pidfd) != 1)) {
                close(pidfd);
                return -ESRCH;
        }
        return pidfd;
}

static void recover_one(struct orch_supervisor *sv, const char *file, bool adopt, size_t *adopted)
{
        struct saved s;
        struct orch_cgroup *cg = NULL;
        struct inst *in = NULL;
        char reason[ORCH_SV_REASON_MAX] = "";
        _cleanup_(freep) uint16_t *ports = NULL;
        json_t *jp;
        int pidfd = -1, r;

        r = load_saved(sv, file, &s);
        if (r < 0) {
                _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", sv->inst_dir, file);
                log_warn("instance state %s is unreadable (%s); removing it", file, strerror(-r));
                if (path)
                        unlink(path);
                saved_release(&s);
                return;
        }
        if (sv->cfg.cgroups)
                orch_cgroup_open(sv->cfg.cgroups, s.spec->name, s.id, &cg);
        if (adopt)
                pidfd = open_live_process(sv, &s, cg);

        if (!adopt) {
                char why[256];
                struct orch_log_ctx ctx = {.service = s.spec->name, .instance = s.id};
                orch_log(ORCH_LOG_INFO, &ctx,
                         "leftover of a previous agent run: killing and cleaning it up");
                if (cg && orch_cgroup_remove(cg, why, sizeof why) < 0)
                        orch_log(ORCH_LOG_ERROR, &ctx, "%s", why);
                orch_cgroup_free(cg);
                if (sv->cfg.logs)
                        orch_logs_remove(sv->cfg.logs, s.id);
                {
                        _cleanup_(freep) char *wd = orch_strdup_printf("%s/%s", sv->inst_dir, s.id);
                        _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", sv->inst_dir, file);
                        bool own = false;
                        orch_json_get_bool(s.j, "own_workdir", &own);
                        if (own && wd)
                                remove_tree(wd);
                        if (path)
                                unlink(path);
                }
                saved_release(&s);
                return;
        }

        in = inst_new(sv, s.id, s.generation, s.spec, s.revision);
        if (!in) {
                orch_cgroup_free(cg);
                if (pidfd >= 0)
                        close(pidfd);
                saved_release(&s);
                return;
        }
        orch_cgroup_free(cg);
        ports = calloc(s.spec->n_ports + 1, sizeof *ports);
        if (ports && orch_json_get_object(s.j, "ports", &jp) >= 0)
                for (size_t i = 0; i < s.spec->n_ports; i++) {
                        uint32_t p = 0;
                        orch_json_get_u32(jp, s.spec->ports[i].name, &p);
                        ports[i] = (uint16_t)p;
                }
        orch_json_get_u32(s.j, "restarts", &in->restarts);
        orch_json_get_u32(s.j, "failures", &in->failures);
        orch_json_get_u64(s.j, "started_at", &in->started_at);
        orch_json_get_u64(s.j, "oom_base", &in->oom_base);
        r = inst_prepare(in, ports, true, reason, sizeof reason);
        if (r < 0 && r != -ENOENT) {
                orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cannot re-adopt: %s",
                         *reason ? reason : strerror(-r));
                if (pidfd >= 0)
                        close(pidfd);
                release_resources(in, false);
                inst_release(in);
                saved_release(&s);
                return;
        }
        if (orch_hmap_insert(&sv->instances, &in->hnode, in->id) < 0) {
                if (pidfd >= 0)
                        close(pidfd);
                release_resources(in, false);
                inst_release(in);
                saved_release(&s);
                return;
        }
        sv->n++;
        if (pidfd >= 0) {
                const char *h = NULL;
                in->pid = s.pid;
                in->pidfd = pidfd;
                in->adopted = true;
                in->started_mono =
                        orch_now_usec() -
                        (orch_realtime_msec() - MIN(in->started_at, orch_realtime_msec())) * USEC_PER_MSEC;
                in->state = ORCH_INSTANCE_RUNNING;
                if (orch_json_get_string(s.j, "health", &h) >= 0)
                        in->health = orch_health_state_from_string(h);
                if ((int)in->health < 0)
                        in->health = ORCH_HEALTH_UNKNOWN;
                if (in->spec->health.type != ORCH_HEALTH_NONE && in->health != ORCH_HEALTH_PASSING)
                        in->state = ORCH_INSTANCE_STARTING;
                if (watch_process(in) < 0 || start_health(in, in->started_at) < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx, "re-adopted but not fully watched");
                orch_log(ORCH_LOG_INFO, &in->log_ctx, "re-adopted pid %d", (int)in->pid);
                (*adopted)++;
                emit(in, false);
        } else {
                /* it died while no agent watched: what the restart policy says, with the reason */
                kill_leftovers(in);
                in->has_exit = true;
                in->exit_code = -1;
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "exited while the agent was away");
                in->state = ORCH_INSTANCE_RUNNING;
                in->started_mono = 0;
                inst_exited(in, false, -1, 0);
        }
        saved_release(&s);
}

int orch_supervisor_recover(struct orch_supervisor *sv, bool adopt)
{
        DIR *d = opendir(sv->inst_dir);
        struct dirent *de;
        size_t adopted = 0;
        struct orch_cgroup_name *names = NULL;
        size_t n_names = 0;

        if (d) {
                while ((de = readdir(d)))
                        if (orch_endswith(de->d_name, ".json") && de->d_name[0] != '.')
                                recover_one(sv, de->d_name, adopt, &adopted);
                closedir(d);
        }
        /* cgroups no state file explains: orphans of a crash between cgroup creation and the
         * first state write, or of an older installation */
        if (sv->cfg.cgroups && orch_cgroup_list(sv->cfg.cgroups, &names, &n_names) >= 0) {
                for (size_t i = 0; i < n_names; i++) {
                        struct orch_cgroup *cg = NULL;
                        char why[256];
                        if (find(sv, names[i].instance))
                                continue;
                        if (orch_cgroup_open(sv->cfg.cgroups, names[i].service, names[i].instance, &cg) < 0)
                                continue;
                        log_info("removing orphaned cgroup %s of a previous agent run",
                                 orch_cgroup_path(cg));
                        if (orch_cgroup_remove(cg, why, sizeof why) < 0)
                                log_error("%s", why);
                        orch_cgroup_free(cg);
                }
                orch_cgroup_names_free(names, n_names);
        }
        return (int)adopted;
}

/* --- setup and shutdown --------------------------------------------------------------------- */

int orch_supervisor_new(uv_loop_t *loop, const struct orch_supervisor_config *cfg,
                        struct orch_supervisor **ret)
{
        struct orch_supervisor *sv = calloc(1, sizeof *sv);
        int r;

        if (!sv)
                return -ENOMEM;
        sv->loop = loop;
        sv->cfg = *cfg;
        sv->data_dir = strdup(cfg->data_dir);
        sv->node_name = strdup(cfg->node_name ? cfg->node_name : "");
        sv->inst_dir = orch_strdup_printf("%s/instances", cfg->data_dir);
        if (!sv->data_dir || !sv->node_name || !sv->inst_dir) {
                orch_supervisor_free(sv);
                return -ENOMEM;
        }
        r = orch_mkdir_p(sv->inst_dir, 0711);
        if (r < 0) {
                orch_supervisor_free(sv);
                return r;
        }
        sv->cfg.data_dir = sv->data_dir;
        sv->cfg.node_name = sv->node_name;
        *ret = sv;
        return 0;
}

static void supervisor_free_now(struct orch_supervisor *sv)
{
        orch_hmap_release(&sv->instances);
        for (size_t i = 0; i < sv->n_creds; i++) {
                free(sv->creds[i].user);
                free(sv->creds[i].group);
                free(sv->creds[i].groups);
                free(sv->creds[i].home);
        }
        free(sv->creds);
        free(sv->data_dir);
        free(sv->inst_dir);
        free(sv->node_name);
        free(sv);
}

void orch_supervisor_free(struct orch_supervisor *sv)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        if (!sv)
                return;
        sv->shutdown_done = NULL;
        for (n = orch_hmap_first(&sv->instances, &it); n; n = orch_hmap_next(&sv->instances, &it)) {
                struct inst *in = container_of(n, struct inst, hnode);
                orch_hmap_remove(&sv->instances, n);
                sv->n--;
                inst_release(in);
        }
        /* instance objects still closing their handles free the supervisor when the last one goes */
        sv->freed = true;
        if (sv->alive == 0)
                supervisor_free_now(sv);
}

void orch_supervisor_shutdown(struct orch_supervisor *sv, bool keep_instances, void (*done)(void *userdata),
                              void *userdata)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        sv->shutting_down = true;
        sv->shutdown_done = done;
        sv->shutdown_userdata = userdata;
        if (keep_instances) {
                /* they run on; their state files tell the next agent where they are */
                for (n = orch_hmap_first(&sv->instances, &it); n; n = orch_hmap_next(&sv->instances, &it)) {
                        struct inst *in = container_of(n, struct inst, hnode);
                        inst_persist(in);
                        orch_hmap_remove(&sv->instances, n);
                        sv->n--;
                        inst_release(in);
                }
                if (sv->shutdown_done && sv->alive == 0) {
                        sv->shutdown_done = NULL;
                        done(userdata);
                }
                return;
        }
        if (sv->alive == 0) {
                sv->shutdown_done = NULL;
                if (done)
                        done(userdata);
                return;
        }
        for (n = orch_hmap_first(&sv->instances, &it); n; n = orch_hmap_next(&sv->instances, &it)) {
                struct inst *in = container_of(n, struct inst, hnode);
                orch_supervisor_stop(sv, in->id, "the agent is stopping", NULL, NULL);
        }
}
