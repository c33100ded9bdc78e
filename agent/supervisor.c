/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cgroup.h"
#include "driver.h"
#include "hashmap.h"
#include "health.h"
#include "json.h"
#include "log.h"
#include "logs.h"
#include "ports.h"
#include "supervisor.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* The PATH instances get when their manifest does not set one. */
#define DEFAULT_PATH          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define RLIMIT_NOFILE_DEFAULT 65536

/*
 * A service spec shared by the instances of one revision: copied and serialised once, however
 * many replicas run it (a copy goes through the canonical JSON form and cost about 60 µs an
 * instance; every state write serialised the whole spec again). Reference-counted by its
 * instances (and a pending supersede); in sv->specs under "<service>/<revision>" while it is there.
 */
struct sv_spec {
        struct orch_hmap_node hnode;
        unsigned n_ref;
        bool in_map;
        struct orch_service *spec;
        char *json; /* its canonical JSON text, spliced into every state file */
        char revision[ORCH_REVISION_LEN + 1];
        char key[]; /* "<service>/<revision>" */
};

struct inst {
        struct orch_hmap_node hnode;
        struct orch_supervisor *sv;
        char *id;
        uint64_t generation;
        struct sv_spec *shared;
        const struct orch_service *spec; /* shared->spec */
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
        char *workdir;    /* NULL: the driver's default */
        bool own_workdir; /* the default per-instance directory: removed when forgotten */
        char *log_path;

        struct orch_sv_port *ports;
        size_t n_ports;
        struct orch_log_file *log;
        /* What the state file holds (0: nothing written yet): a write that would not change it is
         * skipped, so that one transition costs one write however many steps lead to it. */
        uint64_t state_hash;
        size_t state_len;
        struct orch_health_check *check;

        /* the process, run by a driver */
        enum orch_driver driver;
        struct orch_driver_unit *unit; /* NULL once the instance ended for good */
        bool active;      /* a start or an adoption succeeded and its `exited` has not come yet */
        pid_t pid;        /* 0 when not running (or while the driver has not said yet) */
        bool adopted;     /* re-adopted after an agent restart: not our child, no exit status */
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
        /* who asked for the stop, each told once it is done (a stop asked again while one is under
         * way, e.g. by orchd's fencing after a reconnect, adds its caller) */
        struct sv_done {
                orch_sv_done_fn fn;
                void *userdata;
        } *dones;
        size_t n_dones;
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
        struct orch_hmap specs; /* struct sv_spec by "<service>/<revision>" */
        size_t n;
        size_t alive; /* instance objects not yet freed (forgotten ones close their handles first) */
        bool freed;   /* orch_supervisor_free() was called: the last instance object frees sv */
        struct cred_cache *creds;
        size_t n_creds;
        struct orch_driver_impl *drivers[_ORCH_DRIVER_MAX]; /* NULL: not built into this agent */
        bool shutting_down;
        void (*shutdown_done)(void *);
        void *shutdown_userdata;
};

static void inst_spawn(struct inst *in);
static void supervisor_free_now(struct orch_supervisor *sv);
static void inst_exited(struct inst *in, const struct orch_driver_exit *e);
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
                .revision = in->shared->revision,
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
                .cgroup = in->unit ? in->unit->ops->cgroup_path(in->unit) : NULL,
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

/* --- shared specs ------------------------------------------------------------------------------ */

static struct sv_spec *spec_ref(struct sv_spec *s)
{
        s->n_ref++;
        return s;
}

static void spec_unref(struct orch_supervisor *sv, struct sv_spec *s)
{
        if (!s || --s->n_ref > 0)
                return;
        if (s->in_map)
                orch_hmap_remove(&sv->specs, &s->hnode);
        orch_service_free(s->spec);
        free(s->json);
        free(s);
}

/* Takes `spec` (also on failure). The new spec is in sv->specs unless another holds its key (a
 * re-adopted instance whose recorded spec differs from one already there under its revision). */
static int spec_new(struct orch_supervisor *sv, struct orch_service *spec, const char *revision,
                    struct sv_spec **ret)
{
        _cleanup_(orch_service_freep) struct orch_service *owned = spec;
        _cleanup_json_ json_t *j = NULL;
        _cleanup_(freep) char *key = orch_strdup_printf("%s/%s", spec->name, revision);
        struct sv_spec *s;
        size_t len;
        int r;

        if (!key)
                return -ENOMEM;
        len = strlen(key);
        s = calloc(1, sizeof *s + len + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s->key, key, len + 1);
        orch_strlcpy(s->revision, revision, sizeof s->revision);
        r = orch_service_to_json(owned, &j);
        if (r < 0 || !(s->json = orch_json_dumps_canonical(j))) {
                free(s);
                return r < 0 ? r : -ENOMEM;
        }
        s->spec = TAKE_PTR(owned);
        s->n_ref = 1;
        s->in_map = orch_hmap_insert(&sv->specs, &s->hnode, s->key) >= 0;
        *ret = s;
        return 0;
}

/* The shared copy for (spec->name, revision), made from `spec` when there is none. The revision
 * names the instance template (orch_service_revision()): the replicas, update and route it leaves
 * out say nothing about an instance, so the copy first given for a revision serves all. */
static int spec_get(struct orch_supervisor *sv, const struct orch_service *spec, const char *revision,
                    struct sv_spec **ret)
{
        char rev[ORCH_REVISION_LEN + 1], key[ORCH_NAME_MAX + 1 + ORCH_REVISION_LEN + 1];
        struct orch_service *copy = NULL;
        struct sv_spec *s;
        int r;

        if (!revision || !*revision) {
                r = orch_service_revision(spec, rev);
                if (r < 0)
                        return r;
                revision = rev;
        }
        if (orch_snprintf(key, sizeof key, "%s/%s", spec->name, revision) >= 0) {
                s = orch_hmap_entry(orch_hmap_get(&sv->specs, key), struct sv_spec, hnode);
                if (s) {
                        *ret = spec_ref(s);
                        return 0;
                }
        }
        r = orch_service_dup(spec, &copy);
        if (r < 0)
                return r;
        return spec_new(sv, copy, revision, ret);
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

                /* "$${" is a literal "${" (docs/manifest.md) */
                if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
                        orch_buf_puts(&b, "${");
                        p += 3;
                        continue;
                }

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

        spec_unref(sv, in->shared);
        free(in->dones);
        orch_strv_free(in->envp);
        orch_strv_free(in->argv);
        for (size_t i = 0; i < in->n_ports; i++)
                free((char *)in->ports[i].name);
        free(in->ports);
        free(in->groups);
        free(in->workdir);
        free(in->log_path);
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

static void stop_health(struct inst *in)
{
        if (in->check) {
                orch_health_stop(in->check);
                in->check = NULL;
        }
}

/* Drops the object once its handles are closed; the caller has already removed it from the map. The
 * driver's unit goes without a cleanup: what runs keeps running (an agent stopping with
 * --keep-instances), or the caller cleaned up already. */
static void inst_release(struct inst *in)
{
        in->freeing = true;
        stop_health(in);
        if (in->unit) {
                in->unit->ops->free_unit(in->unit);
                in->unit = NULL;
        }
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

/* Rewritten in place with one pwrite(): no new inode per write (a temp file and a rename cost
 * about a millisecond each on a busy ext4, which 1,000 starts would pay twice). A write of a few
 * KiB to a regular file is not torn by the death of the writer, and a shorter record is padded
 * with spaces to the file's length — JSON ignores trailing white space — so the file never needs
 * truncating. */
static int write_state(const char *path, const char *text)
{
        _cleanup_(freep) char *padded = NULL;
        _cleanup_(closep) int fd = -1;
        size_t len = strlen(text);
        struct stat st;
        ssize_t n;

        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) == 0 && (size_t)st.st_size > len) {
                padded = malloc((size_t)st.st_size);
                if (!padded)
                        return -ENOMEM;
                memcpy(padded, text, len);
                memset(padded + len, ' ', (size_t)st.st_size - len);
                text = padded;
                len = (size_t)st.st_size;
        }
        n = pwrite(fd, text, len, 0);
        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EIO;
}

/* Written without fsync: it must survive the agent's death, not the machine's (no instance
 * survives a reboot). Everything a next agent needs to find the instance again and to report it
 * unchanged: where it runs (the driver's part), its counters, health and last exit. */
static void inst_persist(struct inst *in)
{
        _cleanup_(freep) char *path = NULL, *rest = NULL, *s = NULL;
        _cleanup_json_ json_t *j = NULL, *ports = json_object();
        struct orch_buf b = {0};
        uint64_t hash;
        size_t len;
        int r;

        if (!ports)
                return;
        for (size_t i = 0; i < in->n_ports; i++)
                json_object_set_new(ports, in->ports[i].name, json_integer(in->ports[i].port));
        j = json_pack(
                "{s:s, s:s, s:I, s:s, s:s, s:i, s:O, s:I, s:I, s:I, s:s, s:b, s:b, s:b, s:i, s:i, s:b, "
                "s:s?}",
                "id", in->id, "revision", in->shared->revision, "generation", (json_int_t)in->generation,
                "driver", orch_driver_to_string(in->driver), "state",
                orch_instance_state_to_string(in->state), "pid", (int)in->pid, "ports", ports, "restarts",
                (json_int_t)in->restarts, "failures", (json_int_t)in->failures, "started_at",
                (json_int_t)in->started_at, "health", orch_health_state_to_string(in->health), "own_workdir",
                in->own_workdir, "stop_requested", in->stop_requested, "has_exit", in->has_exit, "exit_code",
                in->exit_code, "exit_signal", in->exit_signal, "exit_oom", in->exit_oom, "reason",
                in->reason);
        if (!j || (in->unit && in->unit->ops->save(in->unit, j) < 0) || !(rest = orch_json_dumps_compact(j)))
                return;
        /* the spec's text is made once per revision: spliced in, not serialised again */
        orch_buf_puts(&b, "{\"spec\":");
        orch_buf_puts(&b, in->shared->json);
        orch_buf_putc(&b, ',');
        orch_buf_puts(&b, rest + 1);
        if (b.oom) {
                orch_buf_release(&b);
                return;
        }
        s = orch_buf_steal(&b);
        len = strlen(s);
        hash = orch_hash_string(s);
        if (in->state_len == len && in->state_hash == hash)
                return;
        path = state_path(in);
        if (!path)
                return;
        r = write_state(path, s);
        if (r < 0) {
                orch_log(ORCH_LOG_WARN, &in->log_ctx, "could not write its state file %s: %s", path,
                         strerror(-r));
                in->state_hash = 0;
                in->state_len = 0;
                return;
        }
        in->state_hash = hash;
        in->state_len = len;
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

/* --- starting and watching ------------------------------------------------------------------ */

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
                if (in->active)
                        in->unit->ops->stop(in->unit);
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
                .cgroup = in->unit ? in->unit->ops->cgroup(in->unit) : NULL,
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

/* The start did not happen (the driver said so at once, or later): what the policy says. */
static void start_failed(struct inst *in, const char *reason)
{
        orch_log(ORCH_LOG_WARN, &in->log_ctx, "cannot start: %s", reason);
        if (in->stop_requested) {
                set_state(in, ORCH_INSTANCE_EXITED, "stopped");
                inst_forget(in);
                return;
        }
        if (should_restart(in, false))
                schedule_restart(in, reason);
        else
                set_state(in, ORCH_INSTANCE_FAILED, reason);
        inst_persist(in);
}

/* The process runs: it is running now, or starting until its first passing health check. */
static void inst_started(struct inst *in, pid_t pid)
{
        int r;

        in->pid = pid;
        in->health = ORCH_HEALTH_UNKNOWN;
        if (in->spec->health.type == ORCH_HEALTH_NONE)
                set_state(in, ORCH_INSTANCE_RUNNING, NULL);
        else {
                r = start_health(in, in->started_at);
                if (r < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cannot start its health check: %s",
                                 strerror(-r));
                emit(in, false);
        }
        inst_persist(in);
}

static void unit_started(void *userdata, pid_t pid)
{
        struct inst *in = userdata;

        if (in->stop_requested || in->restart_after_stop) {
                /* stopping already: the driver's stop covers the process that just came up */
                in->pid = pid;
                emit(in, false);
                return;
        }
        inst_started(in, pid);
}

static void unit_exited(void *userdata, const struct orch_driver_exit *e)
{
        struct inst *in = userdata;

        in->active = false;
        if (e->start_failed) {
                char why[ORCH_SV_REASON_MAX];
                orch_snprintf(why, sizeof why, "%s",
                              e->reason ? e->reason : "the driver could not start it");
                in->pid = 0;
                if (in->timer_init)
                        uv_timer_stop(&in->timer);
                start_failed(in, why);
                return;
        }
        inst_exited(in, e);
}

static const struct orch_driver_events unit_events = {
        .started = unit_started,
        .exited = unit_exited,
};

static void inst_spawn(struct inst *in)
{
        char reason[ORCH_SV_REASON_MAX] = "";
        pid_t pid = 0;
        int r = -ENODEV;

        if (in->started_at)
                in->restarts++;
        set_state(in, ORCH_INSTANCE_STARTING, NULL);
        if (in->log)
                orch_logs_check(in->log);
        if (in->unit)
                r = in->unit->ops->start(in->unit, &pid, reason, sizeof reason);
        else
                orch_snprintf(reason, sizeof reason, "its driver released it");
        in->started_at = orch_realtime_msec();
        in->started_mono = orch_now_usec();
        in->has_exit = false;
        in->adopted = false;
        if (r < 0) {
                if (!*reason)
                        orch_snprintf(reason, sizeof reason, "%s", strerror(-r));
                start_failed(in, reason);
                return;
        }
        in->active = true;
        if (pid > 0)
                inst_started(in, pid);
        else
                inst_persist(in); /* starting: the driver tells when it runs */
}

/* Everything the instance holds on the node goes: cgroup, ports, log file, work dir, state file. */
static void release_resources(struct inst *in, bool remove_files)
{
        struct orch_supervisor *sv = in->sv;
        char reason[ORCH_DRIVER_REASON_MAX] = "";

        if (in->unit) {
                if (in->unit->ops->cleanup(in->unit, remove_files, reason, sizeof reason) < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx, "not cleaned up: %s", reason);
                in->unit->ops->free_unit(in->unit);
                in->unit = NULL;
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
                in->state_hash = 0;
                in->state_len = 0;
        }
}

/* The stop is complete: the instance leaves the supervisor. */
static void inst_forget(struct inst *in)
{
        struct orch_supervisor *sv = in->sv;
        _cleanup_(freep) struct sv_done *dones = TAKE_PTR(in->dones);
        size_t n_dones = in->n_dones;
        char *id = strdup(in->id);

        in->n_dones = 0;
        orch_hmap_remove(&sv->instances, &in->hnode);
        sv->n--;
        release_resources(in, true);
        emit(in, true);
        inst_release(in);
        for (size_t i = 0; i < n_dones; i++)
                dones[i].fn(dones[i].userdata, id ? id : "");
        free(id);
}

static void stop_timeout_cb(uv_timer_t *t)
{
        struct inst *in = container_of(t, struct inst, timer);

        orch_log(ORCH_LOG_WARN, &in->log_ctx,
                 "did not stop within its stop timeout; killing all its processes");
        if (in->unit)
                in->unit->ops->kill(in->unit);
}

static void inst_exited(struct inst *in, const struct orch_driver_exit *e)
{
        uint64_t ran_usec = orch_now_usec() - in->started_mono;
        char why[ORCH_SV_REASON_MAX];
        bool success;

        stop_health(in);
        in->pid = 0;
        in->exit_oom = e->oom;
        in->has_exit = true;
        in->exit_code = e->have_status ? e->code : -1;
        in->exit_signal = e->have_status ? e->signal : 0;
        success = e->have_status && e->code == 0;

        if (in->exit_oom) {
                char lim[32];
                orch_format_size(in->spec->resources.memory, lim, sizeof lim);
                orch_snprintf(why, sizeof why, "OOM-killed (memory limit %s)", lim);
        } else if (!e->have_status && e->reason)
                orch_snprintf(why, sizeof why, "%s", e->reason);
        else if (!e->have_status && in->adopted)
                orch_snprintf(why, sizeof why, "exited (status unknown: re-adopted after an agent restart)");
        else if (!e->have_status)
                orch_snprintf(why, sizeof why, "exited while the agent was away");
        else if (e->signal)
                orch_snprintf(why, sizeof why, "killed by signal %s",
                              strna(orch_signal_to_string(e->signal)));
        else
                orch_snprintf(why, sizeof why, "exited with code %d", e->code);

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

/* An instance whose user systemd allocates (DynamicUser=): neither its uid nor a directory it can
 * write is known before it runs. */
static bool dynamic_user(const struct inst *in)
{
        return in->driver == ORCH_DRIVER_SYSTEMD && in->spec->sandbox.dynamic_user;
}

static int make_workdir(struct inst *in)
{
        if (!in->spec->workdir && dynamic_user(in))
                return 0; /* the driver's: a StateDirectory systemd makes for the dynamic user */
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

/* Everything but the process: credentials, ports, environment, log, work dir, and the driver's
 * confinement (existing: a previous agent's, to adopt). */
static int inst_prepare(struct inst *in, const uint16_t *fixed_ports, bool existing, char *reason,
                        size_t reason_size)
{
        struct orch_supervisor *sv = in->sv;
        struct orch_driver_impl *drv = sv->drivers[in->driver];
        const struct cred_cache *cred = NULL;
        struct orch_driver_params dp;
        bool dyn = dynamic_user(in);
        int r;

        if (!drv) {
                orch_snprintf(reason, reason_size, "driver '%s' is not available on this agent",
                              orch_driver_to_string(in->driver));
                return -EOPNOTSUPP;
        }
        /* a dynamic user is never root; health-check commands of such an instance run as nobody */
        r = resolve_creds(sv, dyn ? "nobody" : in->spec->user, dyn ? NULL : in->spec->group, &cred, reason,
                          reason_size);
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
                in->log_path = orch_strdup_printf("%s/%s.log", orch_logs_dir(sv->cfg.logs), in->id);
                if (!in->log_path)
                        return -ENOMEM;
        }
        dp = (struct orch_driver_params){
                .id = in->id,
                .spec = in->spec,
                .argv = in->argv,
                .envp = in->envp,
                .workdir = in->workdir,
                .user = dyn ? NULL : in->spec->user,
                .group = dyn ? NULL : in->spec->group,
                .uid = in->uid,
                .gid = in->gid,
                .groups = in->groups,
                .n_groups = in->n_groups,
                .set_ids = in->set_ids,
                .nofile_limit = nofile_limit(),
                .log_fd = in->log ? orch_logs_file_fd(in->log) : -1,
                .log_path = in->log_path,
                .events = &unit_events,
                .userdata = in,
        };
        return drv->ops->prepare(drv, &dp, existing, &in->unit, reason, reason_size);
}

/* The instance takes a reference to `shared`. */
static struct inst *inst_new(struct orch_supervisor *sv, const char *id, uint64_t generation,
                             struct sv_spec *shared, enum orch_driver driver)
{
        struct inst *in = calloc(1, sizeof *in);

        if (!in)
                return NULL;
        in->sv = sv;
        in->driver = driver;
        in->exit_code = -1;
        in->generation = generation;
        in->id = strdup(id);
        if (!in->id) {
                free(in);
                return NULL;
        }
        in->shared = spec_ref(shared);
        in->spec = shared->spec;
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

/* The manifest checks sandbox options against an explicit `driver`; without one, the agent's default
 * decides, and only here is that known. */
static int check_sandbox(const struct orch_service *spec, enum orch_driver driver, char *reason,
                         size_t reason_size)
{
        const char *opt = spec->sandbox.private_tmp      ? "private_tmp"
                          : spec->sandbox.protect_system ? "protect_system"
                          : spec->sandbox.dynamic_user   ? "dynamic_user"
                                                         : NULL;

        if (driver == ORCH_DRIVER_SYSTEMD || !opt)
                return 0;
        orch_snprintf(reason, reason_size,
                      "sandbox.%s needs driver systemd (this agent runs the service with driver %s)", opt,
                      orch_driver_to_string(driver));
        return -EOPNOTSUPP;
}

static int start_shared(struct orch_supervisor *sv, const char *id, uint64_t generation,
                        struct sv_spec *shared, char *reason, size_t reason_size);

struct superseding {
        struct orch_supervisor *sv;
        uint64_t generation;
        struct sv_spec *shared;
};

static void supersede_done(void *userdata, const char *id)
{
        struct superseding *p = userdata;
        char reason[ORCH_SV_REASON_MAX] = "";

        if (!p->sv->shutting_down &&
            start_shared(p->sv, id, p->generation, p->shared, reason, sizeof reason) < 0)
                log_error("instance %s: cannot start generation %" PRIu64 ": %s", id, p->generation, reason);
        spec_unref(p->sv, p->shared);
        free(p);
}

/* Takes the caller's reference to `shared`. */
static int supersede(struct orch_supervisor *sv, const char *id, uint64_t generation, struct sv_spec *shared)
{
        struct superseding *p = calloc(1, sizeof *p);
        int r;

        if (!p) {
                spec_unref(sv, shared);
                return -ENOMEM;
        }
        *p = (struct superseding){.sv = sv, .generation = generation, .shared = shared};
        r = orch_supervisor_stop(sv, id, "superseded by a newer generation", supersede_done, p);
        if (r < 0) {
                spec_unref(sv, shared);
                free(p);
        }
        return r;
}

int orch_supervisor_start(struct orch_supervisor *sv, const char *id, uint64_t generation,
                          const struct orch_service *spec, const char *revision, char *reason,
                          size_t reason_size)
{
        struct inst *in = find(sv, id);
        struct sv_spec *shared = NULL;
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
        }
        r = spec_get(sv, spec, revision, &shared);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot keep its spec: %s", strerror(-r));
                return r;
        }
        /* a newer placement of the same id replaces the copy we hold: start it once the old copy is
         * gone */
        if (in)
                return supersede(sv, id, generation, shared);
        r = start_shared(sv, id, generation, shared, reason, reason_size);
        spec_unref(sv, shared);
        return r;
}

static int start_shared(struct orch_supervisor *sv, const char *id, uint64_t generation,
                        struct sv_spec *shared, char *reason, size_t reason_size)
{
        const struct orch_service *spec = shared->spec;
        struct inst *nin;
        int r;

        r = check_sandbox(spec, effective_driver(sv, spec), reason, reason_size);
        if (r < 0)
                return r;
        nin = inst_new(sv, id, generation, shared, effective_driver(sv, spec));
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
        if (done) {
                struct sv_done *d = reallocarray(in->dones, in->n_dones + 1, sizeof *d);

                if (!d)
                        return -ENOMEM;
                in->dones = d;
                in->dones[in->n_dones++] = (struct sv_done){done, userdata};
        }
        if (in->stop_requested)
                return 0; /* already on its way: every caller is told when it is done */
        in->stop_requested = true;
        in->restart_after_stop = false;
        if (!in->active) {
                /* waiting for a restart, or ended: nothing to signal */
                if (in->timer_init)
                        uv_timer_stop(&in->timer);
                if (in->state != ORCH_INSTANCE_EXITED && in->state != ORCH_INSTANCE_FAILED)
                        set_state(in, ORCH_INSTANCE_EXITED, reason ? reason : "stopped");
                inst_forget(in);
                return 0;
        }
        stop_health(in);
        set_state(in, ORCH_INSTANCE_STOPPING, reason);
        in->unit->ops->stop(in->unit);
        inst_persist(in); /* an agent that dies now leaves a stop for the next one to finish */
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
        if (!in->unit)
                return -ENODATA;
        r = in->unit->ops->usage(in->unit, &u);
        if (r < 0)
                return r;
        *ret = (struct orch_sv_usage){u.cpu_usec, u.memory_bytes, u.pids};
        return 0;
}

/* --- recovery after an agent restart --------------------------------------------------------- */

struct saved {
        json_t *j;
        struct sv_spec *shared;
        const struct orch_service *spec; /* shared->spec */
        const char *id;
        const char *revision;
        uint64_t generation;
        enum orch_driver driver;
        enum orch_instance_state state;
        bool stop_requested;
        bool own_workdir;
};

/* The specs met during one recovery, by "<service>/<revision>", with the JSON they were read from:
 * each distinct spec is parsed once, not once per state file. */
struct seen_spec {
        struct orch_hmap_node hnode;
        json_t *j;
        struct sv_spec *shared;
        char key[];
};

static void seen_specs_release(struct orch_supervisor *sv, struct orch_hmap *seen)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(seen, &it); n; n = orch_hmap_next(seen, &it)) {
                struct seen_spec *e = container_of(n, struct seen_spec, hnode);
                orch_hmap_remove(seen, n);
                json_decref(e->j);
                spec_unref(sv, e->shared);
                free(e);
        }
        orch_hmap_release(seen);
}

/* The shared spec of a state file: one met before with the same JSON, or parsed (and validated) now. */
static int saved_spec(struct orch_supervisor *sv, struct orch_hmap *seen, json_t *spec, const char *revision,
                      const char *path, struct sv_spec **ret)
{
        _cleanup_(freep) char *key = NULL;
        struct orch_service *parsed = NULL;
        struct orch_diags d = {0};
        const char *name = NULL;
        struct seen_spec *e;
        size_t len;
        int r;

        if (orch_json_get_string(spec, "name", &name) < 0 ||
            !(key = orch_strdup_printf("%s/%s", name, revision)))
                return -EINVAL;
        e = orch_hmap_entry(orch_hmap_get(seen, key), struct seen_spec, hnode);
        if (e && json_equal(e->j, spec)) {
                *ret = spec_ref(e->shared);
                return 0;
        }
        r = orch_service_from_json(spec, path, &parsed, &d);
        orch_diags_release(&d);
        if (r < 0)
                return r;
        r = spec_new(sv, parsed, revision, ret);
        if (r < 0 || e)
                return r; /* another spec under the same key (files written by different agents) */
        len = strlen(key);
        e = calloc(1, sizeof *e + len + 1);
        if (!e)
                return 0; /* only the next files of this spec pay a parse */
        memcpy(e->key, key, len + 1);
        e->j = json_incref(spec);
        e->shared = spec_ref(*ret);
        if (orch_hmap_insert(seen, &e->hnode, e->key) < 0) {
                json_decref(e->j);
                spec_unref(sv, e->shared);
                free(e);
        }
        return 0;
}

static int load_saved(struct orch_supervisor *sv, struct orch_hmap *seen, const char *file,
                      struct saved *ret)
{
        _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", sv->inst_dir, file);
        const char *driver = NULL, *state = NULL;
        json_t *spec;
        int r;

        if (!path)
                return -ENOMEM;
        *ret = (struct saved){.driver = ORCH_DRIVER_EXEC, .state = ORCH_INSTANCE_RUNNING};
        ret->j = json_load_file(path, 0, NULL);
        if (!ret->j || orch_json_get_string(ret->j, "id", &ret->id) < 0 ||
            orch_json_get_string(ret->j, "revision", &ret->revision) < 0 ||
            orch_json_get_u64(ret->j, "generation", &ret->generation) < 0 ||
            orch_json_get_object(ret->j, "spec", &spec) < 0)
                return -EINVAL;
        /* the file is named after the instance: two files can never claim one id */
        if (strlen(file) != strlen(ret->id) + 5 || strncmp(file, ret->id, strlen(ret->id)) != 0)
                return -EINVAL;
        r = saved_spec(sv, seen, spec, ret->revision, path, &ret->shared);
        if (r < 0)
                return r;
        ret->spec = ret->shared->spec;
        /* files of agents before drivers and states were recorded: exec, and written while it ran */
        if (orch_json_get_string(ret->j, "driver", &driver) >= 0 &&
            (orch_driver_from_string(driver, &ret->driver) < 0 || ret->driver == ORCH_DRIVER_DEFAULT))
                return -EINVAL;
        if (orch_json_get_string(ret->j, "state", &state) >= 0 &&
            (int)(ret->state = orch_instance_state_from_string(state)) < 0)
                return -EINVAL;
        orch_json_get_bool(ret->j, "stop_requested", &ret->stop_requested);
        orch_json_get_bool(ret->j, "own_workdir", &ret->own_workdir);
        return 0;
}

static void saved_release(struct orch_supervisor *sv, struct saved *s)
{
        json_decref(s->j);
        spec_unref(sv, s->shared);
}

/* Kills what is left of a saved instance and removes its files. -ENOTCONN (its driver cannot be
 * reached) keeps the state file, so that a later agent can finish the job. */
static int discard_saved(struct orch_supervisor *sv, const struct saved *s, const char *why)
{
        struct orch_driver_impl *drv = sv->drivers[s->driver];
        struct orch_log_ctx ctx = {.service = s->spec->name, .instance = s->id};
        char reason[ORCH_DRIVER_REASON_MAX] = "";
        _cleanup_(freep) char *wd = orch_strdup_printf("%s/%s", sv->inst_dir, s->id);
        _cleanup_(freep) char *path = orch_strdup_printf("%s/%s.json", sv->inst_dir, s->id);
        int r = 0;

        orch_log(ORCH_LOG_INFO, &ctx, "%s", why);
        if (drv)
                r = drv->ops->discard(drv, s->spec->name, s->id, reason, sizeof reason);
        if (r == -ENOTCONN) {
                orch_log(ORCH_LOG_ERROR, &ctx, "%s; its state file is kept for the next agent", reason);
                return r;
        }
        if (r < 0)
                orch_log(ORCH_LOG_ERROR, &ctx, "%s", reason);
        if (sv->cfg.logs)
                orch_logs_remove(sv->cfg.logs, s->id);
        if (s->own_workdir && wd)
                remove_tree(wd);
        if (path)
                unlink(path);
        return r;
}

static void restore_counters(struct inst *in, const json_t *j)
{
        const char *h = NULL, *reason = NULL;

        orch_json_get_u32(j, "restarts", &in->restarts);
        orch_json_get_u32(j, "failures", &in->failures);
        orch_json_get_u64(j, "started_at", &in->started_at);
        orch_json_get_bool(j, "has_exit", &in->has_exit);
        if (in->has_exit) {
                int64_t code = -1, sig = 0;
                orch_json_get_i64(j, "exit_code", &code);
                orch_json_get_i64(j, "exit_signal", &sig);
                in->exit_code = (int)code;
                in->exit_signal = (int)sig;
                orch_json_get_bool(j, "exit_oom", &in->exit_oom);
        }
        if (orch_json_get_string(j, "health", &h) >= 0)
                in->health = orch_health_state_from_string(h);
        if ((int)in->health < 0)
                in->health = ORCH_HEALTH_UNKNOWN;
        if (orch_json_get_string(j, "reason", &reason) >= 0)
                set_reason(in, reason);
}

/* The ports recorded for the instance, in the order of its spec (0 for one that is missing). */
static uint16_t *saved_ports(const struct saved *s)
{
        uint16_t *ports = calloc(s->spec->n_ports + 1, sizeof *ports);
        json_t *jp;

        if (ports && orch_json_get_object(s->j, "ports", &jp) >= 0)
                for (size_t i = 0; i < s->spec->n_ports; i++) {
                        uint32_t p = 0;
                        orch_json_get_u32(jp, s->spec->ports[i].name, &p);
                        ports[i] = (uint16_t)MIN(p, UINT16_MAX);
                }
        return ports;
}

/* An instance that had ended for good: reported as it was, holding nothing (no process, port or
 * open file) until it is stopped and forgotten. */
static int restore_ended(struct inst *in, const struct saved *s, const uint16_t *ports)
{
        in->ports = calloc(s->spec->n_ports + 1, sizeof *in->ports);
        if (!in->ports)
                return -ENOMEM;
        for (size_t i = 0; i < s->spec->n_ports; i++) {
                in->ports[i] = (struct orch_sv_port){strdup(s->spec->ports[i].name), ports ? ports[i] : 0};
                if (!in->ports[i].name)
                        return -ENOMEM;
                in->n_ports++;
        }
        if (s->own_workdir) {
                in->workdir = orch_strdup_printf("%s/%s", in->sv->inst_dir, in->id);
                if (!in->workdir)
                        return -ENOMEM;
                in->own_workdir = true;
        }
        in->state = s->state;
        return 0;
}

static void recover_one(struct orch_supervisor *sv, struct orch_hmap *seen, const char *file, bool adopt,
                        size_t *adopted)
{
        struct saved s = {0};
        struct inst *in = NULL;
        char reason[ORCH_SV_REASON_MAX] = "";
        _cleanup_(freep) uint16_t *ports = NULL;
        pid_t pid = 0;
        int r;

        r = load_saved(sv, seen, file, &s);
        if (r < 0) {
                _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", sv->inst_dir, file);
                log_warn("instance state %s is unreadable (%s); removing it", file, strerror(-r));
                if (path)
                        unlink(path);
                goto out;
        }
        if (!adopt) {
                discard_saved(sv, &s, "leftover of a previous agent run: killing and cleaning it up");
                goto out;
        }
        if (s.stop_requested) {
                discard_saved(sv, &s,
                              "was being stopped when the previous agent went away: finishing the stop");
                goto out;
        }
        in = inst_new(sv, s.id, s.generation, s.shared, s.driver);
        ports = saved_ports(&s);
        if (!in || !ports) {
                log_error("instance %s: cannot re-adopt: out of memory", s.id);
                if (in)
                        inst_release(in);
                goto out;
        }
        restore_counters(in, s.j);
        if (s.state == ORCH_INSTANCE_EXITED || s.state == ORCH_INSTANCE_FAILED) {
                r = restore_ended(in, &s, ports);
                if (r < 0 || orch_hmap_insert(&sv->instances, &in->hnode, in->id) < 0) {
                        log_error("instance %s: cannot restore its state: %s", s.id,
                                  strerror(r < 0 ? -r : EEXIST));
                        inst_release(in);
                        goto out;
                }
                sv->n++;
                emit(in, false);
                goto out;
        }
        r = inst_prepare(in, ports, true, reason, sizeof reason);
        if (r < 0) {
                if (!*reason)
                        orch_snprintf(reason, sizeof reason, "%s", strerror(-r));
                release_resources(in, false);
                inst_release(in);
                if (r == -ENOTCONN)
                        orch_log(ORCH_LOG_ERROR,
                                 &(struct orch_log_ctx){.service = s.spec->name, .instance = s.id},
                                 "cannot re-adopt: %s; its state file is kept for the next agent", reason);
                else {
                        char why[ORCH_SV_REASON_MAX + 64];
                        orch_snprintf(why, sizeof why, "cannot re-adopt: %s; killing what is left of it",
                                      reason);
                        discard_saved(sv, &s, why);
                }
                goto out;
        }
        if (orch_hmap_insert(&sv->instances, &in->hnode, in->id) < 0) {
                release_resources(in, false);
                inst_release(in);
                goto out;
        }
        sv->n++;
        *reason = '\0';
        r = in->unit->ops->adopt(in->unit, s.j, &pid, reason, sizeof reason);
        if (r < 0)
                orch_log(ORCH_LOG_ERROR, &in->log_ctx, "cannot tell whether it still runs: %s",
                         *reason ? reason : strerror(-r));
        if (r == 1) {
                in->pid = pid;
                in->active = true;
                in->adopted = true;
                in->started_mono =
                        orch_now_usec() -
                        (orch_realtime_msec() - MIN(in->started_at, orch_realtime_msec())) * USEC_PER_MSEC;
                in->state = ORCH_INSTANCE_RUNNING;
                if (in->spec->health.type != ORCH_HEALTH_NONE && in->health != ORCH_HEALTH_PASSING)
                        in->state = ORCH_INSTANCE_STARTING;
                if (start_health(in, in->started_at) < 0)
                        orch_log(ORCH_LOG_ERROR, &in->log_ctx,
                                 "re-adopted, but its health check cannot run");
                orch_log(ORCH_LOG_INFO, &in->log_ctx, "re-adopted pid %d", (int)in->pid);
                (*adopted)++;
                /* its state file says all this already: no write (a thousand new inodes cost a second) */
                emit(in, false);
        } else if (s.state == ORCH_INSTANCE_PENDING) {
                /* it was waiting out a backoff: the restart it was due */
                emit(in, false);
                inst_spawn(in);
        } else {
                /* it died while no agent watched: what the restart policy says, with the reason (which
                 * inst_exited() logs) */
                struct orch_driver_exit e = {.code = -1};
                in->state = ORCH_INSTANCE_RUNNING;
                in->started_mono = 0;
                inst_exited(in, &e);
        }
out:
        saved_release(sv, &s);
}

static bool is_known(void *userdata, const char *id)
{
        return find(userdata, id) != NULL;
}

int orch_supervisor_recover(struct orch_supervisor *sv, bool adopt)
{
        DIR *d = opendir(sv->inst_dir);
        struct orch_hmap seen = {0};
        struct dirent *de;
        size_t adopted = 0;

        if (d) {
                while ((de = readdir(d)))
                        if (orch_endswith(de->d_name, ".json") && de->d_name[0] != '.')
                                recover_one(sv, &seen, de->d_name, adopt, &adopted);
                closedir(d);
        }
        seen_specs_release(sv, &seen);
        /* what no state file explains: orphans of a crash between creation and the first state
         * write, or of an older installation */
        for (size_t i = 0; i < _ORCH_DRIVER_MAX; i++)
                if (sv->drivers[i])
                        sv->drivers[i]->ops->sweep(sv->drivers[i], is_known, sv);
        return (int)adopted;
}

bool orch_supervisor_driver_available(const struct orch_supervisor *sv, enum orch_driver driver,
                                      char *reason, size_t reason_size)
{
        if (driver == ORCH_DRIVER_DEFAULT)
                driver = sv->cfg.default_driver;
        if ((size_t)driver >= _ORCH_DRIVER_MAX || !sv->drivers[driver]) {
                orch_snprintf(reason, reason_size, "driver '%s' is not built into this agent",
                              orch_driver_to_string(driver));
                return false;
        }
        if (driver == ORCH_DRIVER_SYSTEMD)
                return orch_driver_systemd_available(sv->drivers[driver], reason, reason_size) > 0;
        return true;
}

/* --- setup and shutdown --------------------------------------------------------------------- */

int orch_supervisor_new(uv_loop_t *loop, const struct orch_supervisor_config *cfg,
                        struct orch_supervisor **ret)
{
        struct orch_supervisor *sv = calloc(1, sizeof *sv);
        char why[ORCH_DRIVER_REASON_MAX];
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
        if (r >= 0)
                r = orch_driver_exec_new(loop, cfg->cgroups, &sv->drivers[ORCH_DRIVER_EXEC]);
        if (r >= 0)
                r = orch_driver_systemd_new(loop, cfg->systemd_address, sv->node_name,
                                            &sv->drivers[ORCH_DRIVER_SYSTEMD]);
        if (r < 0) {
                orch_supervisor_free(sv);
                return r;
        }
        if (!orch_supervisor_driver_available(sv, ORCH_DRIVER_SYSTEMD, why, sizeof why)) {
                /* on a host without systemd that is the normal case, unless systemd was asked for */
                orch_log(cfg->default_driver == ORCH_DRIVER_SYSTEMD || cfg->systemd_address ? ORCH_LOG_WARN
                                                                                            : ORCH_LOG_INFO,
                         NULL, "driver systemd is not available: %s", why);
        }
        sv->cfg.data_dir = sv->data_dir;
        sv->cfg.node_name = sv->node_name;
        *ret = sv;
        return 0;
}

static void supervisor_free_now(struct orch_supervisor *sv)
{
        orch_hmap_release(&sv->instances);
        orch_hmap_release(&sv->specs);
        for (size_t i = 0; i < sv->n_creds; i++) {
                free(sv->creds[i].user);
                free(sv->creds[i].group);
                free(sv->creds[i].groups);
                free(sv->creds[i].home);
        }
        free(sv->creds);
        for (size_t i = 0; i < _ORCH_DRIVER_MAX; i++)
                if (sv->drivers[i])
                        sv->drivers[i]->ops->free(sv->drivers[i]);
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
