/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "gateway/rewrite.h"
#include "gateway/table.h"
#include "http.h"
#include "util.h"
#include "banned.h"

/*
 * libFuzzer target for what the gateway adds on top of lib/http.c (fuzz-http covers the parser): path
 * normalization, routing and the rewriting of heads, on whatever the strict parser lets through.
 *
 * The first byte picks requests or responses and the rewriting options; the rest is parsed as one or
 * more pipelined messages. For each head the parser accepts, the oracles (any failure aborts):
 *   - normalization: the path starts with '/', has no "." or ".." segment (plain or percent-encoded),
 *     is no longer than before, and normalizing again changes nothing;
 *   - routing: the route's prefix is a whole-segment prefix of the path, its host (if any) is the
 *     request's host without port, case or trailing dot, and no longer matching prefix was passed over;
 *     the upstream path starts with '/';
 *   - rewriting: what the gateway would send is accepted, whole, by the same strict parser: same method,
 *     the upstream target, exactly one Host, X-Forwarded-For ending in the client, X-Forwarded-Proto
 *     and X-Request-Id once each with the gateway's values, none of the hop-by-hop fields nor any field
 *     the client's Connection named, no API key when it was dropped, and the framing that was asked for.
 */

#define check(cond)                                                                                      \
        do {                                                                                             \
                if (!(cond)) {                                                                           \
                        fprintf(stderr, "fuzz-gateway: check failed at line %d: %s\n", __LINE__, #cond); \
                        abort();                                                                         \
                }                                                                                        \
        } while (0)

static struct gw_table *table;

static void build_table(void)
{
        static const struct {
                const char *service, *host, *path;
                bool strip;
        } routes[] = {
                {"root", NULL, "/", false},
                {"web", NULL, "/web", true},
                {"web-api", NULL, "/web/api/", true},
                {"dots", NULL, "/a.b/c", false},
                {"pct", NULL, "/%41", true},
                {"api", "api.example.com", "/", false},
                {"api-v2", "api.example.com", "/v2", true},
                {"v6", "[::1]", "/six", false},
        };
        struct gw_table_builder *b;

        check(gw_table_builder_new(&b) == 0);
        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                const struct gw_route_spec spec = {.service = routes[i].service,
                                                   .host = routes[i].host,
                                                   .path = routes[i].path,
                                                   .strip_prefix = routes[i].strip,
                                                   .api_key = i % 2 == 0,
                                                   .max_body = 1024,
                                                   .timeout_ms = 1000};
                check(gw_table_builder_route(b, &spec) == 0);
                check(gw_table_builder_endpoint(b, routes[i].service, "127.0.0.1", (uint16_t)(1000 + i)) ==
                      0);
        }
        check(gw_table_builder_finish(b, 1, NULL, &table) == 0);
}

static bool has_dot_segment(const char *p)
{
        for (const char *s = p; s && *s == '/'; s = strchr(s + 1, '/')) {
                const char *seg = s + 1;
                size_t n = strcspn(seg, "/"), dots = 0, i = 0;

                while (i < n) {
                        if (seg[i] == '.')
                                i++;
                        else if (n - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                                 (seg[i + 2] | 0x20) == 'e')
                                i += 3;
                        else
                                break;
                        dots++;
                }
                if (i == n && (dots == 1 || dots == 2))
                        return true;
        }
        return false;
}

/* The request's host as routing compares it, into buf; NULL when it has none. */
static const char *bare_host(const char *host, char *buf, size_t size)
{
        size_t n;

        if (!host)
                return NULL;
        if (host[0] == '[') {
                const char *end = strchr(host, ']');
                n = end ? (size_t)(end - host) + 1 : strlen(host);
        } else {
                n = strcspn(host, ":");
        }
        if (n > 0 && host[n - 1] == '.')
                n--;
        if (n == 0 || n >= size)
                return NULL;
        for (size_t i = 0; i < n; i++)
                buf[i] = (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] + 32) : host[i];
        buf[n] = '\0';
        return buf;
}

static bool prefix_matches(const struct gw_route *r, const char *path)
{
        return strncmp(path, r->prefix, r->prefix_len) == 0 &&
               (path[r->prefix_len] == '/' || path[r->prefix_len] == '\0');
}

static void check_routing(const struct orch_http_head *h, const char *path)
{
        const char *host = h->authority ? h->authority : h->host;
        const struct gw_route *r = gw_table_lookup(table, host, path);
        char buf[300];
        const char *bare = bare_host(host, buf, sizeof buf);
        const char *up;

        check(r != NULL); /* the table has a root route for any host */
        check(prefix_matches(r, path));
        if (r->host)
                check(bare && streq(r->host, bare));
        /* nothing better was passed over: a longer prefix of the same host class, or any host route */
        for (size_t i = 0; i < table->n_routes; i++) {
                const struct gw_route *o = &table->routes[i];
                bool host_ok = !o->host || (bare && streq(o->host, bare));
                if (o == r || !host_ok || !prefix_matches(o, path))
                        continue;
                if (!!o->host == !!r->host)
                        check(o->prefix_len < r->prefix_len || streq(o->prefix, r->prefix));
                else
                        check(r->host);
        }
        up = gw_route_upstream_path(r, path);
        check(up[0] == '/');
        check(strlen(up) <= strlen(path));
}

static unsigned count_fields(const struct orch_http_head *h, const char *name)
{
        unsigned n = 0;

        for (size_t i = 0; i < h->n_headers; i++)
                if (strcasecmp(h->headers[i].name, name) == 0)
                        n++;
        return n;
}

static bool named_in_connection(const struct orch_http_head *h, const char *name)
{
        size_t len = strlen(name);

        for (size_t i = 0; i < h->n_headers; i++) {
                const char *v = h->headers[i].value;
                if (strcasecmp(h->headers[i].name, "Connection") != 0)
                        continue;
                while (*v) {
                        size_t n;
                        while (*v == ' ' || *v == '\t' || *v == ',')
                                v++;
                        n = strcspn(v, " \t,");
                        if (n == len && strncasecmp(v, name, n) == 0)
                                return true;
                        v += n;
                }
        }
        return false;
}

static const char *const hop_by_hop[] = {"Connection", "Keep-Alive", "Proxy-Connection", "TE",
                                         "Trailer",    "Upgrade",    "Transfer-Encoding"};

/* Parses out as one message head of kind; returns its parser (the head stays valid while it lives). */
static struct orch_http_parser *reparse(enum orch_http_kind kind, const struct orch_buf *out,
                                        bool head_request)
{
        struct orch_http_parser *p;
        struct orch_http_event ev;

        check(orch_http_parser_new(
                      kind, &(struct orch_http_limits){.max_header_bytes = 1 << 20, .max_headers = 4096},
                      &p) == 0);
        orch_http_parser_set_head_request(p, head_request);
        check(orch_http_parser_execute(p, out->data, out->len, &ev) == 0);
        if (ev.type == ORCH_HTTP_EVENT_ERROR)
                fprintf(stderr, "fuzz-gateway: the gateway's own head is refused: %d %s\n%s", ev.status,
                        ev.reason, out->data);
        check(ev.type == ORCH_HTTP_EVENT_HEAD);
        check(ev.consumed == out->len);
        return p;
}

static void check_request(const struct orch_http_head *h, uint8_t mode)
{
        _cleanup_(freep) char *path = strdup(h->path);
        _cleanup_(freep) char *again = NULL;
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        struct orch_buf out = {0};
        const struct orch_http_head *o;
        struct gw_request_out r;
        const char *key, *xff;
        bool bearer;
        int k;

        check(path);
        if (gw_path_normalize(path) < 0)
                return;
        check(path[0] == '/');
        check(strlen(path) <= strlen(h->path));
        check(!has_dot_segment(path));
        again = strdup(path);
        check(again && gw_path_normalize(again) == 0 && streq(again, path));
        check_routing(h, path);

        key = gw_request_api_key(h, &bearer);
        r = (struct gw_request_out){
                .head = h,
                .path = gw_route_upstream_path(
                        gw_table_lookup(table, h->authority ? h->authority : h->host, path), path),
                .client_addr = mode & 1 ? "192.0.2.7" : "2001:db8::7",
                .request_id = "fuzz-request-id",
                .default_host = "svc",
                .drop_api_key = key && !bearer && (mode & 2),
                .drop_authorization = key && bearer && (mode & 2),
                .upgrade = h->upgrade,
                .body_length = h->chunked              ? ORCH_HTTP_BODY_CHUNKED
                               : h->has_content_length ? (int64_t)h->content_length
                                                       : ORCH_HTTP_BODY_NONE,
        };
        k = gw_rewrite_request(&out, &r);
        if (k == -E2BIG) {
                orch_buf_release(&out);
                return;
        }
        check(k == 0);
        p = reparse(ORCH_HTTP_REQUEST, &out, false);
        o = orch_http_parser_head(p);
        check(streq(o->method, h->method));
        check(o->version_minor == 1);
        check(o->query ? h->query && streq(o->query, h->query) : !h->query);
        check(streq(o->path, r.path));
        check(count_fields(o, "Host") == 1);
        check(streq(o->host, h->authority ? h->authority : h->host ? h->host : "svc"));
        check(count_fields(o, "X-Forwarded-For") == 1);
        xff = orch_http_head_header(o, "X-Forwarded-For");
        check(orch_endswith(xff, r.client_addr));
        check(count_fields(o, "X-Forwarded-Proto") == 1);
        check(streq(orch_http_head_header(o, "X-Forwarded-Proto"), "http"));
        check(count_fields(o, "X-Request-Id") == 1);
        check(streq(orch_http_head_header(o, "X-Request-Id"), "fuzz-request-id"));
        check(count_fields(o, "Expect") == 0);
        for (size_t i = 0; i < ELEMENTSOF(hop_by_hop); i++) {
                unsigned want = 0;
                if (h->upgrade && (streq(hop_by_hop[i], "Connection") || streq(hop_by_hop[i], "Upgrade")))
                        want = 1;
                if (h->chunked && streq(hop_by_hop[i], "Transfer-Encoding"))
                        want = 1;
                check(count_fields(o, hop_by_hop[i]) == want);
        }
        for (size_t i = 0; i < o->n_headers; i++) {
                const char *name = o->headers[i].name;
                if (strcasecmp(name, "Upgrade") != 0 && strcasecmp(name, "Connection") != 0 &&
                    strcasecmp(name, "Transfer-Encoding") != 0 && strcasecmp(name, "Content-Length") != 0)
                        check(!named_in_connection(h, name) || strcasecmp(name, "Host") == 0 ||
                              strncasecmp(name, "X-", 2) == 0);
        }
        if (r.drop_api_key)
                check(count_fields(o, "X-API-Key") == 0);
        if (r.drop_authorization)
                check(count_fields(o, "Authorization") == 0);
        check(o->chunked == h->chunked);
        check(o->has_content_length == h->has_content_length);
        check(!o->has_content_length || o->content_length == h->content_length);
        check(o->upgrade == h->upgrade);
        orch_buf_release(&out);
}

static void check_response(const struct orch_http_head *h, uint8_t mode)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        struct orch_buf out = {0};
        const struct orch_http_head *o;
        bool head_request = mode & 32, chunked, close;
        struct gw_response_out r = {
                .head = h,
                .request_id = "rid",
                .upgrade = h->status == 101,
                .close = mode & 4,
                .http10_keep_alive = mode & 8,
        };
        int k;

        /* interim answers are not passed on */
        if (h->status < 200 && h->status != 101)
                return;
        r.body_length = gw_response_framing(h, head_request, mode & 16, &chunked, &close);
        check(!chunked || r.body_length == ORCH_HTTP_BODY_CHUNKED);
        check(!close || !(mode & 16));
        k = gw_rewrite_response(&out, &r);
        if (k == -E2BIG) {
                orch_buf_release(&out);
                return;
        }
        check(k == 0);
        p = reparse(ORCH_HTTP_RESPONSE, &out, head_request);
        o = orch_http_parser_head(p);
        check(o->status == h->status);
        /* the upstream's own ids pass; without one, the gateway's */
        if (count_fields(h, "X-Request-Id") == 0)
                check(count_fields(o, "X-Request-Id") == 1 &&
                      streq(orch_http_head_header(o, "X-Request-Id"), "rid"));
        else
                check(count_fields(o, "X-Request-Id") == count_fields(h, "X-Request-Id"));
        check(count_fields(o, "Keep-Alive") == 0);
        check(count_fields(o, "Proxy-Connection") == 0);
        check(count_fields(o, "Trailer") == 0);
        check(count_fields(o, "TE") == 0);
        check(count_fields(o, "Upgrade") ==
              (r.upgrade && orch_http_head_header(h, "Upgrade") && *orch_http_head_header(h, "Upgrade")
                       ? 1U
                       : 0U));
        check(count_fields(o, "Connection") <= 1);
        check(count_fields(o, "Content-Length") + count_fields(o, "Transfer-Encoding") <= 1);
        /* the body the client will read is the one the upstream sends */
        if (!head_request && h->status != 204 && h->status != 304 && h->status != 101) {
                check(o->chunked == chunked);
                check(o->has_content_length == h->has_content_length);
                check(!o->has_content_length || o->content_length == h->content_length);
        }
        orch_buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        enum orch_http_kind kind;
        uint8_t mode;
        size_t off = 1;

        if (!table)
                build_table();
        if (size < 1)
                return 0;
        mode = data[0];
        kind = mode & 0x80 ? ORCH_HTTP_RESPONSE : ORCH_HTTP_REQUEST;
        if (orch_http_parser_new(kind, NULL, &p) < 0)
                return 0;
        while (off <= size) {
                struct orch_http_event ev;

                if (orch_http_parser_execute(p, (const char *)data + off, size - off, &ev) < 0)
                        break;
                off += ev.consumed;
                if (ev.type == ORCH_HTTP_EVENT_HEAD) {
                        const struct orch_http_head *h = orch_http_parser_head(p);
                        if (kind == ORCH_HTTP_RESPONSE)
                                check_response(h, mode);
                        else if (h->path && h->path[0] == '/')
                                check_request(h, mode);
                } else if (ev.type == ORCH_HTTP_EVENT_COMPLETE) {
                        orch_http_parser_next(p);
                } else if (ev.type != ORCH_HTTP_EVENT_BODY) {
                        break;
                }
        }
        return 0;
}
