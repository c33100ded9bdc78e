/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The gateway's routing table: every routed service with its route settings,
 * its healthy endpoints and the digests of its API keys. A table is built on
 * orchd's main loop and never changes afterwards, so the worker threads read
 * it without locks. It is reference counted: the gateway holds the current
 * one, each worker holds the one it serves from, and a worker that switches
 * tables keeps the old one until its last request on it has finished.
 *
 * Lookup (docs/gateway.md): the routes whose host equals the request's host
 * are tried first, then the routes without a host; within each, the longest
 * path prefix wins. A prefix matches whole path segments: "/web" matches
 * "/web", "/web/" and "/web/a", not "/website".
 */

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hashmap.h"
#include "macro.h"

#define GW_DIGEST_LEN 32 /* SHA-256 */

struct gw_stats;

struct gw_endpoint {
        char *instance;
        char *addr_text; /* "10.0.0.1:20001" or "[fd00::1]:20001": the key of a worker's connection pool */
        struct sockaddr_storage addr;
        size_t index; /* unique across the table: workers keep per-endpoint state in arrays */
};

struct gw_route {
        char *service;
        char *host;   /* lower case, NULL: any host */
        char *prefix; /* without a trailing '/': "" is the root */
        size_t prefix_len;
        bool strip_prefix;
        bool api_key;        /* requests need one of `keys` */
        uint32_t rate_count; /* 0: no rate limit */
        uint64_t rate_period_ms;
        uint32_t rate_burst;
        uint64_t max_body;
        uint64_t timeout_ms;
        struct gw_endpoint *eps;
        size_t n_eps;
        uint8_t (*keys)[GW_DIGEST_LEN];
        size_t n_keys;
        struct gw_stats *stats; /* a counted reference */
        size_t index;           /* position in gw_table.routes */
};

/* The routes of one host (or of no host), longest prefix first. */
struct gw_host_routes {
        struct orch_hmap_node hnode;
        char *host;
        struct gw_route **routes;
        size_t n;
};

struct gw_table {
        atomic_uint refs;
        uint64_t generation;
        struct gw_route *routes;
        size_t n_routes;
        size_t n_endpoints;
        struct orch_hmap hosts;         /* gw_host_routes of the routes with a host */
        struct gw_host_routes any_host; /* the routes without one */
        struct gw_stats *unrouted;      /* requests no route took (a counted reference) */
        char *conflicts;                /* routes hidden by another with the same host and prefix */
};

/* What the builder needs of one service; the strings are copied. */
struct gw_route_spec {
        const char *service;
        const char *host;
        const char *path;
        bool strip_prefix;
        bool api_key;
        uint32_t rate_count;
        uint64_t rate_period_ms;
        uint32_t rate_burst;
        uint64_t max_body;
        uint64_t timeout_ms;
        struct gw_stats *stats; /* a reference is taken */
};

struct gw_table_builder;

int gw_table_builder_new(struct gw_table_builder **ret);
void gw_table_builder_free(struct gw_table_builder *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct gw_table_builder *, gw_table_builder_free)
/* Adds a route; the endpoints and keys that follow belong to it. */
int gw_table_builder_route(struct gw_table_builder *b, const struct gw_route_spec *spec);
/* An endpoint of the last route: a literal IPv4 or IPv6 address and a port. -EINVAL for anything
 * else (host names are not resolved). */
int gw_table_builder_endpoint(struct gw_table_builder *b, const char *instance, const char *address,
                              uint16_t port);
/* The SHA-256 digest of an API key of the last route. */
int gw_table_builder_key(struct gw_table_builder *b, const uint8_t digest[GW_DIGEST_LEN]);
/* Sorts and indexes what was added; the builder is spent either way. unrouted: a reference is taken. */
int gw_table_builder_finish(struct gw_table_builder *b, uint64_t generation, struct gw_stats *unrouted,
                            struct gw_table **ret);

struct gw_table *gw_table_ref(struct gw_table *t);
/* Frees the table with its last reference; callable from any thread. Accepts NULL. */
void gw_table_unref(struct gw_table *t);

/* The route for a request: host is the Host field or the authority of an absolute-form target
 * (port and case do not matter; NULL: only routes without a host), path is normalized
 * (gw_path_normalize). NULL when no route takes it. */
const struct gw_route *gw_table_lookup(const struct gw_table *t, const char *host, const char *path);

/* Removes dot segments (RFC 3986 §5.2.4, "." and ".." also when percent-encoded) from an origin-form
 * path, in place, so that routing and the upstream see the same path. -EINVAL when ".." would climb
 * above the root, or the path does not start with '/'. */
int gw_path_normalize(char *path);
/* The path the upstream gets: with strip_prefix, the path without the route's prefix ("/" when
 * nothing is left). Points into path. */
const char *gw_route_upstream_path(const struct gw_route *r, const char *path);
