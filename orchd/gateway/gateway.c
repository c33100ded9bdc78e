/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "apikeys.h"
#include "gateway.h"
#include "hashmap.h"
#include "http.h"
#include "log.h"
#include "net.h"
#include "ratelimit.h"
#include "registry.h"
#include "stats.h"
#include "store.h"
#include "table.h"
#include "util.h"
#include "worker.h"
#include "banned.h"

/*
 * The gateway on orchd's main loop: it owns the registry subscription, the API key set and the route
 * counters, builds an immutable routing table whenever one of them changes (at most once per loop
 * iteration: a burst of instance changes costs one rebuild) and hands it to every worker. Workers
 * switch at their next loop iteration; requests already routed finish on the table they started with.
 */

struct stats_entry {
        struct orch_hmap_node hnode;
        struct gw_stats *s;
        bool seen;
};

struct warned {
        struct orch_hmap_node hnode;
        char *address;
};

struct orch_gateway {
        uv_loop_t *loop;
        struct orch_registry *registry;
        struct orch_store *store;
        struct gw_shared sh;
        struct gw_worker **workers;
        unsigned n_workers;
        struct gw_table *table;
        uint64_t generation;
        struct orch_hmap stats; /* stats_entry by route (service) name */
        struct gw_stats *unrouted;
        struct orch_apikey *keys;
        size_t n_keys;
        struct orch_hmap warned; /* endpoint addresses already reported as unusable */
        char *conflicts;         /* the route conflicts last reported */
        uv_timer_t rebuild;
        bool dirty;
        int port;
};

/* ---- the routing table ---- */

static struct gw_stats *stats_get(struct orch_gateway *gw, const char *route)
{
        struct stats_entry *e = orch_hmap_entry(orch_hmap_get(&gw->stats, route), struct stats_entry, hnode);

        if (!e) {
                e = calloc(1, sizeof *e);
                if (!e)
                        return NULL;
                if (gw_stats_new(route, gw->sh.n_workers, &e->s) < 0) {
                        free(e);
                        return NULL;
                }
                if (orch_hmap_insert(&gw->stats, &e->hnode, e->s->route) < 0) {
                        gw_stats_unref(e->s);
                        free(e);
                        return NULL;
                }
        }
        e->seen = true;
        return e->s;
}

static void warn_address(struct orch_gateway *gw, const char *instance, const char *address)
{
        struct warned *w;

        if (orch_hmap_get(&gw->warned, address))
                return;
        log_warn("gateway: instance %s is at '%s', which is not an IP address: it gets no gateway traffic "
                 "(start its agent with --address IP)",
                 instance, address);
        w = calloc(1, sizeof *w);
        if (!w || !(w->address = strdup(address)) ||
            orch_hmap_insert(&gw->warned, &w->hnode, w->address) < 0) {
                if (w)
                        free(w->address);
                free(w);
        }
}

struct build {
        struct orch_gateway *gw;
        struct gw_table_builder *b;
        int error;
};

static void visit(void *userdata, const struct orch_svc *svc, const struct orch_endpoint *eps, size_t n)
{
        struct build *bc = userdata;
        struct orch_gateway *gw = bc->gw;
        const struct orch_route *rt = &svc->spec->route;
        struct gw_route_spec spec = {
                .service = svc->name,
                .host = rt->host,
                .path = rt->path ? rt->path : "/",
                .strip_prefix = rt->strip_prefix,
                .api_key = rt->auth == ORCH_ROUTE_AUTH_API_KEY,
                .rate_count = rt->rate_count,
                .rate_period_ms = rt->rate_period_ms,
                .rate_burst = rt->rate_burst,
                .max_body = rt->max_body,
                .timeout_ms = rt->timeout_ms ? rt->timeout_ms : 60000,
        };
        int r;

        if (bc->error < 0)
                return;
        spec.stats = stats_get(gw, svc->name);
        if (!spec.stats) {
                bc->error = -ENOMEM;
                return;
        }
        r = gw_table_builder_route(bc->b, &spec);
        if (r < 0) {
                bc->error = r;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                if (eps[i].route_port == 0)
                        continue;
                r = gw_table_builder_endpoint(bc->b, eps[i].instance, eps[i].address, eps[i].route_port);
                if (r == -EINVAL)
                        warn_address(gw, eps[i].instance, eps[i].address);
                else if (r < 0) {
                        bc->error = r;
                        return;
                }
        }
        for (size_t i = 0; i < gw->n_keys; i++)
                if (streq(gw->keys[i].service, svc->name) &&
                    (r = gw_table_builder_key(bc->b, gw->keys[i].digest)) < 0) {
                        bc->error = r;
                        return;
                }
}

static int build_table(struct orch_gateway *gw, struct gw_table **ret)
{
        struct build bc = {.gw = gw};
        struct orch_hmap_iter it;
        struct orch_hmap_node *n, *next;
        struct gw_table *t;
        int r;

        r = gw_table_builder_new(&bc.b);
        if (r < 0)
                return r;
        for (n = orch_hmap_first(&gw->stats, &it); n; n = orch_hmap_next(&gw->stats, &it))
                container_of(n, struct stats_entry, hnode)->seen = false;
        orch_registry_foreach_routed(gw->registry, visit, &bc);
        if (bc.error < 0) {
                gw_table_builder_free(bc.b);
                return bc.error;
        }
        r = gw_table_builder_finish(bc.b, ++gw->generation, gw->unrouted, &t);
        if (r < 0)
                return r;
        /* Counters of routes that are gone: the tables that still use them hold their own references. */
        for (n = orch_hmap_first(&gw->stats, &it); n; n = next) {
                struct stats_entry *e = container_of(n, struct stats_entry, hnode);
                next = orch_hmap_next(&gw->stats, &it);
                if (e->seen)
                        continue;
                orch_hmap_remove(&gw->stats, &e->hnode);
                gw_stats_unref(e->s);
                free(e);
        }
        if (!streq_ptr(t->conflicts && *t->conflicts ? t->conflicts : NULL, gw->conflicts)) {
                if (t->conflicts && *t->conflicts)
                        log_warn("gateway: routes with the same host and path: %s", t->conflicts);
                free(gw->conflicts);
                gw->conflicts = t->conflicts && *t->conflicts ? strdup(t->conflicts) : NULL;
        }
        *ret = t;
        return 0;
}

static void rebuild(struct orch_gateway *gw)
{
        struct gw_table *t, *old;
        int r;

        gw->dirty = false;
        r = build_table(gw, &t);
        if (r < 0) {
                /* the workers keep the previous table; the next change tries again */
                log_error_errno(r, "gateway: cannot rebuild the routing table");
                return;
        }
        old = gw->table;
        gw->table = t;
        for (unsigned i = 0; i < gw->n_workers; i++)
                gw_worker_publish(gw->workers[i], t);
        gw_table_unref(old);
}

static void on_rebuild(uv_timer_t *t)
{
        struct orch_gateway *gw = t->data;

        if (gw->dirty)
                rebuild(gw);
}

static void schedule(struct orch_gateway *gw)
{
        if (gw->dirty)
                return;
        gw->dirty = true;
        uv_timer_start(&gw->rebuild, on_rebuild, 0, 0);
}

static void on_registry_change(void *userdata, const char *service, uint64_t index)
{
        schedule(userdata);
}

static int load_keys(struct orch_gateway *gw)
{
        struct orch_apikey *keys = NULL;
        size_t n = 0;
        int r;

        if (!gw->store)
                return 0;
        r = orch_apikeys_load(gw->store, &keys, &n);
        if (r < 0)
                return r;
        orch_apikeys_free(gw->keys, gw->n_keys);
        gw->keys = keys;
        gw->n_keys = n;
        return 0;
}

static void on_keys_changed(void *userdata)
{
        struct orch_gateway *gw = userdata;
        int r = load_keys(gw);

        if (r < 0) {
                log_error_errno(r, "gateway: cannot load the API keys: %s",
                                orch_store_last_error(gw->store));
                return;
        }
        schedule(gw);
}

void orch_gateway_sync(struct orch_gateway *gw)
{
        if (gw && gw->dirty) {
                uv_timer_stop(&gw->rebuild);
                rebuild(gw);
        }
}

/* ---- listening ---- */

/* A listening socket per worker, all on the same address: the kernel spreads connections over them. */
static int open_listener(struct sockaddr_storage *sa, socklen_t len, int *ret_fd)
{
        _cleanup_(closep) int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;

        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
                return -errno;
        if (sa->ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)sa, len) < 0)
                return -errno;
        /* port 0: the other workers bind the port the first one got */
        if (getsockname(fd, (struct sockaddr *)sa, &len) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Each client connection is a descriptor, and a busy one a second for its upstream: raise the soft limit
 * as far as allowed, and accept no more clients than it leaves room for. */
static void fit_fd_limit(struct orch_gateway_limits *lim)
{
        struct rlimit rl;
        unsigned room;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
                (void)getrlimit(RLIMIT_NOFILE, &rl);
        }
        /* a quarter for upstream connections, the store, agents and the API */
        room = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > UINT_MAX ? UINT_MAX
                                                                      : (unsigned)(rl.rlim_cur / 4 * 3);
        if (lim->max_connections > room) {
                log_info("gateway: at most %u client connections (the open file limit is %llu)",
                         MAX(room, 16U), (unsigned long long)rl.rlim_cur);
                lim->max_connections = MAX(room, 16U);
        }
}

static uint64_t pick(uint64_t v, uint64_t def)
{
        return v ? v : def;
}

static void fill_limits(struct orch_gateway_limits *l, const struct orch_gateway_limits *in)
{
        l->header_timeout_ms = pick(in->header_timeout_ms, 10000);
        l->idle_timeout_ms = pick(in->idle_timeout_ms, 60000);
        l->body_timeout_ms = pick(in->body_timeout_ms, 30000);
        l->write_timeout_ms = pick(in->write_timeout_ms, 30000);
        l->connect_timeout_ms = pick(in->connect_timeout_ms, 5000);
        l->pool_idle_ms = pick(in->pool_idle_ms, 15000);
        l->tunnel_idle_ms = pick(in->tunnel_idle_ms, 3600 * 1000);
        l->drain_timeout_ms = pick(in->drain_timeout_ms, 5000);
        l->max_header_bytes = pick(in->max_header_bytes, ORCH_HTTP_DEFAULT_MAX_HEADER_BYTES);
        l->max_headers = pick(in->max_headers, ORCH_HTTP_DEFAULT_MAX_HEADERS);
        l->max_connections = (unsigned)pick(in->max_connections, 65536);
        l->max_idle_per_endpoint = (unsigned)pick(in->max_idle_per_endpoint, 256);
        l->ratelimit_entries = pick(in->ratelimit_entries, GW_RATELIMIT_DEFAULT_ENTRIES);
}

/* ---- lifecycle ---- */

static void free_on_close(uv_handle_t *h)
{
        free(h->data);
}

static void gateway_release(struct orch_gateway *gw)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n, *next;

        for (unsigned i = 0; i < gw->n_workers; i++) {
                gw_worker_stop_and_join(gw->workers[i]);
                gw_worker_free(gw->workers[i]);
        }
        free(gw->workers);
        gw->workers = NULL;
        gw->n_workers = 0;
        gw_table_unref(gw->table);
        gw->table = NULL;
        for (n = orch_hmap_first(&gw->stats, &it); n; n = next) {
                struct stats_entry *e = container_of(n, struct stats_entry, hnode);
                next = orch_hmap_next(&gw->stats, &it);
                gw_stats_unref(e->s);
                free(e);
        }
        orch_hmap_release(&gw->stats);
        for (n = orch_hmap_first(&gw->warned, &it); n; n = next) {
                struct warned *w = container_of(n, struct warned, hnode);
                next = orch_hmap_next(&gw->warned, &it);
                free(w->address);
                free(w);
        }
        orch_hmap_release(&gw->warned);
        gw_stats_unref(gw->unrouted);
        orch_apikeys_free(gw->keys, gw->n_keys);
        gw_ratelimit_free(gw->sh.ratelimit);
        free(gw->conflicts);
}

int orch_gateway_start(uv_loop_t *loop, const struct orch_gateway_config *cfg, struct orch_gateway **ret)
{
        struct orch_gateway *gw;
        struct sockaddr_storage sa;
        socklen_t salen;
        unsigned n;
        int r;

        if (orch_parse_listen(cfg->listen, &sa, &salen) < 0) {
                log_error("gateway: invalid listen address '%s' (expected IP:PORT or [IPv6]:PORT)",
                          strempty(cfg->listen));
                return -EINVAL;
        }
        if (!cfg->registry)
                return -EINVAL;
        /* libuv writes with write(2): a write racing a client's reset would raise SIGPIPE and kill the
         * daemon. A disposition someone already chose is left alone. */
        {
                struct sigaction old;

                if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
                        signal(SIGPIPE, SIG_IGN);
        }
        n = cfg->workers ? cfg->workers : (unsigned)uv_available_parallelism();
        n = MAX(n, 1U);
        gw = calloc(1, sizeof *gw);
        if (!gw)
                return -ENOMEM;
        gw->loop = loop;
        gw->registry = cfg->registry;
        gw->store = cfg->store;
        gw->sh.access_log = cfg->access_log;
        gw->sh.n_workers = n;
        fill_limits(&gw->sh.lim, &cfg->limits);
        fit_fd_limit(&gw->sh.lim);
        atomic_init(&gw->sh.connections, 0);
        atomic_init(&gw->sh.upstreams, 0);
        uv_timer_init(loop, &gw->rebuild);
        gw->rebuild.data = gw;
        uv_unref((uv_handle_t *)&gw->rebuild);

        /* the counters, the buckets and the keys exist before the first table */
        r = gw_ratelimit_new(gw->sh.lim.ratelimit_entries, &gw->sh.ratelimit);
        if (r >= 0)
                r = gw_stats_new("", n, &gw->unrouted);
        if (r >= 0)
                r = load_keys(gw);
        if (r >= 0)
                r = build_table(gw, &gw->table);
        if (r < 0) {
                log_error_errno(r, "gateway: cannot set up");
                goto fail;
        }

        gw->workers = calloc(n, sizeof *gw->workers);
        if (!gw->workers) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < n; i++) {
                int fd = -1;

                r = open_listener(&sa, salen, &fd);
                if (r < 0) {
                        log_error_errno(r, "gateway: cannot listen on %s", cfg->listen);
                        goto fail;
                }
                r = gw_worker_new(&gw->sh, i, fd, &gw->workers[i]);
                if (r < 0) {
                        log_error_errno(r, "gateway: cannot set up worker %u", i);
                        goto fail;
                }
                gw->n_workers++;
        }
        gw->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                  : ((struct sockaddr_in *)&sa)->sin_port);
        for (unsigned i = 0; i < n; i++) {
                r = gw_worker_start(gw->workers[i], gw->table);
                if (r < 0) {
                        log_error_errno(r, "gateway: cannot start worker %u", i);
                        goto fail;
                }
        }
        r = orch_registry_subscribe(cfg->registry, on_registry_change, gw);
        if (r >= 0 && gw->store)
                r = orch_apikeys_watch(gw->store, on_keys_changed, gw);
        if (r < 0) {
                log_error_errno(r, "gateway: cannot follow the registry");
                goto fail;
        }
        log_info("gateway listening on %s with %u worker%s, %zu route%s", cfg->listen, n, n == 1 ? "" : "s",
                 gw->table->n_routes, gw->table->n_routes == 1 ? "" : "s");
        *ret = gw;
        return 0;
fail:
        /* subscribed last: the error paths above need not undo it */
        gateway_release(gw);
        uv_close((uv_handle_t *)&gw->rebuild, free_on_close);
        return r;
}

void orch_gateway_stop(struct orch_gateway *gw)
{
        if (!gw)
                return;
        if (gw->store)
                orch_apikeys_unwatch(gw->store, on_keys_changed, gw);
        if (gw->registry)
                orch_registry_unsubscribe(gw->registry, on_registry_change, gw);
        uv_timer_stop(&gw->rebuild);
        gateway_release(gw);
        uv_close((uv_handle_t *)&gw->rebuild, free_on_close);
}

int orch_gateway_port(const struct orch_gateway *gw)
{
        return gw->port;
}

static int entry_cmp(const void *a, const void *b)
{
        return strcmp((*(struct gw_stats *const *)a)->route, (*(struct gw_stats *const *)b)->route);
}

void orch_gateway_metrics(struct orch_gateway *gw, struct orch_buf *out)
{
        _cleanup_(freep) struct gw_stats **all = NULL;
        struct orch_hmap_iter it;
        struct orch_hmap_node *n;
        size_t k = 0;

        if (!gw)
                return;
        all = calloc(gw->stats.n + 2, sizeof *all);
        if (!all)
                return;
        /* the requests no route took first, then the routes by name */
        all[k++] = gw->unrouted;
        for (n = orch_hmap_first(&gw->stats, &it); n; n = orch_hmap_next(&gw->stats, &it))
                all[k++] = container_of(n, struct stats_entry, hnode)->s;
        if (k > 2)
                qsort(all + 1, k - 1, sizeof *all, entry_cmp);
        gw_stats_render(all, k, out);
        orch_buf_printf(
                out,
                "# HELP orch_gateway_connections Open client connections of the gateway.\n"
                "# TYPE orch_gateway_connections gauge\norch_gateway_connections %zu\n"
                "# HELP orch_gateway_upstream_connections Open connections to instances (busy and "
                "pooled).\n"
                "# TYPE orch_gateway_upstream_connections gauge\norch_gateway_upstream_connections %zu\n"
                "# HELP orch_gateway_routes Routes in the gateway's table.\n"
                "# TYPE orch_gateway_routes gauge\norch_gateway_routes %zu\n"
                "# HELP orch_gateway_endpoints Endpoints in the gateway's table.\n"
                "# TYPE orch_gateway_endpoints gauge\norch_gateway_endpoints %zu\n"
                "# HELP orch_gateway_table_generation Rebuilds of the routing table.\n"
                "# TYPE orch_gateway_table_generation counter\norch_gateway_table_generation %" PRIu64 "\n",
                atomic_load_explicit(&gw->sh.connections, memory_order_relaxed),
                atomic_load_explicit(&gw->sh.upstreams, memory_order_relaxed), gw->table->n_routes,
                gw->table->n_endpoints, gw->table->generation);
}
