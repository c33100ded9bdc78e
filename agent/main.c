/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cgroup.h"
#include "conn.h"
#include "daemon.h"
#include "log.h"
#include "logs.h"
#include "manifest.h"
#include "options.h"
#include "ports.h"
#include "proto.h"
#include "supervisor.h"
#include "units.h"
#include "util.h"
#include "banned.h"

struct options {
        char *server;
        char *name;
        char **labels; /* "k=v" */
        char *port_range;
        char *cgroup_parent;
        char *data_dir;
        char *join_token_file;
        char *driver;
        char *address;
        char *systemd_address;
        char **files;
        bool standalone;
        bool allow_root;
        bool keep_instances;
        uint64_t stop_after_disconnect_ms;
        uint32_t cpu_millis;
        uint64_t memory;
};

struct agent {
        uv_loop_t *loop;
        struct options opt;
        struct orch_cgroup_root *cgroups;
        struct orch_ports *ports;
        struct orch_logs *logs;
        struct orch_supervisor *sv;
        struct orch_conn *conn;
        struct orch_manifest *manifest;
        struct orch_daemon_watchdog watchdog;
        uv_signal_t sigterm, sigint;
        uv_timer_t status;
        bool stopping;
        int exit_code;
};

/* --- options -------------------------------------------------------------------------------- */

static int set_option(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct options *o = userdata;

        if (streq(name, "server"))
                return orch_option_string(&o->server, value);
        if (streq(name, "name")) {
                if (!orch_proto_node_name_valid(value)) {
                        *ret_error =
                                orch_strdup_printf("'%s' is not a valid node name (letters, digits, '-' and "
                                                   "'.', at most 253 characters)",
                                                   value);
                        return -EINVAL;
                }
                return orch_option_string(&o->name, value);
        }
        if (streq(name, "label")) {
                const char *eq = strchr(value, '=');
                _cleanup_(freep) char *key = eq ? strndup(value, (size_t)(eq - value)) : NULL;
                if (!eq || !key || !orch_proto_label_key_valid(key) ||
                    !orch_proto_label_value_valid(eq + 1)) {
                        *ret_error =
                                orch_strdup_printf("expected KEY=VALUE with a valid label key and value");
                        return -EINVAL;
                }
                return orch_strv_push(&o->labels, value);
        }
        if (streq(name, "port-range")) {
                uint16_t lo, hi;
                char reason[256];
                if (orch_ports_parse_range(value, &lo, &hi, reason, sizeof reason) < 0) {
                        *ret_error = strdup(reason);
                        return -EINVAL;
                }
                return orch_option_string(&o->port_range, value);
        }
        if (streq(name, "cgroup-parent"))
                return orch_option_string(&o->cgroup_parent, value);
        if (streq(name, "data-dir"))
                return orch_option_string(&o->data_dir, value);
        if (streq(name, "join-token-file"))
                return orch_option_string(&o->join_token_file, value);
        if (streq(name, "driver")) {
                enum orch_driver d;
                if (orch_driver_from_string(value, &d) < 0 || d == ORCH_DRIVER_DEFAULT) {
                        *ret_error = orch_strdup_printf("expected exec or systemd");
                        return -EINVAL;
                }
                return orch_option_string(&o->driver, value);
        }
        if (streq(name, "address"))
                return orch_option_string(&o->address, value);
        if (streq(name, "systemd-address"))
                return orch_option_string(&o->systemd_address, value);
        if (streq(name, "file"))
                return orch_strv_push(&o->files, value);
        if (streq(name, "standalone"))
                return orch_option_bool(&o->standalone, value, ret_error);
        if (streq(name, "allow-root"))
                return orch_option_bool(&o->allow_root, value, ret_error);
        if (streq(name, "keep-instances"))
                return orch_option_bool(&o->keep_instances, value, ret_error);
        if (streq(name, "stop-after-disconnect"))
                return orch_option_duration(&o->stop_after_disconnect_ms, value, ret_error);
        if (streq(name, "cpus")) {
                if (orch_parse_cpu(value, &o->cpu_millis) < 0) {
                        *ret_error = orch_strdup_printf("expected a number of cores like 2 or 1500m");
                        return -EINVAL;
                }
                return 0;
        }
        if (streq(name, "memory")) {
                if (orch_parse_size(value, &o->memory) < 0 || o->memory == 0) {
                        *ret_error = orch_strdup_printf("expected a size like 4Gi");
                        return -EINVAL;
                }
                return 0;
        }
        if (streq(name, "log-level")) {
                enum orch_log_level l;
                if (orch_log_level_from_string(value, &l) < 0) {
                        *ret_error = orch_strdup_printf("expected error, warn, info or debug");
                        return -EINVAL;
                }
                orch_log_set_level(l);
                return 0;
        }
        *ret_error = orch_strdup_printf("unknown option");
        return -EINVAL;
}

#define OPT(name, metavar, help)                          \
        {                                                 \
                name, metavar, false, help, set_option, 0 \
        }
#define OPT_REPEAT(name, metavar, help)                  \
        {                                                \
                name, metavar, true, help, set_option, 0 \
        }
static const struct orch_option options[] = {
        OPT("server", "HOST:PORT", "orchd's agent endpoint [127.0.0.1:7071]"),
        OPT("name", "NAME", "node name [the host name]"),
        OPT_REPEAT("label", "KEY=VALUE", "a node label"),
        OPT("port-range", "LO-HI", "dynamic ports for instances [20000-29999]"),
        OPT("cgroup-parent", "PATH", "cgroup under which instances are made [orch]"),
        OPT("data-dir", "DIR", "instance state, work dirs and logs [/var/lib/orch-agent]"),
        OPT("join-token-file", "FILE",
            "orchd's node join token [/var/lib/orch/join.token; or $ORCH_JOIN_TOKEN]"),
        OPT("driver", "DRIVER", "default driver: exec or systemd [exec]"),
        OPT("systemd-address", "ADDRESS",
            "sd-bus address of the systemd manager for the systemd driver [the system manager; or "
            "$ORCH_SYSTEMD_ADDRESS]"),
        OPT("address", "ADDR", "the address clients reach this node's instances at [as orchd sees it]"),
        OPT("cpus", "CORES", "CPU capacity offered to orchd [all online CPUs]"),
        OPT("memory", "SIZE", "memory capacity offered to orchd [all physical memory]"),
        OPT("standalone", NULL, "run the services of --file on this node alone, without orchd"),
        {"file", "PATH", true, "with --standalone: a manifest file or directory", set_option, 'f'},
        OPT("allow-root", NULL, "let instances run as root"),
        OPT("keep-instances", NULL, "on SIGTERM leave instances running for the next agent"),
        OPT("stop-after-disconnect", "DURATION",
            "stop all instances when orchd is unreachable this long [off]"),
        OPT("log-level", "LEVEL", "error, warn, info or debug [info]"),
};
#undef OPT
#undef OPT_REPEAT

static void options_release(struct options *o)
{
        free(o->server);
        free(o->name);
        orch_strv_free(o->labels);
        free(o->port_range);
        free(o->cgroup_parent);
        free(o->data_dir);
        free(o->join_token_file);
        free(o->driver);
        free(o->address);
        free(o->systemd_address);
        orch_strv_free(o->files);
}

/* --- events and status ---------------------------------------------------------------------- */

static void on_event(void *userdata, const struct orch_sv_info *info)
{
        struct agent *a = userdata;
        struct orch_log_ctx ctx = {.service = info->service, .instance = info->id};
        char pid[16] = "", restarts[16];

        if (a->conn)
                orch_conn_event(a->conn, info);
        if (a->opt.standalone || orch_log_get_level() >= ORCH_LOG_DEBUG) {
                if (info->pid > 0)
                        orch_snprintf(pid, sizeof pid, "%d", (int)info->pid);
                orch_snprintf(restarts, sizeof restarts, "%u", info->restarts);
                orch_log_fields(ORCH_LOG_INFO, &ctx, info->forgotten ? "instance removed" : "instance event",
                                "state", orch_instance_state_to_string(info->state), "health",
                                orch_health_state_to_string(info->health), "pid", *pid ? pid : NULL,
                                "restarts", restarts, "reason", info->reason, NULL);
        }
}

static void status_cb(uv_timer_t *t)
{
        struct agent *a = container_of(t, struct agent, status);
        size_t counts[_ORCH_INSTANCE_STATE_MAX];

        orch_supervisor_counts(a->sv, counts);
        orch_daemon_status("%zu instances running, %zu starting, %zu backing off, %zu failed%s",
                           counts[ORCH_INSTANCE_RUNNING], counts[ORCH_INSTANCE_STARTING],
                           counts[ORCH_INSTANCE_PENDING], counts[ORCH_INSTANCE_FAILED],
                           a->conn && !orch_conn_is_connected(a->conn) ? "; orchd unreachable" : "");
}

static void on_ready(void *userdata)
{
        struct agent *a = userdata;

        orch_daemon_ready("registered with orchd");
        status_cb(&a->status);
}

/* --- standalone ----------------------------------------------------------------------------- */

/* Standalone: the manifests, read and checked before the agent makes anything (cgroups, data dir). */
static int load_standalone(struct agent *a)
{
        struct orch_diags diags = {0};
        int r;

        if (!a->opt.files) {
                log_error("--standalone needs at least one --file manifest");
                return -EINVAL;
        }
        r = orch_manifest_load(a->opt.files, orch_strv_length(a->opt.files), &a->manifest, &diags);
        if (r < 0) {
                orch_diags_print(&diags, stderr);
                orch_diags_release(&diags);
                return r;
        }
        /* what a previous agent left and the manifests do not name is stopped: an empty set (a file of
         * comments, an empty list) would stop everything, never by accident */
        if (a->manifest->n_services == 0) {
                log_error("the manifests hold no services: nothing to run");
                a->manifest = orch_manifest_free(a->manifest);
                return -ENOENT;
        }
        return 0;
}

static void run_standalone(struct agent *a)
{
        char reason[ORCH_SV_REASON_MAX];
        size_t started = 0;
        int r;

        /* the manifests were read and checked before anything was made (load_standalone()) */
        for (size_t i = 0; i < a->manifest->n_services; i++) {
                const struct orch_service *s = a->manifest->services[i];
                char rev[ORCH_REVISION_LEN + 1];

                orch_service_revision(s, rev);
                for (uint32_t k = 0; k < s->replicas; k++) {
                        char id[ORCH_PROTO_INSTANCE_ID_MAX + 1];
                        orch_snprintf(id, sizeof id, "%s-%u", s->name, k);
                        r = orch_supervisor_start(a->sv, id, 1, s, rev, reason, sizeof reason);
                        if (r < 0) {
                                struct orch_log_ctx ctx = {.service = s->name, .instance = id};
                                orch_log(ORCH_LOG_ERROR, &ctx, "cannot start: %s", reason);
                        } else
                                started++;
                }
        }
        log_info("standalone: %zu instances of %zu services started", started, a->manifest->n_services);
        orch_daemon_ready("running standalone");
}

/* Re-adopted instances that the manifests no longer describe are stopped. */
struct keep_walk {
        struct agent *a;
        char **drop;
};

static void keep_cb(void *userdata, const struct orch_sv_info *info)
{
        struct keep_walk *w = userdata;
        bool wanted = false;

        for (size_t i = 0; w->a->manifest && i < w->a->manifest->n_services && !wanted; i++) {
                const struct orch_service *s = w->a->manifest->services[i];
                char rev[ORCH_REVISION_LEN + 1];
                orch_service_revision(s, rev);
                wanted = streq(s->name, info->service) && streq(rev, info->revision) &&
                         orch_proto_instance_of(info->id, s->name);
                if (wanted) {
                        const char *idx = info->id + strlen(s->name) + 1;
                        uint32_t k;
                        wanted = orch_parse_u32(idx, &k) >= 0 && k < s->replicas;
                }
        }
        if (!wanted)
                orch_strv_push(&w->drop, info->id);
}

/* --- lifecycle ------------------------------------------------------------------------------ */

static void shutdown_done(void *userdata)
{
        struct agent *a = userdata;

        uv_stop(a->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
        struct agent *a = s->data;

        if (a->stopping) {
                log_warn("second signal: exiting without waiting for instances to stop");
                uv_stop(a->loop);
                return;
        }
        a->stopping = true;
        log_info("received %s; %s", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                 a->opt.keep_instances ? "leaving instances running for the next agent"
                                       : "stopping all instances");
        orch_daemon_stopping(a->opt.keep_instances ? "stopping (instances keep running)"
                                                   : "stopping instances");
        if (a->conn) {
                orch_conn_close(a->conn);
                a->conn = NULL;
        }
        orch_supervisor_shutdown(a->sv, a->opt.keep_instances, shutdown_done, a);
}

static uint32_t detect_cpu_millis(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (uint32_t)n * 1000 : 1000;
}

static uint64_t detect_memory(void)
{
        long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 1ULL << 30;
}

static int read_token(const char *path, char **ret)
{
        const char *env = getenv("ORCH_JOIN_TOKEN");
        char *buf;
        size_t len;
        int r;

        if (env && *env) {
                *ret = strdup(env);
                return *ret ? 0 : -ENOMEM;
        }
        r = orch_read_file(path, 4096, &buf, &len);
        if (r < 0) {
                log_error("cannot read the join token from %s: %s (copy orchd's join.token there, or set "
                          "--join-token-file or ORCH_JOIN_TOKEN)",
                          path, strerror(-r));
                return r;
        }
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r'))
                buf[--len] = '\0';
        *ret = buf;
        return 0;
}

int main(int argc, char **argv)
{
        struct agent a = {0};
        _cleanup_(freep) char *token = NULL;
        _cleanup_(freep) struct orch_conn_label *labels = NULL;
        char reason[512], hostname[256];
        enum orch_driver driver = ORCH_DRIVER_EXEC;
        /* the connection reads these whenever it says hello: they live as long as main */
        const char *drivers[2] = {"exec"};
        size_t n_drivers = 1;
        uint16_t lo, hi;
        int r, adopted;

        orch_log_set_program("orch-agent");
        /* spawns run on libuv's thread pool, several at once (agent/driver-exec.c) */
        setenv("UV_THREADPOOL_SIZE", "16", 0);
        orch_log_open_auto();
        signal(SIGPIPE, SIG_IGN);
        orch_daemon_raise_nofile(); /* two descriptors per instance (pidfd, OOM) */

        a.opt.server = strdup("127.0.0.1:7071");
        a.opt.port_range = strdup(ORCH_PORTS_DEFAULT_RANGE);
        a.opt.cgroup_parent = strdup("orch");
        a.opt.data_dir = strdup(ORCH_LOCALSTATEDIR "/lib/orch-agent");
        a.opt.join_token_file = strdup(ORCH_LOCALSTATEDIR "/lib/orch/join.token");
        {
                const struct orch_options po = {
                        .program = "orch-agent",
                        .summary = "runs the instances orchd assigns to this node",
                        .table = options,
                        .n_table = ELEMENTSOF(options),
                        .default_config = ORCH_SYSCONFDIR "/orch/agent.yaml",
                };
                _cleanup_(freep) char *error = NULL;
                r = orch_options_parse(&po, argc, argv, &a.opt, stdout, &error);
                if (r != ORCH_OPTIONS_RUN) {
                        if (r < 0)
                                fprintf(stderr, "%s\n", error ? error : strerror(-r));
                        options_release(&a.opt);
                        return r == ORCH_OPTIONS_EXIT ? 0 : r == -EINVAL ? 2 : 1;
                }
        }
        if (!a.opt.name) {
                if (gethostname(hostname, sizeof hostname) < 0 || !orch_proto_node_name_valid(hostname)) {
                        log_error("the host name is not a valid node name; pass --name");
                        options_release(&a.opt);
                        return 2;
                }
                a.opt.name = strdup(hostname);
        }
        if (a.opt.files && !a.opt.standalone) {
                log_error("--file needs --standalone (with orchd, use `orch apply -f`)");
                options_release(&a.opt);
                return 2;
        }
        /* before anything is made (the cgroup parent, the data dir) */
        if (!a.opt.standalone && !orch_conn_server_valid(a.opt.server)) {
                log_error("--server '%s': expected HOST:PORT with a port from 1 to 65535", strna(a.opt.server));
                options_release(&a.opt);
                return 2;
        }
        if (a.opt.standalone) {
                bool no_files = !a.opt.files;

                r = load_standalone(&a);
                if (r < 0) {
                        options_release(&a.opt);
                        /* no --file is bad usage; a manifest that does not validate fails as in orch validate */
                        return no_files ? 2 : 1;
                }
        }
        if (a.opt.driver)
                orch_driver_from_string(a.opt.driver, &driver);
        orch_log_set_node(a.opt.name);

        r = orch_mkdir_p(a.opt.data_dir, 0711);
        if (r < 0) {
                log_error_errno(r, "cannot create the data dir %s", a.opt.data_dir);
                orch_manifest_free(a.manifest);
                options_release(&a.opt);
                return 1;
        }
        a.loop = uv_default_loop();
        r = orch_cgroup_root_open(a.opt.cgroup_parent, 0, &a.cgroups, reason, sizeof reason);
        if (r < 0) {
                log_error("cgroups: %s", reason);
                orch_manifest_free(a.manifest);
                options_release(&a.opt);
                return 1;
        }
        log_info("cgroups: %s hierarchy, instances under %s",
                 orch_cgroup_mode_to_string(orch_cgroup_root_mode(a.cgroups)), a.opt.cgroup_parent);
        orch_ports_parse_range(a.opt.port_range, &lo, &hi, reason, sizeof reason);
        r = orch_ports_new(lo, hi, &a.ports);
        if (r >= 0)
                r = orch_logs_new(a.loop, a.opt.data_dir, 0, &a.logs);
        if (r >= 0) {
                struct orch_supervisor_config sc = {
                        .data_dir = a.opt.data_dir,
                        .node_name = a.opt.name,
                        .cgroups = a.cgroups,
                        .ports = a.ports,
                        .logs = a.logs,
                        .allow_root = a.opt.allow_root,
                        .default_driver = driver,
                        .systemd_address = a.opt.systemd_address,
                        .on_event = on_event,
                        .userdata = &a,
                };
                r = orch_supervisor_new(a.loop, &sc, &a.sv);
        }
        if (r < 0) {
                log_error_errno(r, "cannot set up");
                return 1;
        }
        if (driver == ORCH_DRIVER_SYSTEMD &&
            !orch_supervisor_driver_available(a.sv, ORCH_DRIVER_SYSTEMD, reason, sizeof reason)) {
                /* every instance would be refused: say so now rather than once per instance */
                log_error("--driver systemd: %s", reason);
                return 1;
        }

        /* what a previous agent left: re-adopt what still runs, restart what died meanwhile */
        adopted = orch_supervisor_recover(a.sv, true);
        if (adopted > 0)
                log_info("re-adopted %d instances of a previous agent", adopted);

        uv_signal_init(a.loop, &a.sigterm);
        uv_signal_init(a.loop, &a.sigint);
        a.sigterm.data = a.sigint.data = &a;
        uv_signal_start(&a.sigterm, on_signal, SIGTERM);
        uv_signal_start(&a.sigint, on_signal, SIGINT);
        uv_timer_init(a.loop, &a.status);
        uv_timer_start(&a.status, status_cb, 5000, 5000);
        uv_unref((uv_handle_t *)&a.status);
        orch_daemon_watchdog_start(a.loop, &a.watchdog);

        if (a.opt.standalone) {
                struct keep_walk w = {.a = &a};
                run_standalone(&a);
                orch_supervisor_foreach(a.sv, keep_cb, &w);
                for (char **id = w.drop; id && *id; id++)
                        orch_supervisor_stop(a.sv, *id, "not in the manifests any more", NULL, NULL);
                orch_strv_free(w.drop);
        } else {
                size_t n_labels = orch_strv_length(a.opt.labels);
                char why[256];
                struct orch_conn_config cc;

                /* orchd places systemd-driver services only on nodes that can run them */
                if (orch_supervisor_driver_available(a.sv, ORCH_DRIVER_SYSTEMD, why, sizeof why))
                        drivers[n_drivers++] = "systemd";

                r = read_token(a.opt.join_token_file, &token);
                if (r < 0)
                        return 1;
                labels = calloc(n_labels + 1, sizeof *labels);
                if (!labels)
                        return 1;
                for (size_t i = 0; i < n_labels; i++) {
                        char *eq = strchr(a.opt.labels[i], '=');
                        *eq = '\0';
                        labels[i] = (struct orch_conn_label){a.opt.labels[i], eq + 1};
                }
                cc = (struct orch_conn_config){
                        .server = a.opt.server,
                        .node = a.opt.name,
                        .token = token,
                        .address = a.opt.address ? a.opt.address : "",
                        .labels = labels,
                        .n_labels = n_labels,
                        .cpu_millis = a.opt.cpu_millis ? a.opt.cpu_millis : detect_cpu_millis(),
                        .memory = a.opt.memory ? a.opt.memory : detect_memory(),
                        .drivers = drivers,
                        .n_drivers = n_drivers,
                        .stop_after_disconnect_ms = a.opt.stop_after_disconnect_ms,
                        .on_ready = on_ready,
                        .userdata = &a,
                };
                r = orch_conn_new(a.loop, a.sv, a.logs, &cc, &a.conn);
                if (r < 0) {
                        /* --server was checked at the start: what is left is running out of memory */
                        log_error_errno(r, "cannot set up the connection to orchd");
                        return 1;
                }
                orch_conn_start(a.conn);
                log_info("orch-agent %s: node %s, connecting to orchd at %s", ORCH_VERSION, a.opt.name,
                         a.opt.server);
        }

        uv_run(a.loop, UV_RUN_DEFAULT);

        orch_daemon_watchdog_stop(&a.watchdog);
        uv_close((uv_handle_t *)&a.sigterm, NULL);
        uv_close((uv_handle_t *)&a.sigint, NULL);
        uv_close((uv_handle_t *)&a.status, NULL);
        orch_supervisor_free(a.sv);
        orch_logs_free(a.logs);
        uv_run(a.loop, UV_RUN_DEFAULT);
        orch_ports_free(a.ports);
        if (!a.opt.keep_instances && orch_cgroup_root_remove(a.cgroups, reason, sizeof reason) < 0)
                log_debug("cgroup parent not removed: %s", reason);
        orch_cgroup_root_free(a.cgroups);
        orch_manifest_free(a.manifest);
        log_info("stopped");
        orch_log_set_node(NULL);
        options_release(&a.opt);
        return a.exit_code;
}
