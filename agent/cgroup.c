/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <time.h>

#include <libcgroup.h>

#include "cgroup.h"
#include "util.h"
#include "banned.h"

#define CGROUP_FS         "/sys/fs/cgroup"
#define CGROUP_UNIFIED_FS "/sys/fs/cgroup/unified"

/* v1: one hierarchy per controller at most, plus the cgroup2 hierarchy of a hybrid or v2 host. */
#define MAX_HIERARCHIES (_ORCH_CGROUP_CONTROLLER_MAX + 1)
/* Nested cgroups below an instance (only a root workload can make them) are followed this deep. */
#define MAX_DEPTH 16
/* cgroup.procs of one cgroup: bounded well above any pids.max orch would set. */
#define PROCS_FILE_MAX (4U << 20)
/* The kernel refuses CFS quotas below 1 ms. */
#define CPU_PERIOD_USEC          100000U
#define CPU_MIN_QUOTA_USEC       1000U
#define REMOVE_KILL_TIMEOUT_USEC (1 * USEC_PER_SEC)
/* On v2 with delegation, the agent's own processes live in <delegated>/agent. */
#define AGENT_LEAF "agent"

static const char *const mode_names[_ORCH_CGROUP_MODE_MAX] = {
        [ORCH_CGROUP_V1] = "v1",
        [ORCH_CGROUP_HYBRID] = "hybrid",
        [ORCH_CGROUP_V2] = "v2",
};

/* Names as v1 mounts and v2 cgroup.controllers spell them. */
static const char *const controller_names[_ORCH_CGROUP_CONTROLLER_MAX] = {
        [ORCH_CGROUP_CPU] = "cpu",
        [ORCH_CGROUP_CPUACCT] = "cpuacct",
        [ORCH_CGROUP_MEMORY] = "memory",
        [ORCH_CGROUP_PIDS] = "pids",
};

struct hierarchy {
        char *mount;          /* "/sys/fs/cgroup/memory" */
        char *base;           /* "" (the root) or the agent's delegated cgroup "/system.slice/x.service" */
        char *parent_dir;     /* where services go: mount + base + "/" + parent */
        char *rel_parent;     /* base + "/" + parent: the path /proc/<pid>/cgroup shows */
        unsigned controllers; /* served here; 0 for the controller-less cgroup2 of a hybrid host */
        bool v2;
};

struct orch_cgroup_root {
        enum orch_cgroup_mode mode;
        unsigned controllers;
        struct hierarchy h[MAX_HIERARCHIES];
        size_t n_h;
        char *parent;  /* normalised: no leading, trailing or doubled '/' */
        bool absolute; /* given as "/x": from the root of every hierarchy, never under the agent's cgroup */
};

struct orch_cgroup {
        struct orch_cgroup_root *root;
        char *service;
        char *instance;
        char *dir[MAX_HIERARCHIES]; /* per root->h[]; NULL where it does not exist (open of a partial
                                       leftover) */
        char *path;
        int oom_fd;
        int oom_events;
        /* Its cgroup2 cgroup has had cgroup.kill written (or may have: an opened leftover). Kernels with
         * the kill_seq fix of the fork/cgroup.kill race (6.14, and the stable series it went to) compare
         * the destination's kill_seq with the one of the parent's cgroup under CLONE_INTO_CGROUP, so
         * every child cloned into such a cgroup is SIGKILLed at birth (seen on 6.18). Children join it
         * through cgroup.procs instead. */
        bool no_clone_into;
};

/* Describes a failure in the caller's reason buffer (which may be NULL) and returns the error. */
_printf_(4, 5) static int fail(int r, char *reason, size_t reason_size, const char *fmt, ...)
{
        va_list ap;

        if (reason && reason_size > 0) {
                va_start(ap, fmt);
                vsnprintf(reason, reason_size, fmt, ap);
                va_end(ap);
        }
        return r;
}

const char *orch_cgroup_mode_to_string(enum orch_cgroup_mode m)
{
        return m >= 0 && m < _ORCH_CGROUP_MODE_MAX ? mode_names[m] : NULL;
}

static void hierarchy_release(struct hierarchy *h)
{
        free(h->mount);
        free(h->base);
        free(h->parent_dir);
        free(h->rel_parent);
        *h = (struct hierarchy){0};
}

struct orch_cgroup_root *orch_cgroup_root_free(struct orch_cgroup_root *root)
{
        if (!root)
                return NULL;
        for (size_t i = 0; i < root->n_h; i++)
                hierarchy_release(&root->h[i]);
        free(root->parent);
        free(root);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_cgroup_root *, orch_cgroup_root_free)

enum orch_cgroup_mode orch_cgroup_root_mode(const struct orch_cgroup_root *root)
{
        return root->mode;
}

unsigned orch_cgroup_root_controllers(const struct orch_cgroup_root *root)
{
        return root->controllers;
}

/* A name that is one path component and cannot walk out of its parent. */
static bool name_is_valid(const char *s)
{
        return s && *s && strlen(s) <= NAME_MAX && !strchr(s, '/') && !streq(s, ".") && !streq(s, "..");
}

static int write_string(const char *dir, const char *file, const char *value, char *reason,
                        size_t reason_size)
{
        char path[PATH_MAX];
        size_t len = strlen(value);
        ssize_t n;
        int fd, r = 0;

        if (orch_snprintf(path, sizeof path, "%s/%s", dir, file) < 0)
                return fail(-ENAMETOOLONG, reason, reason_size, "path too long: %s/%s", dir, file);
        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return fail(-errno, reason, reason_size, "open %s: %s", path, strerror(errno));
        n = write(fd, value, len);
        if (n < 0)
                r = -errno;
        else if ((size_t)n != len)
                r = -EIO;
        close(fd);
        if (r < 0)
                return fail(r, reason, reason_size, "write \"%s\" to %s: %s", value, path, strerror(-r));
        return 0;
}

static int read_text(const char *dir, const char *file, size_t max, char **ret)
{
        char path[PATH_MAX];

        if (orch_snprintf(path, sizeof path, "%s/%s", dir, file) < 0)
                return -ENAMETOOLONG;
        return orch_read_file(path, max, ret, NULL);
}

/* Finds "key N" in a keyed file's text (memory.events, memory.oom_control, cgroup.events, cpu.stat). */
static int parse_keyed(const char *text, const char *key, uint64_t *ret)
{
        size_t kl = strlen(key);

        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                char num[24];
                size_t n;

                if (strncmp(p, key, kl) != 0 || p[kl] != ' ')
                        continue;
                p += kl + 1;
                n = strcspn(p, "\n");
                if (n == 0 || n >= sizeof num)
                        return -EBADMSG;
                memcpy(num, p, n);
                num[n] = '\0';
                return orch_parse_u64(num, ret) < 0 ? -EBADMSG : 0;
        }
        return -ENODATA;
}

static int read_keyed(const char *dir, const char *file, const char *key, uint64_t *ret)
{
        _cleanup_(freep) char *text = NULL;
        int r = read_text(dir, file, 64 * 1024, &text);

        if (r < 0)
                return r;
        return parse_keyed(text, key, ret);
}

static int read_u64(const char *dir, const char *file, uint64_t *ret)
{
        _cleanup_(freep) char *text = NULL;
        size_t n;
        int r = read_text(dir, file, 4096, &text);

        if (r < 0)
                return r;
        n = strcspn(text, "\n");
        text[n] = '\0';
        return orch_parse_u64(text, ret) < 0 ? -EBADMSG : 0;
}

static bool is_fs(const char *path, unsigned long magic)
{
        struct statfs s;

        return statfs(path, &s) == 0 && (unsigned long)s.f_type == magic;
}

/*
 * v1 hierarchies come from libcgroup's view of the mounts: it knows which
 * controllers share a mount (cpu,cpuacct on most distributions; separate
 * here), which is all we take from it. Creating and removing the cgroups is
 * done with direct file I/O instead (see orch_cgroup_create()).
 */
static int discover_v1(struct orch_cgroup_root *root, char *reason, size_t reason_size)
{
        struct cgroup_mount_point info;
        void *handle = NULL;
        int r;

        r = cgroup_init();
        if (r != 0)
                return fail(-ENOMEDIUM, reason, reason_size, "libcgroup cgroup_init: %s",
                            cgroup_strerror(r));
        r = cgroup_get_controller_begin(&handle, &info);
        while (r == 0) {
                for (int c = 0; c < _ORCH_CGROUP_CONTROLLER_MAX; c++) {
                        struct hierarchy *h = NULL;

                        if (!streq(info.name, controller_names[c]) ||
                            !startswith(info.path, CGROUP_FS "/") || is_fs(info.path, CGROUP2_SUPER_MAGIC))
                                continue;
                        for (size_t i = 0; i < root->n_h; i++)
                                if (streq(root->h[i].mount, info.path))
                                        h = &root->h[i];
                        /* At most one new hierarchy per controller: h[] has room for all of them. */
                        if (!h) {
                                h = &root->h[root->n_h];
                                h->mount = strdup(info.path);
                                if (!h->mount) {
                                        cgroup_get_controller_end(&handle);
                                        return -ENOMEM;
                                }
                                root->n_h++;
                        }
                        h->controllers |= ORCH_CGROUP_MASK(c);
                        root->controllers |= ORCH_CGROUP_MASK(c);
                }
                r = cgroup_get_controller_next(&handle, &info);
        }
        cgroup_get_controller_end(&handle);
        if (r != ECGEOF)
                return fail(-EIO, reason, reason_size, "libcgroup: listing controllers: %s",
                            cgroup_strerror(r));
        return 0;
}

/* The agent's own cgroup on the cgroup2 hierarchy ("0::/path" in /proc/self/cgroup). */
static int own_v2_cgroup(char **ret)
{
        _cleanup_(freep) char *text = NULL;
        int r = orch_read_file("/proc/self/cgroup", 64 * 1024, &text, NULL);

        if (r < 0)
                return r;
        for (char *line = text; line && *line;) {
                char *next = strchr(line, '\n');
                const char *p;

                if (next)
                        *next++ = '\0';
                p = startswith(line, "0::");
                if (p) {
                        char *d = strdup(p);
                        if (!d)
                                return -ENOMEM;
                        *ret = d;
                        return 0;
                }
                line = next;
        }
        return -ENODATA;
}

/* systemd marks the cgroups it delegates (Delegate=yes) with this xattr: trusted for the system manager,
 * user for a user manager. */
static bool is_delegated(const char *dir)
{
        static const char *const names[] = {"trusted.delegate", "user.delegate"};

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char v[8];
                ssize_t n = getxattr(dir, names[i], v, sizeof v - 1);
                if (n > 0) {
                        v[n] = '\0';
                        if (streq(v, "1"))
                                return true;
                }
        }
        return false;
}

/* Writes "+c" for each controller in `mask` to dir/cgroup.subtree_control, one at a time so the reason
 * names the one that the kernel refused. */
static int enable_controllers(const char *dir, unsigned mask, char *reason, size_t reason_size)
{
        for (int c = 0; c < _ORCH_CGROUP_CONTROLLER_MAX; c++) {
                char v[16];
                int r;

                if (c == ORCH_CGROUP_CPUACCT || !(mask & ORCH_CGROUP_MASK(c)))
                        continue;
                orch_snprintf(v, sizeof v, "+%s", controller_names[c]);
                r = write_string(dir, "cgroup.subtree_control", v, reason, reason_size);
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * v2 with a delegated agent cgroup: controllers can be enabled for the
 * children of <own> only if <own> itself holds no process, so everything in it
 * (the agent and whatever it started there) moves to the leaf <own>/agent.
 * This is a migration and pays the cgroup_threadgroup_rwsem grace period, once
 * at start.
 */
static int move_to_leaf(const char *own_dir, char *reason, size_t reason_size)
{
        _cleanup_(freep) char *leaf = orch_strdup_printf("%s/" AGENT_LEAF, own_dir);
        _cleanup_(freep) char *procs = NULL;
        int r;

        if (!leaf)
                return -ENOMEM;
        if (mkdir(leaf, 0755) < 0 && errno != EEXIST) {
                r = -errno;
                return fail(r, reason, reason_size, "mkdir %s: %s", leaf, strerror(-r));
        }
        r = read_text(own_dir, "cgroup.procs", PROCS_FILE_MAX, &procs);
        if (r < 0)
                return fail(r, reason, reason_size, "read %s/cgroup.procs: %s", own_dir, strerror(-r));
        for (char *line = procs; line && *line;) {
                char *next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                r = write_string(leaf, "cgroup.procs", line, reason, reason_size);
                /* A process that exited since the read is fine. */
                if (r < 0 && r != -ESRCH)
                        return r;
                line = next;
        }
        return 0;
}

/* "cpu memory pids\n" -> mask; names orch does not use are ignored. */
static unsigned parse_controller_list(char *text)
{
        unsigned mask = 0;
        char *save = NULL;

        for (char *tok = strtok_r(text, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
                for (int c = 0; c < _ORCH_CGROUP_CONTROLLER_MAX; c++)
                        if (streq(tok, controller_names[c]))
                                mask |= ORCH_CGROUP_MASK(c);
        return mask;
}

/*
 * Adds the cgroup2 hierarchy at `mount`. With `controllers` (a v2 host) the
 * cpu, memory and pids controllers are enabled down to the parent; without (a
 * hybrid host) the hierarchy only tracks processes.
 */
static int setup_v2(struct orch_cgroup_root *root, const char *mount, bool controllers, char *reason,
                    size_t reason_size)
{
        _cleanup_(freep) char *own = NULL;
        _cleanup_(freep) char *base = NULL;
        _cleanup_(freep) char *base_dir = NULL;
        struct hierarchy *h = &root->h[root->n_h];
        unsigned mask = 0;
        int r;

        /* A relative parent goes under the agent's own cgroup when that is delegated to it, else under the
         * root: outside a delegated subtree the agent has no business creating cgroups in someone else's. */
        if (!root->absolute) {
                r = own_v2_cgroup(&own);
                if (r < 0)
                        return fail(r, reason, reason_size, "reading /proc/self/cgroup: %s", strerror(-r));
                for (int up = 0; up < 2 && !base && !streq(own, "/") && *own; up++) {
                        _cleanup_(freep) char *own_dir = orch_strdup_printf("%s%s", mount, own);
                        if (!own_dir)
                                return -ENOMEM;
                        if (is_delegated(own_dir))
                                base = TAKE_PTR(own);
                        /* Once in its leaf (an earlier root of this process), the delegated cgroup is the
                         * leaf's parent. */
                        else if (orch_endswith(own, "/" AGENT_LEAF))
                                own[strlen(own) - strlen("/" AGENT_LEAF)] = '\0';
                        else
                                break;
                }
        }
        if (!base && !(base = strdup("")))
                return -ENOMEM;
        if (*base && (streq(root->parent, AGENT_LEAF) || startswith(root->parent, AGENT_LEAF "/")))
                return fail(-EINVAL, reason, reason_size,
                            "cgroup parent \"%s\" would collide with the agent's own leaf %s/%s",
                            root->parent, base, AGENT_LEAF);
        base_dir = orch_strdup_printf("%s%s", mount, base);
        if (!base_dir)
                return -ENOMEM;

        if (controllers) {
                _cleanup_(freep) char *available = NULL;
                _cleanup_(freep) char *enabled = NULL;
                unsigned missing;

                r = read_text(base_dir, "cgroup.controllers", 4096, &available);
                if (r < 0)
                        return fail(r, reason, reason_size, "read %s/cgroup.controllers: %s", base_dir,
                                    strerror(-r));
                r = read_text(base_dir, "cgroup.subtree_control", 4096, &enabled);
                if (r < 0)
                        return fail(r, reason, reason_size, "read %s/cgroup.subtree_control: %s", base_dir,
                                    strerror(-r));
                mask = parse_controller_list(available);
                missing = mask & ~parse_controller_list(enabled);
                /* The root cgroup is exempt from the no-internal-process rule; a delegated one is not. */
                if (missing && *base) {
                        r = move_to_leaf(base_dir, reason, reason_size);
                        if (r < 0)
                                return r;
                }
                r = enable_controllers(base_dir, missing, reason, reason_size);
                if (r < 0)
                        return r;
        }
        /* CPU usage is the core cpu.stat on cgroup2, with or without controllers; a hybrid host's v1 cpuacct
         * is preferred when it is mounted (listed first). */
        if (controllers || !(root->controllers & ORCH_CGROUP_MASK(ORCH_CGROUP_CPUACCT)))
                mask |= ORCH_CGROUP_MASK(ORCH_CGROUP_CPUACCT);

        h->v2 = true;
        h->controllers = mask;
        h->mount = strdup(mount);
        h->base = TAKE_PTR(base);
        if (!h->mount)
                return -ENOMEM;
        root->n_h++;
        root->controllers |= mask;
        return 0;
}

/* Creates the parent directories below the base; on v2 each level passes the controllers down. */
static int create_parent(struct orch_cgroup_root *root, struct hierarchy *h, char *reason,
                         size_t reason_size)
{
        _cleanup_(freep) char *dir = orch_strdup_printf("%s%s", h->mount, h->base);
        int r;

        if (!dir)
                return -ENOMEM;
        h->rel_parent = orch_strdup_printf("%s/%s", h->base, root->parent);
        if (!h->rel_parent)
                return -ENOMEM;
        for (const char *p = root->parent; *p;) {
                size_t n = strcspn(p, "/");
                char *next = orch_strdup_printf("%s/%.*s", dir, (int)n, p);

                if (!next)
                        return -ENOMEM;
                free(dir);
                dir = next;
                if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        return fail(r, reason, reason_size, "mkdir %s: %s", dir, strerror(-r));
                }
                if (h->v2) {
                        r = enable_controllers(dir, h->controllers, reason, reason_size);
                        if (r < 0)
                                return r;
                }
                p += n;
                if (*p == '/')
                        p++;
        }
        h->parent_dir = TAKE_PTR(dir);
        return 0;
}

/* "/a//b/" -> "a/b"; NULL for an empty path or one with "." or ".." components. */
static char *normalize_parent(const char *s)
{
        struct orch_buf b = {0};

        for (const char *p = s; *p;) {
                size_t n;

                while (*p == '/')
                        p++;
                n = strcspn(p, "/");
                if (n == 0)
                        break;
                if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.') || n > NAME_MAX) {
                        orch_buf_release(&b);
                        return NULL;
                }
                if (b.len > 0)
                        orch_buf_putc(&b, '/');
                orch_buf_put(&b, p, n);
                p += n;
        }
        if (b.len == 0) {
                orch_buf_release(&b);
                return NULL;
        }
        return orch_buf_steal(&b);
}

int orch_cgroup_root_open(const char *parent, unsigned flags, struct orch_cgroup_root **ret, char *reason,
                          size_t reason_size)
{
        _cleanup_(orch_cgroup_root_freep) struct orch_cgroup_root *root = NULL;
        int r;

        root = calloc(1, sizeof *root);
        if (!root)
                return -ENOMEM;
        root->parent = parent ? normalize_parent(parent) : NULL;
        if (!root->parent)
                return fail(-EINVAL, reason, reason_size, "invalid cgroup parent \"%s\"", strempty(parent));
        root->absolute = parent[0] == '/';

        if (is_fs(CGROUP_FS, CGROUP2_SUPER_MAGIC)) {
                root->mode = ORCH_CGROUP_V2;
                r = setup_v2(root, CGROUP_FS, true, reason, reason_size);
                if (r < 0)
                        return r;
        } else if (is_fs(CGROUP_FS, TMPFS_MAGIC)) {
                bool unified =
                        !(flags & ORCH_CGROUP_ROOT_V1_ONLY) && is_fs(CGROUP_UNIFIED_FS, CGROUP2_SUPER_MAGIC);

                root->mode = unified ? ORCH_CGROUP_HYBRID : ORCH_CGROUP_V1;
                r = discover_v1(root, reason, reason_size);
                if (r < 0)
                        return r;
                if (root->n_h == 0)
                        return fail(-ENOMEDIUM, reason, reason_size,
                                    "none of the cpu, cpuacct, memory, pids controllers is mounted under %s",
                                    CGROUP_FS);
                for (size_t i = 0; i < root->n_h; i++)
                        if (!(root->h[i].base = strdup("")))
                                return -ENOMEM;
                if (unified) {
                        r = setup_v2(root, CGROUP_UNIFIED_FS, false, reason, reason_size);
                        if (r < 0)
                                return r;
                }
        } else
                return fail(-ENOMEDIUM, reason, reason_size,
                            "%s is neither cgroup2 nor a tmpfs of v1 controllers", CGROUP_FS);

        for (size_t i = 0; i < root->n_h; i++) {
                r = create_parent(root, &root->h[i], reason, reason_size);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(root);
        return 0;
}

int orch_cgroup_root_remove(struct orch_cgroup_root *root, char *reason, size_t reason_size)
{
        for (size_t i = 0; i < root->n_h; i++) {
                _cleanup_(freep) char *dir = strdup(root->h[i].parent_dir);
                size_t stop = strlen(root->h[i].mount) + strlen(root->h[i].base);

                if (!dir)
                        return -ENOMEM;
                /* The parent's own directory must go; its ancestors only when nothing else uses them. */
                for (bool first = true; strlen(dir) > stop; first = false) {
                        if (rmdir(dir) < 0 && errno != ENOENT) {
                                int r = -errno;
                                if (!first)
                                        break;
                                return fail(r, reason, reason_size, "rmdir %s: %s", dir, strerror(-r));
                        }
                        *strrchr(dir, '/') = '\0';
                }
        }
        return 0;
}

static struct orch_cgroup *cgroup_new(struct orch_cgroup_root *root, const char *service,
                                      const char *instance)
{
        struct orch_cgroup *cg = calloc(1, sizeof *cg);

        if (!cg)
                return NULL;
        cg->root = root;
        cg->oom_fd = -1;
        cg->service = strdup(service);
        cg->instance = strdup(instance);
        cg->path = orch_strdup_printf("%s/%s/%s", root->h[0].rel_parent, service, instance);
        if (!cg->service || !cg->instance || !cg->path)
                return orch_cgroup_free(cg);
        for (size_t i = 0; i < root->n_h; i++)
                if (!(cg->dir[i] = orch_strdup_printf("%s/%s/%s", root->h[i].parent_dir, service, instance)))
                        return orch_cgroup_free(cg);
        return cg;
}

struct orch_cgroup *orch_cgroup_free(struct orch_cgroup *cg)
{
        if (!cg)
                return NULL;
        if (cg->oom_fd >= 0)
                close(cg->oom_fd);
        for (size_t i = 0; i < MAX_HIERARCHIES; i++)
                free(cg->dir[i]);
        free(cg->service);
        free(cg->instance);
        free(cg->path);
        free(cg);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_cgroup *, orch_cgroup_free)

const char *orch_cgroup_path(const struct orch_cgroup *cg)
{
        return cg->path;
}

static int apply_limits(const struct hierarchy *h, const char *dir, const struct orch_cgroup_limits *l,
                        char *reason, size_t reason_size)
{
        char v[64];
        int r;

        if (l->cpu_millis > 0 && (h->controllers & ORCH_CGROUP_MASK(ORCH_CGROUP_CPU))) {
                uint64_t quota =
                        MAX((uint64_t)l->cpu_millis * CPU_PERIOD_USEC / 1000, (uint64_t)CPU_MIN_QUOTA_USEC);

                if (h->v2) {
                        orch_snprintf(v, sizeof v, "%" PRIu64 " %u", quota, CPU_PERIOD_USEC);
                        r = write_string(dir, "cpu.max", v, reason, reason_size);
                } else {
                        orch_snprintf(v, sizeof v, "%u", CPU_PERIOD_USEC);
                        r = write_string(dir, "cpu.cfs_period_us", v, reason, reason_size);
                        if (r >= 0) {
                                orch_snprintf(v, sizeof v, "%" PRIu64, quota);
                                r = write_string(dir, "cpu.cfs_quota_us", v, reason, reason_size);
                        }
                }
                if (r < 0)
                        return r;
        }
        if (l->memory_bytes > 0 && (h->controllers & ORCH_CGROUP_MASK(ORCH_CGROUP_MEMORY))) {
                orch_snprintf(v, sizeof v, "%" PRIu64, l->memory_bytes);
                r = write_string(dir, h->v2 ? "memory.max" : "memory.limit_in_bytes", v, reason,
                                 reason_size);
                if (r < 0)
                        return r;
                /* Swap would let the workload exceed the limit (memory+swap on v1; swap on its own on v2).
                 * The files are absent when the kernel does not account swap: then nothing can be swapped
                 * beyond the limit anyway. */
                r = h->v2 ? write_string(dir, "memory.swap.max", "0", reason, reason_size)
                          : write_string(dir, "memory.memsw.limit_in_bytes", v, reason, reason_size);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        if (l->pids_max > 0 && (h->controllers & ORCH_CGROUP_MASK(ORCH_CGROUP_PIDS))) {
                orch_snprintf(v, sizeof v, "%" PRIu64, l->pids_max);
                r = write_string(dir, "pids.max", v, reason, reason_size);
                if (r < 0)
                        return r;
        }
        return 0;
}

/*
 * Instance cgroups are made with mkdir and write, not libcgroup's
 * cgroup_create_cgroup(): libcgroup 2.0.2 re-reads /proc/mounts before every
 * value it writes and mkdirs every ancestor, which made 1,000 instances (four
 * v1 hierarchies, five values) take 367 ms against 106 ms here; it also does
 * not translate v1 and v2 file names, and may leave a directory behind when it
 * fails.
 */
int orch_cgroup_create(struct orch_cgroup_root *root, const char *service, const char *instance,
                       const struct orch_cgroup_limits *limits, struct orch_cgroup **ret, char *reason,
                       size_t reason_size)
{
        static const struct {
                int controller;
                const char *what;
        } needs[] = {
                {ORCH_CGROUP_CPU, "a CPU quota"},
                {ORCH_CGROUP_MEMORY, "a memory limit"},
                {ORCH_CGROUP_PIDS, "a pids limit"},
        };
        _cleanup_(orch_cgroup_freep) struct orch_cgroup *cg = NULL;
        bool created[MAX_HIERARCHIES] = {false};
        bool wanted[ELEMENTSOF(needs)];
        int r = 0;

        if (!name_is_valid(service) || !name_is_valid(instance))
                return fail(-EINVAL, reason, reason_size, "invalid cgroup name \"%s/%s\"", strempty(service),
                            strempty(instance));
        wanted[0] = limits->cpu_millis > 0;
        wanted[1] = limits->memory_bytes > 0;
        wanted[2] = limits->pids_max > 0;
        for (size_t i = 0; i < ELEMENTSOF(needs); i++)
                if (wanted[i] && !(root->controllers & ORCH_CGROUP_MASK(needs[i].controller)))
                        return fail(-EOPNOTSUPP, reason, reason_size,
                                    "%s needs the %s controller, which this %s host does not offer",
                                    needs[i].what, controller_names[needs[i].controller],
                                    mode_names[root->mode]);
        cg = cgroup_new(root, service, instance);
        if (!cg)
                return -ENOMEM;

        for (size_t i = 0; i < root->n_h; i++) {
                const struct hierarchy *h = &root->h[i];
                _cleanup_(freep) char *sdir = orch_strdup_printf("%s/%s", h->parent_dir, service);

                if (!sdir) {
                        r = -ENOMEM;
                        goto undo;
                }
                if (mkdir(sdir, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        fail(r, reason, reason_size, "mkdir %s: %s", sdir, strerror(-r));
                        goto undo;
                }
                /* Also when the directory existed: a previous run may have died between mkdir and this. */
                if (h->v2 && (h->controllers & ~ORCH_CGROUP_MASK(ORCH_CGROUP_CPUACCT))) {
                        r = enable_controllers(sdir, h->controllers, reason, reason_size);
                        if (r < 0)
                                goto undo;
                }
                if (mkdir(cg->dir[i], 0755) < 0) {
                        r = -errno;
                        if (r == -EEXIST)
                                fail(r, reason, reason_size,
                                     "cgroup %s already exists (a leftover of an earlier run)", cg->dir[i]);
                        else
                                fail(r, reason, reason_size, "mkdir %s: %s", cg->dir[i], strerror(-r));
                        goto undo;
                }
                created[i] = true;
                r = apply_limits(h, cg->dir[i], limits, reason, reason_size);
                if (r < 0)
                        goto undo;
        }
        *ret = TAKE_PTR(cg);
        return 0;

undo:
        /* Nothing has run in the new directories: they are empty and rmdir takes them. */
        for (size_t i = 0; i < root->n_h; i++) {
                if (!created[i])
                        continue;
                rmdir(cg->dir[i]);
                *strrchr(cg->dir[i], '/') = '\0';
                rmdir(cg->dir[i]);
        }
        return r;
}

int orch_cgroup_open(struct orch_cgroup_root *root, const char *service, const char *instance,
                     struct orch_cgroup **ret)
{
        _cleanup_(orch_cgroup_freep) struct orch_cgroup *cg = NULL;
        size_t found = 0;

        if (!name_is_valid(service) || !name_is_valid(instance))
                return -EINVAL;
        cg = cgroup_new(root, service, instance);
        if (!cg)
                return -ENOMEM;
        for (size_t i = 0; i < root->n_h; i++) {
                struct stat st;

                if (stat(cg->dir[i], &st) == 0 && S_ISDIR(st.st_mode)) {
                        found++;
                        continue;
                }
                if (errno != ENOENT && errno != ENOTDIR)
                        return -errno;
                free(cg->dir[i]);
                cg->dir[i] = NULL;
        }
        if (found == 0)
                return -ENOENT;
        /* Whoever ran it before may have written cgroup.kill. */
        cg->no_clone_into = true;
        *ret = TAKE_PTR(cg);
        return 0;
}

bool orch_cgroup_is_complete(const struct orch_cgroup *cg)
{
        for (size_t i = 0; i < cg->root->n_h; i++)
                if (!cg->dir[i])
                        return false;
        return true;
}

/* Calls fn(dir/name) for each subdirectory of dir. */
static int for_each_subdir(const char *dir, int (*fn)(const char *path, void *userdata), void *userdata)
{
        struct dirent *de;
        struct stat st;
        int r = 0;
        DIR *d;

        /* kernfs keeps a directory's link count at 2 plus its subdirectories: a stat spares reading the
         * thirty-odd files of an instance's cgroup on every kill round. */
        if (stat(dir, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (st.st_nlink == 2)
                return 0;
        d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        while ((de = readdir(d))) {
                _cleanup_(freep) char *path = NULL;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                        continue;
                path = orch_strdup_printf("%s/%s", dir, de->d_name);
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                if (de->d_type == DT_UNKNOWN && (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)))
                        continue;
                r = fn(path, userdata);
                if (r < 0)
                        break;
        }
        closedir(d);
        return r;
}

struct procs_walk {
        bool kill;
        unsigned depth;
        unsigned found;
};

/*
 * Counts (and with `kill` SIGKILLs) the processes listed in dir/cgroup.procs
 * and below. kill() by pid: a listed pid can only be reused if that process
 * exits, is reaped and pid_max pids are allocated between the read and the
 * kill, a window of microseconds.
 */
static int procs_walk(const char *dir, void *userdata)
{
        struct procs_walk *w = userdata;
        _cleanup_(freep) char *text = NULL;
        int r;

        r = read_text(dir, "cgroup.procs", PROCS_FILE_MAX, &text);
        if (r == -ENOENT || r == -ENODEV)
                return 0; /* removed meanwhile */
        if (r < 0)
                return r;
        for (char *line = text; *line;) {
                char *next = strchr(line, '\n');
                uint32_t pid;

                if (next)
                        *next++ = '\0';
                if (orch_parse_u32(line, &pid) == 0 && pid > 0) {
                        w->found++;
                        if (w->kill && kill((pid_t)pid, SIGKILL) < 0 && errno != ESRCH)
                                return -errno;
                }
                if (!next)
                        break;
                line = next;
        }
        if (w->depth >= MAX_DEPTH)
                return 0;
        w->depth++;
        r = for_each_subdir(dir, procs_walk, w);
        w->depth--;
        return r;
}

/* cgroup2: "populated" of cgroup.events covers the whole subtree. */
static int v2_populated(const char *dir, bool *ret)
{
        uint64_t v;
        int r = read_keyed(dir, "cgroup.events", "populated", &v);

        if (r == -ENOENT || r == -ENODEV) {
                *ret = false;
                return 0;
        }
        if (r < 0)
                return r;
        *ret = v != 0;
        return 0;
}

/* Counts the processes in the cgroup (and kills them): >= 0 or -errno. With `kill` on cgroup2, cgroup.kill
 * has already been written: only the populated flag is read. */
static int scan(const struct orch_cgroup *cg, bool kill, const bool *v2_killed, unsigned *ret_found)
{
        unsigned found = 0;
        int r;

        for (size_t i = 0; i < cg->root->n_h; i++) {
                if (!cg->dir[i])
                        continue;
                if (cg->root->h[i].v2 && (!kill || v2_killed[i])) {
                        bool populated;
                        r = v2_populated(cg->dir[i], &populated);
                        if (r < 0)
                                return r;
                        found += populated;
                } else {
                        struct procs_walk w = {.kill = kill};
                        r = procs_walk(cg->dir[i], &w);
                        if (r < 0)
                                return r;
                        found += w.found;
                }
        }
        *ret_found = found;
        return 0;
}

int orch_cgroup_kill(struct orch_cgroup *cg, uint64_t timeout_usec, char *reason, size_t reason_size)
{
        uint64_t deadline = orch_now_usec() + timeout_usec, pause = 50;
        bool v2_killed[MAX_HIERARCHIES] = {false};
        int r;

        for (size_t i = 0; i < cg->root->n_h; i++) {
                bool populated;

                if (!cg->dir[i] || !cg->root->h[i].v2)
                        continue;
                /* Only a populated cgroup is worth it: an empty one stays usable for CLONE_INTO_CGROUP
                 * (see no_clone_into), which keeps a plain restart free of migrations. */
                r = v2_populated(cg->dir[i], &populated);
                if (r < 0)
                        return fail(r, reason, reason_size, "read %s/cgroup.events: %s", cg->dir[i],
                                    strerror(-r));
                if (!populated) {
                        v2_killed[i] = true;
                        continue;
                }
                r = write_string(cg->dir[i], "cgroup.kill", "1", reason, reason_size);
                if (r >= 0) {
                        v2_killed[i] = true;
                        cg->no_clone_into = true;
                }
                /* Kernels before 5.14 lack cgroup.kill: the kill rounds cover that hierarchy too. */
                else if (r != -ENOENT)
                        return r;
        }
        for (;;) {
                unsigned found;
                uint64_t now;

                r = scan(cg, true, v2_killed, &found);
                if (r < 0)
                        return fail(r, reason, reason_size, "killing the processes of cgroup %s: %s",
                                    cg->path, strerror(-r));
                if (found == 0)
                        return 0;
                now = orch_now_usec();
                if (now >= deadline)
                        return fail(-EBUSY, reason, reason_size,
                                    "cgroup %s: %u processes left %" PRIu64 " ms after SIGKILL", cg->path,
                                    found, (uint64_t)(timeout_usec / USEC_PER_MSEC));
                /* Killed processes need a moment to run their exit; short first, as most exit at once. */
                pause = MIN(pause, deadline - now);
                usleep((useconds_t)pause);
                pause = MIN(pause * 2, 10 * USEC_PER_MSEC);
        }
}

int orch_cgroup_is_empty(const struct orch_cgroup *cg)
{
        unsigned found;
        int r = scan(cg, false, NULL, &found);

        return r < 0 ? r : found == 0;
}

static int rmdir_tree(const char *dir, void *userdata)
{
        unsigned *depth = userdata;
        int r = 0;

        if (*depth < MAX_DEPTH) {
                (*depth)++;
                r = for_each_subdir(dir, rmdir_tree, depth);
                (*depth)--;
                if (r < 0)
                        return r;
        }
        /* A killed task leaves cgroup.procs when its exit begins, a moment before the kernel unlinks it
         * from the cgroup; until then rmdir says EBUSY. Short waits first: it is usually microseconds. */
        for (useconds_t pause = 20, waited = 0; rmdir(dir) < 0;
             waited += pause, pause = MIN(pause * 2, 10000U)) {
                if (errno == ENOENT)
                        return 0;
                if (errno != EBUSY || waited >= REMOVE_KILL_TIMEOUT_USEC)
                        return -errno;
                usleep(pause);
        }
        return 0;
}

int orch_cgroup_remove(struct orch_cgroup *cg, char *reason, size_t reason_size)
{
        int r;

        r = orch_cgroup_kill(cg, REMOVE_KILL_TIMEOUT_USEC, reason, reason_size);
        if (r < 0)
                return r;
        for (size_t i = 0; i < cg->root->n_h; i++) {
                unsigned depth = 0;
                struct stat st;

                if (!cg->dir[i])
                        continue;
                r = rmdir_tree(cg->dir[i], &depth);
                if (r < 0)
                        return fail(r, reason, reason_size, "rmdir %s: %s", cg->dir[i], strerror(-r));
                /* Check instead of trusting: libcgroup's CGFLAG_DELETE_EMPTY_ONLY reports success on a
                 * cgroup that stays, and a directory left behind is a leak. */
                if (stat(cg->dir[i], &st) == 0)
                        return fail(-EBUSY, reason, reason_size, "cgroup %s still exists after rmdir",
                                    cg->dir[i]);
        }
        for (size_t i = 0; i < cg->root->n_h; i++) {
                _cleanup_(freep) char *sdir =
                        orch_strdup_printf("%s/%s", cg->root->h[i].parent_dir, cg->service);
                /* Other instances of the service keep it busy: that is expected. */
                if (sdir)
                        (void)rmdir(sdir);
        }
        return 0;
}

/* The hierarchy (in h[] order, v1 first) that serves `controller` and where the instance exists. */
static int find_hierarchy(const struct orch_cgroup *cg, int controller)
{
        for (size_t i = 0; i < cg->root->n_h; i++)
                if (cg->dir[i] && (cg->root->h[i].controllers & ORCH_CGROUP_MASK(controller)))
                        return (int)i;
        return -EOPNOTSUPP;
}

int orch_cgroup_usage(const struct orch_cgroup *cg, struct orch_cgroup_usage *ret)
{
        struct orch_cgroup_usage u = {ORCH_CGROUP_USAGE_UNKNOWN, ORCH_CGROUP_USAGE_UNKNOWN,
                                      ORCH_CGROUP_USAGE_UNKNOWN};
        int i, r;

        i = find_hierarchy(cg, ORCH_CGROUP_CPUACCT);
        if (i >= 0) {
                if (cg->root->h[i].v2)
                        r = read_keyed(cg->dir[i], "cpu.stat", "usage_usec", &u.cpu_usec);
                else {
                        r = read_u64(cg->dir[i], "cpuacct.usage", &u.cpu_usec);
                        u.cpu_usec /= NSEC_PER_USEC;
                }
                if (r < 0)
                        return r;
        }
        i = find_hierarchy(cg, ORCH_CGROUP_MEMORY);
        if (i >= 0) {
                r = read_u64(cg->dir[i], cg->root->h[i].v2 ? "memory.current" : "memory.usage_in_bytes",
                             &u.memory_bytes);
                if (r < 0)
                        return r;
        }
        i = find_hierarchy(cg, ORCH_CGROUP_PIDS);
        if (i >= 0) {
                r = read_u64(cg->dir[i], "pids.current", &u.pids);
                if (r < 0)
                        return r;
        }
        *ret = u;
        return 0;
}

int orch_cgroup_oom_count(const struct orch_cgroup *cg, uint64_t *ret)
{
        int i = find_hierarchy(cg, ORCH_CGROUP_MEMORY);

        if (i < 0)
                return i;
        /* v2 memory.events counts the subtree; v1 oom_control's counter is the cgroup's own, and the
         * instance's processes are all in it (use_hierarchy is always on since 5.x). */
        return read_keyed(cg->dir[i], cg->root->h[i].v2 ? "memory.events" : "memory.oom_control", "oom_kill",
                          ret);
}

int orch_cgroup_oom_fd(struct orch_cgroup *cg, int *ret_fd, int *ret_events)
{
        _cleanup_(closep) int fd = -1;
        int i = find_hierarchy(cg, ORCH_CGROUP_MEMORY);
        char path[PATH_MAX];

        if (i < 0)
                return i;
        if (cg->oom_fd >= 0)
                goto done;
        if (cg->root->h[i].v2) {
                char buf[512];

                if (orch_snprintf(path, sizeof path, "%s/memory.events", cg->dir[i]) < 0)
                        return -ENAMETOOLONG;
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return -errno;
                /* kernfs reports POLLPRI for changes after the last read: read once to arm it. */
                if (pread(fd, buf, sizeof buf, 0) < 0)
                        return -errno;
                cg->oom_events = POLLPRI;
        } else {
                _cleanup_(closep) int ctl = -1;
                char v[32];
                int r;

                if (orch_snprintf(path, sizeof path, "%s/memory.oom_control", cg->dir[i]) < 0)
                        return -ENAMETOOLONG;
                fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (fd < 0)
                        return -errno;
                ctl = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (ctl < 0)
                        return -errno;
                /* The registration lives as long as the eventfd (or the cgroup): the control file's
                 * descriptor is only needed for this write. */
                orch_snprintf(v, sizeof v, "%d %d", fd, ctl);
                r = write_string(cg->dir[i], "cgroup.event_control", v, NULL, 0);
                if (r < 0)
                        return r;
                cg->oom_events = POLLIN;
        }
        cg->oom_fd = TAKE_FD(fd);
done:
        *ret_fd = cg->oom_fd;
        *ret_events = cg->oom_events;
        return 0;
}

int orch_cgroup_oom_drain(struct orch_cgroup *cg, uint64_t *ret_count)
{
        int i = find_hierarchy(cg, ORCH_CGROUP_MEMORY);

        if (i < 0)
                return i;
        if (cg->oom_fd < 0)
                return orch_cgroup_oom_count(cg, ret_count);
        if (cg->root->h[i].v2) {
                char buf[1024];
                ssize_t n = pread(cg->oom_fd, buf, sizeof buf - 1, 0);

                if (n < 0)
                        return -errno;
                buf[n] = '\0';
                return parse_keyed(buf, "oom_kill", ret_count);
        } else {
                uint64_t events;

                if (read(cg->oom_fd, &events, sizeof events) < 0 && errno != EAGAIN)
                        return -errno;
                return orch_cgroup_oom_count(cg, ret_count);
        }
}

/* Whether `line`'s comma-separated controller list names one served by h. */
static bool line_matches_hierarchy(const char *list, size_t len, const struct hierarchy *h)
{
        for (int c = 0; c < _ORCH_CGROUP_CONTROLLER_MAX; c++) {
                const char *name = controller_names[c];
                size_t nl = strlen(name);

                if (!(h->controllers & ORCH_CGROUP_MASK(c)))
                        continue;
                for (const char *p = list; p < list + len;) {
                        size_t n = strcspn(p, ",:");
                        if (n == nl && memcmp(p, name, nl) == 0)
                                return true;
                        p += n + 1;
                }
        }
        return false;
}

int orch_cgroup_has_process(const struct orch_cgroup *cg, pid_t pid, int pidfd)
{
        _cleanup_(freep) char *text = NULL;
        char path[64];
        size_t matched = 0, wanted = 0;
        int r;

        if (pid <= 0)
                return -EINVAL;
        orch_snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
        r = orch_read_file(path, 64 * 1024, &text, NULL);
        if (r == -ENOENT || r == -ESRCH)
                return 0;
        if (r < 0)
                return r;
        for (size_t i = 0; i < cg->root->n_h; i++) {
                const struct hierarchy *h = &cg->root->h[i];
                _cleanup_(freep) char *want = NULL;

                if (!cg->dir[i])
                        continue;
                wanted++;
                want = orch_strdup_printf("%s/%s/%s", h->rel_parent, cg->service, cg->instance);
                if (!want)
                        return -ENOMEM;
                /* Lines are "id:controllers:path"; cgroup2's is "0::path". */
                for (const char *line = text; *line;) {
                        const char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                        size_t len = strcspn(line, "\n");
                        const char *cgpath;
                        bool ours;

                        if (!c2 || c2 > line + len)
                                return -EBADMSG;
                        cgpath = c2 + 1;
                        ours = h->v2 ? c2 == c1 + 1 && startswith(line, "0:")
                                     : line_matches_hierarchy(c1 + 1, (size_t)(c2 - c1 - 1), h);
                        if (ours) {
                                size_t wl = strlen(want), pl = len - (size_t)(cgpath - line);
                                /* The instance's cgroup or one below it (a root workload's own). */
                                if (pl >= wl && memcmp(cgpath, want, wl) == 0 &&
                                    (pl == wl || cgpath[wl] == '/'))
                                        matched++;
                                break;
                        }
                        line += len;
                        if (*line == '\n')
                                line++;
                }
        }
        if (wanted == 0 || matched != wanted)
                return 0;
        /* The pid might have been recycled before /proc was read: if the process the pidfd pins is still
         * alive now, the pid was its own all along. */
        if (pidfd >= 0 && pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
                return errno == ESRCH ? 0 : -errno;
        return 1;
}

struct names_acc {
        struct orch_cgroup_name *v;
        size_t n, cap;
        const char *service;
};

static int collect_instance(const char *path, void *userdata)
{
        struct names_acc *acc = userdata;
        struct orch_cgroup_name *nv;

        if (acc->n == acc->cap) {
                size_t cap = acc->cap ? acc->cap * 2 : 16;
                nv = realloc(acc->v, cap * sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                acc->v = nv;
                acc->cap = cap;
        }
        acc->v[acc->n].service = strdup(acc->service);
        acc->v[acc->n].instance = strdup(strrchr(path, '/') + 1);
        if (!acc->v[acc->n].service || !acc->v[acc->n].instance) {
                free(acc->v[acc->n].service);
                free(acc->v[acc->n].instance);
                return -ENOMEM;
        }
        acc->n++;
        return 0;
}

static int collect_service(const char *path, void *userdata)
{
        struct names_acc *acc = userdata;

        acc->service = strrchr(path, '/') + 1;
        return for_each_subdir(path, collect_instance, acc);
}

static int name_compare(const void *a, const void *b)
{
        const struct orch_cgroup_name *x = a, *y = b;
        int c = strcmp(x->service, y->service);

        return c ? c : strcmp(x->instance, y->instance);
}

void orch_cgroup_names_free(struct orch_cgroup_name *names, size_t n)
{
        for (size_t i = 0; names && i < n; i++) {
                free(names[i].service);
                free(names[i].instance);
        }
        free(names);
}

int orch_cgroup_list(struct orch_cgroup_root *root, struct orch_cgroup_name **ret, size_t *ret_n)
{
        struct names_acc acc = {0};
        size_t k = 0;

        for (size_t i = 0; i < root->n_h; i++) {
                int r = for_each_subdir(root->h[i].parent_dir, collect_service, &acc);
                if (r < 0) {
                        orch_cgroup_names_free(acc.v, acc.n);
                        return r;
                }
        }
        if (acc.n > 0)
                qsort(acc.v, acc.n, sizeof *acc.v, name_compare);
        for (size_t i = 0; i < acc.n; i++) {
                if (k > 0 && name_compare(&acc.v[k - 1], &acc.v[i]) == 0) {
                        free(acc.v[i].service);
                        free(acc.v[i].instance);
                        continue;
                }
                acc.v[k++] = acc.v[i];
        }
        *ret = acc.v;
        *ret_n = k;
        return 0;
}

void orch_cgroup_attach_close(struct orch_cgroup_attach *a)
{
        if (a->clone_fd >= 0)
                close(a->clone_fd);
        for (size_t i = 0; i < a->n_join; i++)
                if (a->join_fd[i] >= 0)
                        close(a->join_fd[i]);
        *a = (struct orch_cgroup_attach){.clone_fd = -1};
}

int orch_cgroup_attach_open(const struct orch_cgroup *cg, struct orch_cgroup_attach *ret)
{
        struct orch_cgroup_attach a = {.clone_fd = -1};
        char path[PATH_MAX];
        int r;

        for (size_t i = 0; i < cg->root->n_h; i++) {
                if (!cg->dir[i]) {
                        r = -ENOENT;
                        goto undo;
                }
                if (cg->root->h[i].v2) {
                        a.clone_path = cg->dir[i];
                        if (cg->no_clone_into)
                                continue;
                        a.clone_fd = open(cg->dir[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (a.clone_fd < 0) {
                                r = -errno;
                                goto undo;
                        }
                        continue;
                }
                if (orch_snprintf(path, sizeof path, "%s/tasks", cg->dir[i]) < 0) {
                        r = -ENAMETOOLONG;
                        goto undo;
                }
                a.join_fd[a.n_join] = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
                if (a.join_fd[a.n_join] < 0) {
                        r = -errno;
                        goto undo;
                }
                a.join_path[a.n_join++] = cg->dir[i];
        }
        *ret = a;
        return 0;
undo:
        orch_cgroup_attach_close(&a);
        return r;
}
