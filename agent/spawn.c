/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/sched.h>

#include "cgroup.h"
#include "spawn.h"
#include "util.h"
#include "banned.h"

/*
 * The child is created with CLONE_VM | CLONE_VFORK, as posix_spawn() and
 * systemd do: it shares the agent's memory instead of copying page tables, and
 * the agent is suspended until the child has exec'd or exited. Sharing memory
 * binds the child to async-signal-safe code: no malloc, no stdio, no locks,
 * and raw syscalls for setgroups/setresgid/setresuid (glibc's wrappers would
 * broadcast the change to the agent's threads, which the child is not). The
 * parent prepares every path, descriptor and exec candidate; the child reports
 * a failure by writing the step and errno into `struct child`, which the
 * parent reads after the clone returns.
 */

/* Where PATH is not in the instance's environment: confstr(_CS_PATH) plus /usr/local/bin. */
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

#if defined(__SANITIZE_ADDRESS__)
#define CHILD_STACK_SIZE (256 * 1024)
#else
#define CHILD_STACK_SIZE (64 * 1024)
#endif

enum step {
        STEP_NONE, /* died before reaching exec: killed by a signal */
        STEP_JOIN_CGROUP,
        STEP_SIGNALS,
        STEP_SETSID,
        STEP_STDIO,
        STEP_CLOSE_FDS,
        STEP_RLIMIT,
        STEP_NO_NEW_PRIVS,
        STEP_SETGROUPS,
        STEP_SETGID,
        STEP_SETUID,
        STEP_CHDIR,
        STEP_EXEC,
};

struct child {
        const struct orch_spawn_params *p;
        int stdio[3];
        /* v1: the `tasks` files to write "0" to; cgroup2 without CLONE_INTO_CGROUP: cgroup.procs for the
         * pid. */
        const int *join_fd;
        size_t n_join;
        int procs_fd;
        char *const *candidates;
        size_t n_candidates;
        bool path_search; /* argv[0] had no '/': the candidates come from PATH */
        /* Written by the child; read by the parent once the clone returns. */
        enum step step;
        int err;
        size_t index;
};

static _noreturn_ void child_fail(struct child *c, enum step step, int err, size_t index)
{
        c->step = step;
        c->err = err;
        c->index = index;
        _exit(127);
}

static size_t format_uint(char *buf, unsigned long v)
{
        char tmp[24];
        size_t n = 0;

        do {
                tmp[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v > 0);
        for (size_t i = 0; i < n; i++)
                buf[i] = tmp[n - 1 - i];
        return n;
}

static int write_all(int fd, const char *s, size_t len)
{
        ssize_t n;

        do
                n = write(fd, s, len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EIO;
}

/* Fallback for kernels without close_range() (before 5.9) or seccomp filters that refuse it: walk
 * /proc/self/fd with getdents64 (opendir would allocate). */
static int close_fds_by_scan(void)
{
        char buf[4096] __attribute__((aligned(8)));
        int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dfd < 0)
                return -errno;
        for (;;) {
                long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
                if (n < 0) {
                        int r = -errno;
                        close(dfd);
                        return r;
                }
                if (n == 0)
                        break;
                for (long off = 0; off < n;) {
                        /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
                        unsigned short reclen;
                        const char *name = buf + off + 19;
                        long fd = 0;

                        memcpy(&reclen, buf + off + 16, sizeof reclen);
                        for (; *name >= '0' && *name <= '9'; name++)
                                fd = fd * 10 + (*name - '0');
                        if (*name == '\0' && name != buf + off + 19 && fd >= 3 && fd != dfd)
                                close((int)fd);
                        off += reclen;
                }
        }
        close(dfd);
        return 0;
}

#if defined(__x86_64__) || defined(__aarch64__)
/* The kernel's struct sigaction on these architectures. */
struct kernel_sigaction {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
};

/* The raw syscall: glibc's sigaction() refuses signals 32 and 33 (its own), which a launcher may have left
 * ignored, and an ignored signal stays ignored across exec. */
static int reset_signal(int sig)
{
        struct kernel_sigaction dfl = {.handler = SIG_DFL};

        return syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask) < 0 ? -errno : 0;
}
#else
static int reset_signal(int sig)
{
        struct sigaction dfl = {.sa_handler = SIG_DFL};

        /* glibc refuses its internal signals (32, 33) here: elsewhere they can stay as inherited. */
        return sigaction(sig, &dfl, NULL) < 0 && errno != EINVAL ? -errno : 0;
}
#endif

/* Runs in the child, on its own stack, sharing the agent's memory. Returns only through exec or _exit. */
static int child_main(void *arg)
{
        struct child *c = arg;
        const struct orch_spawn_params *p = c->p;
        sigset_t none;
        bool saw_eacces = false;
        size_t eacces_index = 0;
        int fd[3];

        /* First, before anything else runs: into the cgroup. */
        if (c->procs_fd >= 0) {
                char pid[24];
                size_t n = format_uint(pid, (unsigned long)getpid());
                int r = write_all(c->procs_fd, pid, n);
                if (r < 0)
                        child_fail(c, STEP_JOIN_CGROUP, -r, SIZE_MAX);
        }
        for (size_t i = 0; i < c->n_join; i++) {
                int r = write_all(c->join_fd[i], "0", 1);
                if (r < 0)
                        child_fail(c, STEP_JOIN_CGROUP, -r, i);
        }

        /* The agent blocked every signal around the clone; handlers it installed must not run in the
         * workload, and ignored signals would stay ignored across exec. */
        for (int sig = 1; sig < _NSIG; sig++) {
                int r;

                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                r = reset_signal(sig);
                if (r < 0)
                        child_fail(c, STEP_SIGNALS, -r, (size_t)sig);
        }

        if (setsid() < 0)
                child_fail(c, STEP_SETSID, errno, 0);

        /* A source below 3 that is not its own target could be overwritten by an earlier dup2: lift those
         * out of the way first. */
        for (int i = 0; i < 3; i++) {
                fd[i] = c->stdio[i];
                if (fd[i] < 3 && fd[i] != i) {
                        fd[i] = fcntl(fd[i], F_DUPFD_CLOEXEC, 3);
                        if (fd[i] < 0)
                                child_fail(c, STEP_STDIO, errno, (size_t)i);
                }
        }
        for (int i = 0; i < 3; i++) {
                int r = fd[i] == i ? fcntl(i, F_SETFD, 0) : dup2(fd[i], i);
                if (r < 0)
                        child_fail(c, STEP_STDIO, errno, (size_t)i);
        }
        /* Everything else goes, the cgroup files included (they have been written). Before the credentials
         * change: the fallback reads /proc/self/fd, which a process that changed uid may not. */
        if (close_range(3, ~0U, 0) < 0) {
                int r = errno == ENOSYS || errno == EPERM ? close_fds_by_scan() : -errno;
                if (r < 0)
                        child_fail(c, STEP_CLOSE_FDS, -r, 0);
        }

        if (p->nofile_limit > 0) {
                struct rlimit rl = {(rlim_t)p->nofile_limit, (rlim_t)p->nofile_limit};
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        child_fail(c, STEP_RLIMIT, errno, 0);
        }
        if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                child_fail(c, STEP_NO_NEW_PRIVS, errno, 0);
        if (p->set_ids) {
                if (syscall(SYS_setgroups, p->n_groups, p->groups) < 0)
                        child_fail(c, STEP_SETGROUPS, errno, 0);
                if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0)
                        child_fail(c, STEP_SETGID, errno, 0);
                if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0)
                        child_fail(c, STEP_SETUID, errno, 0);
        }
        /* After the uid change, so that the workload's user must be able to enter it. */
        if (chdir(p->workdir ? p->workdir : "/") < 0)
                child_fail(c, STEP_CHDIR, errno, 0);

        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                child_fail(c, STEP_SIGNALS, errno, 0);
        /* From here on a death without a report is an exec that did not return. */
        c->step = STEP_EXEC;
        for (size_t i = 0; i < c->n_candidates; i++) {
                execve(c->candidates[i], p->argv, p->envp);
                /* execvp's rules: keep looking past a missing or unusable entry, remember a permission
                 * error in case nothing better is found, stop at anything else. */
                switch (errno) {
                case EACCES:
                        if (!saw_eacces)
                                eacces_index = i;
                        saw_eacces = true;
                        break;
                case ENOENT:
                case ENOTDIR:
                case ESTALE:
                case ENODEV:
                case ETIMEDOUT:
                        break;
                default:
                        child_fail(c, STEP_EXEC, errno, i);
                }
        }
        if (saw_eacces)
                child_fail(c, STEP_EXEC, EACCES, eacces_index);
        child_fail(c, STEP_EXEC, ENOENT, c->path_search ? c->n_candidates : 0);
}

#if defined(__x86_64__)
/*
 * clone3() with CLONE_VM needs a trampoline: the child starts on the new
 * stack at the instruction after the syscall, so it must not return into this
 * function's frame. fn and arg travel in callee-saved registers, which the
 * child inherits. glibc 2.36 has no public clone3() (2.39's
 * posix_spawnattr_setcgroup_np() does this internally).
 */
static pid_t clone3_vm(struct clone_args *args, int (*fn)(void *), void *arg)
{
        register void *r12 __asm__("r12") = (void *)fn;
        register void *r13 __asm__("r13") = arg;
        long ret;

        __asm__ volatile("syscall\n\t"
                         "testq %%rax, %%rax\n\t"
                         "jnz 1f\n\t"
                         "xorl %%ebp, %%ebp\n\t"
                         "movq %%r13, %%rdi\n\t"
                         "callq *%%r12\n\t"
                         "movl %%eax, %%edi\n\t"
                         "movl %[exit], %%eax\n\t"
                         "syscall\n\t"
                         "hlt\n\t"
                         "1:\n\t"
                         : "=a"(ret)
                         : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r12),
                           "r"(r13), [exit] "i"(SYS_exit)
                         : "rcx", "r11", "memory");
        if (ret < 0) {
                errno = (int)-ret;
                return -1;
        }
        return (pid_t)ret;
}
#define HAVE_CLONE3_VM 1
#else
/* Elsewhere the child joins its cgroup2 cgroup by writing cgroup.procs, as on kernels without clone3. */
#define HAVE_CLONE3_VM 0
#endif

/* Set once clone3 or CLONE_INTO_CGROUP turned out to be missing (kernel before 5.7, a seccomp filter). */
static bool clone3_unavailable;

static void candidates_free(char **v, size_t n)
{
        for (size_t i = 0; v && i < n; i++)
                free(v[i]);
        free(v);
}

static const char *env_path(char *const *envp)
{
        for (; envp && *envp; envp++) {
                const char *v = startswith(*envp, "PATH=");
                if (v)
                        return v;
        }
        return DEFAULT_PATH;
}

/* Every path the child will try for argv[0], in PATH order (the PATH of the instance, not the agent's). */
static int build_candidates(const char *name, const char *path, char ***ret, size_t *ret_n)
{
        char **v = NULL;
        size_t n = 0;

        if (strlen(name) > PATH_MAX)
                return -ENAMETOOLONG;
        if (strchr(name, '/')) {
                v = calloc(1, sizeof *v);
                if (!v || !(v[0] = strdup(name))) {
                        free(v);
                        return -ENOMEM;
                }
                *ret = v;
                *ret_n = 1;
                return 0;
        }
        if (strlen(name) > NAME_MAX)
                return -ENAMETOOLONG;
        for (const char *p = path; *p;) {
                size_t len = strcspn(p, ":");

                /* An empty entry would mean the working directory: skipped, a workload names its own. */
                if (len > 0) {
                        char **nv = realloc(v, (n + 1) * sizeof *nv);
                        if (!nv) {
                                candidates_free(v, n);
                                return -ENOMEM;
                        }
                        v = nv;
                        v[n] = orch_strdup_printf("%.*s/%s", (int)len, p, name);
                        if (!v[n]) {
                                candidates_free(v, n);
                                return -ENOMEM;
                        }
                        n++;
                }
                p += len;
                if (*p == ':')
                        p++;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static void format_groups(const struct orch_spawn_params *p, char *buf, size_t size)
{
        struct orch_buf b = {0};

        orch_buf_putc(&b, '[');
        for (size_t i = 0; i < p->n_groups; i++)
                orch_buf_printf(&b, "%s%u", i ? " " : "", (unsigned)p->groups[i]);
        orch_buf_putc(&b, ']');
        orch_strlcpy(buf, b.oom ? "[...]" : b.data, size);
        orch_buf_release(&b);
}

static void describe_failure(const struct child *c, const struct orch_cgroup_attach *a,
                             const char *path_value, const siginfo_t *si, char *reason, size_t size)
{
        const struct orch_spawn_params *p = c->p;
        const char *err = strerror(c->err);
        char groups[128];

        switch (c->step) {
        case STEP_NONE:
                if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
                        orch_snprintf(reason, size, "the child was killed by SIG%s before it could exec %s",
                                      strempty(sigabbrev_np(si->si_status)), p->argv[0]);
                else
                        orch_snprintf(reason, size,
                                      "the child exited with status %d before it could exec %s",
                                      si->si_status, p->argv[0]);
                break;
        case STEP_JOIN_CGROUP:
                orch_snprintf(reason, size, "join cgroup %s: %s",
                              c->index == SIZE_MAX ? a->clone_path : a->join_path[c->index], err);
                break;
        case STEP_SIGNALS:
                orch_snprintf(reason, size, "reset signal %zu: %s", c->index, err);
                break;
        case STEP_SETSID:
                orch_snprintf(reason, size, "setsid: %s", err);
                break;
        case STEP_STDIO:
                orch_snprintf(reason, size, "set up %s from fd %d: %s",
                              c->index == 0   ? "stdin"
                              : c->index == 1 ? "stdout"
                                              : "stderr",
                              c->stdio[c->index], err);
                break;
        case STEP_CLOSE_FDS:
                orch_snprintf(reason, size, "close inherited descriptors: %s", err);
                break;
        case STEP_RLIMIT:
                orch_snprintf(reason, size, "setrlimit NOFILE %d: %s", p->nofile_limit, err);
                break;
        case STEP_NO_NEW_PRIVS:
                orch_snprintf(reason, size, "set no_new_privs: %s", err);
                break;
        case STEP_SETGROUPS:
                format_groups(p, groups, sizeof groups);
                orch_snprintf(reason, size, "setgroups %s: %s", groups, err);
                break;
        case STEP_SETGID:
                orch_snprintf(reason, size, "setgid %u: %s", (unsigned)p->gid, err);
                break;
        case STEP_SETUID:
                orch_snprintf(reason, size, "setuid %u: %s", (unsigned)p->uid, err);
                break;
        case STEP_CHDIR:
                orch_snprintf(reason, size, "chdir %s: %s", p->workdir ? p->workdir : "/", err);
                break;
        case STEP_EXEC:
                if (c->index < c->n_candidates)
                        orch_snprintf(reason, size, "exec %s: %s", c->candidates[c->index], err);
                else
                        orch_snprintf(reason, size, "exec %s: not found in PATH=%s: %s", p->argv[0],
                                      path_value, err);
                break;
        }
}

int orch_spawn(const struct orch_spawn_params *p, struct orch_spawn_result *ret, char *reason,
               size_t reason_size)
{
        struct orch_cgroup_attach a = {.clone_fd = -1};
        struct child c = {.p = p, .procs_fd = -1};
        _cleanup_(closep) int devnull = -1;
        _cleanup_(closep) int procs_fd = -1;
        char **candidates = NULL;
        size_t n_candidates = 0;
        const char *path_value;
        sigset_t all, saved;
        void *stack = MAP_FAILED;
        int pidfd = -1, r;
        pid_t pid = -1;
        bool into_cgroup;

        if (!p->argv || !p->argv[0] || !*p->argv[0] || !p->envp) {
                orch_snprintf(reason, reason_size, "spawn: empty command or no environment");
                return -EINVAL;
        }
        path_value = env_path(p->envp);
        r = build_candidates(p->argv[0], path_value, &candidates, &n_candidates);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "exec %s: %s", p->argv[0], strerror(-r));
                return r;
        }

        c.stdio[0] = p->stdin_fd;
        c.stdio[1] = p->stdout_fd;
        c.stdio[2] = p->stderr_fd;
        if (c.stdio[0] < 0 || c.stdio[1] < 0 || c.stdio[2] < 0) {
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
                if (devnull < 0) {
                        r = -errno;
                        orch_snprintf(reason, reason_size, "open /dev/null: %s", strerror(-r));
                        goto out;
                }
                for (int i = 0; i < 3; i++)
                        if (c.stdio[i] < 0)
                                c.stdio[i] = devnull;
        }

        if (p->cgroup) {
                r = orch_cgroup_attach_open(p->cgroup, &a);
                if (r < 0) {
                        orch_snprintf(reason, reason_size, "open cgroup %s: %s", orch_cgroup_path(p->cgroup),
                                      strerror(-r));
                        goto out;
                }
        }
        into_cgroup =
                a.clone_fd >= 0 && HAVE_CLONE3_VM && !__atomic_load_n(&clone3_unavailable, __ATOMIC_RELAXED);
        if (a.clone_path && !into_cgroup) {
                _cleanup_(freep) char *procs = orch_strdup_printf("%s/cgroup.procs", a.clone_path);
                if (!procs) {
                        r = -ENOMEM;
                        goto out;
                }
                procs_fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOCTTY);
                if (procs_fd < 0) {
                        r = -errno;
                        orch_snprintf(reason, reason_size, "open %s: %s", procs, strerror(-r));
                        goto out;
                }
        }
        c.join_fd = a.join_fd;
        c.n_join = a.n_join;
        c.procs_fd = procs_fd;
        c.candidates = candidates;
        c.n_candidates = n_candidates;
        c.path_search = !strchr(p->argv[0], '/');

        stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                     -1, 0);
        if (stack == MAP_FAILED) {
                r = -errno;
                orch_snprintf(reason, reason_size, "allocate the child's stack: %s", strerror(-r));
                goto out;
        }

        /* No handler of the agent may run in the child while it shares the agent's memory: block
         * everything until the child has exec'd; it resets the mask for itself. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &saved);
#if HAVE_CLONE3_VM
        if (into_cgroup) {
                struct clone_args args = {
                        .flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP,
                        .pidfd = (uint64_t)(uintptr_t)&pidfd,
                        .exit_signal = SIGCHLD,
                        .stack = (uint64_t)(uintptr_t)stack,
                        .stack_size = CHILD_STACK_SIZE,
                        .cgroup = (uint64_t)a.clone_fd,
                };

                pid = clone3_vm(&args, child_main, &c);
                if (pid < 0 && (errno == ENOSYS || errno == E2BIG)) {
                        /* No clone3, or one too old for CLONE_INTO_CGROUP: the child writes cgroup.procs. */
                        __atomic_store_n(&clone3_unavailable, true, __ATOMIC_RELAXED);
                        pthread_sigmask(SIG_SETMASK, &saved, NULL);
                        munmap(stack, CHILD_STACK_SIZE);
                        candidates_free(candidates, n_candidates);
                        orch_cgroup_attach_close(&a);
                        return orch_spawn(p, ret, reason, reason_size);
                }
        } else
#endif
                pid = clone(child_main, (char *)stack + CHILD_STACK_SIZE,
                            CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &c, &pidfd);
        r = pid < 0 ? -errno : 0;
        pthread_sigmask(SIG_SETMASK, &saved, NULL);

        if (r < 0) {
                if (into_cgroup)
                        orch_snprintf(reason, reason_size, "clone3 into cgroup %s: %s", a.clone_path,
                                      strerror(-r));
                else
                        orch_snprintf(reason, reason_size, "clone: %s", strerror(-r));
                goto out;
        }
        if (c.err != 0 || c.step != STEP_EXEC) {
                siginfo_t si = {0};

                /* The child is ours and has exited (or is about to): reap it so nothing is left. */
                while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
                        ;
                close(pidfd);
                describe_failure(&c, &a, path_value, &si, reason, reason_size);
                r = c.err != 0 ? -c.err : -ECHILD;
                goto out;
        }
        ret->pid = pid;
        ret->pidfd = pidfd;
        r = 0;
out:
        if (stack != MAP_FAILED)
                munmap(stack, CHILD_STACK_SIZE);
        candidates_free(candidates, n_candidates);
        orch_cgroup_attach_close(&a);
        return r;
}
