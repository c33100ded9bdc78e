/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <libcgroup.h>

#include "cgroup.h"
#include "spawn.h"
#include "util.h"
#include "banned.h"

/*
 * The confinement layer of the exec driver, measured (docs/agent.md):
 *   create   N instance cgroups with limits: orch's direct file I/O against
 *            libcgroup's cgroup_create_cgroup() (v1 hierarchies)
 *   spawn    N processes into N fresh cgroups, then stop and remove them all
 *   restart  after an idle period: SIGKILL of an instance to its replacement's
 *            exec (the pidfd wake-up, reaping, the cgroup check and the spawn)
 *   baseline after the same idle period: the classic shim, fork + the pid
 *            written to each v1 hierarchy's cgroup.procs + exec
 *   threads  the N spawns from T threads at once (--threads T): orch_spawn()
 *            blocks its thread until the child has exec'd, and under CPU
 *            contention that is mostly the child waiting for a CPU, which
 *            spawns from several threads overlap
 * usage: spawn-confine [N] [IDLE_MS] [ROUNDS] [--v1-only] [--threads T]
 * Everything it makes lives under /orch-bench-<pid> and is removed at exit.
 */

static char parent[64];
static char *const sleep_argv[] = {"sleep", "3600", NULL};
static char *const env[] = {"PATH=/usr/bin:/bin", NULL};

static double ms_since(uint64_t t0)
{
        return (double)(orch_now_usec() - t0) / 1000.0;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static void print_dist(const char *what, double *v, size_t n)
{
        qsort(v, n, sizeof *v, cmp_double);
        printf("%-44s p50 %7.3f ms  p90 %7.3f ms  min %7.3f  max %7.3f  (%zu runs)\n", what, v[n / 2],
               v[n * 9 / 10], v[0], v[n - 1], n);
}

/* CPU time of this process (user + system): what the agent itself spends, whatever the scheduler does. */
static double cpu_ms(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

static long rss_kib(void)
{
        _cleanup_(freep) char *text = NULL;
        const char *p;

        if (orch_read_file("/proc/self/status", 65536, &text, NULL) < 0 || !(p = strstr(text, "VmRSS:")))
                return -1;
        return strtol(p + 6, NULL, 10);
}

static void die(const char *what, int r, const char *reason)
{
        fprintf(stderr, "spawn-confine: %s: %s\n", what, reason && *reason ? reason : strerror(-r));
        exit(1);
}

static void remove_everything(void)
{
        struct orch_cgroup_root *root = NULL;
        struct orch_cgroup_name *names = NULL;
        size_t n = 0;
        char reason[512];

        if (!parent[0] || orch_cgroup_root_open(parent, 0, &root, reason, sizeof reason) < 0)
                return;
        if (orch_cgroup_list(root, &names, &n) == 0)
                for (size_t i = 0; i < n; i++) {
                        struct orch_cgroup *cg = NULL;
                        if (orch_cgroup_open(root, names[i].service, names[i].instance, &cg) == 0 &&
                            orch_cgroup_remove(cg, reason, sizeof reason) < 0)
                                fprintf(stderr, "spawn-confine: cleanup: %s\n", reason);
                        orch_cgroup_free(cg);
                }
        orch_cgroup_names_free(names, n);
        if (orch_cgroup_root_remove(root, reason, sizeof reason) < 0)
                fprintf(stderr, "spawn-confine: cleanup: %s\n", reason);
        orch_cgroup_root_free(root);
}

static void on_signal(int sig)
{
        remove_everything();
        signal(sig, SIG_DFL);
        raise(sig);
}

static struct orch_spawn_result spawn(struct orch_cgroup *cg)
{
        struct orch_spawn_params p = {
                .argv = sleep_argv,
                .envp = env,
                .stdin_fd = -1,
                .stdout_fd = -1,
                .stderr_fd = -1,
                .cgroup = cg,
        };
        struct orch_spawn_result res;
        char reason[512] = "";
        int r = orch_spawn(&p, &res, reason, sizeof reason);

        if (r < 0)
                die("spawn", r, reason);
        return res;
}

static const struct orch_cgroup_limits limits = {
        .cpu_millis = 100, .memory_bytes = 64ULL << 20, .pids_max = 64};

static void bench_create(struct orch_cgroup_root *root, size_t n)
{
        struct orch_cgroup **cgs = calloc(n, sizeof *cgs);
        char name[32], reason[512];
        uint64_t t0;
        int r;

        if (!cgs)
                die("calloc", -ENOMEM, NULL);
        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                orch_snprintf(name, sizeof name, "i%zu", i);
                r = orch_cgroup_create(root, "create", name, &limits, &cgs[i], reason, sizeof reason);
                if (r < 0)
                        die("create", r, reason);
        }
        printf("%-44s %8.1f ms\n", "create N cgroups with limits (orch, direct)", ms_since(t0));
        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                r = orch_cgroup_remove(cgs[i], reason, sizeof reason);
                if (r < 0)
                        die("remove", r, reason);
                orch_cgroup_free(cgs[i]);
        }
        printf("%-44s %8.1f ms\n", "remove them (kill check, rmdir, verify)", ms_since(t0));
        free(cgs);
}

/* The same cgroups and values through libcgroup, v1 hierarchies only (it does not translate names for v2).
 */
static void bench_create_libcgroup(struct orch_cgroup_root *root, size_t n)
{
        static const char *const ctrls[] = {"cpu", "cpuacct", "memory", "pids"};
        char name[PATH_MAX], path[PATH_MAX];
        uint64_t t0;
        int r;

        if (orch_cgroup_root_mode(root) == ORCH_CGROUP_V2) {
                printf("%-44s (v1 names only: skipped on cgroup2)\n",
                       "create N cgroups with limits (libcgroup)");
                return;
        }
        r = cgroup_init();
        if (r != 0)
                die("cgroup_init", -EIO, cgroup_strerror(r));
        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                struct cgroup *cg;
                struct cgroup_controller *c;

                orch_snprintf(name, sizeof name, "%s/libcgroup/i%zu", parent + 1, i);
                cg = cgroup_new_cgroup(name);
                if (!cg)
                        die("cgroup_new_cgroup", -ENOMEM, NULL);
                c = cgroup_add_controller(cg, "cpu");
                cgroup_add_value_string(c, "cpu.cfs_period_us", "100000");
                cgroup_add_value_string(c, "cpu.cfs_quota_us", "10000");
                cgroup_add_controller(cg, "cpuacct");
                c = cgroup_add_controller(cg, "memory");
                cgroup_add_value_string(c, "memory.limit_in_bytes", "67108864");
                cgroup_add_value_string(c, "memory.memsw.limit_in_bytes", "67108864");
                c = cgroup_add_controller(cg, "pids");
                cgroup_add_value_string(c, "pids.max", "64");
                r = cgroup_create_cgroup(cg, 1);
                cgroup_free(&cg);
                if (r != 0)
                        die("cgroup_create_cgroup", -EIO, cgroup_strerror(r));
        }
        printf("%-44s %8.1f ms\n", "create N cgroups with limits (libcgroup)", ms_since(t0));
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < ELEMENTSOF(ctrls); k++) {
                        orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s%s/libcgroup/i%zu", ctrls[k],
                                      parent, i);
                        rmdir(path);
                }
        for (size_t k = 0; k < ELEMENTSOF(ctrls); k++) {
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s%s/libcgroup", ctrls[k], parent);
                rmdir(path);
        }
}

struct spawn_job {
        struct orch_cgroup **cgs;
        int *pidfds;
        size_t n, first, step;
};

static void *spawn_worker(void *arg)
{
        struct spawn_job *job = arg;

        for (size_t i = job->first; i < job->n; i += job->step)
                job->pidfds[i] = spawn(job->cgs[i]).pidfd;
        return NULL;
}

static void bench_spawn(struct orch_cgroup_root *root, size_t n, unsigned threads)
{
        struct orch_cgroup **cgs = calloc(n, sizeof *cgs);
        int *pidfds = calloc(n, sizeof *pidfds);
        struct spawn_job *jobs = calloc(threads, sizeof *jobs);
        pthread_t *tids = calloc(threads, sizeof *tids);
        char name[32], reason[512], label[64];
        uint64_t t0, t1;
        long rss0 = rss_kib();
        double cpu0;
        int r;

        if (!cgs || !pidfds || !jobs || !tids)
                die("calloc", -ENOMEM, NULL);
        cpu0 = cpu_ms();
        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                orch_snprintf(name, sizeof name, "i%zu", i);
                r = orch_cgroup_create(root, "spawn", name, &limits, &cgs[i], reason, sizeof reason);
                if (r < 0)
                        die("create", r, reason);
        }
        t1 = orch_now_usec();
        for (unsigned k = 0; k < threads; k++) {
                jobs[k] = (struct spawn_job){
                        .cgs = cgs, .pidfds = pidfds, .n = n, .first = k, .step = threads};
                r = pthread_create(&tids[k], NULL, spawn_worker, &jobs[k]);
                if (r != 0)
                        die("pthread_create", -r, NULL);
        }
        for (unsigned k = 0; k < threads; k++)
                pthread_join(tids[k], NULL);
        orch_snprintf(label, sizeof label, "N instances running, %u thread%s", threads,
                      threads > 1 ? "s" : "");
        printf("%-44s %8.1f ms (cgroups %.1f ms, spawns %.1f ms)\n", label, ms_since(t0),
               (double)(t1 - t0) / 1000.0, ms_since(t1));
        printf("%-44s %8.1f ms\n", "  of which CPU time of this process", cpu_ms() - cpu0);
        printf("%-44s %8ld KiB (+%ld KiB for N instances' objects and pidfds)\n", "bench process RSS",
               rss_kib(), rss_kib() - rss0);
        /* As an agent stops everything: signal all, then remove each as it empties. */
        t0 = orch_now_usec();
        for (size_t i = 0; i < n; i++) {
                r = orch_cgroup_kill(cgs[i], 0, reason, sizeof reason);
                if (r < 0 && r != -EBUSY)
                        die("kill", r, reason);
        }
        for (size_t i = 0; i < n; i++) {
                siginfo_t si;

                r = orch_cgroup_remove(cgs[i], reason, sizeof reason);
                if (r < 0)
                        die("remove", r, reason);
                waitid(P_PIDFD, (id_t)pidfds[i], &si, WEXITED);
                close(pidfds[i]);
                orch_cgroup_free(cgs[i]);
        }
        printf("%-44s %8.1f ms\n", "N instances stopped (kill, reap, rmdir)", ms_since(t0));
        free(cgs);
        free(pidfds);
        free(jobs);
        free(tids);
}

static void bench_restart(struct orch_cgroup_root *root, unsigned idle_ms, size_t rounds)
{
        double *v = calloc(rounds, sizeof *v);
        struct orch_cgroup *cg;
        struct orch_spawn_result res;
        char reason[512], label[64];
        int r;

        if (!v)
                die("calloc", -ENOMEM, NULL);
        r = orch_cgroup_create(root, "restart", "i", &limits, &cg, reason, sizeof reason);
        if (r < 0)
                die("create", r, reason);
        res = spawn(cg);
        for (size_t i = 0; i < rounds; i++) {
                struct pollfd pfd = {.fd = res.pidfd, .events = POLLIN};
                siginfo_t si;
                uint64_t t0;

                usleep(idle_ms * 1000);
                t0 = orch_now_usec();
                pidfd_send_signal(res.pidfd, SIGKILL, NULL, 0);
                poll(&pfd, 1, -1);
                waitid(P_PIDFD, (id_t)res.pidfd, &si, WEXITED);
                close(res.pidfd);
                r = orch_cgroup_kill(cg, 0, reason, sizeof reason);
                if (r < 0)
                        die("kill", r, reason);
                res = spawn(cg);
                v[i] = ms_since(t0);
        }
        orch_snprintf(label, sizeof label, "restart after %u ms idle (SIGKILL to exec)", idle_ms);
        print_dist(label, v, rounds);
        if (orch_cgroup_remove(cg, reason, sizeof reason) < 0)
                die("remove", -EBUSY, reason);
        close(res.pidfd);
        orch_cgroup_free(cg);
        free(v);
}

/* The classic v1 shim: fork, write the pid to cgroup.procs of each hierarchy, exec. Timed to the exec (the
 * close-on-exec pipe reaches EOF). */
static void bench_baseline(unsigned idle_ms, size_t rounds)
{
        static const char *const ctrls[] = {"cpu", "cpuacct", "memory", "pids"};
        double *v = calloc(rounds, sizeof *v);
        char path[PATH_MAX], label[64];
        int fds[ELEMENTSOF(ctrls)];

        if (!v)
                die("calloc", -ENOMEM, NULL);
        for (size_t k = 0; k < ELEMENTSOF(ctrls); k++) {
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s%s/baseline", ctrls[k], parent);
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        die(path, -errno, NULL);
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s%s/baseline/cgroup.procs", ctrls[k],
                              parent);
                fds[k] = open(path, O_WRONLY | O_CLOEXEC);
                if (fds[k] < 0)
                        die(path, -errno, NULL);
        }
        for (size_t i = 0; i < rounds; i++) {
                int p[2];
                char c;
                pid_t pid;
                uint64_t t0;

                usleep(idle_ms * 1000);
                if (pipe2(p, O_CLOEXEC) < 0)
                        die("pipe", -errno, NULL);
                t0 = orch_now_usec();
                pid = fork();
                if (pid == 0) {
                        char s[16];
                        int len = snprintf(s, sizeof s, "%d", (int)getpid());
                        for (size_t k = 0; k < ELEMENTSOF(ctrls); k++)
                                if (write(fds[k], s, (size_t)len) < 0)
                                        _exit(126);
                        execve("/bin/true", (char *const[]){"true", NULL}, env);
                        _exit(127);
                }
                close(p[1]);
                (void)!read(p[0], &c, 1);
                v[i] = ms_since(t0);
                close(p[0]);
                waitpid(pid, NULL, 0);
        }
        orch_snprintf(label, sizeof label, "baseline: fork+cgroup.procs after %u ms idle", idle_ms);
        print_dist(label, v, rounds);
        for (size_t k = 0; k < ELEMENTSOF(ctrls); k++) {
                close(fds[k]);
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s%s/baseline", ctrls[k], parent);
                rmdir(path);
        }
        free(v);
}

int main(int argc, char **argv)
{
        size_t n = 1000, rounds = 21;
        unsigned idle_ms = 200, flags = 0, threads = 1;
        struct orch_cgroup_root *root = NULL;
        char reason[512];
        int r, pos = 0;

        for (int i = 1; i < argc; i++) {
                uint32_t v;
                if (streq(argv[i], "--v1-only"))
                        flags |= ORCH_CGROUP_ROOT_V1_ONLY;
                else if (streq(argv[i], "--threads") && i + 1 < argc &&
                         orch_parse_u32(argv[i + 1], &v) == 0 && v > 0 && v <= 256) {
                        threads = v;
                        i++;
                } else if (orch_parse_u32(argv[i], &v) == 0 && v > 0 && pos < 3) {
                        if (pos == 0)
                                n = v;
                        else if (pos == 1)
                                idle_ms = v;
                        else
                                rounds = v;
                        pos++;
                } else {
                        fprintf(stderr,
                                "usage: spawn-confine [N] [IDLE_MS] [ROUNDS] [--v1-only] [--threads T]\n");
                        return 2;
                }
        }
        if (geteuid() != 0) {
                fprintf(stderr, "spawn-confine: needs root to create cgroups\n");
                return 77;
        }
        orch_snprintf(parent, sizeof parent, "/orch-bench-%d", (int)getpid());
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        atexit(remove_everything);
        r = orch_cgroup_root_open(parent, flags, &root, reason, sizeof reason);
        if (r < 0)
                die("cgroup root", r, reason);
        {
                _cleanup_(freep) char *load = NULL;

                if (orch_read_file("/proc/loadavg", 4096, &load, NULL) < 0)
                        load = NULL;
                printf("cgroup mode %s, N = %zu, idle %u ms, %zu rounds, %ld CPUs, loadavg %s",
                       orch_cgroup_mode_to_string(orch_cgroup_root_mode(root)), n, idle_ms, rounds,
                       sysconf(_SC_NPROCESSORS_ONLN), load ? load : "?\n");
        }
        bench_create(root, n);
        bench_create_libcgroup(root, n);
        bench_spawn(root, n, 1);
        if (threads > 1)
                bench_spawn(root, n, threads);
        bench_restart(root, idle_ms, rounds);
        if (orch_cgroup_root_mode(root) != ORCH_CGROUP_V2)
                bench_baseline(idle_ms, rounds);
        orch_cgroup_root_free(root);
        return 0;
}
