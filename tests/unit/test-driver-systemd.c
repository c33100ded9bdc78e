/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <systemd/sd-bus.h>
#include <uv.h>

#include "logs.h"
#include "ports.h"
#include "supervisor.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * The systemd driver against a real systemd user manager (../shared/TESTING.md): instances run,
 * are limited, stop, crash and restart, and are re-adopted, through the supervisor's public
 * interface. The runner starts one manager for all tests (in a cgroup of its own, so that it does
 * not move the host's processes around) and always stops it again, failed tests included; it
 * removes /run/systemd/system only when it made it.
 */

#define MANAGER_BIN "/lib/systemd/systemd"

static pid_t manager_pid;
static char runtime_dir[64];
/* the manager's HOME: a dynamic user must be able to walk into its StateDirectory (~/.config/...),
 * which it cannot under a 0700 /root */
static char home_dir[64];
static char address[128];
static char cgroup_name[64];
static bool made_system_dir;
static bool made_run_user;
/* what a manager makes under /run/systemd (for namespaces, dynamic users, a re-execution): removed
 * again when it was not there before (a directory only when empty) */
static const char *const manager_dirs[] = {"/run/systemd/unit-root", "/run/systemd/dynamic-uid",
                                           "/run/systemd/propagate", "/run/systemd/systemd-units-load"};
static bool had_manager_dir[ELEMENTSOF(manager_dirs)];

struct rec {
        enum orch_instance_state state;
        uint32_t restarts;
        pid_t pid;
        bool forgotten;
        bool has_exit;
        int code, sig;
        char reason[512];
};

struct fixture {
        uv_loop_t loop;
        char dir[64];
        struct orch_ports *ports;
        struct orch_logs *logs;
        struct orch_supervisor *sv;
        struct rec recs[512];
        size_t n;
        char cgroup[256];
};

/* --- the user manager ---------------------------------------------------------------------- */

static bool manager_answers(void)
{
        sd_bus *bus = NULL;
        char *version = NULL;
        int r = sd_bus_new(&bus);

        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_get_property_string(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                               "org.freedesktop.systemd1.Manager", "Version", NULL,
                                               &version);
        free(version);
        sd_bus_flush_close_unref(bus);
        return r >= 0;
}

/* In the child: a cgroup of its own in every hierarchy, so that the manager's root is there. */
static void join_own_cgroups(void)
{
        DIR *d;
        struct dirent *de;
        char path[512];

        if (access("/sys/fs/cgroup/cgroup.procs", F_OK) == 0) {
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s", cgroup_name);
                mkdir(path, 0755);
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s/cgroup.procs", cgroup_name);
                orch_write_file_atomic(path, "0", 1, 0644);
                return;
        }
        d = opendir("/sys/fs/cgroup");
        while (d && (de = readdir(d))) {
                int fd;
                if (de->d_name[0] == '.')
                        continue;
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s/cgroup.procs", de->d_name);
                if (access(path, F_OK) < 0)
                        continue;
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", de->d_name, cgroup_name);
                mkdir(path, 0755);
                orch_snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s/cgroup.procs", de->d_name,
                              cgroup_name);
                fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                        if (write(fd, "0", 1) < 0)
                                fprintf(stderr, "cannot join %s: %s\n", path, strerror(errno));
                        close(fd);
                }
        }
        if (d)
                closedir(d);
}

static void manager_stop(void)
{
        char cmd[256];
        int status;

        if (manager_pid > 0) {
                kill(manager_pid, SIGTERM);
                for (int i = 0; i < 500 && waitpid(manager_pid, &status, WNOHANG) == 0; i++)
                        usleep(10000);
                if (kill(manager_pid, 0) == 0) {
                        kill(manager_pid, SIGKILL);
                        waitpid(manager_pid, &status, 0);
                }
                manager_pid = 0;
        }
        if (*cgroup_name)
                orch_test_cgroup_cleanup(cgroup_name);
        /* the data dirs of tests that failed before their teardown */
        orch_snprintf(cmd, sizeof cmd, "rm -rf /var/lib/orch-test-sd-%d-*", (int)getpid());
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove /var/lib/orch-test-sd-%d-*\n", (int)getpid());
        for (size_t i = 0; i < ELEMENTSOF(manager_dirs); i++)
                if (!had_manager_dir[i])
                        remove(manager_dirs[i]); /* a directory only when empty */
        if (made_system_dir && rmdir("/run/systemd/system") < 0)
                fprintf(stderr, "cannot remove /run/systemd/system: %s\n", strerror(errno));
        made_system_dir = false;
        if (*runtime_dir) {
                orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", runtime_dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", runtime_dir);
                *runtime_dir = '\0';
        }
        if (*home_dir) {
                orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", home_dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "cannot remove %s\n", home_dir);
                *home_dir = '\0';
        }
        if (made_run_user)
                rmdir("/run/user");
        made_run_user = false;
}

static _noreturn_ void skip(const char *why)
{
        fprintf(stderr, "test-driver-systemd: %s; skipping\n", why);
        manager_stop();
        exit(77);
}

static void manager_start(void)
{
        char log[128], why[256];

        if (geteuid() != 0)
                skip("needs root to run a systemd user manager that may set User= and limits");
        if (access(MANAGER_BIN, X_OK) < 0)
                skip(MANAGER_BIN " is not installed");
        orch_snprintf(cgroup_name, sizeof cgroup_name, "orch-test-sdmgr-%d", (int)getpid());
        for (size_t i = 0; i < ELEMENTSOF(manager_dirs); i++)
                had_manager_dir[i] = access(manager_dirs[i], F_OK) == 0;
        if (mkdir("/run/systemd/system", 0755) == 0)
                made_system_dir = true;
        else if (errno != EEXIST)
                skip("cannot create /run/systemd/system");
        if (mkdir("/run/user", 0755) == 0)
                made_run_user = true;
        orch_strlcpy(runtime_dir, "/run/user/orch-test-sd-XXXXXX", sizeof runtime_dir);
        if (!mkdtemp(runtime_dir)) {
                *runtime_dir = '\0';
                skip("cannot create a runtime directory under /run/user");
        }
        chmod(runtime_dir, 0700);
        orch_strlcpy(home_dir, "/var/lib/orch-test-sdhome-XXXXXX", sizeof home_dir);
        if (!mkdtemp(home_dir)) {
                *home_dir = '\0';
                skip("cannot create a home directory for the manager under /var/lib");
        }
        chmod(home_dir, 0755);
        orch_snprintf(address, sizeof address, "unix:path=%s/systemd/private", runtime_dir);
        orch_snprintf(log, sizeof log, "%s/manager.log", runtime_dir);

        manager_pid = fork();
        if (manager_pid < 0)
                skip("fork failed");
        if (manager_pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                /* a runner that dies (a harness timeout) takes its manager with it */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                join_own_cgroups();
                setenv("XDG_RUNTIME_DIR", runtime_dir, 1);
                setenv("HOME", home_dir, 1);
                unsetenv("XDG_CONFIG_HOME");
                execl(MANAGER_BIN, MANAGER_BIN, "--user", (char *)NULL);
                _exit(127);
        }
        for (int i = 0; i < 100; i++) {
                int status;
                if (manager_answers())
                        return;
                if (waitpid(manager_pid, &status, WNOHANG) == manager_pid) {
                        _cleanup_(freep) char *out = NULL;
                        manager_pid = 0;
                        orch_read_file(log, 1 << 16, &out, NULL);
                        orch_snprintf(why, sizeof why, "the systemd user manager exited at once: %s",
                                      out ? out : "(no output)");
                        skip(why);
                }
                usleep(100000);
        }
        skip("the systemd user manager did not answer within 10 s");
}

/* --- asking the manager directly ----------------------------------------------------------- */

static int unit_prop(const char *unit, const char *iface, const char *prop, char type, void *ret)
{
        sd_bus *bus = NULL;
        char *path = NULL;
        int r = sd_bus_new(&bus);

        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_path_encode("/org/freedesktop/systemd1/unit", unit, &path);
        if (r >= 0 && type == 's')
                r = sd_bus_get_property_string(bus, "org.freedesktop.systemd1", path, iface, prop, NULL,
                                               ret);
        else if (r >= 0)
                r = sd_bus_get_property_trivial(bus, "org.freedesktop.systemd1", path, iface, prop, NULL,
                                                type, ret);
        free(path);
        sd_bus_flush_close_unref(bus);
        return r;
}

static uint64_t unit_u64(const char *unit, const char *iface, const char *prop)
{
        uint64_t v = 0;
        ck_assert_msg(unit_prop(unit, iface, prop, 't', &v) >= 0, "%s %s", unit, prop);
        return v;
}

static bool unit_bool(const char *unit, const char *iface, const char *prop)
{
        int v = 0;
        ck_assert_msg(unit_prop(unit, iface, prop, 'b', &v) >= 0, "%s %s", unit, prop);
        return v;
}

/* The caller frees it. */
static char *unit_str(const char *unit, const char *iface, const char *prop)
{
        char *v = NULL;
        ck_assert_msg(unit_prop(unit, iface, prop, 's', &v) >= 0, "%s %s", unit, prop);
        return v;
}

#define SERVICE "org.freedesktop.systemd1.Service"
#define UNIT    "org.freedesktop.systemd1.Unit"

/* --- the supervisor ------------------------------------------------------------------------ */

static void on_event(void *ud, const struct orch_sv_info *info)
{
        struct fixture *f = ud;
        struct rec *r;

        if (f->n >= ELEMENTSOF(f->recs))
                return;
        r = &f->recs[f->n++];
        *r = (struct rec){.state = info->state,
                          .restarts = info->restarts,
                          .pid = info->pid,
                          .forgotten = info->forgotten,
                          .has_exit = info->has_exit,
                          .code = info->exit_code,
                          .sig = info->exit_signal};
        orch_strlcpy(r->reason, info->reason ? info->reason : "", sizeof r->reason);
        if (info->cgroup)
                orch_strlcpy(f->cgroup, info->cgroup, sizeof f->cgroup);
}

static void supervisor_open(struct fixture *f, const char *addr)
{
        struct orch_supervisor_config cfg = {
                .data_dir = f->dir,
                .node_name = "node-sd",
                .ports = f->ports,
                .logs = f->logs,
                .allow_root = true,
                .default_driver = ORCH_DRIVER_SYSTEMD,
                .systemd_address = addr,
                .on_event = on_event,
                .userdata = f,
        };
        ck_assert_int_eq(orch_supervisor_new(&f->loop, &cfg, &f->sv), 0);
}

static void setup(struct fixture *f)
{
        memset(f, 0, sizeof *f);
        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        /* not under /tmp: a private_tmp instance could not see its work directory there; named after
         * the runner, which removes it after a failed test */
        orch_snprintf(f->dir, sizeof f->dir, "/var/lib/orch-test-sd-%d-XXXXXX", (int)getppid());
        ck_assert_ptr_nonnull(mkdtemp(f->dir));
        chmod(f->dir, 0755);
        ck_assert_int_eq(orch_ports_new(32000, 32999, &f->ports), 0);
        ck_assert_int_eq(orch_logs_new(&f->loop, f->dir, 50, &f->logs), 0);
        supervisor_open(f, address);
}

static void shutdown_done(void *ud)
{
        *(bool *)ud = true;
}

/* Runs the loop until the supervisor is shut down (keep: its instances stay) and frees it. */
static void supervisor_close(struct fixture *f, bool keep)
{
        bool done = false;

        orch_supervisor_shutdown(f->sv, keep, shutdown_done, &done);
        for (int i = 0; i < 1000 && !done; i++)
                uv_run(&f->loop, UV_RUN_NOWAIT), usleep(10000);
        ck_assert(done);
        orch_supervisor_free(f->sv);
        f->sv = NULL;
}

static void teardown(struct fixture *f)
{
        char cmd[128];

        supervisor_close(f, false);
        orch_logs_free(f->logs);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&f->loop), 0);
        orch_ports_free(f->ports);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        ck_assert_int_eq(system(cmd), 0);
}

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

static const struct rec *last(struct fixture *f)
{
        ck_assert_uint_gt(f->n, 0);
        return &f->recs[f->n - 1];
}

static bool has_state(struct fixture *f, enum orch_instance_state s)
{
        for (size_t i = 0; i < f->n; i++)
                if (f->recs[i].state == s)
                        return true;
        return false;
}

static bool is_running(struct fixture *f)
{
        return f->n > 0 && last(f)->state == ORCH_INSTANCE_RUNNING && last(f)->pid > 0;
}

static bool is_forgotten(struct fixture *f)
{
        return f->n > 0 && last(f)->forgotten;
}

static bool is_failed(struct fixture *f)
{
        return has_state(f, ORCH_INSTANCE_FAILED);
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
        return orch_supervisor_start(f->sv, id, 1, s, "0123456789abcdef", reason, ORCH_SV_REASON_MAX);
}

static bool unit_gone(const char *unit)
{
        char *state = NULL;
        bool gone;

        /* the manager answers for any name: a unit it does not hold is not-found */
        if (unit_prop(unit, UNIT, "LoadState", 's', &state) < 0)
                return false;
        gone = streq(state, "not-found");
        free(state);
        return gone;
}

/* --- the tests ------------------------------------------------------------------------------ */

START_TEST(test_run_limits_stop)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX], path[64];
        _cleanup_(freep) char *restart = NULL, *cg = NULL, *buf = NULL;
        pid_t pid;

        setup(&f);
        ck_assert_msg(orch_supervisor_driver_available(f.sv, ORCH_DRIVER_SYSTEMD, reason, sizeof reason),
                      "%s", reason);
        ck_assert_int_eq(
                start(&f, "sdt-web-0",
                      "kind: service\nname: sdt-web\nuser: nobody\ncommand: [sleep, '300']\n"
                      "resources: {memory: 64Mi, pids: 16, cpu: 200m}\nstop: {signal: INT, timeout: 3s}\n",
                      reason),
                0);
        ck_assert_msg(run_until(&f, is_running, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        pid = last(&f)->pid;
        ck_assert_int_eq(kill(pid, 0), 0);
        /* the unit's main process is what the supervisor reports */
        ck_assert_uint_eq(unit_u64("orch-sdt-web-0.service", SERVICE, "MemoryMax"), 64ULL << 20);
        ck_assert_uint_eq(unit_u64("orch-sdt-web-0.service", SERVICE, "TasksMax"), 16);
        ck_assert_uint_eq(unit_u64("orch-sdt-web-0.service", SERVICE, "CPUQuotaPerSecUSec"), 200000);
        ck_assert_uint_eq(unit_u64("orch-sdt-web-0.service", SERVICE, "TimeoutStopUSec"), 3000000);
        restart = unit_str("orch-sdt-web-0.service", SERVICE, "Restart");
        ck_assert_str_eq(restart, "no");
        cg = unit_str("orch-sdt-web-0.service", SERVICE, "ControlGroup");
        ck_assert_msg(orch_endswith(cg, "/orch.slice/orch-sdt-web-0.service"), "cgroup %s", cg);
        /* it runs as the manifest's user, in the unit's cgroup */
        orch_snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
        ck_assert_int_eq(orch_read_file(path, 1 << 16, &buf, NULL), 0);
        ck_assert_msg(strstr(buf, "\nUid:\t65534\t"), "%s", buf);
        for (int i = 0; i < 100 && !*f.cgroup; i++)
                uv_run(&f.loop, UV_RUN_NOWAIT), usleep(10000);
        ck_assert_str_eq(f.cgroup, cg);

        ck_assert_int_eq(orch_supervisor_stop(f.sv, "sdt-web-0", "test", NULL, NULL), 0);
        ck_assert(run_until(&f, is_forgotten, 5000));
        ck_assert(has_state(&f, ORCH_INSTANCE_STOPPING));
        ck_assert_int_ne(kill(pid, 0), 0);
        ck_assert(unit_gone("orch-sdt-web-0.service"));
        teardown(&f);
}
END_TEST

static bool three_restarts(struct fixture *f)
{
        return f->n > 0 && last(f)->restarts >= 3 && last(f)->state == ORCH_INSTANCE_PENDING;
}

START_TEST(test_crash_restarts)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-crash-0",
                               "kind: service\nname: sdt-crash\nuser: root\ncommand: 'sleep 0.1; exit 3'\n"
                               "restart: {policy: always, backoff: 20ms, max_backoff: 100ms}\n",
                               reason),
                         0);
        ck_assert_msg(run_until(&f, three_restarts, 10000), "restarts %u, state %s: %s", last(&f)->restarts,
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        /* the exit status comes from systemd (ExecMainCode/ExecMainStatus) */
        ck_assert_msg(strstr(last(&f)->reason, "exited with code 3"), "reason: %s", last(&f)->reason);
        ck_assert_int_eq(last(&f)->code, 3);
        teardown(&f);
}
END_TEST

static bool killed_and_back(struct fixture *f)
{
        for (size_t i = 0; i < f->n; i++)
                if (strstr(f->recs[i].reason, "killed by signal KILL"))
                        return is_running(f) && last(f)->restarts >= 1;
        return false;
}

START_TEST(test_kill_restart)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];
        pid_t pid;

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-kill-0",
                               "kind: service\nname: sdt-kill\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "restart: {policy: on-failure, backoff: 10ms}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_running, 5000));
        pid = last(&f)->pid;
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_msg(run_until(&f, killed_and_back, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        ck_assert_int_ne(last(&f)->pid, pid);
        teardown(&f);
}
END_TEST

START_TEST(test_missing_binary)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-nobin-0",
                               "kind: service\nname: sdt-nobin\nuser: root\ncommand: [/nonexistent/prog]\n"
                               "restart: {policy: never}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_failed, 3000));
        ck_assert_msg(strstr(last(&f)->reason, "/nonexistent/prog") &&
                              strstr(last(&f)->reason, "No such file"),
                      "reason: %s", last(&f)->reason);
        teardown(&f);
}
END_TEST

START_TEST(test_start_job_fails)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        setup(&f);
        /* the binary exists, the working directory does not: systemd fails the start job (200/CHDIR) */
        ck_assert_int_eq(start(&f, "sdt-nodir-0",
                               "kind: service\nname: sdt-nodir\nuser: root\ncommand: [/bin/true]\n"
                               "workdir: /nonexistent/dir\nrestart: {policy: never}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_failed, 5000));
        ck_assert_msg(strstr(last(&f)->reason, "cannot change to the working directory /nonexistent/dir") &&
                              strstr(last(&f)->reason, "200/CHDIR"),
                      "reason: %s", last(&f)->reason);
        ck_assert(unit_gone("orch-sdt-nodir-0.service"));
        teardown(&f);
}
END_TEST

static bool log_has(struct fixture *f, const char *id, const char *what)
{
        char path[128];
        _cleanup_(freep) char *buf = NULL;

        orch_snprintf(path, sizeof path, "%s/logs/%s.log", f->dir, id);
        return orch_read_file(path, 1 << 20, &buf, NULL) >= 0 && strstr(buf, what);
}

static bool env_logged(struct fixture *f)
{
        return log_has(f, "sdt-env-0", "END-OF-ENV");
}

START_TEST(test_logs_and_environment)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX], path[128];
        _cleanup_(freep) char *buf = NULL;

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-env-0",
                               "kind: service\nname: sdt-env\nuser: nobody\n"
                               "command: 'env; echo to-stderr >&2; pwd; echo END-OF-ENV; sleep 60'\n"
                               "ports: [{name: http}]\nenv: {GREETING: 'hi ${ORCH_INSTANCE} on ${PORT}'}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, env_logged, 5000));
        orch_snprintf(path, sizeof path, "%s/logs/sdt-env-0.log", f.dir);
        ck_assert_int_eq(orch_read_file(path, 1 << 20, &buf, NULL), 0);
        ck_assert_msg(strstr(buf, "ORCH_INSTANCE=sdt-env-0\n") && strstr(buf, "PORT=32") &&
                              strstr(buf, "GREETING=hi sdt-env-0 on 32") && strstr(buf, "to-stderr\n") &&
                              strstr(buf, "/instances/sdt-env-0\n") && strstr(buf, "PATH=/usr/local/sbin"),
                      "log:\n%s", buf);
        teardown(&f);
}
END_TEST

static bool sandbox_logged(struct fixture *f)
{
        return log_has(f, "sdt-box-0", "END");
}

START_TEST(test_sandbox)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX], path[128];
        _cleanup_(freep) char *buf = NULL, *protect = NULL;

        setup(&f);
        ck_assert_int_eq(
                start(&f, "sdt-box-0",
                      "kind: service\nname: sdt-box\nuser: root\n"
                      "command: 'touch /usr/orch-sdt-box 2>&1; touch ./written && echo wrote-workdir; "
                      "echo tmp=$(ls -A /tmp | wc -l); echo END; sleep 60'\n"
                      "sandbox: {private_tmp: true, protect_system: true, no_new_privileges: true}\n",
                      reason),
                0);
        ck_assert(run_until(&f, sandbox_logged, 5000));
        ck_assert(unit_bool("orch-sdt-box-0.service", SERVICE, "PrivateTmp"));
        ck_assert(unit_bool("orch-sdt-box-0.service", SERVICE, "NoNewPrivileges"));
        protect = unit_str("orch-sdt-box-0.service", SERVICE, "ProtectSystem");
        ck_assert_str_eq(protect, "strict");
        orch_snprintf(path, sizeof path, "%s/logs/sdt-box-0.log", f.dir);
        ck_assert_int_eq(orch_read_file(path, 1 << 20, &buf, NULL), 0);
        /* a read-only system, but the work directory writable, and a /tmp of its own */
        ck_assert_msg(strstr(buf, "Read-only file system") && strstr(buf, "wrote-workdir") &&
                              strstr(buf, "tmp=0"),
                      "log:\n%s", buf);
        ck_assert_int_ne(access("/usr/orch-sdt-box", F_OK), 0);
        /* a work directory a private /tmp would hide is refused up front, not left to fail in systemd */
        ck_assert_int_eq(start(&f, "sdt-hidden-0",
                               "kind: service\nname: sdt-hidden\nuser: root\ncommand: [/bin/true]\n"
                               "workdir: /tmp/somewhere\nsandbox: {private_tmp: true}\n",
                               reason),
                         -EINVAL);
        ck_assert_msg(strstr(reason, "sandbox.private_tmp would hide the work directory /tmp/somewhere"),
                      "%s", reason);
        teardown(&f);
}
END_TEST

static bool dynamic_logged(struct fixture *f)
{
        return log_has(f, "sdt-dyn-0", "END");
}

START_TEST(test_dynamic_user)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX], path[128], state_dir[256], private_dir[256];
        _cleanup_(freep) char *buf = NULL;

        setup(&f);
        /* systemd 252 puts a user manager's StateDirectory= under ~/.config */
        orch_snprintf(state_dir, sizeof state_dir, "%s/.config/orch-instances/sdt-dyn-0", home_dir);
        orch_snprintf(private_dir, sizeof private_dir, "%s/.config/private/orch-instances/sdt-dyn-0",
                      home_dir);
        ck_assert_int_eq(
                start(&f, "sdt-dyn-0",
                      "kind: service\nname: sdt-dyn\ncommand: 'echo uid=$(id -u); pwd; touch ./x && "
                      "echo wrote; echo END; sleep 60'\nsandbox: {dynamic_user: true}\n",
                      reason),
                0);
        ck_assert_msg(run_until(&f, dynamic_logged, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        orch_snprintf(path, sizeof path, "%s/logs/sdt-dyn-0.log", f.dir);
        ck_assert_int_eq(orch_read_file(path, 1 << 20, &buf, NULL), 0);
        /* a user of its own (not root, not nobody), in a directory it can write */
        ck_assert_msg(!strstr(buf, "uid=0\n") && !strstr(buf, "uid=65534\n") && strstr(buf, "wrote\n") &&
                              strstr(buf, "/orch-instances/sdt-dyn-0\n"),
                      "log:\n%s", buf);
        ck_assert(unit_bool("orch-sdt-dyn-0.service", SERVICE, "DynamicUser"));
        ck_assert_int_eq(orch_supervisor_stop(f.sv, "sdt-dyn-0", "test", NULL, NULL), 0);
        ck_assert(run_until(&f, is_forgotten, 5000));
        /* its directory goes with it */
        ck_assert_int_ne(access(private_dir, F_OK), 0);
        ck_assert_int_ne(access(state_dir, F_OK), 0);
        teardown(&f);
}
END_TEST

static bool readopted_then_back(struct fixture *f)
{
        return is_running(f) && last(f)->restarts >= 1;
}

START_TEST(test_readopt)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];
        pid_t pid;
        struct orch_sv_info info;

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-keep-0",
                               "kind: service\nname: sdt-keep\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "restart: {backoff: 10ms}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_running, 5000));
        pid = last(&f)->pid;

        /* the agent goes, the unit stays */
        supervisor_close(&f, true);
        ck_assert_int_eq(kill(pid, 0), 0);
        f.n = 0;
        supervisor_open(&f, address);
        ck_assert_int_eq(orch_supervisor_recover(f.sv, true), 1);
        ck_assert_int_eq(orch_supervisor_info(f.sv, "sdt-keep-0", &info), 0);
        ck_assert_int_eq(info.pid, pid);
        ck_assert_int_eq(info.state, ORCH_INSTANCE_RUNNING);
        ck_assert_uint_eq(info.restarts, 0);

        /* still watched: its death is seen, with its status, and it is restarted */
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_msg(run_until(&f, readopted_then_back, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        teardown(&f);
}
END_TEST

/* A unit named as an instance's, failed and left loaded (no CollectMode): what an older agent, or
 * someone by hand, could leave behind. */
static void make_failed_unit(const char *name)
{
        sd_bus *bus = NULL;
        sd_bus_message *m = NULL;
        char *state = NULL;
        int r = sd_bus_new(&bus);

        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1",
                                                   "/org/freedesktop/systemd1",
                                                   "org.freedesktop.systemd1.Manager", "StartTransientUnit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ssa(sv)a(sa(sv))", name, "fail", 2, "Type", "s", "exec",
                                          "ExecStart", "a(sasb)", 1, "/bin/false", 1, "/bin/false", 0, 0);
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, NULL, NULL);
        sd_bus_message_unref(m);
        sd_bus_flush_close_unref(bus);
        ck_assert_int_ge(r, 0);
        for (int i = 0; i < 200; i++) {
                free(state);
                state = NULL;
                if (unit_prop(name, UNIT, "ActiveState", 's', &state) >= 0 && streq(state, "failed"))
                        break;
                usleep(10000);
        }
        ck_assert_str_eq(state, "failed");
        free(state);
}

START_TEST(test_name_taken_by_failed_unit)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        setup(&f);
        make_failed_unit("orch-sdt-taken-0.service");
        ck_assert_int_eq(start(&f, "sdt-taken-0",
                               "kind: service\nname: sdt-taken\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "restart: {policy: never}\n",
                               reason),
                         0);
        ck_assert_msg(run_until(&f, is_running, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        ck_assert_uint_eq(last(&f)->restarts, 0);
        teardown(&f);
}
END_TEST

/* systemctl daemon-reexec: the manager serializes itself, execs, and drops every private connection. */
static void manager_reexec(void)
{
        sd_bus *bus = NULL;
        int r = sd_bus_new(&bus);

        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        ck_assert_int_ge(r, 0);
        /* the answer may be lost with the connection: only sending it matters */
        sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                           "org.freedesktop.systemd1.Manager", "Reexecute", NULL, NULL, NULL);
        sd_bus_flush_close_unref(bus);
}

static pid_t victim;

static bool replaced(struct fixture *f)
{
        return is_running(f) && last(f)->pid != victim;
}

START_TEST(test_manager_reexec)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        setup(&f);
        ck_assert_int_eq(start(&f, "sdt-reexec-0",
                               "kind: service\nname: sdt-reexec\nuser: root\ncommand: [/bin/sleep, '300']\n"
                               "restart: {backoff: 10ms}\n",
                               reason),
                         0);
        ck_assert(run_until(&f, is_running, 5000));
        /* killed while the agent cannot hear the manager: found out when it is back */
        victim = last(&f)->pid;
        manager_reexec();
        ck_assert_int_eq(kill(victim, SIGKILL), 0);
        ck_assert_msg(run_until(&f, replaced, 10000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        ck_assert_uint_eq(last(&f)->restarts, 1);
        /* and on the new connection, signals flow again */
        victim = last(&f)->pid;
        ck_assert_int_eq(kill(victim, SIGKILL), 0);
        ck_assert_msg(run_until(&f, replaced, 5000), "state %s: %s",
                      orch_instance_state_to_string(last(&f)->state), last(&f)->reason);
        ck_assert_uint_eq(last(&f)->restarts, 2);
        teardown(&f);
}
END_TEST

START_TEST(test_unreachable)
{
        struct fixture f;
        char reason[ORCH_SV_REASON_MAX];

        memset(&f, 0, sizeof f);
        ck_assert_int_eq(uv_loop_init(&f.loop), 0);
        orch_snprintf(f.dir, sizeof f.dir, "/var/lib/orch-test-sd-%d-XXXXXX", (int)getppid());
        ck_assert_ptr_nonnull(mkdtemp(f.dir));
        ck_assert_int_eq(orch_ports_new(32000, 32999, &f.ports), 0);
        ck_assert_int_eq(orch_logs_new(&f.loop, f.dir, 50, &f.logs), 0);
        supervisor_open(&f, "unix:path=/nonexistent/orch-test/private");
        ck_assert(!orch_supervisor_driver_available(f.sv, ORCH_DRIVER_SYSTEMD, reason, sizeof reason));
        ck_assert_msg(strstr(reason,
                             "no systemd manager reachable at unix:path=/nonexistent/orch-test/private: "
                             "No such file or directory"),
                      "%s", reason);
        ck_assert(orch_supervisor_driver_available(f.sv, ORCH_DRIVER_EXEC, reason, sizeof reason));
        ck_assert_int_lt(start(&f, "sdt-none-0",
                               "kind: service\nname: sdt-none\nuser: root\ncommand: [/bin/true]\n", reason),
                         0);
        ck_assert_msg(
                strstr(reason, "driver systemd: no systemd manager reachable at unix:path=/nonexistent"),
                "%s", reason);
        ck_assert_uint_eq(orch_supervisor_count(f.sv), 0);
        teardown(&f);
}
END_TEST

static Suite *driver_systemd_suite(void)
{
        Suite *s = suite_create("driver-systemd");
        TCase *tc = tcase_create("user-manager");

        manager_start();
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_run_limits_stop);
        tcase_add_test(tc, test_crash_restarts);
        tcase_add_test(tc, test_kill_restart);
        tcase_add_test(tc, test_missing_binary);
        tcase_add_test(tc, test_start_job_fails);
        tcase_add_test(tc, test_logs_and_environment);
        tcase_add_test(tc, test_sandbox);
        tcase_add_test(tc, test_dynamic_user);
        tcase_add_test(tc, test_readopt);
        tcase_add_test(tc, test_manager_reexec);
        tcase_add_test(tc, test_name_taken_by_failed_unit);
        tcase_add_test(tc, test_unreachable);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN_CLEANUP(driver_systemd_suite, manager_stop)
