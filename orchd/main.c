/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <signal.h>
#include <sys/stat.h>

#include <uv.h>

#include "agents.h"
#include "api.h"
#include "daemon.h"
#include "dns.h"
#include "gateway/gateway.h"
#include "options.h"
#include "log.h"
#include "net.h"
#include "reconciler.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* Events kept in the store; older ones are trimmed once a minute. */
#define EVENTS_KEPT      100000
#define TRIM_PERIOD_MSEC (60 * 1000)

struct options {
        char *api_listen;
        char *agent_listen;
        char *data_dir;
        char *store;
        uint64_t heartbeat_ms;
        uint32_t ttl_factor;
        uint32_t max_heartbeat_rate;
        uint64_t drain_delay_ms;
        bool store_no_fsync;
        char *log_level;
        char *gateway_listen; /* empty: no gateway */
        char *dns_listen;     /* empty: no DNS interface */
        uint32_t gateway_workers;
        bool gateway_access_log;
};

struct orchd {
        uv_loop_t *loop;
        struct options opt;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_agents *agents;
        struct orch_reconciler *rc;
        struct orch_registry *registry;
        struct orch_api *api;
        struct orch_gateway *gateway;
        struct orch_dns *dns;
        struct orch_daemon_watchdog watchdog;
        uv_signal_t sigterm, sigint;
        uv_timer_t status;
        bool stopping;
};

/* --- options -------------------------------------------------------------------------------- */

static int set_u32(uint32_t *dst, const char *value, uint32_t min, uint32_t max, char **ret_error)
{
        uint32_t v;

        if (orch_parse_u32(value, &v) < 0 || v < min || v > max) {
                *ret_error = orch_strdup_printf("expected a number from %u to %u", min, max);
                return -EINVAL;
        }
        *dst = v;
        return 0;
}

/* A listen address, checked now: a bad one is a usage error before orchd makes its data dir. */
static int set_listen(char **dst, const char *value, bool may_be_off, char **ret_error)
{
        struct sockaddr_storage ss;

        if (!(may_be_off && !*value) && orch_parse_listen(value, &ss, NULL) < 0) {
                *ret_error = orch_strdup_printf("expected HOST:PORT (an IPv4 address, [an IPv6 address] or a "
                                                "host name, and a port from 0 to 65535)%s",
                                                may_be_off ? ", or nothing for off" : "");
                return -EINVAL;
        }
        return orch_option_string(dst, value);
}

static int set_option(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct options *o = userdata;

        if (streq(name, "api-listen"))
                return set_listen(&o->api_listen, value, false, ret_error);
        if (streq(name, "agent-listen"))
                return set_listen(&o->agent_listen, value, false, ret_error);
        if (streq(name, "data-dir"))
                return orch_option_string(&o->data_dir, value);
        if (streq(name, "store"))
                return orch_option_string(&o->store, value);
        if (streq(name, "heartbeat-interval"))
                return orch_option_duration(&o->heartbeat_ms, value, ret_error);
        if (streq(name, "ttl-factor"))
                return set_u32(&o->ttl_factor, value, 2, 100, ret_error);
        if (streq(name, "max-heartbeat-rate"))
                return set_u32(&o->max_heartbeat_rate, value, 1, 1000000, ret_error);
        if (streq(name, "drain-delay"))
                return orch_option_duration(&o->drain_delay_ms, value, ret_error);
        if (streq(name, "store-no-fsync"))
                return orch_option_bool(&o->store_no_fsync, value, ret_error);
        if (streq(name, "gateway-listen"))
                return set_listen(&o->gateway_listen, value, true, ret_error);
        if (streq(name, "dns-listen"))
                return set_listen(&o->dns_listen, value, true, ret_error);
        if (streq(name, "gateway-workers"))
                return set_u32(&o->gateway_workers, value, 0, 1024, ret_error);
        if (streq(name, "gateway-access-log"))
                return orch_option_bool(&o->gateway_access_log, value, ret_error);
        if (streq(name, "log-level")) {
                enum orch_log_level l;
                if (orch_log_level_from_string(value, &l) < 0) {
                        *ret_error = orch_strdup_printf("expected error, warn, info or debug");
                        return -EINVAL;
                }
                orch_log_set_level(l);
                return orch_option_string(&o->log_level, value);
        }
        *ret_error = orch_strdup_printf("unknown option");
        return -EINVAL;
}

#define OPT(name, metavar, help)                          \
        {                                                 \
                name, metavar, false, help, set_option, 0 \
        }
static const struct orch_option options[] = {
        OPT("api-listen", "HOST:PORT", "the HTTP API [127.0.0.1:7070]"),
        OPT("agent-listen", "HOST:PORT", "where agents connect [127.0.0.1:7071]"),
        OPT("data-dir", "DIR", "state, tokens and the lock [/var/lib/orch]"),
        OPT("store", "URL", "state store: sqlite:DIR [sqlite:<data-dir>]"),
        OPT("heartbeat-interval", "DURATION", "agent heartbeat interval on a small cluster [1s]"),
        OPT("ttl-factor", "N", "a node is down after N intervals without a heartbeat [3]"),
        OPT("max-heartbeat-rate", "N",
            "heartbeats per second orchd accepts in total; the interval grows [1000]"),
        OPT("drain-delay", "DURATION", "between leaving the registry and the stop signal [0s]"),
        OPT("store-no-fsync", NULL, "commit without fsync: survives orchd crashes, not power loss"),
        OPT("log-level", "LEVEL", "error, warn, info or debug [info]"),
        OPT("gateway-listen", "HOST:PORT", "the API gateway; empty: no gateway [127.0.0.1:8080]"),
        OPT("dns-listen", "HOST:PORT",
            "the registry over DNS (UDP; A, AAAA, SRV for <service>.orch.) [off]"),
        OPT("gateway-workers", "N", "gateway worker threads; 0: one per core [0]"),
        OPT("gateway-access-log", NULL, "log every gateway request (logfmt, on stderr)"),
};
#undef OPT

static void options_release(struct options *o)
{
        free(o->api_listen);
        free(o->agent_listen);
        free(o->data_dir);
        free(o->store);
        free(o->log_level);
        free(o->gateway_listen);
        free(o->dns_listen);
}

/* --- tokens --------------------------------------------------------------------------------- */

/* Reads DIR/NAME, or creates it with a new random token (0600) on first start. */
static int load_token(const char *dir, const char *name, char **ret, bool *ret_created)
{
        _cleanup_(freep) char *path = orch_strdup_printf("%s/%s", dir, name);
        char *buf = NULL, tok[65];
        size_t len;
        int r;

        if (!path)
                return -ENOMEM;
        r = orch_read_file(path, 4096, &buf, &len);
        if (r >= 0) {
                while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
                        buf[--len] = '\0';
                if (len < 16) {
                        log_error("%s holds no usable token (at least 16 characters); remove it to make a "
                                  "new one",
                                  path);
                        free(buf);
                        return -EINVAL;
                }
                *ret = buf;
                *ret_created = false;
                return 0;
        }
        if (r != -ENOENT)
                return log_error_errno(r, "cannot read %s", path);
        r = orch_random_hex(tok, 32);
        if (r < 0)
                return r;
        {
                char line[80];
                orch_snprintf(line, sizeof line, "%s\n", tok);
                r = orch_write_file_atomic(path, line, strlen(line), 0600);
        }
        if (r < 0)
                return log_error_errno(r, "cannot write %s", path);
        *ret = strdup(tok);
        *ret_created = true;
        return *ret ? 0 : -ENOMEM;
}

/* --- wiring --------------------------------------------------------------------------------- */

static void on_event(void *userdata, uint64_t index, json_t *event)
{
        struct orchd *d = userdata;

        if (d->registry)
                orch_registry_on_event(d->registry, event);
        if (d->api)
                orch_api_publish_event(d->api, index, event);
}

static void status_cb(uv_timer_t *t)
{
        struct orchd *d = container_of(t, struct orchd, status);
        size_t running = 0, pending = 0;
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;

        for (n = orch_hmap_first(&d->st->instances, &it); n; n = orch_hmap_next(&d->st->instances, &it)) {
                struct orch_inst *inst = container_of(n, struct orch_inst, hnode);
                if (inst->state == ORCH_INSTANCE_RUNNING)
                        running++;
                else if (inst->state == ORCH_INSTANCE_PENDING)
                        pending++;
        }
        orch_daemon_status("%zu services, %zu instances running, %zu pending, %zu of %zu nodes connected",
                           d->st->n_services, running, pending, orch_agents_connected(d->agents),
                           d->st->n_nodes);
}

static void trim_cb(uv_timer_t *t)
{
        struct orchd *d = t->data;
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        uint64_t deleted = 0;

        if (orch_store_begin(d->store, &tx) < 0 || orch_store_trim_events(tx, EVENTS_KEPT, &deleted) < 0)
                return;
        if (orch_store_commit(TAKE_PTR(tx)) >= 0 && deleted)
                log_debug("trimmed %llu old events", (unsigned long long)deleted);
}

static void gateway_metrics(void *userdata, struct orch_buf *out)
{
        struct orchd *d = userdata;

        orch_gateway_metrics(d->gateway, out);
}

static void shutdown_done(void *userdata)
{
        struct orchd *d = userdata;

        uv_stop(d->loop);
}

static void on_signal(uv_signal_t *s, int signum)
{
        struct orchd *d = s->data;

        if (d->stopping)
                return;
        d->stopping = true;
        log_info("received %s; stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        orch_daemon_stopping("stopping");
        /* what is decided is written before anything closes */
        orch_state_flush(d->st);
        /* the gateway stops taking requests now; those in flight get its drain time */
        orch_gateway_stop(d->gateway);
        d->gateway = NULL;
        orch_agents_close(d->agents);
        d->agents = NULL;
        orch_reconciler_close(d->rc);
        d->rc = NULL;
        orch_daemon_watchdog_stop(&d->watchdog);
        uv_close((uv_handle_t *)&d->sigterm, NULL);
        uv_close((uv_handle_t *)&d->sigint, NULL);
        uv_timer_stop(&d->status);
        uv_close((uv_handle_t *)&d->status, NULL);
        orch_api_free(d->api, shutdown_done, d);
        d->api = NULL;
}

int main(int argc, char **argv)
{
        struct orchd d = {0};
        struct orch_store_options so = {0};
        _cleanup_(freep) char *admin_token = NULL, *join_token = NULL, *store_loc = NULL, *error = NULL;
        bool created_admin = false, created_join = false;
        uv_timer_t trim;
        int r;

        orch_log_set_program("orchd");
        orch_log_open_auto();
        signal(SIGPIPE, SIG_IGN);
        orch_daemon_raise_nofile(); /* thousands of agent and API connections */

        d.opt.api_listen = strdup("127.0.0.1:7070");
        d.opt.agent_listen = strdup("127.0.0.1:7071");
        d.opt.gateway_listen = strdup("127.0.0.1:8080");
        d.opt.data_dir = strdup(ORCH_LOCALSTATEDIR "/lib/orch");
        d.opt.heartbeat_ms = 1000;
        d.opt.ttl_factor = 3;
        d.opt.max_heartbeat_rate = 1000;
        {
                const struct orch_options po = {
                        .program = "orchd",
                        .summary = "the orch control plane: HTTP API, state store, scheduler, registry",
                        .table = options,
                        .n_table = ELEMENTSOF(options),
                        .default_config = ORCH_SYSCONFDIR "/orch/orchd.yaml",
                };
                r = orch_options_parse(&po, argc, argv, &d.opt, stdout, &error);
                if (r != ORCH_OPTIONS_RUN) {
                        if (r < 0)
                                fprintf(stderr, "%s\n", error ? error : strerror(-r));
                        options_release(&d.opt);
                        return r == ORCH_OPTIONS_EXIT ? 0 : r == -EINVAL ? 2 : 1;
                }
        }

        r = orch_mkdir_p(d.opt.data_dir, 0700);
        if (r < 0) {
                log_error_errno(r, "cannot create the data dir %s", d.opt.data_dir);
                return 1;
        }
        store_loc = d.opt.store ? strdup(d.opt.store) : orch_strdup_printf("sqlite:%s", d.opt.data_dir);
        so.durability =
                d.opt.store_no_fsync ? ORCH_STORE_DURABLE_PROCESS_CRASH : ORCH_STORE_DURABLE_POWER_LOSS;
        r = orch_store_open(store_loc, &so, &d.store, &error);
        if (r < 0) {
                log_error("%s", error ? error : strerror(-r));
                return 1;
        }
        if (load_token(d.opt.data_dir, "admin.token", &admin_token, &created_admin) < 0 ||
            load_token(d.opt.data_dir, "join.token", &join_token, &created_join) < 0)
                return 1;
        if (created_admin || created_join)
                log_info("created the API token %s/admin.token and the node join token %s/join.token (mode "
                         "0600)",
                         d.opt.data_dir, d.opt.data_dir);

        d.loop = uv_default_loop();
        r = orch_state_new(d.store, &d.st);
        if (r >= 0)
                r = orch_state_load(d.st);
        if (r < 0) {
                log_error_errno(r, "cannot load the state from %s: %s", store_loc,
                                orch_store_last_error(d.store));
                return 1;
        }
        log_info("loaded %zu services, %zu instances, %zu nodes from %s", d.st->n_services,
                 d.st->n_instances, d.st->n_nodes, store_loc);

        {
                struct orch_agents_config ac = {
                        .listen = d.opt.agent_listen,
                        .join_token = join_token,
                        .heartbeat_ms = d.opt.heartbeat_ms,
                        .ttl_factor = d.opt.ttl_factor,
                        .max_heartbeat_rate = d.opt.max_heartbeat_rate,
                        .drain_delay_ms = d.opt.drain_delay_ms,
                };
                static const struct orch_reconciler_ops ops = {orch_agents_start_instance,
                                                               orch_agents_stop_instance, orch_agents_flush};
                r = orch_agents_new(d.loop, d.st, &ac, &d.agents);
                if (r >= 0)
                        r = orch_reconciler_new(d.loop, d.st, &ops, d.agents, &d.rc);
                if (r >= 0)
                        r = orch_registry_new(d.loop, d.st, &d.registry);
                if (r < 0) {
                        log_error_errno(r, "cannot set up");
                        return 1;
                }
                orch_agents_set_reconciler(d.agents, d.rc);
        }
        orch_registry_refresh_all(d.registry);
        d.st->on_event = on_event;
        d.st->on_event_userdata = &d;

        {
                struct orch_api_config apic = {
                        .listen = d.opt.api_listen,
                        .admin_token = admin_token,
                        .st = d.st,
                        .agents = d.agents,
                        .rc = d.rc,
                        .registry = d.registry,
                        .metrics_extra = gateway_metrics,
                        .metrics_userdata = &d,
                };
                r = orch_api_new(d.loop, &apic, &d.api);
                if (r < 0) {
                        log_error("cannot serve the API on %s: %s", d.opt.api_listen, strerror(-r));
                        return 1;
                }
        }
        if (d.opt.gateway_listen && *d.opt.gateway_listen) {
                struct orch_gateway_config gc = {
                        .listen = d.opt.gateway_listen,
                        .workers = d.opt.gateway_workers,
                        .access_log = d.opt.gateway_access_log,
                        .registry = d.registry,
                        .store = d.store,
                };
                /* the gateway logs why it cannot start */
                if (orch_gateway_start(d.loop, &gc, &d.gateway) < 0)
                        return 1;
        }
        if (d.opt.dns_listen && *d.opt.dns_listen) {
                r = orch_dns_new(d.loop, d.st, d.opt.dns_listen, &d.dns);
                if (r < 0) {
                        log_error("cannot serve DNS on %s: %s", d.opt.dns_listen,
                                  r == -EINVAL ? "expected HOST:PORT or [IPV6]:PORT" : strerror(-r));
                        return 1;
                }
                log_info("serving the registry over DNS (zone orch.) on %s", d.opt.dns_listen);
        }
        if (orch_agents_listen(d.agents) < 0)
                return 1;

        uv_signal_init(d.loop, &d.sigterm);
        uv_signal_init(d.loop, &d.sigint);
        d.sigterm.data = d.sigint.data = &d;
        uv_signal_start(&d.sigterm, on_signal, SIGTERM);
        uv_signal_start(&d.sigint, on_signal, SIGINT);
        uv_timer_init(d.loop, &d.status);
        uv_timer_start(&d.status, status_cb, 0, 5000);
        uv_unref((uv_handle_t *)&d.status);
        uv_timer_init(d.loop, &trim);
        trim.data = &d;
        uv_timer_start(&trim, trim_cb, TRIM_PERIOD_MSEC, TRIM_PERIOD_MSEC);
        uv_unref((uv_handle_t *)&trim);
        orch_daemon_watchdog_start(d.loop, &d.watchdog);

        log_info("orchd %s serving the API on %s (port %d), agents on %s", ORCH_VERSION, d.opt.api_listen,
                 orch_api_port(d.api), d.opt.agent_listen);
        orch_daemon_ready("serving");
        uv_run(d.loop, UV_RUN_DEFAULT);

        uv_close((uv_handle_t *)&trim, NULL);
        orch_dns_free(d.dns);
        uv_run(d.loop, UV_RUN_NOWAIT);
        orch_state_flush(d.st);
        orch_registry_free(d.registry);

        uv_run(d.loop, UV_RUN_NOWAIT);
        orch_state_free(d.st);
        orch_store_close(d.store);
        options_release(&d.opt);
        log_info("stopped");
        return 0;
}
