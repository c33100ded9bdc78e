/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <strings.h>

#include "stats.h"
#include "table.h"
#include "util.h"
#include "banned.h"

/* A host name longer than DNS allows matches no host route (and is looked up as "any host"). */
#define HOST_MAX 255

struct gw_table_builder {
        struct gw_route *routes;
        size_t n_routes, cap_routes;
        size_t cap_eps, cap_keys; /* of the last route */
        size_t n_endpoints;
};

static void route_release(struct gw_route *r)
{
        free(r->service);
        free(r->host);
        free(r->prefix);
        for (size_t i = 0; i < r->n_eps; i++) {
                free(r->eps[i].instance);
                free(r->eps[i].addr_text);
        }
        free(r->eps);
        free(r->keys);
        gw_stats_unref(r->stats);
}

int gw_table_builder_new(struct gw_table_builder **ret)
{
        struct gw_table_builder *b = calloc(1, sizeof *b);

        if (!b)
                return -ENOMEM;
        *ret = b;
        return 0;
}

void gw_table_builder_free(struct gw_table_builder *b)
{
        if (!b)
                return;
        for (size_t i = 0; i < b->n_routes; i++)
                route_release(&b->routes[i]);
        free(b->routes);
        free(b);
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
        size_t c;
        void *a;

        if (n < *cap)
                return 0;
        c = *cap ? *cap * 2 : 4;
        a = reallocarray(*array, c, size);
        if (!a)
                return -ENOMEM;
        *array = a;
        *cap = c;
        return 0;
}

int gw_table_builder_route(struct gw_table_builder *b, const struct gw_route_spec *spec)
{
        struct gw_route *r;
        size_t plen;

        if (!spec->service || !spec->path || spec->path[0] != '/')
                return -EINVAL;
        if (grow((void **)&b->routes, &b->cap_routes, b->n_routes, sizeof *b->routes) < 0)
                return -ENOMEM;
        r = &b->routes[b->n_routes];
        *r = (struct gw_route){
                .strip_prefix = spec->strip_prefix,
                .api_key = spec->api_key,
                .rate_count = spec->rate_count,
                .rate_period_ms = spec->rate_period_ms,
                .rate_burst = spec->rate_burst ? spec->rate_burst : spec->rate_count,
                .max_body = spec->max_body,
                .timeout_ms = spec->timeout_ms,
        };
        /* "/api/" and "/api" are the same prefix: matching is by whole segments either way. */
        plen = strlen(spec->path);
        while (plen > 0 && spec->path[plen - 1] == '/')
                plen--;
        r->service = strdup(spec->service);
        r->prefix = strndup(spec->path, plen);
        r->prefix_len = plen;
        if (spec->host && *spec->host) {
                r->host = strdup(spec->host);
                if (r->host)
                        for (char *p = r->host; *p; p++)
                                if (*p >= 'A' && *p <= 'Z')
                                        *p = (char)(*p + 32);
        }
        if (!r->service || !r->prefix || (spec->host && *spec->host && !r->host)) {
                route_release(r);
                return -ENOMEM;
        }
        r->stats = gw_stats_ref(spec->stats);
        b->n_routes++;
        b->cap_eps = b->cap_keys = 0;
        return 0;
}

static int parse_address(const char *address, uint16_t port, struct sockaddr_storage *ret, char *text,
                         size_t size)
{
        struct sockaddr_in *in4 = (struct sockaddr_in *)ret;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
        char buf[INET6_ADDRSTRLEN + 2];
        size_t len = strlen(address);

        memset(ret, 0, sizeof *ret);
        if (port == 0)
                return -EINVAL;
        if (inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons(port);
                return orch_snprintf(text, size, "%s:%u", address, port);
        }
        /* IPv6, bare or in brackets */
        if (len >= 2 && address[0] == '[' && address[len - 1] == ']') {
                if (len - 2 >= sizeof buf)
                        return -EINVAL;
                memcpy(buf, address + 1, len - 2);
                buf[len - 2] = '\0';
                address = buf;
        }
        if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(port);
                return orch_snprintf(text, size, "[%s]:%u", address, port);
        }
        return -EINVAL;
}

int gw_table_builder_endpoint(struct gw_table_builder *b, const char *instance, const char *address,
                              uint16_t port)
{
        struct gw_route *r;
        struct gw_endpoint *e;
        char text[INET6_ADDRSTRLEN + 16];
        struct sockaddr_storage sa;

        if (b->n_routes == 0)
                return -EINVAL;
        r = &b->routes[b->n_routes - 1];
        if (parse_address(address, port, &sa, text, sizeof text) < 0)
                return -EINVAL;
        if (grow((void **)&r->eps, &b->cap_eps, r->n_eps, sizeof *r->eps) < 0)
                return -ENOMEM;
        e = &r->eps[r->n_eps];
        *e = (struct gw_endpoint){.addr = sa};
        e->instance = strdup(instance);
        e->addr_text = strdup(text);
        if (!e->instance || !e->addr_text) {
                free(e->instance);
                free(e->addr_text);
                return -ENOMEM;
        }
        r->n_eps++;
        return 0;
}

int gw_table_builder_key(struct gw_table_builder *b, const uint8_t digest[GW_DIGEST_LEN])
{
        struct gw_route *r;

        if (b->n_routes == 0)
                return -EINVAL;
        r = &b->routes[b->n_routes - 1];
        if (grow((void **)&r->keys, &b->cap_keys, r->n_keys, sizeof *r->keys) < 0)
                return -ENOMEM;
        memcpy(r->keys[r->n_keys++], digest, GW_DIGEST_LEN);
        return 0;
}

/* Host routes first (by host), then by prefix, longest first; the service name breaks ties so that
 * the same set of services always gives the same table. */
static int route_cmp(const void *a, const void *b)
{
        const struct gw_route *x = a, *y = b;
        int r;

        if (!x->host != !y->host)
                return x->host ? -1 : 1;
        if (x->host && (r = strcmp(x->host, y->host)) != 0)
                return r;
        if (x->prefix_len != y->prefix_len)
                return x->prefix_len > y->prefix_len ? -1 : 1;
        if ((r = strcmp(x->prefix, y->prefix)) != 0)
                return r;
        return strcmp(x->service, y->service);
}

static void host_routes_release(struct gw_host_routes *g)
{
        free(g->host);
        free(g->routes);
}

static void table_free(struct gw_table *t)
{
        struct orch_hmap_iter it;
        struct orch_hmap_node *n, *next;

        for (n = orch_hmap_first(&t->hosts, &it); n; n = next) {
                struct gw_host_routes *g = container_of(n, struct gw_host_routes, hnode);
                next = orch_hmap_next(&t->hosts, &it);
                host_routes_release(g);
                free(g);
        }
        orch_hmap_release(&t->hosts);
        host_routes_release(&t->any_host);
        for (size_t i = 0; i < t->n_routes; i++)
                route_release(&t->routes[i]);
        free(t->routes);
        gw_stats_unref(t->unrouted);
        free(t->conflicts);
        free(t);
}

static int group_add(struct gw_host_routes *g, struct gw_route *r)
{
        struct gw_route **a = reallocarray(g->routes, g->n + 1, sizeof *a);

        if (!a)
                return -ENOMEM;
        g->routes = a;
        g->routes[g->n++] = r;
        return 0;
}

int gw_table_builder_finish(struct gw_table_builder *b, uint64_t generation, struct gw_stats *unrouted,
                            struct gw_table **ret)
{
        struct gw_table *t = calloc(1, sizeof *t);
        struct orch_buf conflicts = {0};
        size_t ep_index = 0;

        if (!t) {
                gw_table_builder_free(b);
                return -ENOMEM;
        }
        atomic_init(&t->refs, 1);
        t->generation = generation;
        t->unrouted = gw_stats_ref(unrouted);
        if (b->n_routes > 0)
                qsort(b->routes, b->n_routes, sizeof *b->routes, route_cmp);
        t->routes = TAKE_PTR(b->routes);
        t->n_routes = b->n_routes;
        b->n_routes = 0;
        gw_table_builder_free(b);

        for (size_t i = 0; i < t->n_routes; i++) {
                struct gw_route *r = &t->routes[i];
                struct gw_host_routes *g = &t->any_host;
                int k;

                r->index = i;
                for (size_t e = 0; e < r->n_eps; e++)
                        r->eps[e].index = ep_index++;
                /* The sort put routes with the same host and prefix next to each other: the first wins. */
                if (i > 0 && streq_ptr(r->host, t->routes[i - 1].host) &&
                    streq(r->prefix, t->routes[i - 1].prefix)) {
                        orch_buf_printf(&conflicts, "%s%s hides %s (both %s%s/)", conflicts.len ? "; " : "",
                                        t->routes[i - 1].service, r->service, strempty(r->host), r->prefix);
                        continue;
                }
                if (r->host) {
                        g = orch_hmap_entry(orch_hmap_get(&t->hosts, r->host), struct gw_host_routes, hnode);
                        if (!g) {
                                g = calloc(1, sizeof *g);
                                if (!g || !(g->host = strdup(r->host))) {
                                        free(g);
                                        goto oom;
                                }
                                k = orch_hmap_insert(&t->hosts, &g->hnode, g->host);
                                if (k < 0) {
                                        host_routes_release(g);
                                        free(g);
                                        goto oom;
                                }
                        }
                }
                if (group_add(g, r) < 0)
                        goto oom;
        }
        t->n_endpoints = ep_index;
        if (conflicts.oom)
                goto oom;
        t->conflicts = orch_buf_steal(&conflicts);
        *ret = t;
        return 0;
oom:
        orch_buf_release(&conflicts);
        table_free(t);
        return -ENOMEM;
}

struct gw_table *gw_table_ref(struct gw_table *t)
{
        if (t)
                atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        return t;
}

void gw_table_unref(struct gw_table *t)
{
        /* acq_rel: whatever a thread did with the table happens before the free in another */
        if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
                table_free(t);
}

static const struct gw_route *group_match(const struct gw_host_routes *g, const char *path)
{
        size_t plen = strlen(path);

        for (size_t i = 0; i < g->n; i++) {
                const struct gw_route *r = g->routes[i];

                if (r->prefix_len <= plen && memcmp(path, r->prefix, r->prefix_len) == 0 &&
                    (path[r->prefix_len] == '/' || path[r->prefix_len] == '\0'))
                        return r;
        }
        return NULL;
}

const struct gw_route *gw_table_lookup(const struct gw_table *t, const char *host, const char *path)
{
        char name[HOST_MAX + 1];

        if (!path || path[0] != '/')
                return NULL;
        if (host && t->hosts.n > 0) {
                size_t n;

                /* [v6]:port keeps its brackets; host:port loses the port; a trailing dot is the same name */
                if (host[0] == '[') {
                        const char *end = strchr(host, ']');
                        n = end ? (size_t)(end - host) + 1 : strlen(host);
                } else {
                        n = strcspn(host, ":");
                }
                if (n > 0 && host[n - 1] == '.')
                        n--;
                if (n > 0 && n <= HOST_MAX) {
                        const struct gw_host_routes *g;
                        const struct gw_route *r;

                        for (size_t i = 0; i < n; i++)
                                name[i] =
                                        (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] + 32) : host[i];
                        name[n] = '\0';
                        g = orch_hmap_entry(orch_hmap_get(&t->hosts, name), struct gw_host_routes, hnode);
                        if (g && (r = group_match(g, path)))
                                return r;
                }
        }
        return group_match(&t->any_host, path);
}

/* 1 for ".", 2 for "..", also percent-encoded (%2e, %2E); 0 for any other segment. */
static int dot_segment(const char *s, size_t n)
{
        size_t dots = 0;

        for (size_t i = 0; i < n;) {
                if (s[i] == '.') {
                        i++;
                } else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
                           (s[i + 2] == 'e' || s[i + 2] == 'E')) {
                        i += 3;
                } else {
                        return 0;
                }
                if (++dots > 2)
                        return 0;
        }
        return (int)dots;
}

int gw_path_normalize(char *path)
{
        char *w = path;
        const char *r = path;

        if (!path || path[0] != '/')
                return -EINVAL;
        /* The output never gets longer than what has been read, so it is written over the input. */
        while (*r) {
                const char *seg = r + 1, *end = strchrnul(seg, '/');
                size_t n = (size_t)(end - seg);

                switch (dot_segment(seg, n)) {
                case 1:
                        break;
                case 2:
                        if (w == path)
                                return -EINVAL;
                        while (w > path && *--w != '/')
                                ;
                        break;
                default:
                        memmove(w, r, n + 1);
                        w += n + 1;
                        r = end;
                        continue;
                }
                /* a dot segment at the end leaves a directory: "/a/." is "/a/" */
                if (!*end)
                        *w++ = '/';
                r = end;
        }
        if (w == path)
                *w++ = '/';
        *w = '\0';
        return 0;
}

const char *gw_route_upstream_path(const struct gw_route *r, const char *path)
{
        if (!r->strip_prefix || r->prefix_len == 0)
                return path;
        return path[r->prefix_len] ? path + r->prefix_len : "/";
}
