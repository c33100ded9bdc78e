/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "util.h"
#include "banned.h"

/*
 * The floor bench/spawn.sh compares with: the least a supervisor that confines its children can
 * do. A plain fork+exec loop that makes three new v1 cgroups per child (cpu, memory, pids; one
 * cgroup2 directory on a pure v2 host) and has the child write its pid to each cgroup.procs
 * before it execs: the classic shim. No state, no logs, no events, no limits. It then restarts a
 * child that dies, at once, into the same cgroups, and on SIGTERM or SIGINT kills every child and
 * removes every directory it made.
 *
 *   spawn-bare N PARENT CMD [ARG...]
 *
 * "{}" in an ARG becomes the child's name, bare-<i>. PARENT is made under each hierarchy's root.
 * Prints "started N in MS ms" once the loop has forked the last child (their exec comes later:
 * bench/stamp tells when).
 */

static const char *hier_v1[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"};
static const char *hier_v2[] = {"/sys/fs/cgroup"};
static const char **hier;
static size_t n_hier;

struct child {
        size_t idx;
        pid_t pid;
        int pidfd;
        char **argv;
};

static const char *parent;

static _noreturn_ void die(const char *what, int err)
{
        fprintf(stderr, "spawn-bare: %s: %s\n", what, strerror(err));
        exit(1);
}

static void cgroup_path(char *buf, size_t size, size_t h, const struct child *c, const char *file)
{
        if (!c)
                orch_snprintf(buf, size, "%s/%s", hier[h], parent);
        else if (!file)
                orch_snprintf(buf, size, "%s/%s/%zu", hier[h], parent, c->idx);
        else
                orch_snprintf(buf, size, "%s/%s/%zu/%s", hier[h], parent, c->idx, file);
}

/* fork, the child joins its cgroups by writing its pid to cgroup.procs in each, then exec. */
static void spawn(struct child *c, int ep)
{
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        char path[PATH_MAX];
        pid_t pid = fork();

        if (pid < 0)
                die("fork", errno);
        if (pid == 0) {
                sigset_t none;
                char s[16];
                int len = snprintf(s, sizeof s, "%d", (int)getpid());

                for (size_t h = 0; h < n_hier; h++) {
                        int fd;
                        cgroup_path(path, sizeof path, h, c, "cgroup.procs");
                        fd = open(path, O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, s, (size_t)len) != len)
                                _exit(126);
                        close(fd);
                }
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                execv(c->argv[0], c->argv);
                _exit(127);
        }
        c->pid = pid;
        c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (c->pidfd < 0)
                die("pidfd_open", errno);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->pidfd, &ev) < 0)
                die("epoll_ctl", errno);
}

static void reap(struct child *c, int ep)
{
        siginfo_t si;

        epoll_ctl(ep, EPOLL_CTL_DEL, c->pidfd, NULL);
        waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED);
        close(c->pidfd);
        c->pidfd = -1;
        c->pid = 0;
}

static void stop_all(struct child *cs, size_t n, int ep)
{
        char path[PATH_MAX];

        for (size_t i = 0; i < n; i++)
                if (cs[i].pidfd >= 0)
                        pidfd_send_signal(cs[i].pidfd, SIGKILL, NULL, 0);
        for (size_t i = 0; i < n; i++) {
                if (cs[i].pidfd >= 0)
                        reap(&cs[i], ep);
                for (size_t h = 0; h < n_hier; h++) {
                        cgroup_path(path, sizeof path, h, &cs[i], NULL);
                        rmdir(path);
                }
        }
        for (size_t h = 0; h < n_hier; h++) {
                cgroup_path(path, sizeof path, h, NULL, NULL);
                if (rmdir(path) < 0 && errno != ENOENT)
                        fprintf(stderr, "spawn-bare: cannot remove %s: %s\n", path, strerror(errno));
        }
}

int main(int argc, char **argv)
{
        struct statfs sfs;
        struct rlimit rl;
        struct child *cs;
        sigset_t mask;
        char path[PATH_MAX];
        uint32_t n;
        uint64_t t0;
        int ep, sfd;

        if (argc < 4 || orch_parse_u32(argv[1], &n) < 0 || n == 0) {
                fprintf(stderr, "usage: spawn-bare N PARENT CMD [ARG...]\n");
                return 2;
        }
        parent = argv[2];
        if (statfs("/sys/fs/cgroup", &sfs) < 0)
                die("statfs /sys/fs/cgroup", errno);
        if (sfs.f_type == CGROUP2_SUPER_MAGIC) {
                hier = hier_v2;
                n_hier = ELEMENTSOF(hier_v2);
        } else {
                hier = hier_v1;
                n_hier = ELEMENTSOF(hier_v1);
        }
        /* one pidfd per child */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        cs = calloc(n, sizeof *cs);
        if (!cs)
                die("calloc", ENOMEM);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        ep = epoll_create1(EPOLL_CLOEXEC);
        if (sfd < 0 || ep < 0)
                die("signalfd/epoll", errno);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &(struct epoll_event){.events = EPOLLIN, .data.ptr = NULL}) <
            0)
                die("epoll_ctl", errno);
        for (size_t h = 0; h < n_hier; h++) {
                cgroup_path(path, sizeof path, h, NULL, NULL);
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        die(path, errno);
        }

        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                struct child *c = &cs[i];
                char name[32];

                c->idx = i;
                c->pidfd = -1;
                c->argv = calloc((size_t)argc - 2, sizeof *c->argv);
                if (!c->argv)
                        die("calloc", ENOMEM);
                orch_snprintf(name, sizeof name, "bare-%zu", i);
                for (int k = 3; k < argc; k++)
                        c->argv[k - 3] = streq(argv[k], "{}") ? strdup(name) : argv[k];
                for (size_t h = 0; h < n_hier; h++) {
                        cgroup_path(path, sizeof path, h, c, NULL);
                        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                                die(path, errno);
                }
                spawn(c, ep);
        }
        printf("started %u in %.1f ms\n", n, (double)(orch_now_usec() - t0) / 1000.0);
        fflush(stdout);

        for (;;) {
                struct epoll_event evs[64];
                int k = epoll_wait(ep, evs, ELEMENTSOF(evs), -1);

                if (k < 0 && errno != EINTR)
                        die("epoll_wait", errno);
                for (int j = 0; j < k; j++) {
                        struct child *c = evs[j].data.ptr;

                        if (!c) {
                                stop_all(cs, n, ep);
                                return 0;
                        }
                        reap(c, ep);
                        spawn(c, ep);
                }
        }
}
