/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <systemd/sd-bus.h>

#include "driver.h"
#include "hashmap.h"
#include "json.h"
#include "log.h"
#include "util.h"
#include "banned.h"

/*
 * The systemd driver: one transient service unit per instance, orch-<instance>.service in
 * orch.slice, started with StartTransientUnit. systemd confines, limits, stops and kills; orch's
 * supervisor keeps restarts (the unit has Restart=no), health checks, ports and logs, exactly as
 * with exec.
 *
 * State comes from the manager's signals, never from polling: JobRemoved says how the start job
 * ended (Type=exec: "done" once the command was executed, so a command that cannot run fails the
 * job), PropertiesChanged carries ActiveState, ExecMainPID, ExecMainCode/ExecMainStatus and
 * Result. The manager flushes a unit's property changes before its JobRemoved and before the unit
 * is garbage-collected, so the values are known when the decision is made. CollectMode=
 * inactive-or-failed has the manager drop a unit as soon as it ended, which frees its name for
 * the next start (a transient unit cannot be created again while loaded).
 *
 * sd-bus runs on the agent's libuv loop: uv_poll on sd_bus_get_fd() with the events of
 * sd_bus_get_events(), a uv_timer for sd_bus_get_timeout(), sd_bus_process() in their callbacks.
 * Only the agent's start-up (re-adoption, leftovers) uses synchronous calls.
 */

#define DEST           "org.freedesktop.systemd1"
#define MANAGER_PATH   "/org/freedesktop/systemd1"
#define MANAGER_IFACE  "org.freedesktop.systemd1.Manager"
#define UNIT_IFACE     "org.freedesktop.systemd1.Unit"
#define SERVICE_IFACE  "org.freedesktop.systemd1.Service"
#define PROPS_IFACE    "org.freedesktop.DBus.Properties"
#define UNIT_PATH      "/org/freedesktop/systemd1/unit"
#define SYSTEM_PRIVATE "unix:path=/run/systemd/private"
#define UNIT_PREFIX    "orch-"
#define UNIT_SUFFIX    ".service"
#define SLICE          "orch.slice"
#define STATE_SUBDIR   "orch-instances"

/* Calls get this long; the manager answers local calls in microseconds, unless it is stuck. */
#define CALL_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define RECONNECT_MS      1000
/* Messages handled per loop iteration, so that a burst of signals cannot starve the loop. */
#define PROCESS_BATCH 256

enum active_state {
        ACTIVE_UNKNOWN,
        ACTIVE_ACTIVE,
        ACTIVE_RELOADING,
        ACTIVE_INACTIVE,
        ACTIVE_FAILED,
        ACTIVE_ACTIVATING,
        ACTIVE_DEACTIVATING,
        ACTIVE_MAINTENANCE,
        _ACTIVE_MAX,
};

static const char *const active_states[_ACTIVE_MAX] = {
        [ACTIVE_UNKNOWN] = "unknown",
        [ACTIVE_ACTIVE] = "active",
        [ACTIVE_RELOADING] = "reloading",
        [ACTIVE_INACTIVE] = "inactive",
        [ACTIVE_FAILED] = "failed",
        [ACTIVE_ACTIVATING] = "activating",
        [ACTIVE_DEACTIVATING] = "deactivating",
        [ACTIVE_MAINTENANCE] = "maintenance",
};

static enum active_state active_from_string(const char *s)
{
        for (size_t i = 1; i < _ACTIVE_MAX; i++)
                if (streq(s, active_states[i]))
                        return (enum active_state)i;
        return ACTIVE_UNKNOWN;
}

/* The unit has a process, or is still taking down what it had. */
static bool active_is_up(enum active_state a)
{
        return a == ACTIVE_ACTIVE || a == ACTIVE_RELOADING || a == ACTIVE_DEACTIVATING;
}

static bool active_is_down(enum active_state a)
{
        return a == ACTIVE_INACTIVE || a == ACTIVE_FAILED;
}

enum phase {
        PHASE_IDLE,    /* nothing started, or its end was reported */
        PHASE_CALLING, /* StartTransientUnit sent, no answer yet */
        PHASE_JOB,     /* the start job runs */
        PHASE_RUNNING, /* the start job is done: the process runs, until the unit is down */
};

/* A unit the manager listed at start-up (re-adoption and leftovers). */
struct listed {
        struct orch_hmap_node hnode;
        char *name;
        char *description;
        enum active_state active;
};

struct sd_driver {
        struct orch_driver_impl base;
        uv_loop_t *loop;
        char *address;    /* NULL: the system bus */
        char *where;      /* for messages: the address, or "the system bus" */
        bool system;      /* the system manager (not a user manager) */
        char *state_base; /* where the manager puts StateDirectory=, or NULL when not known */
        char *node;
        sd_bus *bus; /* NULL while not connected */
        sd_bus_slot *match_jobs;
        sd_bus_slot *match_props;
        char *error; /* why not connected */
        bool ever_connected;

        uv_poll_t poll;
        bool poll_active;
        bool poll_closing;
        uv_timer_t timer; /* sd-bus timeouts, and the rest of a batch */
        uv_timer_t reconnect;
        int open_handles;
        bool freeing;

        struct orch_hmap units; /* by unit name */
        struct listed *listed;  /* the manager's orch units, listed once during a recovery */
        size_t n_listed;
        struct orch_hmap listed_by_name;
        bool listed_valid;
};

struct sd_unit {
        struct orch_driver_unit base;
        struct orch_hmap_node hnode;
        struct sd_driver *d;
        struct orch_driver_params p;
        struct orch_log_ctx log_ctx;
        char *name;        /* orch-<id>.service */
        char *path;        /* its object path */
        char *description; /* names the node: how units of other agents are told apart */
        char *state_dir;   /* dynamic_user without a workdir: the StateDirectory, absolute */
        char *job;         /* the start job */
        enum phase phase;
        bool start_retried; /* this start was sent again once after UnitExists */
        bool pid_reported;
        bool cgroup_asked; /* the ControlGroup answer came (or failed): `started` carries the cgroup */

        /* what the manager said last about the current run */
        enum active_state active;
        bool not_found; /* LoadState=not-found: the unit is gone (or never was) */
        pid_t main_pid;
        int main_code; /* CLD_EXITED, CLD_KILLED, CLD_DUMPED; 0 while it runs */
        int main_status;
        char result[32];
        char *cgroup;
        struct orch_cgroup_usage usage;

        sd_bus_slot *start_slot;
        sd_bus_slot *pid_slot;       /* after the start job, when no signal carried the pid */
        sd_bus_slot *cgroup_slot;    /* after the start job */
        sd_bus_slot *resync_slot[2]; /* Unit and Service properties after a reconnection */
        sd_bus_slot *usage_slot[3];
};

static const struct orch_driver_ops systemd_ops;

static void bus_rearm(struct sd_driver *d);
static int send_start(struct sd_unit *u, char *reason, size_t reason_size);
static int on_fire_and_forget(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);
static void bus_drop(struct sd_driver *d, int error);
static void unit_update(struct sd_unit *u);

/* --- properties ------------------------------------------------------------------------------ */

/* Reads one property value (the message is at its variant) into the unit; skips the others. */
static int read_prop(struct sd_unit *u, const char *name, sd_bus_message *m)
{
        const char *s;
        uint32_t pid;
        int32_t i;
        uint64_t t;
        int r;

        if (streq(name, "ActiveState")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0)
                        u->active = active_from_string(s);
        } else if (streq(name, "LoadState")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0)
                        u->not_found = streq(s, "not-found");
        } else if (streq(name, "ExecMainPID")) {
                r = sd_bus_message_read(m, "v", "u", &pid);
                if (r >= 0)
                        u->main_pid = (pid_t)pid;
        } else if (streq(name, "ExecMainCode")) {
                r = sd_bus_message_read(m, "v", "i", &i);
                if (r >= 0)
                        u->main_code = i;
        } else if (streq(name, "ExecMainStatus")) {
                r = sd_bus_message_read(m, "v", "i", &i);
                if (r >= 0)
                        u->main_status = i;
        } else if (streq(name, "Result")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0)
                        orch_strlcpy(u->result, s, sizeof u->result);
        } else if (streq(name, "ControlGroup")) {
                r = sd_bus_message_read(m, "v", "s", &s);
                if (r >= 0 && *s) {
                        char *c = strdup(s);
                        if (c) {
                                free(u->cgroup);
                                u->cgroup = c;
                        }
                }
        } else if (streq(name, "MemoryCurrent")) {
                r = sd_bus_message_read(m, "v", "t", &t);
                if (r >= 0)
                        u->usage.memory_bytes = t; /* UINT64_MAX: not known, as ours */
        } else if (streq(name, "CPUUsageNSec")) {
                r = sd_bus_message_read(m, "v", "t", &t);
                if (r >= 0)
                        u->usage.cpu_usec = t == UINT64_MAX ? ORCH_CGROUP_USAGE_UNKNOWN : t / NSEC_PER_USEC;
        } else if (streq(name, "TasksCurrent")) {
                r = sd_bus_message_read(m, "v", "t", &t);
                if (r >= 0)
                        u->usage.pids = t;
        } else
                r = sd_bus_message_skip(m, "v");
        return r;
}

/* a{sv}, as in PropertiesChanged and GetAll */
static int read_props(struct sd_unit *u, sd_bus_message *m)
{
        const char *name;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &name);
                if (r >= 0)
                        r = read_prop(u, name, m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static void reset_run(struct sd_unit *u)
{
        u->active = ACTIVE_UNKNOWN;
        u->not_found = false;
        u->main_pid = 0;
        u->main_code = 0;
        u->main_status = 0;
        u->result[0] = '\0';
        u->pid_reported = false;
        u->cgroup_asked = false;
        free(u->cgroup);
        u->cgroup = NULL;
        free(u->job);
        u->job = NULL;
        u->usage = (struct orch_cgroup_usage){ORCH_CGROUP_USAGE_UNKNOWN, ORCH_CGROUP_USAGE_UNKNOWN,
                                              ORCH_CGROUP_USAGE_UNKNOWN};
}

/* systemd's own exit codes of a process that never got to run the command (systemd.exec(5)). */
static const char *exec_status_name(int status)
{
        static const struct {
                int status;
                const char *name;
        } names[] = {
                {200, "CHDIR"},
                {201, "NICE"},
                {202, "FDS"},
                {203, "EXEC"},
                {204, "MEMORY"},
                {205, "LIMITS"},
                {206, "OOM_ADJUST"},
                {207, "SIGNAL_MASK"},
                {208, "STDIN"},
                {209, "STDOUT"},
                {210, "CHROOT"},
                {211, "IOPRIO"},
                {212, "TIMERSLACK"},
                {213, "SECUREBITS"},
                {214, "SETSCHEDULER"},
                {215, "CPUAFFINITY"},
                {216, "GROUP"},
                {217, "USER"},
                {218, "CAPABILITIES"},
                {219, "CGROUP"},
                {220, "SETSID"},
                {221, "CONFIRM"},
                {222, "STDERR"},
                {224, "PAM"},
                {225, "NETWORK"},
                {226, "NAMESPACE"},
                {227, "NO_NEW_PRIVILEGES"},
                {228, "SECCOMP"},
                {231, "APPARMOR_PROFILE"},
                {233, "RUNTIME_DIRECTORY"},
                {235, "CHOWN"},
                {237, "KEYRING"},
                {238, "STATE_DIRECTORY"},
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (names[i].status == status)
                        return names[i].name;
        return NULL;
}

/* Why a start job did not end in "done", for a person: what systemd could not do, and with what. */
static void describe_start_failure(const struct sd_unit *u, const char *job_result, char *buf, size_t size)
{
        const char *what = NULL, *name;
        char detail[ORCH_DRIVER_REASON_MAX] = "";

        if (u->main_code == CLD_EXITED && (name = exec_status_name(u->main_status))) {
                switch (u->main_status) {
                case 200:
                        orch_snprintf(detail, sizeof detail, "cannot change to the working directory %s",
                                      u->p.workdir ? u->p.workdir : strna(u->state_dir));
                        what = detail;
                        break;
                case 203:
                        orch_snprintf(detail, sizeof detail, "exec %s failed", u->p.argv[0]);
                        what = detail;
                        break;
                case 216:
                        orch_snprintf(detail, sizeof detail, "cannot switch to group '%s'",
                                      strna(u->p.group));
                        what = detail;
                        break;
                case 217:
                        orch_snprintf(detail, sizeof detail, "cannot switch to user '%s'", strna(u->p.user));
                        what = detail;
                        break;
                default:
                        what = "the process could not be set up";
                }
                orch_snprintf(buf, size, "%s: %s (systemd exit status %d/%s; see the journal of %s)",
                              u->name, what, u->main_status, name, u->name);
                return;
        }
        orch_snprintf(buf, size, "%s: the start job ended with '%s'%s%s%s", u->name, job_result,
                      *u->result ? " (result " : "", u->result, *u->result ? ")" : "");
}

/* --- the unit's life on the bus ---------------------------------------------------------------- */

static void report_exit(struct sd_unit *u)
{
        struct orch_driver_exit e = {.code = -1};

        u->phase = PHASE_IDLE;
        if (u->main_code == CLD_EXITED) {
                e.have_status = true;
                e.code = u->main_status;
        } else if (u->main_code == CLD_KILLED || u->main_code == CLD_DUMPED) {
                e.have_status = true;
                e.signal = u->main_status;
        } else if (u->not_found)
                e.reason = "ended while the agent could not hear from systemd (the unit is gone)";
        e.oom = streq(u->result, "oom-kill");
        u->p.events->exited(u->p.userdata, &e); /* may free u */
}

static void report_start_failure(struct sd_unit *u, const char *reason)
{
        struct orch_driver_exit e = {.code = -1, .start_failed = true, .reason = reason};

        u->phase = PHASE_IDLE;
        u->p.events->exited(u->p.userdata, &e); /* may free u */
}

/* The call failed because the connection went: the outcome is learnt when it is back. */
static bool lost_connection(struct sd_unit *u, sd_bus_message *m)
{
        return !u->d->bus || sd_bus_is_open(u->d->bus) <= 0 ||
               sd_bus_message_is_method_error(m, SD_BUS_ERROR_NO_REPLY) > 0 ||
               sd_bus_message_is_method_error(m, "org.freedesktop.DBus.Error.Disconnected") > 0;
}

/* Decides what the latest news means for the supervisor. */
static void unit_update(struct sd_unit *u)
{
        if (u->phase != PHASE_RUNNING)
                return;
        if (!u->pid_reported && u->main_pid > 0 && u->cgroup_asked && active_is_up(u->active)) {
                u->pid_reported = true;
                u->p.events->started(u->p.userdata, u->main_pid);
        }
        if (active_is_down(u->active) || u->not_found)
                report_exit(u); /* may free u */
}

/* A Get answered: one property, then what it means. */
static void on_get(struct sd_unit *u, const char *prop, sd_bus_message *m, bool update)
{
        if (sd_bus_message_is_method_error(m, NULL)) {
                if (!lost_connection(u, m))
                        orch_log(ORCH_LOG_DEBUG, &u->log_ctx, "%s: %s: %s", u->name, prop,
                                 sd_bus_message_get_error(m)->message);
                return;
        }
        if (read_prop(u, prop, m) < 0) {
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: malformed %s from systemd", u->name, prop);
                return;
        }
        if (update)
                unit_update(u);
}

#define DEFINE_GET_CB(fn, slot, prop, update)                                     \
        static int fn(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) \
        {                                                                         \
                struct sd_unit *u = userdata;                                     \
                u->slot = sd_bus_slot_unref(u->slot);                             \
                on_get(u, prop, m, update);                                       \
                return 0;                                                         \
        }

DEFINE_GET_CB(on_get_pid, pid_slot, "ExecMainPID", true)
DEFINE_GET_CB(on_get_memory, usage_slot[0], "MemoryCurrent", false)
DEFINE_GET_CB(on_get_cpu, usage_slot[1], "CPUUsageNSec", false)
DEFINE_GET_CB(on_get_tasks, usage_slot[2], "TasksCurrent", false)

/* The instance is reported running with its cgroup: one round trip after the start job. */
static int on_get_cgroup(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct sd_unit *u = userdata;

        u->cgroup_slot = sd_bus_slot_unref(u->cgroup_slot);
        if (lost_connection(u, m))
                return 0; /* asked again after the reconnection */
        u->cgroup_asked = true;
        on_get(u, "ControlGroup", m, true); /* may free u */
        return 0;
}
static int get_async(struct sd_unit *u, sd_bus_slot **slot, const char *prop, sd_bus_message_handler_t cb)
{
        int r;

        if (!u->d->bus || *slot)
                return 0;
        r = sd_bus_call_method_async(u->d->bus, slot, DEST, u->path, PROPS_IFACE, "Get", cb, u, "ss",
                                     SERVICE_IFACE, prop);
        if (r < 0)
                orch_log(ORCH_LOG_DEBUG, &u->log_ctx, "%s: cannot ask for %s: %s", u->name, prop,
                         strerror(-r));
        return r;
}

/* The start job ended. Type=exec: "done" means the command runs. */
static void start_job_removed(struct sd_unit *u, const char *result)
{
        char reason[ORCH_DRIVER_REASON_MAX];

        free(u->job);
        u->job = NULL;
        if (!streq(result, "done")) {
                describe_start_failure(u, result, reason, sizeof reason);
                report_start_failure(u, reason); /* may free u */
                return;
        }
        u->phase = PHASE_RUNNING;
        if (get_async(u, &u->cgroup_slot, "ControlGroup", on_get_cgroup) < 0)
                u->cgroup_asked = true; /* reported without it */
        /* the pid normally came with the properties the manager flushed before the job's end */
        if (u->main_pid <= 0)
                get_async(u, &u->pid_slot, "ExecMainPID", on_get_pid);
        bus_rearm(u->d);
        unit_update(u); /* may free u */
}

static int on_start_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct sd_unit *u = userdata;
        char reason[ORCH_DRIVER_REASON_MAX];
        const char *job;

        u->start_slot = sd_bus_slot_unref(u->start_slot);
        if (sd_bus_message_is_method_error(m, "org.freedesktop.systemd1.UnitExists") && !u->start_retried) {
                /* A unit of that name is still loaded: a failed one that nothing collects (made by
                 * an older agent, or by hand), or one the manager has not collected yet. Resetting
                 * frees the name of a failed unit; the manager handles the calls in order. */
                u->start_retried = true;
                orch_snprintf(reason, sizeof reason, "systemd refused to start %s: %s", u->name,
                              sd_bus_message_get_error(m)->message);
                if (sd_bus_call_method_async(u->d->bus, NULL, DEST, MANAGER_PATH, MANAGER_IFACE,
                                             "ResetFailedUnit", on_fire_and_forget,
                                             (void *)"ResetFailedUnit", "s", u->name) >= 0 &&
                    send_start(u, reason, sizeof reason) >= 0)
                        return 0;
                report_start_failure(u, reason); /* may free u */
                return 0;
        }
        if (sd_bus_message_is_method_error(m, NULL)) {
                if (lost_connection(u, m))
                        return 0; /* the resync after the reconnection finds out */
                orch_snprintf(reason, sizeof reason, "systemd refused to start %s: %s", u->name,
                              sd_bus_message_get_error(m)->message);
                report_start_failure(u, reason); /* may free u */
                return 0;
        }
        if (sd_bus_message_read(m, "o", &job) < 0 || !(u->job = strdup(job))) {
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: no start job in systemd's answer", u->name);
                u->job = NULL;
        }
        u->phase = PHASE_JOB;
        return 0;
}

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct sd_driver *d = userdata;
        const char *job, *unit, *result;
        uint32_t id;
        struct sd_unit *u;

        if (sd_bus_message_read(m, "uoss", &id, &job, &unit, &result) < 0)
                return 0;
        u = orch_hmap_entry(orch_hmap_get(&d->units, unit), struct sd_unit, hnode);
        /* without a job path (an answer lost with a connection) the unit's next job end is the start's */
        if (!u || u->phase != PHASE_JOB || (u->job && !streq(u->job, job)))
                return 0;
        start_job_removed(u, result);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct sd_driver *d = userdata;
        _cleanup_(freep) char *name = NULL;
        const char *iface;
        struct sd_unit *u;

        if (sd_bus_path_decode(sd_bus_message_get_path(m), UNIT_PATH, &name) <= 0)
                return 0;
        u = orch_hmap_entry(orch_hmap_get(&d->units, name), struct sd_unit, hnode);
        if (!u || u->phase == PHASE_IDLE)
                return 0;
        if (sd_bus_message_read(m, "s", &iface) < 0 || read_props(u, m) < 0) {
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: malformed PropertiesChanged from systemd",
                         u->name);
                return 0;
        }
        unit_update(u); /* may free u */
        return 0;
}

/* After a reconnection: what happened while the agent could not hear. */
static void resync_done(struct sd_unit *u)
{
        if (u->resync_slot[0] || u->resync_slot[1])
                return; /* the other answer is still to come */
        switch (u->phase) {
        case PHASE_CALLING:
        case PHASE_JOB:
                if (u->active == ACTIVE_ACTIVATING) {
                        /* the start job still runs: its JobRemoved comes (matched by the unit's name) */
                        free(u->job);
                        u->job = NULL;
                        u->phase = PHASE_JOB;
                        return;
                }
                if (!active_is_up(u->active)) {
                        char reason[ORCH_DRIVER_REASON_MAX];
                        orch_snprintf(
                                reason, sizeof reason,
                                "%s: the connection to systemd was lost while it was being started, and "
                                "it does not run",
                                u->name);
                        report_start_failure(u, reason); /* may free u */
                        return;
                }
                u->phase = PHASE_RUNNING;
                if (u->cgroup || get_async(u, &u->cgroup_slot, "ControlGroup", on_get_cgroup) < 0)
                        u->cgroup_asked = true;
                break;
        case PHASE_RUNNING:
                break;
        case PHASE_IDLE:
                return;
        }
        unit_update(u); /* may free u */
}

static int on_resync(sd_bus_message *m, void *userdata, int which)
{
        struct sd_unit *u = userdata;

        u->resync_slot[which] = sd_bus_slot_unref(u->resync_slot[which]);
        if (sd_bus_message_is_method_error(m, NULL)) {
                if (lost_connection(u, m))
                        return 0;
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: cannot read its state: %s", u->name,
                         sd_bus_message_get_error(m)->message);
        } else if (read_props(u, m) < 0)
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: malformed properties from systemd", u->name);
        resync_done(u);
        return 0;
}

static int on_resync_unit(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        return on_resync(m, userdata, 0);
}

static int on_resync_service(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        return on_resync(m, userdata, 1);
}

static void unit_resync(struct sd_unit *u)
{
        if (u->phase == PHASE_IDLE)
                return;
        /* a unit the manager does not know any more answers as not-found and inactive */
        if (sd_bus_call_method_async(u->d->bus, &u->resync_slot[0], DEST, u->path, PROPS_IFACE, "GetAll",
                                     on_resync_unit, u, "s", UNIT_IFACE) < 0 ||
            sd_bus_call_method_async(u->d->bus, &u->resync_slot[1], DEST, u->path, PROPS_IFACE, "GetAll",
                                     on_resync_service, u, "s", SERVICE_IFACE) < 0)
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: cannot ask systemd for its state", u->name);
}

static void unit_cancel_calls(struct sd_unit *u)
{
        u->start_slot = sd_bus_slot_unref(u->start_slot);
        u->pid_slot = sd_bus_slot_unref(u->pid_slot);
        u->cgroup_slot = sd_bus_slot_unref(u->cgroup_slot);
        for (size_t i = 0; i < ELEMENTSOF(u->resync_slot); i++)
                u->resync_slot[i] = sd_bus_slot_unref(u->resync_slot[i]);
        for (size_t i = 0; i < ELEMENTSOF(u->usage_slot); i++)
                u->usage_slot[i] = sd_bus_slot_unref(u->usage_slot[i]);
}

/* Answers to calls whose outcome changes nothing here: a unit that is gone already is fine. */
static int on_fire_and_forget(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        const char *what = userdata;

        if (sd_bus_message_is_method_error(m, NULL) &&
            !sd_bus_message_is_method_error(m, "org.freedesktop.systemd1.NoSuchUnit") &&
            !sd_bus_message_is_method_error(m, SD_BUS_ERROR_NO_REPLY) &&
            !sd_bus_message_is_method_error(m, "org.freedesktop.DBus.Error.Disconnected"))
                log_warn("driver systemd: %s: %s", what, sd_bus_message_get_error(m)->message);
        return 0;
}

/* --- the connection ---------------------------------------------------------------------------- */

static void timer_cb(uv_timer_t *t);

static void bus_process(struct sd_driver *d)
{
        for (int i = 0; i < PROCESS_BATCH && d->bus; i++) {
                int r = sd_bus_process(d->bus, NULL);
                if (r < 0) {
                        bus_drop(d, r);
                        return;
                }
                if (r == 0)
                        break;
        }
        bus_rearm(d);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
        bus_process(container_of(h, struct sd_driver, poll));
}

static void timer_cb(uv_timer_t *t)
{
        bus_process(container_of(t, struct sd_driver, timer));
}

/* Polls for what sd-bus waits for next; called after processing and after every call made. */
static void bus_rearm(struct sd_driver *d)
{
        uint64_t until, now;
        int events, r;

        if (!d->bus || !d->poll_active)
                return;
        events = sd_bus_get_events(d->bus);
        if (events < 0) {
                /* closing: the next processing reports it */
                uv_timer_start(&d->timer, timer_cb, 0, 0);
                return;
        }
        r = uv_poll_start(&d->poll,
                          ((events & POLLIN) ? UV_READABLE : 0) | ((events & POLLOUT) ? UV_WRITABLE : 0),
                          poll_cb);
        if (r < 0)
                log_warn("driver systemd: cannot poll the connection: %s", uv_strerror(r));
        /* 0 when messages wait in sd-bus's queue already (read during a synchronous call) */
        r = sd_bus_get_timeout(d->bus, &until);
        if (r > 0 && until != UINT64_MAX) {
                now = orch_now_usec();
                uv_timer_start(&d->timer, timer_cb,
                               until <= now ? 0 : (until - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, 0);
        } else
                uv_timer_stop(&d->timer);
}

static void handle_closed(uv_handle_t *h)
{
        struct sd_driver *d = h->data;

        if ((uv_poll_t *)h == &d->poll)
                d->poll_closing = false;
        if (--d->open_handles == 0 && d->freeing) {
                free(d->address);
                free(d->where);
                free(d->state_base);
                free(d->node);
                free(d->error);
                free(d);
        }
}

static _printf_(2, 3) void set_error(struct sd_driver *d, const char *fmt, ...)
{
        va_list ap;
        char buf[ORCH_DRIVER_REASON_MAX];

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        free(d->error);
        d->error = strdup(buf);
}

/* StateDirectory= lives in /var/lib for the system manager, in $XDG_CONFIG_HOME (or ~/.config) of a
 * user manager (systemd 252), as its environment says. */
static char *find_state_base(const struct sd_driver *d, sd_bus *bus)
{
        _cleanup_(orch_strv_freep) char **env = NULL;
        const char *home = NULL, *config = NULL;

        if (d->system)
                return strdup("/var/lib");
        if (sd_bus_get_property_strv(bus, DEST, MANAGER_PATH, MANAGER_IFACE, "Environment", NULL, &env) < 0)
                return NULL;
        for (char **e = env; e && *e; e++) {
                if (startswith(*e, "XDG_CONFIG_HOME="))
                        config = *e + strlen("XDG_CONFIG_HOME=");
                else if (startswith(*e, "HOME="))
                        home = *e + strlen("HOME=");
        }
        if (config && config[0] == '/')
                return strdup(config);
        return home && home[0] == '/' ? orch_strdup_printf("%s/.config", home) : NULL;
}

static int bus_connect(struct sd_driver *d)
{
        _cleanup_(sd_bus_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *version = NULL;
        const char *sender;
        char match[256];
        int r;

        if (d->address) {
                /* a manager's private socket: a direct connection, no bus and no Hello */
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, d->address);
                if (r >= 0)
                        r = sd_bus_negotiate_fds(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        } else
                r = sd_bus_open_system(&bus);
        if (r < 0) {
                set_error(d, "no systemd manager reachable at %s: %s", d->where, strerror(-r));
                return r;
        }
        sd_bus_set_method_call_timeout(bus, CALL_TIMEOUT_USEC);
        /* a socket that accepts with no manager behind it (or a stuck one) fails here, not later */
        r = sd_bus_get_property_string(bus, DEST, MANAGER_PATH, MANAGER_IFACE, "Version", &error, &version);
        if (r >= 0)
                r = sd_bus_call_method(bus, DEST, MANAGER_PATH, MANAGER_IFACE, "Subscribe", &error, NULL,
                                       NULL);
        if (r < 0) {
                set_error(d, "no systemd manager reachable at %s: %s", d->where,
                          sd_bus_error_is_set(&error) ? error.message : strerror(-r));
                return r;
        }
        /* on a direct connection messages have no sender: a sender match would never match */
        if (!d->state_base)
                d->state_base = find_state_base(d, bus);
        sender = sd_bus_is_bus_client(bus) > 0 ? DEST : NULL;
        r = sd_bus_match_signal(bus, &d->match_jobs, sender, MANAGER_PATH, MANAGER_IFACE, "JobRemoved",
                                on_job_removed, d);
        if (r >= 0) {
                orch_snprintf(match, sizeof match,
                              "type='signal',%s%s%sinterface='" PROPS_IFACE "',member='PropertiesChanged',"
                              "path_namespace='" UNIT_PATH "'",
                              sender ? "sender='" : "", sender ? sender : "", sender ? "'," : "");
                r = sd_bus_add_match(bus, &d->match_props, match, on_properties_changed, d);
        }
        if (r < 0) {
                d->match_jobs = sd_bus_slot_unref(d->match_jobs);
                set_error(d, "cannot subscribe to the signals of the systemd manager at %s: %s", d->where,
                          strerror(-r));
                return r;
        }
        r = uv_poll_init(d->loop, &d->poll, sd_bus_get_fd(bus));
        if (r < 0) {
                d->match_jobs = sd_bus_slot_unref(d->match_jobs);
                d->match_props = sd_bus_slot_unref(d->match_props);
                set_error(d, "cannot poll the connection to systemd: %s", uv_strerror(r));
                return -ENOMEM;
        }
        d->poll.data = d;
        d->open_handles++;
        d->poll_active = true;
        d->bus = TAKE_PTR(bus);
        if (!d->ever_connected)
                log_info("driver systemd: connected to systemd %s at %s", version, d->where);
        else
                log_info("driver systemd: reconnected to systemd %s at %s", version, d->where);
        d->ever_connected = true;
        free(d->error);
        d->error = NULL;
        bus_rearm(d);
        return 0;
}

static void reconnect_cb(uv_timer_t *t)
{
        struct sd_driver *d = container_of(t, struct sd_driver, reconnect);
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;
        _cleanup_(freep) char *last = d->error ? strdup(d->error) : NULL;

        if (d->poll_closing || bus_connect(d) < 0) {
                if (d->error && !streq_ptr(last, d->error))
                        log_warn("driver systemd: %s; retrying every second", d->error);
                uv_timer_start(&d->reconnect, reconnect_cb, RECONNECT_MS, 0);
                return;
        }
        for (n = orch_hmap_first(&d->units, &it); n; n = orch_hmap_next(&d->units, &it))
                unit_resync(container_of(n, struct sd_unit, hnode));
        bus_rearm(d);
}

/* The connection is gone (a manager re-executing drops every private connection): units live
 * on; reconnect and ask what happened meanwhile. */
static void bus_drop(struct sd_driver *d, int error)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        set_error(d, "lost the connection to the systemd manager at %s: %s", d->where, strerror(-error));
        log_warn("driver systemd: %s; reconnecting", d->error);
        for (n = orch_hmap_first(&d->units, &it); n; n = orch_hmap_next(&d->units, &it))
                unit_cancel_calls(container_of(n, struct sd_unit, hnode));
        d->match_jobs = sd_bus_slot_unref(d->match_jobs);
        d->match_props = sd_bus_slot_unref(d->match_props);
        /* stop polling before the descriptor is closed */
        if (d->poll_active) {
                uv_poll_stop(&d->poll);
                uv_close((uv_handle_t *)&d->poll, handle_closed);
                d->poll_active = false;
                d->poll_closing = true;
        }
        uv_timer_stop(&d->timer);
        d->bus = sd_bus_close_unref(d->bus);
        if (!d->freeing)
                uv_timer_start(&d->reconnect, reconnect_cb, RECONNECT_MS, 0);
}

/* --- start-up: units a previous agent left --------------------------------------------------- */

static void listed_free(struct sd_driver *d)
{
        for (size_t i = 0; i < d->n_listed; i++) {
                free(d->listed[i].name);
                free(d->listed[i].description);
        }
        free(d->listed);
        d->listed = NULL;
        d->n_listed = 0;
        orch_hmap_release(&d->listed_by_name);
        d->listed_by_name = (struct orch_hmap){0};
        d->listed_valid = false;
}

/* Every loaded orch-*.service of the manager, once per recovery (one call instead of one per unit). */
static int list_units(struct sd_driver *d, char *reason, size_t reason_size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *name, *desc, *load, *active, *sub, *following, *path, *job_type, *job_path;
        uint32_t job_id;
        size_t cap = 0;
        int r;

        if (d->listed_valid)
                return 0;
        r = sd_bus_call_method(d->bus, DEST, MANAGER_PATH, MANAGER_IFACE, "ListUnitsByPatterns", &error,
                               &reply, "asas", 0, 1, UNIT_PREFIX "*" UNIT_SUFFIX);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ssssssouso)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssssssouso)", &name, &desc, &load, &active, &sub,
                                                  &following, &path, &job_id, &job_type, &job_path)) > 0) {
                struct listed *l = d->listed;
                if (d->n_listed == cap) {
                        cap = cap ? 2 * cap : 64;
                        l = realloc(d->listed, cap * sizeof *l);
                        if (!l) {
                                r = -ENOMEM;
                                break;
                        }
                        d->listed = l;
                }
                l[d->n_listed] = (struct listed){.name = strdup(name),
                                                 .description = strdup(desc),
                                                 .active = active_from_string(active)};
                if (!l[d->n_listed].name || !l[d->n_listed].description) {
                        free(l[d->n_listed].name);
                        free(l[d->n_listed].description);
                        r = -ENOMEM;
                        break;
                }
                d->n_listed++;
        }
        bus_rearm(d);
        /* indexed once complete: the array moved while it grew */
        for (size_t i = 0; r >= 0 && i < d->n_listed; i++)
                r = orch_hmap_insert(&d->listed_by_name, &d->listed[i].hnode, d->listed[i].name);
        if (r < 0) {
                orch_snprintf(reason, reason_size,
                              "cannot list the orch units of the systemd manager at %s: %s", d->where,
                              sd_bus_error_is_set(&error) ? error.message : strerror(-r));
                listed_free(d);
                return r;
        }
        d->listed_valid = true;
        return 0;
}

static const struct listed *find_listed(const struct sd_driver *d, const char *name)
{
        return orch_hmap_entry(orch_hmap_get(&d->listed_by_name, name), struct listed, hnode);
}

static char *unit_description(const struct sd_driver *d, const char *id)
{
        return orch_strdup_printf("orch instance %s (node %s)", id, d->node);
}

/* SIGKILL to everything of a unit that is ours and no instance; then the name is free again. */
static int kill_unit_sync(struct sd_driver *d, const char *name, char *reason, size_t reason_size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(d->bus, DEST, MANAGER_PATH, MANAGER_IFACE, "KillUnit", &error, NULL, "ssi",
                               name, "all", SIGKILL);
        if (r < 0 && !sd_bus_error_has_name(&error, "org.freedesktop.systemd1.NoSuchUnit")) {
                orch_snprintf(reason, reason_size, "cannot kill %s: %s", name,
                              sd_bus_error_is_set(&error) ? error.message : strerror(-r));
                bus_rearm(d);
                return r;
        }
        sd_bus_error_free(&error);
        /* a failed unit stays loaded until reset (CollectMode cannot have run for a unit it never saw end)
         */
        sd_bus_call_method(d->bus, DEST, MANAGER_PATH, MANAGER_IFACE, "ResetFailedUnit", &error, NULL, "s",
                           name);
        bus_rearm(d);
        return 0;
}

static int not_connected(const struct sd_driver *d, char *reason, size_t reason_size)
{
        orch_snprintf(reason, reason_size, "driver systemd: %s",
                      d->error ? d->error : "not connected to a systemd manager");
        return -ENOTCONN;
}

static char *unit_name(const char *id)
{
        return orch_strdup_printf(UNIT_PREFIX "%s" UNIT_SUFFIX, id);
}

static int systemd_discard(struct orch_driver_impl *base, const char *service, const char *id, char *reason,
                           size_t reason_size)
{
        struct sd_driver *d = container_of(base, struct sd_driver, base);
        _cleanup_(freep) char *name = unit_name(id), *desc = unit_description(d, id);
        const struct listed *l;
        int r;

        if (!name || !desc)
                return -ENOMEM;
        if (!d->bus)
                return not_connected(d, reason, reason_size);
        r = list_units(d, reason, reason_size);
        if (r < 0)
                return r;
        l = find_listed(d, name);
        if (!l || !streq(l->description, desc))
                return 0; /* gone, or another node's */
        return kill_unit_sync(d, name, reason, reason_size);
}

static void systemd_sweep(struct orch_driver_impl *base, bool (*known)(void *userdata, const char *id),
                          void *userdata)
{
        struct sd_driver *d = container_of(base, struct sd_driver, base);
        char reason[ORCH_DRIVER_REASON_MAX];

        if (!d->bus)
                return;
        if (list_units(d, reason, sizeof reason) < 0) {
                log_warn("driver systemd: %s", reason);
                return;
        }
        for (size_t i = 0; i < d->n_listed; i++) {
                const struct listed *l = &d->listed[i];
                _cleanup_(freep) char *id =
                        strndup(l->name + strlen(UNIT_PREFIX),
                                strlen(l->name) - strlen(UNIT_PREFIX) - strlen(UNIT_SUFFIX));
                _cleanup_(freep) char *desc = id ? unit_description(d, id) : NULL;

                if (!desc || !streq(l->description, desc) || known(userdata, id))
                        continue;
                log_info("driver systemd: stopping %s, left by a previous agent run with no state file",
                         l->name);
                if (kill_unit_sync(d, l->name, reason, sizeof reason) < 0)
                        log_error("driver systemd: %s", reason);
        }
        listed_free(d);
}

/* --- the unit ------------------------------------------------------------------------------------- */

/* argv[0] as the exec driver resolves it: a name without '/' is looked up in the instance's PATH.
 * systemd would search its own fixed list instead, and would say "203/EXEC" where the agent can say
 * which file is missing. */
static int resolve_command(const struct sd_unit *u, char **ret, char *reason, size_t reason_size)
{
        const char *cmd = u->p.argv[0], *path = "/usr/local/bin:/usr/bin:/bin";
        struct stat st;

        if (strchr(cmd, '/')) {
                if (cmd[0] != '/') {
                        orch_snprintf(reason, reason_size,
                                      "exec %s: driver systemd needs an absolute path or a "
                                      "name to look up in PATH",
                                      cmd);
                        return -EINVAL;
                }
                if (stat(cmd, &st) < 0) {
                        orch_snprintf(reason, reason_size, "exec %s: %s", cmd, strerror(errno));
                        return -errno;
                }
                *ret = strdup(cmd);
                return *ret ? 0 : -ENOMEM;
        }
        for (char *const *e = u->p.envp; e && *e; e++)
                if (startswith(*e, "PATH="))
                        path = *e + 5;
        for (const char *p = path; *p;) {
                size_t len = strcspn(p, ":");
                _cleanup_(freep) char *cand = orch_strdup_printf("%.*s/%s", (int)len, p, cmd);

                if (!cand)
                        return -ENOMEM;
                if (len > 0 && p[0] == '/' && stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
                    (st.st_mode & 0111)) {
                        *ret = TAKE_PTR(cand);
                        return 0;
                }
                p += len;
                if (*p == ':')
                        p++;
        }
        orch_snprintf(reason, reason_size, "exec %s: not found in PATH=%s: %s", cmd, path, strerror(ENOENT));
        return -ENOENT;
}

static int append_strv_prop(sd_bus_message *m, const char *name, char *const *v)
{
        int r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char **)v);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int append_exec_start(sd_bus_message *m, const char *path, char *const *argv)
{
        int r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "ExecStart");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'r', "sasb");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", path);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char **)argv);
        if (r >= 0)
                r = sd_bus_message_append(m, "b", 0);
        for (int i = 0; i < 4 && r >= 0; i++)
                r = sd_bus_message_close_container(m);
        return r;
}

/* The properties of the transient unit: what the manifest says, in systemd's words. */
static int append_properties(struct sd_unit *u, sd_bus_message *m, const char *exec_path)
{
        const struct orch_service *spec = u->p.spec;
        const char *workdir = u->p.workdir ? u->p.workdir : u->state_dir;
        int r;

        r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)(sv)", "Description", "s", u->description, "Slice",
                                  "s", SLICE, "Type", "s", "exec", "Restart", "s", "no", "CollectMode", "s",
                                  "inactive-or-failed", "KillMode", "s", "control-group");
        if (r >= 0)
                r = append_exec_start(m, exec_path, u->p.argv);
        if (r >= 0)
                r = append_strv_prop(m, "Environment", u->p.envp);
        if (r >= 0 && workdir)
                r = sd_bus_message_append(m, "(sv)", "WorkingDirectory", "s", workdir);
        if (r >= 0 && u->p.user)
                r = sd_bus_message_append(m, "(sv)", "User", "s", u->p.user);
        if (r >= 0 && u->p.group)
                r = sd_bus_message_append(m, "(sv)", "Group", "s", u->p.group);
        /* the log file: the agent's own descriptor where the connection can pass one (the same open
         * file as with exec), else the file by name */
        if (r >= 0 && u->p.log_fd >= 0 && sd_bus_can_send(u->d->bus, SD_BUS_TYPE_UNIX_FD) > 0)
                r = sd_bus_message_append(m, "(sv)(sv)", "StandardOutputFileDescriptor", "h", u->p.log_fd,
                                          "StandardErrorFileDescriptor", "h", u->p.log_fd);
        else if (r >= 0 && u->p.log_path) {
                _cleanup_(freep) char *target = orch_strdup_printf("append:%s", u->p.log_path);
                r = target ? sd_bus_message_append(m, "(sv)(sv)", "StandardOutput", "s", target,
                                                   "StandardError", "s", target)
                           : -ENOMEM;
        } else if (r >= 0)
                r = sd_bus_message_append(m, "(sv)(sv)", "StandardOutput", "s", "null", "StandardError", "s",
                                          "null");
        if (r >= 0)
                r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)(sv)", "KillSignal", "i", spec->stop.signal,
                                          "TimeoutStopUSec", "t", spec->stop.timeout_ms * USEC_PER_MSEC,
                                          "SendSIGKILL", "b", 1, "NoNewPrivileges", "b",
                                          spec->sandbox.no_new_privileges, "MemoryAccounting", "b", 1);
        if (r >= 0)
                r = sd_bus_message_append(m, "(sv)(sv)", "CPUAccounting", "b", 1, "TasksAccounting", "b", 1);
        if (r >= 0 && spec->resources.memory > 0)
                /* no swap either, as the exec driver caps it: the limit cannot be dodged */
                r = sd_bus_message_append(m, "(sv)(sv)", "MemoryMax", "t", spec->resources.memory,
                                          "MemorySwapMax", "t", (uint64_t)0);
        if (r >= 0 && spec->resources.cpu_millis > 0)
                r = sd_bus_message_append(m, "(sv)", "CPUQuotaPerSecUSec", "t",
                                          (uint64_t)spec->resources.cpu_millis * USEC_PER_MSEC);
        if (r >= 0 && spec->resources.pids > 0)
                r = sd_bus_message_append(m, "(sv)", "TasksMax", "t", (uint64_t)spec->resources.pids);
        if (r >= 0 && u->p.nofile_limit > 0)
                r = sd_bus_message_append(m, "(sv)(sv)", "LimitNOFILE", "t", (uint64_t)u->p.nofile_limit,
                                          "LimitNOFILESoft", "t", (uint64_t)u->p.nofile_limit);
        if (r >= 0 && spec->sandbox.private_tmp)
                r = sd_bus_message_append(m, "(sv)", "PrivateTmp", "b", 1);
        if (r >= 0 && spec->sandbox.protect_system) {
                r = sd_bus_message_append(m, "(sv)", "ProtectSystem", "s", "strict");
                /* the work directory stays writable (a StateDirectory is writable by itself) */
                if (r >= 0 && u->p.workdir)
                        r = append_strv_prop(m, "ReadWritePaths",
                                             (char *const[]){(char *)u->p.workdir, NULL});
        }
        if (r >= 0 && spec->sandbox.dynamic_user) {
                r = sd_bus_message_append(m, "(sv)", "DynamicUser", "b", 1);
                if (r >= 0 && u->state_dir) {
                        _cleanup_(freep) char *sd = orch_strdup_printf(STATE_SUBDIR "/%s", u->p.id);
                        r = sd ? append_strv_prop(m, "StateDirectory", (char *const[]){sd, NULL}) : -ENOMEM;
                }
        }
        return r;
}

/* Builds and sends StartTransientUnit; its answer goes to on_start_reply(). */
static int send_start(struct sd_unit *u, char *reason, size_t reason_size)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(freep) char *exec_path = NULL;
        int r;

        if (!u->d->bus)
                return not_connected(u->d, reason, reason_size);
        r = resolve_command(u, &exec_path, reason, reason_size);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(u->d->bus, &m, DEST, MANAGER_PATH, MANAGER_IFACE,
                                           "StartTransientUnit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", u->name, "fail");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0)
                r = append_properties(u, m, exec_path);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "driver systemd: cannot build the start of %s: %s",
                              u->name, strerror(-r));
                return r;
        }
        r = sd_bus_call_async(u->d->bus, &u->start_slot, m, on_start_reply, u, 0);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "driver systemd: cannot send the start of %s: %s",
                              u->name, strerror(-r));
                return r;
        }
        u->phase = PHASE_CALLING;
        bus_rearm(u->d);
        return 0;
}

static int systemd_start(struct orch_driver_unit *base, pid_t *ret_pid, char *reason, size_t reason_size)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);
        int r;

        unit_cancel_calls(u);
        reset_run(u);
        u->start_retried = false;
        r = send_start(u, reason, reason_size);
        if (r < 0)
                return r;
        *ret_pid = 0;
        return 0;
}

static void systemd_stop(struct orch_driver_unit *base)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);

        if (u->phase == PHASE_IDLE || !u->d->bus)
                return;
        /* a start job still queued is replaced (canceled); KillSignal, then SIGKILL after TimeoutStopUSec */
        if (sd_bus_call_method_async(u->d->bus, NULL, DEST, MANAGER_PATH, MANAGER_IFACE, "StopUnit",
                                     on_fire_and_forget, (void *)"StopUnit", "ss", u->name, "replace") < 0)
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: cannot send StopUnit", u->name);
        bus_rearm(u->d);
}

static void systemd_kill(struct orch_driver_unit *base)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);

        if (u->phase == PHASE_IDLE || !u->d->bus)
                return;
        if (sd_bus_call_method_async(u->d->bus, NULL, DEST, MANAGER_PATH, MANAGER_IFACE, "KillUnit",
                                     on_fire_and_forget, (void *)"KillUnit", "ssi", u->name, "all",
                                     SIGKILL) < 0)
                orch_log(ORCH_LOG_WARN, &u->log_ctx, "%s: cannot send KillUnit", u->name);
        bus_rearm(u->d);
}

/* Re-finds the unit by name. Synchronous: it runs once per instance at the agent's start. */
static int systemd_adopt(struct orch_driver_unit *base, const json_t *saved, pid_t *ret_pid, char *reason,
                         size_t reason_size)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);
        struct sd_driver *d = u->d;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *cgroup = NULL;
        const struct listed *l;
        uint32_t pid = 0;
        int r;

        if (!d->bus)
                return not_connected(d, reason, reason_size);
        r = list_units(d, reason, reason_size);
        if (r < 0)
                return r;
        l = find_listed(d, u->name);
        if (!l || !streq(l->description, u->description))
                return 0; /* collected after it ended, or never ours */
        if (!active_is_up(l->active)) {
                /* failed, or a start job a dead agent had queued: nothing of it may run unwatched */
                r = kill_unit_sync(d, u->name, reason, reason_size);
                return r < 0 ? r : 0;
        }
        reset_run(u);
        /* two Gets: a GetAll of the Service interface makes the manager compute some 300 values */
        r = sd_bus_get_property_trivial(d->bus, DEST, u->path, SERVICE_IFACE, "ExecMainPID", &error, 'u',
                                        &pid);
        if (r >= 0)
                r = sd_bus_get_property_string(d->bus, DEST, u->path, SERVICE_IFACE, "ControlGroup", &error,
                                               &cgroup);
        bus_rearm(d);
        if (r < 0) {
                orch_snprintf(reason, reason_size, "cannot read the properties of %s: %s", u->name,
                              sd_bus_error_is_set(&error) ? error.message : strerror(-r));
                return r;
        }
        u->main_pid = (pid_t)pid;
        u->cgroup = *cgroup ? TAKE_PTR(cgroup) : NULL;
        u->active = l->active;
        u->phase = PHASE_RUNNING;
        u->pid_reported = true;
        *ret_pid = u->main_pid;
        return 1;
}

static int systemd_save(const struct orch_driver_unit *base, json_t *state)
{
        const struct sd_unit *u = container_of(base, struct sd_unit, base);

        return orch_json_set_string(state, "unit", u->name);
}

static int systemd_usage(struct orch_driver_unit *base, struct orch_cgroup_usage *ret)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);

        /* The manager's accounting properties change without signals: each call asks for fresh ones
         * and answers what the previous call brought (the report period behind). */
        *ret = u->usage;
        if (u->phase == PHASE_RUNNING && u->d->bus) {
                get_async(u, &u->usage_slot[0], "MemoryCurrent", on_get_memory);
                get_async(u, &u->usage_slot[1], "CPUUsageNSec", on_get_cpu);
                get_async(u, &u->usage_slot[2], "TasksCurrent", on_get_tasks);
                bus_rearm(u->d);
        }
        return 0;
}

static const char *systemd_cgroup_path(const struct orch_driver_unit *base)
{
        return container_of(base, struct sd_unit, base)->cgroup;
}

static const struct orch_cgroup *systemd_cgroup(const struct orch_driver_unit *base)
{
        return NULL; /* health-check commands run in the agent's cgroup */
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        if (flag == FTW_DP)
                rmdir(path);
        else
                unlink(path);
        return 0;
}

static int systemd_cleanup(struct orch_driver_unit *base, bool forget, char *reason, size_t reason_size)
{
        struct sd_unit *u = container_of(base, struct sd_unit, base);
        _cleanup_(freep) char *private_dir = NULL, *parent = NULL;
        const char *slash;

        if (!forget || !u->state_dir)
                return 0;
        /* DynamicUser keeps the StateDirectory under <base>/private/ and links it from <base>/ */
        slash = strrchr(u->state_dir, '/');
        slash = slash ? slash - strlen(STATE_SUBDIR) : NULL;
        private_dir = slash ? orch_strdup_printf("%.*sprivate/%s", (int)(slash - u->state_dir), u->state_dir,
                                                 slash)
                            : NULL;
        unlink(u->state_dir);
        if (private_dir && nftw(private_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) {
                orch_snprintf(reason, reason_size, "cannot remove %s: %s", private_dir, strerror(errno));
                return -errno;
        }
        /* the parents when this was their last instance (a failing rmdir means they are not empty) */
        parent = strndup(u->state_dir, (size_t)(strrchr(u->state_dir, '/') - u->state_dir));
        if (parent)
                rmdir(parent);
        if (private_dir) {
                *strrchr(private_dir, '/') = '\0';
                rmdir(private_dir);
        }
        return 0;
}

static void systemd_free_unit(struct orch_driver_unit *base)
{
        struct sd_unit *u;

        if (!base)
                return;
        u = container_of(base, struct sd_unit, base);
        unit_cancel_calls(u);
        orch_hmap_remove(&u->d->units, &u->hnode);
        free(u->name);
        free(u->path);
        free(u->description);
        free(u->state_dir);
        free(u->job);
        free(u->cgroup);
        free(u);
}

static bool id_valid(const char *id)
{
        if (!*id || strlen(id) > 200)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '_'))
                        return false;
        return true;
}

static int systemd_prepare(struct orch_driver_impl *base, const struct orch_driver_params *p, bool existing,
                           struct orch_driver_unit **ret, char *reason, size_t reason_size)
{
        struct sd_driver *d = container_of(base, struct sd_driver, base);
        struct sd_unit *u;
        int r;

        if (!d->bus)
                return not_connected(d, reason, reason_size);
        if (!p->workdir && p->spec->sandbox.dynamic_user && !d->state_base) {
                orch_snprintf(reason, reason_size,
                              "driver systemd: sandbox.dynamic_user without a workdir needs the manager's "
                              "StateDirectory location, and the manager at %s did not tell its environment; "
                              "set a workdir",
                              d->where);
                return -EINVAL;
        }
        if (!id_valid(p->id)) {
                orch_snprintf(reason, reason_size, "driver systemd: '%s' cannot be part of a unit name",
                              p->id);
                return -EINVAL;
        }
        if (p->spec->sandbox.private_tmp && p->workdir &&
            (startswith(p->workdir, "/tmp/") || startswith(p->workdir, "/var/tmp/"))) {
                orch_snprintf(
                        reason, reason_size,
                        "sandbox.private_tmp would hide the work directory %s from the instance (a private "
                        "/tmp and /var/tmp); set a workdir elsewhere (or the agent's --data-dir)",
                        p->workdir);
                return -EINVAL;
        }
        u = calloc(1, sizeof *u);
        if (!u)
                return -ENOMEM;
        u->base.ops = &systemd_ops;
        u->d = d;
        u->p = *p;
        u->log_ctx = (struct orch_log_ctx){.service = p->spec->name, .instance = p->id};
        u->name = unit_name(p->id);
        u->description = unit_description(d, p->id);
        r = u->name && u->description ? sd_bus_path_encode(UNIT_PATH, u->name, &u->path) : -ENOMEM;
        if (r >= 0 && !p->workdir && p->spec->sandbox.dynamic_user) {
                u->state_dir = orch_strdup_printf("%s/" STATE_SUBDIR "/%s", d->state_base, p->id);
                if (!u->state_dir)
                        r = -ENOMEM;
        }
        reset_run(u);
        if (r >= 0)
                r = orch_hmap_insert(&d->units, &u->hnode, u->name);
        if (r < 0) {
                if (r == -EEXIST)
                        orch_snprintf(reason, reason_size, "driver systemd: %s is held already", u->name);
                free(u->name);
                free(u->path);
                free(u->description);
                free(u->state_dir);
                free(u);
                return r;
        }
        *ret = &u->base;
        return 0;
}

static void systemd_free(struct orch_driver_impl *base)
{
        struct sd_driver *d;

        if (!base)
                return;
        d = container_of(base, struct sd_driver, base);
        d->freeing = true;
        listed_free(d);
        orch_hmap_release(&d->units);
        d->match_jobs = sd_bus_slot_unref(d->match_jobs);
        d->match_props = sd_bus_slot_unref(d->match_props);
        if (d->poll_active) {
                uv_poll_stop(&d->poll);
                uv_close((uv_handle_t *)&d->poll, handle_closed);
                d->poll_active = false;
        }
        /* what was sent is delivered: a StopUnit of the agent's last moments must reach the manager */
        d->bus = sd_bus_flush_close_unref(d->bus);
        uv_close((uv_handle_t *)&d->timer, handle_closed);
        uv_close((uv_handle_t *)&d->reconnect, handle_closed);
}

static const struct orch_driver_ops systemd_ops = {
        .kind = ORCH_DRIVER_SYSTEMD,
        .prepare = systemd_prepare,
        .discard = systemd_discard,
        .sweep = systemd_sweep,
        .free = systemd_free,
        .start = systemd_start,
        .stop = systemd_stop,
        .kill = systemd_kill,
        .adopt = systemd_adopt,
        .save = systemd_save,
        .usage = systemd_usage,
        .cgroup_path = systemd_cgroup_path,
        .cgroup = systemd_cgroup,
        .cleanup = systemd_cleanup,
        .free_unit = systemd_free_unit,
};

int orch_driver_systemd_new(uv_loop_t *loop, const char *address, const char *node,
                            struct orch_driver_impl **ret)
{
        struct sd_driver *d = calloc(1, sizeof *d);
        const char *env = getenv("ORCH_SYSTEMD_ADDRESS");

        if (!d)
                return -ENOMEM;
        d->base.ops = &systemd_ops;
        d->loop = loop;
        if (!address && env && *env)
                address = env;
        if (!address && geteuid() == 0 && access("/run/systemd/private", F_OK) == 0)
                address = SYSTEM_PRIVATE; /* root talks to the manager directly, as systemctl does */
        d->system = !address || streq(address, SYSTEM_PRIVATE);
        d->address = address ? strdup(address) : NULL;
        d->where = strdup(address ? address : "the system bus");
        d->node = strdup(node ? node : "");
        if ((address && !d->address) || !d->where || !d->node) {
                free(d->address);
                free(d->where);
                free(d->node);
                free(d);
                return -ENOMEM;
        }
        uv_timer_init(loop, &d->timer);
        uv_timer_init(loop, &d->reconnect);
        d->timer.data = d->reconnect.data = d;
        d->open_handles = 2;
        bus_connect(d);
        *ret = &d->base;
        return 0;
}

int orch_driver_systemd_available(const struct orch_driver_impl *base, char *reason, size_t reason_size)
{
        const struct sd_driver *d = container_of(base, struct sd_driver, base);

        if (d->ever_connected)
                return 1;
        orch_snprintf(reason, reason_size, "%s", d->error ? d->error : "not connected");
        return 0;
}
