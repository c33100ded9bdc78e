/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup.h"
#include "spawn.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * Real cgroups and real processes. Every cgroup lives under /orch-test-<pid>
 * of the test runner in each hierarchy; the unchecked teardown (run by the
 * runner, also after a failed or timed-out test) kills whatever is left there
 * and removes the directories, with code of its own rather than the code under
 * test. The loop tests run once on the host as it is (hybrid here) and once
 * with its cgroup2 hierarchy ignored (the v1 paths).
 */

static char test_parent[64];
static const unsigned modes[] = {0, ORCH_CGROUP_ROOT_V1_ONLY};
static const char *const mode_label[] = {"host", "v1-only"};

static void kill_tree(const char *dir, bool *ret_any)
{
        _cleanup_(freep) char *procs = NULL;
        char path[PATH_MAX];
        DIR *d;
        struct dirent *de;

        orch_snprintf(path, sizeof path, "%s/cgroup.procs", dir);
        if (orch_read_file(path, 1 << 20, &procs, NULL) == 0)
                for (char *s = procs, *end; *s; s = end) {
                        long pid = strtol(s, &end, 10);
                        if (end == s)
                                break;
                        if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
                                *ret_any = true;
                }
        d = opendir(dir);
        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_type == DT_DIR && !streq(de->d_name, ".") && !streq(de->d_name, "..")) {
                        orch_snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                        kill_tree(path, ret_any);
                }
        closedir(d);
}

static void rmdir_tree(const char *dir)
{
        char path[PATH_MAX];
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_type == DT_DIR && !streq(de->d_name, ".") && !streq(de->d_name, "..")) {
                        orch_snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                        rmdir_tree(path);
                }
        closedir(d);
        for (int i = 0; i < 100 && rmdir(dir) < 0 && errno == EBUSY; i++)
                usleep(10000);
}

static void nuke(const char *dir)
{
        for (int round = 0; round < 200; round++) {
                bool any = false;
                kill_tree(dir, &any);
                if (!any)
                        break;
                usleep(10000);
        }
        rmdir_tree(dir);
}

static void setup(void)
{
        if (!test_parent[0])
                orch_snprintf(test_parent, sizeof test_parent, "/orch-test-%d", (int)getpid());
}

static void teardown(void)
{
        static const char *const bases[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
        char path[PATH_MAX];

        for (size_t b = 0; b < ELEMENTSOF(bases); b++) {
                DIR *d = opendir(bases[b]);
                struct dirent *de;

                orch_snprintf(path, sizeof path, "%s%s", bases[b], test_parent);
                nuke(path);
                if (!d)
                        continue;
                while ((de = readdir(d)))
                        if (de->d_type == DT_DIR && de->d_name[0] != '.') {
                                orch_snprintf(path, sizeof path, "%s/%s%s", bases[b], de->d_name,
                                              test_parent);
                                nuke(path);
                        }
                closedir(d);
        }
}

static struct orch_cgroup_root *open_root(unsigned flags)
{
        struct orch_cgroup_root *root = NULL;
        char reason[512] = "";
        int r = orch_cgroup_root_open(test_parent, flags, &root, reason, sizeof reason);

        ck_assert_msg(r == 0, "root_open %s: %s (%s)", test_parent, reason, strerror(-r));
        return root;
}

static struct orch_cgroup *create(struct orch_cgroup_root *root, const char *service, const char *instance,
                                  const struct orch_cgroup_limits *limits)
{
        static const struct orch_cgroup_limits none = {0};
        struct orch_cgroup *cg = NULL;
        char reason[512] = "";
        int r = orch_cgroup_create(root, service, instance, limits ? limits : &none, &cg, reason,
                                   sizeof reason);

        ck_assert_msg(r == 0, "create %s/%s: %s (%s)", service, instance, reason, strerror(-r));
        return cg;
}

static pid_t spawn_in(struct orch_cgroup *cg, const char *script, int *ret_pidfd)
{
        char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
        static char *const env[] = {"PATH=/usr/bin:/bin", NULL};
        struct orch_spawn_params p = {
                .argv = argv,
                .envp = env,
                .stdin_fd = -1,
                .stdout_fd = -1,
                .stderr_fd = -1,
                .cgroup = cg,
        };
        struct orch_spawn_result res;
        char reason[512] = "";
        int r = orch_spawn(&p, &res, reason, sizeof reason);

        ck_assert_msg(r == 0, "spawn %s: %s", script, reason);
        *ret_pidfd = res.pidfd;
        return res.pid;
}

/* The directory of the instance in each hierarchy, from /proc/<pid>/cgroup of a process inside it. */
static size_t instance_dirs(pid_t pid, char dirs[][PATH_MAX], size_t max)
{
        _cleanup_(freep) char *text = NULL;
        char path[64];
        size_t n = 0;
        bool v2_host = false;
        struct statfs s;

        if (statfs("/sys/fs/cgroup", &s) == 0 && (unsigned long)s.f_type == CGROUP2_SUPER_MAGIC)
                v2_host = true;
        orch_snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
        ck_assert_int_eq(orch_read_file(path, 65536, &text, NULL), 0);
        for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
                char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2 || !strstr(c2 + 1, test_parent))
                        continue;
                *c2 = '\0';
                if (c2 == c1 + 1)
                        orch_snprintf(dirs[n++], PATH_MAX, "%s%s",
                                      v2_host ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified", c2 + 1);
                else
                        orch_snprintf(dirs[n++], PATH_MAX, "/sys/fs/cgroup/%s%s", c1 + 1, c2 + 1);
        }
        return n;
}

static bool exists(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0;
}

static bool pidfd_exited(int pidfd, int timeout_ms)
{
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        return poll(&pfd, 1, timeout_ms) == 1;
}

static void remove_ok(struct orch_cgroup *cg)
{
        char reason[512] = "";
        int r = orch_cgroup_remove(cg, reason, sizeof reason);

        ck_assert_msg(r == 0, "remove %s: %s", orch_cgroup_path(cg), reason);
}

static char *read_trimmed(const char *dir, const char *file)
{
        char path[PATH_MAX];
        char *text = NULL;

        orch_snprintf(path, sizeof path, "%s/%s", dir, file);
        ck_assert_msg(orch_read_file(path, 65536, &text, NULL) == 0, "read %s", path);
        text[strcspn(text, "\n")] = '\0';
        return text;
}

static void expect_file(const char *dir, const char *file, const char *want)
{
        char *v = read_trimmed(dir, file);

        ck_assert_msg(streq(v, want), "%s/%s: \"%s\", expected \"%s\"", dir, file, v, want);
        free(v);
}

START_TEST(test_detect)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        enum orch_cgroup_mode m = orch_cgroup_root_mode(root);
        unsigned c = orch_cgroup_root_controllers(root);
        struct statfs s;

        ck_assert_int_eq(statfs("/sys/fs/cgroup", &s), 0);
        if ((unsigned long)s.f_type == CGROUP2_SUPER_MAGIC)
                ck_assert_int_eq(m, ORCH_CGROUP_V2);
        else if (modes[_i] & ORCH_CGROUP_ROOT_V1_ONLY)
                ck_assert_int_eq(m, ORCH_CGROUP_V1);
        else
                ck_assert_int_eq(m, statfs("/sys/fs/cgroup/unified", &s) == 0 &&
                                                    (unsigned long)s.f_type == CGROUP2_SUPER_MAGIC
                                            ? ORCH_CGROUP_HYBRID
                                            : ORCH_CGROUP_V1);
        printf("cgroup mode %s (%s), controllers:%s%s%s%s\n", orch_cgroup_mode_to_string(m), mode_label[_i],
               c & ORCH_CGROUP_MASK(ORCH_CGROUP_CPU) ? " cpu" : "",
               c & ORCH_CGROUP_MASK(ORCH_CGROUP_CPUACCT) ? " cpuacct" : "",
               c & ORCH_CGROUP_MASK(ORCH_CGROUP_MEMORY) ? " memory" : "",
               c & ORCH_CGROUP_MASK(ORCH_CGROUP_PIDS) ? " pids" : "");
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_bad_names)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits none = {0};
        struct orch_cgroup *cg = NULL;
        char reason[256] = "";
        static const char *const bad[] = {"", ".", "..", "a/b"};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                ck_assert_int_eq(orch_cgroup_create(root, "svc", bad[i], &none, &cg, reason, sizeof reason),
                                 -EINVAL);
                ck_assert_ptr_nonnull(strstr(reason, "invalid cgroup name"));
                ck_assert_int_eq(orch_cgroup_create(root, bad[i], "x", &none, &cg, reason, sizeof reason),
                                 -EINVAL);
        }
        ck_assert_int_eq(orch_cgroup_root_open("../x", 0, &root, reason, sizeof reason), -EINVAL);
        ck_assert_ptr_nonnull(strstr(reason, "\"../x\""));
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_limits_v1)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits l = {.cpu_millis = 200, .memory_bytes = 32ULL << 20, .pids_max = 16};
        struct orch_cgroup_limits tiny = {.cpu_millis = 1};
        struct orch_cgroup *cg, *cg2;
        char dir[PATH_MAX];

        if (orch_cgroup_root_mode(root) == ORCH_CGROUP_V2) {
                printf("SKIP test_limits_v1: this host is cgroup2 (see test_limits_v2)\n");
                orch_cgroup_root_free(root);
                return;
        }
        cg = create(root, "limits", mode_label[_i], &l);
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/cpu%s/limits/%s", test_parent, mode_label[_i]);
        expect_file(dir, "cpu.cfs_quota_us", "20000");
        expect_file(dir, "cpu.cfs_period_us", "100000");
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory%s/limits/%s", test_parent, mode_label[_i]);
        expect_file(dir, "memory.limit_in_bytes", "33554432");
        if (exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"))
                expect_file(dir, "memory.memsw.limit_in_bytes", "33554432");
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/pids%s/limits/%s", test_parent, mode_label[_i]);
        expect_file(dir, "pids.max", "16");
        orch_snprintf(dir, sizeof dir, "%s/limits/%s", test_parent, mode_label[_i]);
        ck_assert_str_eq(orch_cgroup_path(cg), dir);

        /* Below the kernel's 1 ms minimum quota: raised to it rather than refused. */
        cg2 = create(root, "limits", "tiny", &tiny);
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/cpu%s/limits/tiny", test_parent);
        expect_file(dir, "cpu.cfs_quota_us", "1000");

        remove_ok(cg);
        remove_ok(cg2);
        ck_assert(!exists(dir));
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/pids%s/limits", test_parent);
        ck_assert_msg(!exists(dir), "service directory %s left behind", dir);
        orch_cgroup_free(cg);
        orch_cgroup_free(cg2);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_limits_v2)
{
        struct orch_cgroup_root *root = open_root(0);
        struct orch_cgroup_limits l = {.cpu_millis = 250, .memory_bytes = 64ULL << 20, .pids_max = 32};
        unsigned want = ORCH_CGROUP_MASK(ORCH_CGROUP_CPU) | ORCH_CGROUP_MASK(ORCH_CGROUP_MEMORY) |
                        ORCH_CGROUP_MASK(ORCH_CGROUP_PIDS);
        struct orch_cgroup *cg;
        char dir[PATH_MAX], path[PATH_MAX];

        if (orch_cgroup_root_mode(root) != ORCH_CGROUP_V2 ||
            (orch_cgroup_root_controllers(root) & want) != want) {
                printf("SKIP test_limits_v2: needs a cgroup2 host with the cpu, memory and pids controllers "
                       "(this host is %s)\n",
                       orch_cgroup_mode_to_string(orch_cgroup_root_mode(root)));
                orch_cgroup_root_free(root);
                return;
        }
        cg = create(root, "limits2", "i", &l);
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup%s/limits2/i", test_parent);
        expect_file(dir, "cpu.max", "25000 100000");
        expect_file(dir, "memory.max", "67108864");
        /* Absent when the kernel does not account swap. */
        orch_snprintf(path, sizeof path, "%s/memory.swap.max", dir);
        if (exists(path))
                expect_file(dir, "memory.swap.max", "0");
        expect_file(dir, "pids.max", "32");
        remove_ok(cg);
        ck_assert(!exists(dir));
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_exists)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits none = {0};
        struct orch_cgroup *cg = create(root, "dup", mode_label[_i], NULL), *cg2 = NULL;
        char reason[512] = "";

        ck_assert_int_eq(orch_cgroup_create(root, "dup", mode_label[_i], &none, &cg2, reason, sizeof reason),
                         -EEXIST);
        ck_assert_msg(strstr(reason, "already exists") && strstr(reason, mode_label[_i]), "reason: %s",
                      reason);
        ck_assert_ptr_null(cg2);
        /* The failed attempt removed nothing of the first. */
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 1);
        remove_ok(cg);
        ck_assert_int_eq(orch_cgroup_open(root, "dup", mode_label[_i], &cg2), -ENOENT);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_oom)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits l = {.memory_bytes = 32ULL << 20, .pids_max = 16};
        struct orch_cgroup *cg = create(root, "oom", mode_label[_i], &l);
        uint64_t before, count = 0;
        int fd, events, pidfd;
        struct pollfd pfd;
        siginfo_t si = {0};

        ck_assert_int_eq(orch_cgroup_oom_count(cg, &before), 0);
        ck_assert_uint_eq(before, 0);
        ck_assert_int_eq(orch_cgroup_oom_fd(cg, &fd, &events), 0);
        pfd = (struct pollfd){.fd = fd, .events = (short)events};
        ck_assert_int_eq(poll(&pfd, 1, 0), 0);

        /* The string doubles until the memory limit stops it. */
        spawn_in(cg, "x=0123456789abcdef; while :; do x=$x$x; done", &pidfd);
        ck_assert_msg(poll(&pfd, 1, 20000) == 1, "no OOM notification within 20 s");
        /* What the agent does: on the exit, the counter tells an OOM kill from any other SIGKILL. */
        ck_assert_int_eq(waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED), 0);
        ck_assert_int_eq(si.si_code, CLD_KILLED);
        ck_assert_int_eq(si.si_status, SIGKILL);
        ck_assert_int_eq(orch_cgroup_oom_drain(cg, &count), 0);
        ck_assert_uint_ge(count, 1);
        ck_assert_int_eq(orch_cgroup_oom_count(cg, &count), 0);
        ck_assert_uint_ge(count, 1);
        /* Drained: the descriptor is quiet until the next OOM. */
        ck_assert_int_eq(poll(&pfd, 1, 0), 0);
        remove_ok(cg);
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_fork_bomb)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits l = {.pids_max = 16};
        struct orch_cgroup *cg = create(root, "bomb", mode_label[_i], &l);
        struct orch_cgroup_usage u;
        _cleanup_(freep) char *events = NULL;
        char dir[PATH_MAX], path[PATH_MAX];
        uint64_t max_seen = 0, hits = 0;
        int pidfd;

        /* Never start a fork bomb without its cap in place. */
        orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup/pids%s", orch_cgroup_path(cg));
        if (orch_cgroup_root_mode(root) == ORCH_CGROUP_V2)
                orch_snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", orch_cgroup_path(cg));
        expect_file(dir, "pids.max", "16");
        spawn_in(cg, "f() { f | f & }; f; exec sleep 300", &pidfd);
        for (int i = 0; i < 150; i++) {
                ck_assert_int_eq(orch_cgroup_usage(cg, &u), 0);
                max_seen = MAX(max_seen, u.pids);
                usleep(10000);
        }
        ck_assert_uint_le(max_seen, 16);
        orch_snprintf(path, sizeof path, "%s/pids.events", dir);
        ck_assert_int_eq(orch_read_file(path, 4096, &events, NULL), 0);
        ck_assert_int_eq(sscanf(events, "max %" SCNu64, &hits), 1);
        ck_assert_msg(hits > 0, "the bomb never reached pids.max (max seen %" PRIu64 ")", max_seen);
        printf("fork bomb (%s): at most %" PRIu64 " tasks, pids.max reached %" PRIu64 " times\n",
               mode_label[_i], max_seen, hits);
        remove_ok(cg);
        ck_assert(pidfd_exited(pidfd, 2000));
        ck_assert_msg(!exists(dir), "%s left behind", dir);
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_cpu_quota)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup_limits l = {.cpu_millis = 200};
        struct orch_cgroup *cg = create(root, "cpuhog", mode_label[_i], &l);
        struct orch_cgroup_usage u0, u1;
        uint64_t t0, t1, expected, used;
        int pidfd;

        spawn_in(cg, "while :; do :; done", &pidfd);
        usleep(300000);
        ck_assert_int_eq(orch_cgroup_usage(cg, &u0), 0);
        t0 = orch_now_usec();
        usleep(3000000);
        ck_assert_int_eq(orch_cgroup_usage(cg, &u1), 0);
        t1 = orch_now_usec();
        ck_assert_uint_ne(u0.cpu_usec, ORCH_CGROUP_USAGE_UNKNOWN);
        used = u1.cpu_usec - u0.cpu_usec;
        expected = (t1 - t0) * 200 / 1000;
        printf("cpu quota 200m (%s): %" PRIu64 " us used in %" PRIu64 " us, expected %" PRIu64 "\n",
               mode_label[_i], used, t1 - t0, expected);
        ck_assert_msg(used >= expected * 3 / 4 && used <= expected * 5 / 4,
                      "used %" PRIu64 " us of CPU, expected %" PRIu64 " +-25%%", used, expected);
        remove_ok(cg);
        ck_assert(pidfd_exited(pidfd, 2000));
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_daemon)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup *cg = create(root, "daemon", mode_label[_i], NULL);
        struct orch_cgroup_usage u = {0};
        char dirs[8][PATH_MAX];
        _cleanup_(freep) char *procs = NULL;
        char path[PATH_MAX];
        int pidfds[16], n_pidfds = 0, pidfd;
        size_t n;
        pid_t pid;

        /* Two double-forked daemons (one in its own session) orphaned to init, and the main process. */
        pid = spawn_in(cg, "(sleep 300 &); (setsid sleep 301 &); exec sleep 302", &pidfd);
        for (int i = 0; i < 200 && u.pids != 3; i++) {
                ck_assert_int_eq(orch_cgroup_usage(cg, &u), 0);
                usleep(10000);
        }
        ck_assert_uint_eq(u.pids, 3);
        n = instance_dirs(pid, dirs, ELEMENTSOF(dirs));
        ck_assert_uint_gt(n, 0);
        orch_snprintf(path, sizeof path, "%s/cgroup.procs", dirs[0]);
        ck_assert_int_eq(orch_read_file(path, 65536, &procs, NULL), 0);
        for (char *s = strtok(procs, "\n"); s && n_pidfds < 16; s = strtok(NULL, "\n")) {
                int fd = pidfd_open((pid_t)strtol(s, NULL, 10), 0);
                ck_assert_int_ge(fd, 0);
                pidfds[n_pidfds++] = fd;
        }
        ck_assert_int_eq(n_pidfds, 3);
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 0);

        remove_ok(cg);
        for (int i = 0; i < n_pidfds; i++) {
                ck_assert_msg(pidfd_exited(pidfds[i], 2000), "process %d of the cgroup survived", i);
                close(pidfds[i]);
        }
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(!exists(dirs[i]), "%s left behind", dirs[i]);
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_nested)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup *cg = create(root, "nested", mode_label[_i], NULL);
        char dirs[8][PATH_MAX], sub[PATH_MAX], v[16];
        int pidfd;
        size_t n;
        pid_t pid;

        /* What a root workload could do: a cgroup of its own below the instance's, with a process in it. */
        pid = spawn_in(cg, "exec sleep 300", &pidfd);
        n = instance_dirs(pid, dirs, ELEMENTSOF(dirs));
        ck_assert_uint_gt(n, 0);
        orch_snprintf(v, sizeof v, "%d", (int)pid);
        for (size_t i = 0; i < n; i++) {
                int fd;
                orch_snprintf(sub, sizeof sub, "%s/sub", dirs[i]);
                ck_assert_int_eq(mkdir(sub, 0755), 0);
                orch_snprintf(sub, sizeof sub, "%s/sub/cgroup.procs", dirs[i]);
                fd = open(sub, O_WRONLY | O_CLOEXEC);
                ck_assert_int_ge(fd, 0);
                ck_assert_int_eq(write(fd, v, strlen(v)), (ssize_t)strlen(v));
                close(fd);
        }
        ck_assert_int_eq(orch_cgroup_has_process(cg, pid, pidfd), 1);
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 0);
        remove_ok(cg);
        ck_assert(pidfd_exited(pidfd, 2000));
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(!exists(dirs[i]), "%s left behind", dirs[i]);
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_restart_same_cgroup)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup *cg = create(root, "restart", mode_label[_i], NULL);
        struct orch_cgroup_usage u = {0};
        char reason[256] = "";
        siginfo_t si;
        int pidfd, pidfd2;
        pid_t pid, pid2;

        pid = spawn_in(cg, "exec sleep 300", &pidfd);
        ck_assert_int_eq(pidfd_send_signal(pidfd, SIGKILL, NULL, 0), 0);
        ck_assert_int_eq(waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED), 0);
        ck_assert_int_eq(orch_cgroup_kill(cg, 0, reason, sizeof reason), 0);
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 1);
        ck_assert_int_eq(orch_cgroup_has_process(cg, pid, pidfd), 0);
        pid2 = spawn_in(cg, "exec sleep 300", &pidfd2);
        ck_assert_int_eq(orch_cgroup_has_process(cg, pid2, pidfd2), 1);
        close(pidfd);

        /* The main process dies and leaves a child behind: killing that makes the cgroup unusable for
         * CLONE_INTO_CGROUP on current kernels, and the next start must still get in. */
        ck_assert_int_eq(pidfd_send_signal(pidfd2, SIGKILL, NULL, 0), 0);
        ck_assert_int_eq(waitid(P_PIDFD, (id_t)pidfd2, &si, WEXITED), 0);
        close(pidfd2);
        pid = spawn_in(cg, "sleep 300 & exec sleep 301", &pidfd);
        for (int i = 0; i < 200 && u.pids != 2; i++) {
                ck_assert_int_eq(orch_cgroup_usage(cg, &u), 0);
                usleep(10000);
        }
        ck_assert_uint_eq(u.pids, 2);
        ck_assert_int_eq(pidfd_send_signal(pidfd, SIGKILL, NULL, 0), 0);
        ck_assert_int_eq(waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED), 0);
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 0);
        ck_assert_int_eq(orch_cgroup_kill(cg, 1000000, reason, sizeof reason), 0);
        ck_assert_int_eq(orch_cgroup_is_empty(cg), 1);
        pid2 = spawn_in(cg, "exec sleep 300", &pidfd2);
        ck_assert_int_eq(orch_cgroup_has_process(cg, pid2, pidfd2), 1);
        remove_ok(cg);
        ck_assert(pidfd_exited(pidfd2, 2000));
        close(pidfd);
        close(pidfd2);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

static bool listed(const struct orch_cgroup_name *v, size_t n, const char *service, const char *instance)
{
        for (size_t i = 0; i < n; i++)
                if (streq(v[i].service, service) && streq(v[i].instance, instance))
                        return true;
        return false;
}

START_TEST(test_leftovers)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup *a = create(root, "left-a", mode_label[_i], NULL);
        struct orch_cgroup *b = create(root, "left-b", mode_label[_i], NULL);
        struct orch_cgroup_name *names = NULL;
        size_t n = 0;
        int pidfd;
        pid_t pid;

        pid = spawn_in(a, "exec sleep 300", &pidfd);
        /* The agent dies: its objects go, the cgroups and the process stay. */
        orch_cgroup_free(a);
        orch_cgroup_free(b);
        orch_cgroup_root_free(root);

        root = open_root(modes[_i]);
        ck_assert_int_eq(orch_cgroup_list(root, &names, &n), 0);
        ck_assert(listed(names, n, "left-a", mode_label[_i]));
        ck_assert(listed(names, n, "left-b", mode_label[_i]));
        for (size_t i = 1; i < n; i++) {
                int c = strcmp(names[i - 1].service, names[i].service);
                ck_assert(c < 0 || (c == 0 && strcmp(names[i - 1].instance, names[i].instance) < 0));
        }
        orch_cgroup_names_free(names, n);

        ck_assert_int_eq(orch_cgroup_open(root, "left-a", mode_label[_i], &a), 0);
        ck_assert_int_eq(orch_cgroup_open(root, "left-b", mode_label[_i], &b), 0);
        /* Re-adoption check: pid + cgroup membership, confirmed by the pidfd. */
        ck_assert_int_eq(orch_cgroup_has_process(a, pid, pidfd), 1);
        ck_assert_int_eq(orch_cgroup_has_process(b, pid, pidfd), 0);
        ck_assert_int_eq(orch_cgroup_has_process(a, getpid(), -1), 0);
        ck_assert_int_eq(orch_cgroup_is_empty(a), 0);
        ck_assert_int_eq(orch_cgroup_is_empty(b), 1);
        remove_ok(a);
        remove_ok(b);
        ck_assert(pidfd_exited(pidfd, 2000));
        ck_assert_int_eq(orch_cgroup_list(root, &names, &n), 0);
        ck_assert(!listed(names, n, "left-a", mode_label[_i]));
        ck_assert(!listed(names, n, "left-b", mode_label[_i]));
        orch_cgroup_names_free(names, n);
        close(pidfd);
        orch_cgroup_free(a);
        orch_cgroup_free(b);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_usage)
{
        struct orch_cgroup_root *root = open_root(modes[_i]);
        struct orch_cgroup *cg = create(root, "usage", mode_label[_i], NULL);
        struct orch_cgroup_usage u;
        int pidfd;

        spawn_in(cg, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 300", &pidfd);
        usleep(300000);
        ck_assert_int_eq(orch_cgroup_usage(cg, &u), 0);
        ck_assert_uint_eq(u.pids, 1);
        ck_assert_uint_gt(u.memory_bytes, 0);
        ck_assert_uint_ne(u.memory_bytes, ORCH_CGROUP_USAGE_UNKNOWN);
        ck_assert_uint_gt(u.cpu_usec, 1000);
        ck_assert_uint_ne(u.cpu_usec, ORCH_CGROUP_USAGE_UNKNOWN);
        remove_ok(cg);
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

START_TEST(test_hybrid_tracking)
{
        struct orch_cgroup_root *root = open_root(0);
        struct orch_cgroup *cg;
        char dirs[8][PATH_MAX];
        bool unified = false;
        size_t n;
        int pidfd;
        pid_t pid;

        if (orch_cgroup_root_mode(root) != ORCH_CGROUP_HYBRID) {
                printf("SKIP test_hybrid_tracking: needs a hybrid host (this one is %s)\n",
                       orch_cgroup_mode_to_string(orch_cgroup_root_mode(root)));
                orch_cgroup_root_free(root);
                return;
        }
        cg = create(root, "hybrid", "i", NULL);
        pid = spawn_in(cg, "exec sleep 300", &pidfd);
        n = instance_dirs(pid, dirs, ELEMENTSOF(dirs));
        /* Created in the cgroup2 cgroup (CLONE_INTO_CGROUP) as well as joined to the v1 ones. */
        for (size_t i = 0; i < n; i++)
                unified |= startswith(dirs[i], "/sys/fs/cgroup/unified/") != NULL;
        ck_assert(unified);
        ck_assert_uint_ge(n, 5);
        remove_ok(cg);
        ck_assert(pidfd_exited(pidfd, 2000));
        close(pidfd);
        orch_cgroup_free(cg);
        orch_cgroup_root_free(root);
}
END_TEST

static Suite *cgroup_suite(void)
{
        Suite *s = suite_create("cgroup");
        struct {
                const char *name;
                const TTest *test;
                int timeout;
                bool loop;
        } cases[] = {
                {"detect", test_detect, 10, true},
                {"names", test_bad_names, 10, true},
                {"limits-v1", test_limits_v1, 10, true},
                {"limits-v2", test_limits_v2, 10, false},
                {"exists", test_exists, 10, true},
                {"oom", test_oom, 40, true},
                {"fork-bomb", test_fork_bomb, 30, true},
                {"cpu-quota", test_cpu_quota, 30, true},
                {"daemon", test_daemon, 20, true},
                {"nested", test_nested, 20, true},
                {"restart", test_restart_same_cgroup, 20, true},
                {"leftovers", test_leftovers, 20, true},
                {"usage", test_usage, 20, true},
                {"hybrid", test_hybrid_tracking, 20, false},
        };
        struct statfs st;

        if (geteuid() != 0) {
                printf("SKIP test-cgroup: needs root to create cgroups\n");
                exit(77);
        }
        if (statfs("/sys/fs/cgroup", &st) < 0 ||
            ((unsigned long)st.f_type != CGROUP2_SUPER_MAGIC && (unsigned long)st.f_type != TMPFS_MAGIC)) {
                printf("SKIP test-cgroup: no cgroup hierarchy at /sys/fs/cgroup\n");
                exit(77);
        }
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                TCase *tc = tcase_create(cases[i].name);
                tcase_add_unchecked_fixture(tc, setup, teardown);
                tcase_set_timeout(tc, cases[i].timeout);
                if (cases[i].loop)
                        tcase_add_loop_test(tc, cases[i].test, 0, (int)ELEMENTSOF(modes));
                else
                        tcase_add_test(tc, cases[i].test);
                suite_add_tcase(s, tc);
        }
        return s;
}

ORCH_TEST_MAIN(cgroup_suite)
