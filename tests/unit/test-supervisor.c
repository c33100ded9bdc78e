/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <uv.h>

#include "cgroup.h"
#include "logs.h"
#include "ports.h"
#include "supervisor.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* Real processes in real cgroups, driven through the supervisor's public interface. */

struct rec {
        enum orch_instance_state state;
        enum orch_health_state health;
        uint32_t restarts;
        uint64_t at_usec;
        bool forgotten;
        bool has_exit, oom;
        int code;
        char reason[256];
};

struct fixture {
        uv_loop_t loop;
        char dir[64];
        char parent[64];
        struct orch_cgroup_root *root;
        struct orch_ports *ports;
        struct orch_logs *logs;
        struct orch_supervisor *sv;
        struct rec recs[512];
        size_t n;
        pid_t last_pid;
        char cgroup[256];
};

static void on_event(void *ud, const struct orch_sv_info *info)
{
        struct fixture *f = ud;
        struct rec *r;

        if (f->n >= ELEMENTSOF(f->recs))
                return;
        r = &f->recs[f->n++];
        *r = (struct rec){.state = info->state,
                          .health = info->health,
                          .restarts = info->restarts,
                          .at_usec = orch_now_usec(),
                          .forgotten = info->forgotten,
                          .has_exit = info->has_exit,
                          .oom = info->exit_oom,
                          .code = info->exit_code};
        orch_strlcpy(r->reason, info->reason ? info->reason : "", sizeof r->reason);
        if (info->pid > 0)
                f->last_pid = info->pid;
        if (info->cgroup)
                orch_strlcpy(f->cgroup, info->cgroup, sizeof f->cgroup);
}

static void new_supervisor(struct fixture *f)
{
        struct orch_supervisor_config cfg = {
                .data_dir = f->dir,
                .node_name = "node-1",
                .cgroups = f->root,
                .ports = f->ports,
                .logs = f->logs,
                .allow_root = true,
                .default_driver = ORCH_DRIVER_EXEC,
                .on_event = on_event,
                .userdata = f,
        };

        ck_assert_int_eq(orch_supervisor_new(&f->loop, &cfg, &f->sv), 0);
}

static void setup(struct fixture *f)
{
        char reason[256];

        memset(f, 0, sizeof *f);
        if (geteuid() != 0) {
                fprintf(stderr, "test-supervisor: needs root for cgroups; skipping\n");
                exit(77);
        }
        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        orch_strlcpy(f->dir, "/tmp/orch-test-sv-XXXXXX", sizeof f->dir);
        ck_assert_ptr_nonnull(mkdtemp(f->dir));
        chmod(f->dir, 0755);
        /* named after the runner too, so that the runner can clean up after a failed test */
        orch_snprintf(f->parent, sizeof f->parent, "orch-test-sv-%d-%d", (int)getppid(), (int)getpid());
        ck_assert_msg(orch_cgroup_root_open(f->parent, 0, &f->root, reason, sizeof reason) == 0, "%s",
                      reason);
        ck_assert_int_eq(orch_ports_new(31000, 31999, &f->ports), 0);
        ck_assert_int_eq(orch_logs_new(&f->loop, f->dir, 50, &f->logs), 0);
        new_supervisor(f);
}

static void shutdown_done(void *ud)
{
        bool *done = ud;
        *done = true;
}

static void teardown(struct fixture *f)
{
        bool done = false;
        char cmd[128], reason[256];

        orch_supervisor_shutdown(f->sv, false, shutdown_done, &done);
        for (int i = 0; i < 300 && !done; i++)
                uv_run(&f->loop, UV_RUN_NOWAIT), usleep(10000);
        ck_assert(done);
        orch_supervisor_free(f->sv);
        orch_logs_free(f->logs);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&f->loop), 0);
        orch_ports_free(f->ports);
        ck_assert_msg(orch_cgroup_root_remove(f->root, reason, sizeof reason) == 0, "%s", reason);
        orch_cgroup_root_free(f->root);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        ck_assert_int_eq(system(cmd), 0);
}

static bool has_state(struct fixture *f, enum orch_instance_state s, size_t from)
{
        for (size_t i = from; i < f->n; i++)
                if (f->recs[i].state == s)
                        return true;
        return false;
}

/* Runs the loop until pred holds or timeout_ms passes. */
static bool run_until(struct fixture *f, bool (*pred)(struct fixture *), uint64_t timeout_ms)
{
        uint64_t end = orch_now_msec() + timeout_ms;

        while (orch_now_msec() < end) {
                if (pred(f))
                        return true;
                uv_run(&f->loop, UV_RUN_NOWAIT);
                usleep(2000);
        }
        return pred(f);
}

static struct orch_service *spec(const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        struct orch_service *s;
        int r = orch_manifest_parse_buffer(&m, "t.yaml", yaml, strlen(yaml), &d);

        if (r < 0)
                orch_diags_print(&d, stderr);
        ck_assert_int_ge(r, 0);
        s = m.services[0];
        free(m.services);
        orch_diags_release(&d);
        return s;
}

static int start(struct fixture *f, const char *id, const char *yaml, char *reason)
{
        _cleanup_(orch_service_freep) struct orch_service *s = spec(yaml);
        return orch_supervisor_start(f->sv, id, 1, s, NULL, reason, 256);
}

static bool is_running(struct fixture *f)
{
        return has_state(f, ORCH_INSTANCE_RUNNING, 0);
}

static bool is_forgotten(struct fixture *f)
{
        return f->n > 0 && f->recs[f->n - 1].forgotten;
}

START_TEST(test_start_stop)
{
        struct fixture f;
        char reason[256];

        setup(&f);
        ck_assert_int_eq(start(&f, "web-0",
                               "kind: service\nname: web\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "resources: {memory: 64Mi, pids: 16, cpu: 200m}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_running, 3000));
        ck_assert_int_gt(f.last_pid, 0);
        ck_assert_int_eq(kill(f.last_pid, 0), 0);
        ck_assert_msg(strstr(f.cgroup, "web-0") != NULL, "cgroup %s", f.cgroup);
        ck_assert_uint_eq(orch_supervisor_generation(f.sv, "web-0"), 1);
        /* the same generation again is a no-op */
        ck_assert_int_eq(start(&f, "web-0",
                               "kind: service\nname: web\nuser: root\ncommand: [/bin/sleep, '300']\n",
                               reason),
                         0);
        ck_assert_int_eq(orch_supervisor_stop(f.sv, "web-0", "test", NULL, NULL), 0);
        ck_assert(run_until(&f, is_forgotten, 5000));
        ck_assert(has_state(&f, ORCH_INSTANCE_STOPPING, 0));
        ck_assert_int_ne(kill(f.last_pid, 0), 0);
        ck_assert_uint_eq(orch_supervisor_count(f.sv), 0);
        teardown(&f);
}
END_TEST

static void count_done(void *userdata, const char *id)
{
        int *n = userdata;

        ck_assert_str_eq(id, "slow-0");
        (*n)++;
}

/* A stop asked again while one is under way (orchd fencing after a reconnect): every caller is told,
 * once, when the instance is gone. */
START_TEST(test_stop_twice_tells_both)
{
        struct fixture f;
        char reason[256];
        int first = 0, second = 0;

        setup(&f);
        /* ignores SIGTERM for a while: the second stop comes while the first is under way */
        ck_assert_int_eq(start(&f, "slow-0",
                               "kind: service\nname: slow\nuser: root\n"
                               "command: \"trap '' TERM; sleep 300\"\nstop: {timeout: 600ms}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_running, 3000));
        ck_assert_int_eq(orch_supervisor_stop(f.sv, "slow-0", "first", count_done, &first), 0);
        ck_assert(!run_until(&f, is_forgotten, 200));
        ck_assert_int_eq(orch_supervisor_stop(f.sv, "slow-0", "second", count_done, &second), 0);
        ck_assert_int_eq(first + second, 0);
        ck_assert(run_until(&f, is_forgotten, 5000));
        ck_assert_int_eq(first, 1);
        ck_assert_int_eq(second, 1);
        teardown(&f);
}
END_TEST

static bool five_restarts(struct fixture *f)
{
        return f->n > 0 && f->recs[f->n - 1].restarts >= 5 &&
               f->recs[f->n - 1].state == ORCH_INSTANCE_PENDING;
}

START_TEST(test_crash_loop_backoff)
{
        struct fixture f;
        char reason[256];
        uint64_t spawns[16];
        size_t n = 0;

        setup(&f);
        ck_assert_int_eq(
                start(&f, "crash-0",
                      "kind: service\nname: crash\nuser: root\ncommand: 'exit 3'\n"
                      "restart: {policy: always, backoff: 40ms, max_backoff: 320ms, reset_after: 60s}\n",
                      reason),
                0);
        ck_assert(run_until(&f, five_restarts, 8000));
        for (size_t i = 0; i < f.n && n < ELEMENTSOF(spawns); i++)
                if (f.recs[i].state == ORCH_INSTANCE_STARTING)
                        spawns[n++] = f.recs[i].at_usec;
        ck_assert_uint_ge(n, 5);
        /* delays double from 40 ms: 40, 80, 160, 320 (generous bounds: the machine is shared) */
        for (size_t i = 1; i < 5; i++) {
                uint64_t want = 40000ULL << (i - 1), got = spawns[i] - spawns[i - 1];
                ck_assert_msg(got >= want && got < want + 150000, "restart %zu after %llu us, want %llu", i,
                              (unsigned long long)got, (unsigned long long)want);
        }
        ck_assert(strstr(f.recs[f.n - 1].reason, "exited with code 3") != NULL);
        teardown(&f);
}
END_TEST

static bool four_restarts_running(struct fixture *f)
{
        return f->n > 0 && f->recs[f->n - 1].restarts >= 4 &&
               f->recs[f->n - 1].state == ORCH_INSTANCE_RUNNING;
}

/* Writes (closes after a write) of the state file of `id` that the watch saw. */
static size_t state_writes(int ifd, const char *id)
{
        char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
        char name[64];
        size_t n = 0;
        ssize_t len;

        orch_snprintf(name, sizeof name, "%s.json", id);
        while ((len = read(ifd, buf, sizeof buf)) > 0)
                for (char *p = buf; p < buf + len;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        if (ev->len > 0 && streq(ev->name, name) && (ev->mask & IN_CLOSE_WRITE))
                                n++;
                        p += sizeof *ev + ev->len;
                }
        return n;
}

START_TEST(test_one_state_write_per_transition)
{
        struct fixture f;
        char reason[256], dir[128];
        size_t starts = 0, writes;
        int ifd;

        setup(&f);
        orch_snprintf(dir, sizeof dir, "%s/instances", f.dir);
        ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        ck_assert_int_ge(ifd, 0);
        /* IN_OPEN too: inotify merges an event with an identical one still queued, not across another */
        ck_assert_int_ge(inotify_add_watch(ifd, dir, IN_OPEN | IN_CLOSE_WRITE), 0);
        ck_assert_int_eq(start(&f, "flap-0",
                               "kind: service\nname: flap\nuser: root\ncommand: 'sleep 0.2; exit 1'\n"
                               "restart: {policy: always, backoff: 0s}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, four_restarts_running, 8000));
        for (size_t i = 0; i < f.n; i++)
                starts += f.recs[i].state == ORCH_INSTANCE_STARTING;
        writes = state_writes(ifd, "flap-0");
        /* each start is written once as starting and once as running: the pending state in between
         * (backoff 0s) and the exit are folded into the first */
        ck_assert_msg(writes == 2 * starts, "%zu state writes for %zu starts", writes, starts);
        close(ifd);
        teardown(&f);
}
END_TEST

static bool four_running(struct fixture *f)
{
        size_t counts[_ORCH_INSTANCE_STATE_MAX];

        orch_supervisor_counts(f->sv, counts);
        return counts[ORCH_INSTANCE_RUNNING] == 4;
}

#define SPEC_A "kind: service\nname: a\nuser: root\ncommand: [/bin/sleep, '300']\n"

/* Replicas of one revision share a spec, another revision of the same service has its own; a new
 * supervisor re-adopts all of them from their state files (which carry each one's spec). */
START_TEST(test_shared_specs_readopted)
{
        static const char *const ids[] = {"a-0", "a-1", "a-2", "b-0"};
        struct fixture f;
        struct orch_sv_info info;
        char reason[256], revs[4][ORCH_REVISION_LEN + 1], path[128];
        pid_t pids[4];
        bool done = false;

        setup(&f);
        ck_assert_int_eq(start(&f, "a-0", SPEC_A, reason), 0);
        ck_assert_int_eq(start(&f, "a-1", SPEC_A "replicas: 2\n", reason), 0);
        ck_assert_int_eq(start(&f, "a-2",
                               "kind: service\nname: a\nuser: root\ncommand: [/bin/sleep, '301']\n", reason),
                         0);
        ck_assert_int_eq(start(&f, "b-0",
                               "kind: service\nname: b\nuser: root\ncommand: [/bin/sleep, '302']\n", reason),
                         0);
        ck_assert(run_until(&f, four_running, 5000));
        for (size_t i = 0; i < 4; i++) {
                ck_assert_int_eq(orch_supervisor_info(f.sv, ids[i], &info), 0);
                pids[i] = info.pid;
                orch_strlcpy(revs[i], info.revision, sizeof revs[i]);
        }
        ck_assert_str_eq(revs[0], revs[1]);
        ck_assert_str_ne(revs[0], revs[2]);

        orch_supervisor_shutdown(f.sv, true, shutdown_done, &done);
        for (int i = 0; i < 100 && !done; i++)
                uv_run(&f.loop, UV_RUN_NOWAIT);
        ck_assert(done);
        orch_supervisor_free(f.sv);
        new_supervisor(&f);
        ck_assert_int_eq(orch_supervisor_recover(f.sv, true), 4);
        for (size_t i = 0; i < 4; i++) {
                ck_assert_int_eq(orch_supervisor_info(f.sv, ids[i], &info), 0);
                ck_assert_int_eq(info.pid, pids[i]);
                ck_assert_int_eq(info.state, ORCH_INSTANCE_RUNNING);
                ck_assert_str_eq(info.revision, revs[i]);
                ck_assert_str_eq(info.service, i < 3 ? "a" : "b");
        }
        /* each one's own spec, through a restart: a-2 comes back running sleep 301 */
        kill(pids[2], SIGKILL);
        f.n = 0;
        ck_assert(run_until(&f, is_running, 5000));
        ck_assert_int_eq(orch_supervisor_info(f.sv, "a-2", &info), 0);
        ck_assert_int_ne(info.pid, pids[2]);
        orch_snprintf(path, sizeof path, "/proc/%d/cmdline", (int)info.pid);
        {
                _cleanup_(freep) char *cmd = NULL;
                size_t len = 0;
                ck_assert_int_eq(orch_read_file(path, 4096, &cmd, &len), 0);
                ck_assert_msg(len > 10 && streq(cmd + strlen(cmd) + 1, "301"), "a-2 runs %s", cmd);
        }
        teardown(&f);
}
END_TEST

static bool is_failed(struct fixture *f)
{
        return has_state(f, ORCH_INSTANCE_FAILED, 0);
}

START_TEST(test_missing_binary)
{
        struct fixture f;
        char reason[256];

        setup(&f);
        ck_assert_int_eq(start(&f, "nobin-0",
                               "kind: service\nname: nobin\nuser: root\ncommand: [/nonexistent/prog]\n"
                               "restart: {policy: never}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_failed, 3000));
        ck_assert_msg(strstr(f.recs[f.n - 1].reason, "/nonexistent/prog") &&
                              strstr(f.recs[f.n - 1].reason, "No such file"),
                      "reason: %s", f.recs[f.n - 1].reason);
        teardown(&f);
}
END_TEST

static bool is_exited(struct fixture *f)
{
        return has_state(f, ORCH_INSTANCE_EXITED, 0);
}

START_TEST(test_double_fork_cleaned)
{
        struct fixture f;
        char reason[256];
        int r;

        setup(&f);
        /* the parent exits 0 at once; its grandchild escapes into a new session and sleeps */
        ck_assert_int_eq(start(&f, "daemon-0",
                               "kind: service\nname: daemon\nuser: root\n"
                               "command: 'setsid sh -c \"exec sleep 7777\" </dev/null >/dev/null 2>&1 & "
                               "sleep 0.3; exit 0'\n"
                               "restart: {policy: on-failure}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_exited, 5000));
        /* nothing of it survives, and its cgroup is gone */
        r = system("pgrep -f 'sleep 777[7]' >/dev/null"); /* [7]: not the shell running pgrep */
        ck_assert_msg(r != 0, "the daemon survived");
        ck_assert_int_eq(orch_supervisor_stop(f.sv, "daemon-0", "test", NULL, NULL), 0);
        teardown(&f);
}
END_TEST

static bool has_log_env(struct fixture *f)
{
        char path[128];
        _cleanup_(freep) char *buf = NULL;

        orch_snprintf(path, sizeof path, "%s/logs/envy-0.log", f->dir);
        return orch_read_file(path, 1 << 20, &buf, NULL) >= 0 && strstr(buf, "END-OF-ENV");
}

START_TEST(test_environment)
{
        struct fixture f;
        char reason[256], path[128];
        _cleanup_(freep) char *buf = NULL;

        setup(&f);
        setenv("ORCH_TEST_AGENT_SECRET", "leak", 1);
        ck_assert_int_eq(
                start(&f, "envy-0",
                      "kind: service\nname: envy\nuser: nobody\ncommand: 'env; echo END-OF-ENV; sleep 60'\n"
                      "ports: [{name: http}, {name: admin-api}]\n"
                      "env: {GREETING: 'hi ${ORCH_INSTANCE} on ${PORT}', OTHER: '${HOME_NOT_OURS}'}\n",
                      reason),
                0);
        ck_assert(run_until(&f, has_log_env, 5000));
        orch_snprintf(path, sizeof path, "%s/logs/envy-0.log", f.dir);
        ck_assert_int_eq(orch_read_file(path, 1 << 20, &buf, NULL), 0);
        ck_assert_msg(strstr(buf, "ORCH_INSTANCE=envy-0\n") && strstr(buf, "ORCH_SERVICE=envy\n") &&
                              strstr(buf, "ORCH_NODE=node-1\n") && strstr(buf, "PORT=31") &&
                              strstr(buf, "PORT_HTTP=31") && strstr(buf, "PORT_ADMIN_API=31") &&
                              strstr(buf, "GREETING=hi envy-0 on 31") &&
                              strstr(buf, "OTHER=${HOME_NOT_OURS}") && strstr(buf, "PATH=/usr/local/sbin"),
                      "environment:\n%s", buf);
        ck_assert_msg(!strstr(buf, "ORCH_TEST_AGENT_SECRET"), "the agent's environment leaked:\n%s", buf);
        unsetenv("ORCH_TEST_AGENT_SECRET");
        teardown(&f);
}
END_TEST

static bool restarted_unhealthy(struct fixture *f)
{
        for (size_t i = 0; i < f->n; i++)
                if (f->recs[i].restarts >= 1 && strstr(f->recs[i].reason, "unhealthy"))
                        return true;
        return false;
}

START_TEST(test_unhealthy_restart)
{
        struct fixture f;
        char reason[256];

        setup(&f);
        ck_assert_int_eq(start(&f, "sick-0",
                               "kind: service\nname: sick\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "ports: [{name: http}]\n"
                               "health: {type: tcp, interval: 100ms, timeout: 100ms, grace: 0s, "
                               "unhealthy_threshold: 2}\n"
                               "restart: {backoff: 10ms}\nstop: {timeout: 1s}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, restarted_unhealthy, 5000));
        teardown(&f);
}
END_TEST

static Suite *supervisor_suite(void)
{
        Suite *s = suite_create("supervisor");
        TCase *tc = tcase_create("processes");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_start_stop);
        tcase_add_test(tc, test_stop_twice_tells_both);
        tcase_add_test(tc, test_crash_loop_backoff);
        tcase_add_test(tc, test_one_state_write_per_transition);
        tcase_add_test(tc, test_shared_specs_readopted);
        tcase_add_test(tc, test_missing_binary);
        tcase_add_test(tc, test_double_fork_cleaned);
        tcase_add_test(tc, test_environment);
        tcase_add_test(tc, test_unhealthy_restart);
        suite_add_tcase(s, tc);
        return s;
}

static void cleanup(void)
{
        char prefix[64];

        orch_snprintf(prefix, sizeof prefix, "orch-test-sv-%d-", (int)getpid());
        orch_test_cgroup_cleanup(prefix);
}

ORCH_TEST_MAIN_CLEANUP(supervisor_suite, cleanup)
