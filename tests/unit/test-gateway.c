/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <uv.h>

#include "gateway/apikeys.h"
#include "gateway/balance.h"
#include "gateway/gateway.h"
#include "gateway/ratelimit.h"
#include "gateway/rewrite.h"
#include "gateway/stats.h"
#include "gateway/table.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * The gateway's parts on their own (paths, the table, header rewriting, buckets, balancing, keys), then
 * the whole gateway with real backends: orch-testprog processes in `http` mode, registered as the
 * instances of services in an in-memory orchd state whose registry feeds the gateway, as orchd's does.
 * The test thread is the client (blocking sockets, answers read with the strict parser); the gateway's
 * workers run on their own threads, and registry changes are published with orch_gateway_sync().
 */

static int atoi_checked(const char *s)
{
        uint32_t v = 0;

        ck_assert_ptr_nonnull(s);
        ck_assert_msg(orch_parse_u32(s, &v) == 0, "not a number: '%s'", s);
        return (int)v;
}

/* ---- paths and the table ---- */

static void check_norm(const char *in, const char *want)
{
        char buf[256];

        orch_strlcpy(buf, in, sizeof buf);
        if (!want) {
                ck_assert_msg(gw_path_normalize(buf) < 0, "%s should be refused", in);
                return;
        }
        ck_assert_msg(gw_path_normalize(buf) == 0, "%s refused", in);
        ck_assert_msg(streq(buf, want), "%s -> %s, expected %s", in, buf, want);
}

START_TEST(test_path_normalize)
{
        check_norm("/", "/");
        check_norm("/a/b", "/a/b");
        check_norm("/a/./b", "/a/b");
        check_norm("/a/b/../c", "/a/c");
        check_norm("/a/b/..", "/a/");
        check_norm("/a/.", "/a/");
        check_norm("/a/..", "/");
        check_norm("/./", "/");
        check_norm("/a/%2e%2E/b", "/b");
        check_norm("/a/.%2e/b", "/b");
        check_norm("/a/%2e/b", "/a/b");
        check_norm("/a//b/../c", "/a//c");
        check_norm("/a/...", "/a/...");
        check_norm("/a/..b", "/a/..b");
        check_norm("/..", NULL);
        check_norm("/a/../..", NULL);
        check_norm("/%2e%2e/x", NULL);
        check_norm("a/b", NULL);
}
END_TEST

static void add_route(struct gw_table_builder *b, const char *service, const char *host, const char *path,
                      bool strip)
{
        const struct gw_route_spec spec = {.service = service,
                                           .host = host,
                                           .path = path,
                                           .strip_prefix = strip,
                                           .max_body = 1,
                                           .timeout_ms = 1};

        ck_assert_int_eq(gw_table_builder_route(b, &spec), 0);
}

static const char *route_of(const struct gw_table *t, const char *host, const char *path)
{
        const struct gw_route *r = gw_table_lookup(t, host, path);

        return r ? r->service : "-";
}

START_TEST(test_table_lookup)
{
        struct gw_table_builder *b;
        struct gw_table *t;
        const struct gw_route *r;
        uint8_t digest[GW_DIGEST_LEN] = {1};

        ck_assert_int_eq(gw_table_builder_new(&b), 0);
        add_route(b, "root", NULL, "/", false);
        add_route(b, "web", NULL, "/web", true);
        add_route(b, "webapi", NULL, "/web/api/", true);
        add_route(b, "api", "API.example.com", "/", false);
        add_route(b, "apiv2", "api.example.com", "/v2", false);
        ck_assert_int_eq(gw_table_builder_endpoint(b, "apiv2-1", "10.0.0.1", 8080), 0);
        ck_assert_int_eq(gw_table_builder_endpoint(b, "apiv2-2", "::1", 8081), 0);
        ck_assert_int_eq(gw_table_builder_endpoint(b, "apiv2-3", "[fd00::2]", 8082), 0);
        ck_assert_int_eq(gw_table_builder_endpoint(b, "apiv2-4", "host.example", 8082), -EINVAL);
        ck_assert_int_eq(gw_table_builder_endpoint(b, "apiv2-5", "10.0.0.1", 0), -EINVAL);
        ck_assert_int_eq(gw_table_builder_key(b, digest), 0);
        add_route(b, "dup-b", "x.example", "/same", false);
        add_route(b, "dup-a", "x.example", "/same/", false);
        ck_assert_int_eq(gw_table_builder_finish(b, 7, NULL, &t), 0);

        ck_assert_uint_eq(t->generation, 7);
        ck_assert_uint_eq(t->n_routes, 7);
        ck_assert_uint_eq(t->n_endpoints, 3);
        ck_assert_str_eq(route_of(t, NULL, "/"), "root");
        ck_assert_str_eq(route_of(t, NULL, "/web"), "web");
        ck_assert_str_eq(route_of(t, NULL, "/web/"), "web");
        ck_assert_str_eq(route_of(t, NULL, "/web/x"), "web");
        ck_assert_str_eq(route_of(t, NULL, "/website"), "root"); /* whole segments only */
        ck_assert_str_eq(route_of(t, NULL, "/web/api"), "webapi");
        ck_assert_str_eq(route_of(t, NULL, "/web/api/v1"), "webapi");
        ck_assert_str_eq(route_of(t, NULL, "/web/apis"), "web");
        /* the host's routes first, whatever the case, port or trailing dot; then the host-less ones */
        ck_assert_str_eq(route_of(t, "api.example.com", "/x"), "api");
        ck_assert_str_eq(route_of(t, "API.Example.COM:8080", "/v2/x"), "apiv2");
        ck_assert_str_eq(route_of(t, "api.example.com.", "/v2"), "apiv2");
        ck_assert_str_eq(route_of(t, "other.example.com", "/web/x"), "web");
        ck_assert_str_eq(route_of(t, "x.example", "/web/x"), "web");
        ck_assert_str_eq(route_of(t, "[::1]:80", "/"), "root");
        ck_assert_str_eq(route_of(t, "", "/"), "root");
        ck_assert_str_eq(route_of(t, NULL, "*"), "-");
        /* two routes for one host and path: the first service by name wins, and it is reported */
        ck_assert_str_eq(route_of(t, "x.example", "/same/y"), "dup-a");
        ck_assert_ptr_nonnull(strstr(t->conflicts, "dup-a hides dup-b"));

        r = gw_table_lookup(t, "api.example.com", "/v2/x");
        ck_assert_uint_eq(r->n_eps, 3);
        ck_assert_uint_eq(r->n_keys, 1);
        ck_assert_str_eq(r->eps[0].addr_text, "10.0.0.1:8080");
        ck_assert_str_eq(r->eps[1].addr_text, "[::1]:8081");
        ck_assert_str_eq(r->eps[2].addr_text, "[fd00::2]:8082");
        ck_assert_uint_eq(r->eps[2].index, 2);
        r = gw_table_lookup(t, NULL, "/web/x/y");
        ck_assert_str_eq(gw_route_upstream_path(r, "/web/x/y"), "/x/y");
        ck_assert_str_eq(gw_route_upstream_path(r, "/web"), "/");
        ck_assert_str_eq(gw_route_upstream_path(r, "/web/"), "/");
        r = gw_table_lookup(t, NULL, "/a");
        ck_assert_str_eq(gw_route_upstream_path(r, "/a"), "/a");

        ck_assert_ptr_eq(gw_table_ref(t), t);
        gw_table_unref(t);
        gw_table_unref(t);
}
END_TEST

/* ---- rewriting ---- */

static const struct orch_http_head *parse_head(struct orch_http_parser **p, enum orch_http_kind kind,
                                               const char *text)
{
        struct orch_http_event ev;

        ck_assert_int_eq(orch_http_parser_new(kind, NULL, p), 0);
        ck_assert_int_eq(orch_http_parser_execute(*p, text, strlen(text), &ev), 0);
        ck_assert_int_eq(ev.type, ORCH_HTTP_EVENT_HEAD);
        return orch_http_parser_head(*p);
}

START_TEST(test_rewrite_request)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        const struct orch_http_head *h;
        struct orch_buf out = {0};
        struct gw_request_out r;
        bool bearer;

        h = parse_head(
                &p, ORCH_HTTP_REQUEST,
                "POST /web/x?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\n"
                "X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.9\r\n"
                "X-Forwarded-Proto: https\r\nX-Request-Id: bad id\r\nX-Forwarded-For: 10.0.0.8\r\n"
                "Expect: 100-continue\r\nX-API-Key: k1\r\nAuthorization: Basic abc\r\nAccept: */*\r\n"
                "Content-Length: 5\r\n\r\n");
        ck_assert_str_eq(gw_request_api_key(h, &bearer), "k1");
        ck_assert(!bearer);
        r = (struct gw_request_out){.head = h,
                                    .path = "/x",
                                    .client_addr = "127.0.0.1",
                                    .request_id = "rid",
                                    .drop_api_key = true,
                                    .body_length = 5};
        ck_assert_int_eq(gw_rewrite_request(&out, &r), 0);
        ck_assert_str_eq(out.data, "POST /x?q=1 HTTP/1.1\r\n"
                                   "Host: example.com\r\n"
                                   "X-Forwarded-For: 10.0.0.9, 10.0.0.8, 127.0.0.1\r\n"
                                   "Authorization: Basic abc\r\n"
                                   "Accept: */*\r\n"
                                   "X-Forwarded-Proto: http\r\n"
                                   "X-Request-Id: rid\r\n"
                                   "Content-Length: 5\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        /* absolute-form: the authority is the Host; upgrades are asked for again; chunked stays chunked */
        h = parse_head(
                &p, ORCH_HTTP_REQUEST,
                "GET http://a.example:81/ws HTTP/1.1\r\nHost: ignored\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nAuthorization: Bearer sekrit\r\nTransfer-Encoding: chunked\r\n\r\n");
        ck_assert_str_eq(gw_request_api_key(h, &bearer), "sekrit");
        ck_assert(bearer);
        r = (struct gw_request_out){.head = h,
                                    .path = "/ws",
                                    .client_addr = "::1",
                                    .request_id = "r2",
                                    .drop_authorization = true,
                                    .upgrade = true,
                                    .body_length = ORCH_HTTP_BODY_CHUNKED};
        ck_assert_int_eq(gw_rewrite_request(&out, &r), 0);
        ck_assert_str_eq(out.data, "GET /ws HTTP/1.1\r\nHost: a.example:81\r\nX-Forwarded-For: ::1\r\n"
                                   "X-Forwarded-Proto: http\r\nX-Request-Id: r2\r\nUpgrade: websocket\r\n"
                                   "Connection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        /* HTTP/1.0 without Host gets one */
        h = parse_head(&p, ORCH_HTTP_REQUEST, "GET / HTTP/1.0\r\n\r\n");
        ck_assert_ptr_null(gw_request_api_key(h, &bearer));
        r = (struct gw_request_out){.head = h,
                                    .path = "/",
                                    .client_addr = "1.2.3.4",
                                    .request_id = "r3",
                                    .default_host = "svc.example",
                                    .body_length = ORCH_HTTP_BODY_NONE};
        ck_assert_int_eq(gw_rewrite_request(&out, &r), 0);
        ck_assert_str_eq(out.data, "GET / HTTP/1.1\r\nHost: svc.example\r\nX-Forwarded-For: 1.2.3.4\r\n"
                                   "X-Forwarded-Proto: http\r\nX-Request-Id: r3\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        /* Connection may not name an unbounded number of fields */
        {
                struct orch_buf req = {0};
                orch_buf_puts(&req, "GET / HTTP/1.1\r\nHost: x\r\nConnection: a");
                for (int i = 0; i < GW_MAX_CONNECTION_OPTIONS; i++)
                        orch_buf_printf(&req, ",o%d", i);
                orch_buf_puts(&req, "\r\n\r\n");
                h = parse_head(&p, ORCH_HTTP_REQUEST, req.data);
                r = (struct gw_request_out){
                        .head = h, .path = "/", .client_addr = "1.2.3.4", .request_id = "r"};
                ck_assert_int_eq(gw_rewrite_request(&out, &r), -E2BIG);
                orch_buf_release(&out);
                orch_buf_release(&req);
        }

        ck_assert(gw_request_id_valid("abc-123_x.y:z+/="));
        ck_assert(!gw_request_id_valid(""));
        ck_assert(!gw_request_id_valid("a b"));
        ck_assert(!gw_request_id_valid("a\"b"));
        {
                char longid[GW_REQUEST_ID_MAX + 2];
                memset(longid, 'a', sizeof longid - 1);
                longid[sizeof longid - 1] = '\0';
                ck_assert(!gw_request_id_valid(longid));
                longid[GW_REQUEST_ID_MAX] = '\0';
                ck_assert(gw_request_id_valid(longid));
        }
}
END_TEST

START_TEST(test_rewrite_response)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        const struct orch_http_head *h;
        struct orch_buf out = {0};
        struct gw_response_out r;

        h = parse_head(
                &p, ORCH_HTTP_RESPONSE,
                "HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                "Transfer-Encoding: chunked\r\nServer: s\r\nUpgrade: h2c\r\n\r\n");
        r = (struct gw_response_out){.head = h, .request_id = "rid", .body_length = ORCH_HTTP_BODY_CHUNKED};
        ck_assert_int_eq(gw_rewrite_response(&out, &r), 0);
        ck_assert_str_eq(out.data, "HTTP/1.1 200 Fine\r\nServer: s\r\nX-Request-Id: rid\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        h = parse_head(&p, ORCH_HTTP_RESPONSE,
                       "HTTP/1.1 404 \r\nX-Request-Id: theirs\r\nContent-Length: 3\r\n\r\n");
        r = (struct gw_response_out){.head = h, .request_id = "rid", .close = true, .body_length = 3};
        ck_assert_int_eq(gw_rewrite_response(&out, &r), 0);
        ck_assert_str_eq(
                out.data,
                "HTTP/1.1 404 \r\nX-Request-Id: theirs\r\nConnection: close\r\nContent-Length: 3\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        h = parse_head(&p, ORCH_HTTP_RESPONSE,
                       "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                       "Sec-WebSocket-Accept: x\r\n\r\n");
        r = (struct gw_response_out){.head = h, .upgrade = true, .body_length = ORCH_HTTP_BODY_NONE};
        ck_assert_int_eq(gw_rewrite_response(&out, &r), 0);
        ck_assert_str_eq(out.data, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n"
                                   "Upgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        orch_buf_release(&out);
        p = orch_http_parser_free(p);

        h = parse_head(&p, ORCH_HTTP_RESPONSE, "HTTP/1.1 204 No Content\r\n\r\n");
        r = (struct gw_response_out){
                .head = h, .http10_keep_alive = true, .body_length = ORCH_HTTP_BODY_NONE};
        ck_assert_int_eq(gw_rewrite_response(&out, &r), 0);
        ck_assert_str_eq(out.data, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
        orch_buf_release(&out);
}
END_TEST

/* ---- rate limits ---- */

START_TEST(test_ratelimit)
{
        struct gw_ratelimit *rl;
        const struct gw_rate rate = {.count = 10, .period_ms = 1000, .burst = 3};
        const uint8_t a[4] = {10, 0, 0, 1}, b[4] = {10, 0, 0, 2};
        uint64_t t = 1000000, retry = 0;

        ck_assert_int_eq(gw_ratelimit_new(256, &rl), 0);
        /* a full bucket of 3, then one token every 100 ms */
        for (int i = 0; i < 3; i++)
                ck_assert(gw_ratelimit_take(rl, 1, a, 4, &rate, t, &retry));
        ck_assert(!gw_ratelimit_take(rl, 1, a, 4, &rate, t, &retry));
        ck_assert_uint_eq(retry, 100);
        ck_assert(!gw_ratelimit_take(rl, 1, a, 4, &rate, t + 40000, &retry));
        ck_assert_uint_eq(retry, 60);
        ck_assert(gw_ratelimit_take(rl, 1, a, 4, &rate, t + 100000, &retry));
        ck_assert(!gw_ratelimit_take(rl, 1, a, 4, &rate, t + 100000, &retry));
        /* other addresses and other routes have their own buckets */
        ck_assert(gw_ratelimit_take(rl, 1, b, 4, &rate, t, &retry));
        ck_assert(gw_ratelimit_take(rl, 2, a, 4, &rate, t, &retry));
        /* a long pause refills to the burst, not beyond */
        t += 3600ULL * 1000000;
        for (int i = 0; i < 3; i++)
                ck_assert(gw_ratelimit_take(rl, 1, a, 4, &rate, t, &retry));
        ck_assert(!gw_ratelimit_take(rl, 1, a, 4, &rate, t, &retry));
        /* slow rates: 1 per hour */
        {
                const struct gw_rate hourly = {.count = 1, .period_ms = 3600 * 1000, .burst = 1};
                ck_assert(gw_ratelimit_take(rl, 3, a, 4, &hourly, t, &retry));
                ck_assert(!gw_ratelimit_take(rl, 3, a, 4, &hourly, t + 1000000, &retry));
                ck_assert_uint_eq(retry, 3599 * 1000);
        }
        /* the table stays within its bound: least recently used buckets are reused */
        for (uint32_t i = 0; i < 100000; i++)
                gw_ratelimit_take(rl, 9, &i, sizeof i, &rate, t, &retry);
        ck_assert_uint_le(gw_ratelimit_entries(rl), 256);
        gw_ratelimit_free(rl);
}
END_TEST

/* The limit holds across threads: W workers hammering one client's bucket still let through only the burst.
 */
struct rl_thread {
        struct gw_ratelimit *rl;
        atomic_int *allowed;
};

static void *rl_hammer(void *arg)
{
        struct rl_thread *t = arg;
        const struct gw_rate rate = {.count = 1, .period_ms = 3600 * 1000, .burst = 50};
        const uint8_t a[4] = {10, 0, 0, 1};

        for (int i = 0; i < 10000; i++)
                if (gw_ratelimit_take(t->rl, 1, a, 4, &rate, 5000000, NULL))
                        atomic_fetch_add(t->allowed, 1);
        return NULL;
}

START_TEST(test_ratelimit_threads)
{
        struct gw_ratelimit *rl;
        atomic_int allowed = 0;
        pthread_t th[4];
        struct rl_thread arg;

        ck_assert_int_eq(gw_ratelimit_new(0, &rl), 0);
        arg = (struct rl_thread){rl, &allowed};
        for (int i = 0; i < 4; i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, rl_hammer, &arg), 0);
        for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
        ck_assert_int_eq(atomic_load(&allowed), 50);
        gw_ratelimit_free(rl);
}
END_TEST

/* ---- balancing ---- */

START_TEST(test_balance)
{
        struct gw_health h[4] = {0};
        struct gw_health *hp[4] = {&h[0], &h[1], &h[2], &h[3]};
        uint64_t rng = 42, now = 100000;
        uint32_t rr = 0;
        size_t counts[4] = {0}, tried[2];

        /* idle endpoints: round robin, exactly even */
        for (int i = 0; i < 400; i++)
                counts[gw_balance_pick(hp, 4, NULL, 0, &rr, &rng, now)]++;
        for (int i = 0; i < 4; i++)
                ck_assert_uint_eq(counts[i], 100);
        /* busy endpoints: the less loaded of two choices; the most loaded is never picked */
        h[0].outstanding = 10;
        h[1].outstanding = 0;
        h[2].outstanding = 5;
        h[3].outstanding = 5;
        memset(counts, 0, sizeof counts);
        for (int i = 0; i < 1000; i++)
                counts[gw_balance_pick(hp, 4, NULL, 0, &rr, &rng, now)]++;
        ck_assert_uint_eq(counts[0], 0);
        ck_assert_uint_gt(counts[1], counts[2]);
        ck_assert_uint_gt(counts[1], 400);
        /* tried endpoints are skipped; all tried: none */
        tried[0] = 1;
        tried[1] = 2;
        for (int i = 0; i < 100; i++) {
                int k = gw_balance_pick(hp, 4, tried, 2, &rr, &rng, now);
                ck_assert(k == 0 || k == 3);
        }
        {
                size_t all[4] = {0, 1, 2, 3};
                ck_assert_int_eq(gw_balance_pick(hp, 4, all, 4, &rr, &rng, now), -1);
        }
        ck_assert_int_eq(gw_balance_pick(hp, 0, NULL, 0, &rr, &rng, now), -1);
        memset(h, 0, sizeof h);

        /* a connect failure ejects for 1 s, then 2 s, ...; 5 5xx in a row eject; a good answer resets */
        gw_health_connect_failed(&h[0], now);
        ck_assert(gw_health_ejected(&h[0], now + 999));
        ck_assert(!gw_health_ejected(&h[0], now + 1000));
        gw_health_connect_failed(&h[0], now + 1000);
        ck_assert(gw_health_ejected(&h[0], now + 2999));
        ck_assert(!gw_health_ejected(&h[0], now + 3000));
        for (int i = 0; i < 10; i++)
                gw_health_connect_failed(&h[1], now);
        ck_assert(gw_health_ejected(&h[1], now + GW_EJECT_MAX_MS - 1));
        ck_assert(!gw_health_ejected(&h[1], now + GW_EJECT_MAX_MS));
        for (unsigned i = 0; i + 1 < GW_EJECT_AFTER_5XX; i++)
                ck_assert(!gw_health_answered(&h[2], 503, now));
        ck_assert(!gw_health_answered(&h[2], 200, now));
        for (unsigned i = 0; i + 1 < GW_EJECT_AFTER_5XX; i++)
                ck_assert(!gw_health_answered(&h[2], 500, now));
        ck_assert(gw_health_answered(&h[2], 502, now));
        ck_assert(gw_health_ejected(&h[2], now));

        /* ejected endpoints get no traffic while others are in rotation */
        memset(counts, 0, sizeof counts);
        for (int i = 0; i < 300; i++)
                counts[gw_balance_pick(hp, 4, NULL, 0, &rr, &rng, now + 10)]++;
        ck_assert_uint_eq(counts[0] + counts[1] + counts[2], 0);
        ck_assert_uint_eq(counts[3], 300);
        /* all ejected: all in use again rather than none */
        gw_health_connect_failed(&h[3], now);
        memset(counts, 0, sizeof counts);
        for (int i = 0; i < 400; i++)
                counts[gw_balance_pick(hp, 4, NULL, 0, &rr, &rng, now + 10)]++;
        for (int i = 0; i < 4; i++)
                ck_assert_uint_gt(counts[i], 0);
}
END_TEST

/* ---- API keys ---- */

static int notified;

static void on_keys(void *userdata)
{
        notified++;
}

START_TEST(test_apikeys)
{
        char dir[64] = "/tmp/orch-test-keys-XXXXXX", cmd[128];
        struct orch_store *store;
        json_t *out = NULL, *list = NULL;
        const char *why = NULL, *key, *id;
        struct orch_apikey *keys;
        size_t n;
        uint8_t d[ORCH_APIKEY_DIGEST_LEN], other[ORCH_APIKEY_DIGEST_LEN];
        char *raw = NULL;
        size_t len;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        ck_assert_int_eq(orch_store_open(dir, NULL, &store, NULL), 0);
        ck_assert_int_eq(orch_apikeys_watch(store, on_keys, NULL), 0);

        ck_assert_int_eq(orch_apikeys_create(store, "Bad Name", "ci", &out, &why), -EINVAL);
        ck_assert_ptr_nonnull(strstr(why, "service"));
        ck_assert_int_eq(orch_apikeys_create(store, "web", "", &out, &why), -EINVAL);
        ck_assert_int_eq(orch_apikeys_create(store, "web", "a\nb", &out, &why), -EINVAL);
        ck_assert_int_eq(notified, 0);

        ck_assert_int_eq(orch_apikeys_create(store, "web", "ci", &out, &why), 0);
        ck_assert_int_eq(notified, 1);
        key = json_string_value(json_object_get(out, "key"));
        id = json_string_value(json_object_get(out, "id"));
        ck_assert_ptr_nonnull(key);
        ck_assert_uint_eq(strlen(key), 5 + 64);
        ck_assert_str_eq(json_string_value(json_object_get(out, "service")), "web");

        /* stored: the digest, never the key */
        {
                char skey[64];
                orch_snprintf(skey, sizeof skey, "apikey/%s", id);
                ck_assert_int_eq(orch_store_get(store, ORCH_STORE_META, skey, &raw, &len), 0);
                ck_assert_ptr_null(strstr(raw, key + 5));
                free(raw);
        }
        ck_assert_int_eq(orch_apikeys_load(store, &keys, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(keys[0].id, id);
        ck_assert_int_eq(orch_apikey_digest(key, strlen(key), d), 0);
        ck_assert(orch_apikey_match((const uint8_t(*)[ORCH_APIKEY_DIGEST_LEN])keys[0].digest, 1, d));
        ck_assert_int_eq(orch_apikey_digest("orch_nope", 9, other), 0);
        ck_assert(!orch_apikey_match((const uint8_t(*)[ORCH_APIKEY_DIGEST_LEN])keys[0].digest, 1, other));
        ck_assert(!orch_apikey_match(NULL, 0, d));
        orch_apikeys_free(keys, n);

        ck_assert_int_eq(orch_apikeys_list(store, &list), 0);
        ck_assert_uint_eq(json_array_size(list), 1);
        ck_assert_ptr_null(json_object_get(json_array_get(list, 0), "key"));
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "name")), "ci");
        json_decref(list);

        ck_assert_int_eq(orch_apikeys_delete(store, "nope"), -ENOENT);
        ck_assert_int_eq(orch_apikeys_delete(store, id), 0);
        ck_assert_int_eq(notified, 2);
        ck_assert_int_eq(orch_apikeys_load(store, &keys, &n), 0);
        ck_assert_uint_eq(n, 0);
        orch_apikeys_free(keys, n);
        json_decref(out);

        orch_apikeys_unwatch(store, on_keys, NULL);
        ck_assert_int_eq(orch_apikeys_create(store, "web", "again", &out, &why), 0);
        ck_assert_int_eq(notified, 2);
        json_decref(out);
        orch_store_close(store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- the whole gateway ---- */

struct backend {
        pid_t pid;
        int port;
};

struct fixture {
        char dir[64];
        uv_loop_t loop;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_registry *reg;
        struct orch_node *node;
        struct orch_gateway *gw;
        int port;
        struct backend be[4];
        size_t n_be;
};

static const char *testprog(void)
{
        static char path[1024];
        const char *b = getenv("top_builddir");

        orch_snprintf(path, sizeof path, "%s/tests/fixtures/orch-testprog", b && *b ? b : ".");
        return path;
}

/* Starts orch-testprog http on a free port of 127.0.0.1 and waits for its "ready ... port=N". */
static struct backend *backend_start(struct fixture *f, const char *id)
{
        struct backend *b = &f->be[f->n_be++];
        char line[256];
        int fds[2];
        size_t len = 0;
        const char *p;

        ck_assert_int_eq(pipe(fds), 0);
        b->pid = fork();
        ck_assert_int_ge(b->pid, 0);
        if (b->pid == 0) {
                dup2(fds[1], STDOUT_FILENO);
                close(fds[0]);
                close(fds[1]);
                execl(testprog(), testprog(), "http", "0", "--id", id, "--bind", "127.0.0.1", (char *)NULL);
                _exit(127);
        }
        close(fds[1]);
        while (len + 1 < sizeof line) {
                ssize_t n = read(fds[0], line + len, 1);
                if (n <= 0 || line[len] == '\n')
                        break;
                len++;
        }
        line[len] = '\0';
        close(fds[0]);
        p = strstr(line, "port=");
        ck_assert_msg(p, "%s did not start: '%s'", testprog(), line);
        b->port = atoi_checked(p + 5);
        return b;
}

static void backend_kill(struct backend *b)
{
        if (b->pid > 0) {
                kill(b->pid, SIGKILL);
                waitpid(b->pid, NULL, 0);
                b->pid = 0;
        }
}

static struct orch_svc *fix_service(struct fixture *f, const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        const char *change;
        char name[64];
        int r = orch_manifest_parse_buffer(&m, "test.yaml", yaml, strlen(yaml), &d);

        if (r < 0)
                orch_diags_print(&d, stderr);
        ck_assert_int_ge(r, 0);
        ck_assert_uint_eq(m.n_services, 1);
        orch_strlcpy(name, m.services[0]->name, sizeof name);
        ck_assert_int_ge(orch_state_apply_service(f->st, m.services[0], &change), 0);
        free(m.services);
        orch_diags_release(&d);
        return orch_state_service(f->st, name);
}

static void fix_event(struct fixture *f, const char *type, const char *service, const char *instance)
{
        _cleanup_json_ json_t *e = instance ? json_pack("{s:s, s:s, s:s}", "type", type, "service", service,
                                                        "instance", instance)
                                            : json_pack("{s:s, s:s}", "type", type, "service", service);

        orch_registry_on_event(f->reg, e);
        orch_gateway_sync(f->gw);
}

/* An instance of svc, running and healthy, listening on port. */
static struct orch_inst *fix_instance(struct fixture *f, struct orch_svc *svc, int port)
{
        struct orch_inst *inst;

        ck_assert_int_eq(orch_state_new_instance(f->st, svc, &inst), 0);
        orch_state_place_instance(f->st, inst, f->node);
        inst->ports = calloc(1, sizeof *inst->ports);
        inst->ports[0] = (struct orch_inst_port){strdup("http"), (uint16_t)port};
        inst->n_ports = 1;
        inst->state = ORCH_INSTANCE_RUNNING;
        inst->health = ORCH_HEALTH_PASSING;
        if (f->gw)
                fix_event(f, "instance.started", svc->name, inst->id);
        return inst;
}

static void fix_instance_gone(struct fixture *f, struct orch_inst *inst)
{
        inst->state = ORCH_INSTANCE_EXITED;
        fix_event(f, "instance.exited", inst->svc->name, inst->id);
}

static void fix_init(struct fixture *f)
{
        memset(f, 0, sizeof *f);
        signal(SIGPIPE, SIG_IGN);
        /* GW_DEBUG=1: the gateway's debug log (why an attempt failed, what the parser refused) */
        if (getenv("GW_DEBUG"))
                orch_log_set_level(ORCH_LOG_DEBUG);
        orch_strlcpy(f->dir, "/tmp/orch-test-gw-XXXXXX", sizeof f->dir);
        ck_assert_ptr_nonnull(mkdtemp(f->dir));
        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        ck_assert_int_eq(orch_store_open(f->dir, NULL, &f->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(f->store, &f->st), 0);
        ck_assert_int_ge(orch_state_upsert_node(f->st, "n1", &f->node), 0);
        f->node->address = strdup("127.0.0.1");
        f->node->cpu_millis = 64000;
        f->node->memory = 64ULL << 30;
        orch_state_set_node_state(f->st, f->node, ORCH_NODE_READY);
        ck_assert_int_eq(orch_registry_new(&f->loop, f->st, &f->reg), 0);
}

static void fix_start(struct fixture *f, const struct orch_gateway_limits *lim, unsigned workers)
{
        struct orch_gateway_config cfg = {
                .listen = "127.0.0.1:0",
                .workers = workers,
                .registry = f->reg,
                .store = f->store,
        };

        if (lim)
                cfg.limits = *lim;
        orch_registry_refresh_all(f->reg);
        ck_assert_int_eq(orch_gateway_start(&f->loop, &cfg, &f->gw), 0);
        f->port = orch_gateway_port(f->gw);
        ck_assert_int_gt(f->port, 0);
}

static void fix_release(struct fixture *f)
{
        char cmd[128];

        /* the gateway unsubscribes from the registry: stop it first */
        orch_gateway_stop(f->gw);
        orch_registry_free(f->reg);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&f->loop), 0);
        for (size_t i = 0; i < f->n_be; i++)
                backend_kill(&f->be[i]);
        /* orch_state_free() expects the queued writes written */
        ck_assert_int_ge(orch_state_flush(f->st), 0);
        orch_state_free(f->st);
        orch_store_close(f->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        ck_assert_int_eq(system(cmd), 0);
}

/* ---- a blocking client ---- */

struct resp {
        int status;
        struct orch_buf head; /* "name: value\n" lines */
        struct orch_buf body;
        bool closed; /* the gateway closed the connection after it */
};

static void resp_release(struct resp *r)
{
        orch_buf_release(&r->head);
        orch_buf_release(&r->body);
        memset(r, 0, sizeof *r);
}

/* The value of a header of the answer (the first), copied into buf; NULL when absent. */
static const char *resp_header(const struct resp *r, const char *name, char *buf, size_t size)
{
        size_t n = strlen(name);

        for (const char *l = r->head.data; l && *l;) {
                const char *end = strchr(l, '\n');
                if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
                        size_t v = (size_t)(end - (l + n + 2));
                        if (v >= size)
                                v = size - 1;
                        memcpy(buf, l + n + 2, v);
                        buf[v] = '\0';
                        return buf;
                }
                l = end + 1;
        }
        return NULL;
}

static int tcp_connect(int port)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        struct timeval tv = {.tv_sec = 10};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

        ck_assert_int_ge(fd, 0);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
                if (n <= 0)
                        return;
                data += n;
                len -= (size_t)n;
        }
}

static void send_str(int fd, const char *s)
{
        send_all(fd, s, strlen(s));
}

/*
 * Reads one answer from fd; `in` carries bytes read beyond it to the next call. Returns the status, or -1
 * when the connection ended (or timed out) without a complete answer. head_request: the request was HEAD.
 */
static int read_response(int fd, struct orch_buf *in, bool head_request, struct resp *r)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        char buf[65536];

        resp_release(r);
        r->status = -1;
        ck_assert_int_eq(orch_http_parser_new(ORCH_HTTP_RESPONSE,
                                              &(struct orch_http_limits){.max_body_bytes = 1ULL << 30}, &p),
                         0);
        orch_http_parser_set_head_request(p, head_request);
        for (;;) {
                struct orch_http_event ev;
                ssize_t n;
                size_t used;

                /* every event is asked for, also those that take no bytes (the end of a body) */
                ck_assert_int_eq(orch_http_parser_execute(p, in->data, in->len, &ev), 0);
                /* consumed after the event is handled: a body piece points into `in` */
                used = ev.consumed;
                if (ev.type == ORCH_HTTP_EVENT_NEED_MORE) {
                        orch_buf_consume(in, used);
                        n = recv(fd, buf, sizeof buf, 0);
                        if (n > 0) {
                                orch_buf_put(in, buf, (size_t)n);
                                continue;
                        }
                        r->closed = true;
                        if (n < 0 || orch_http_parser_finish(p, &ev) < 0 ||
                            (ev.type != ORCH_HTTP_EVENT_COMPLETE && ev.type != ORCH_HTTP_EVENT_UPGRADE))
                                return r->status = -1;
                        used = 0;
                }
                switch (ev.type) {
                case ORCH_HTTP_EVENT_HEAD: {
                        const struct orch_http_head *h = orch_http_parser_head(p);
                        if (h->status < 200 && h->status != 101) {
                                /* an interim answer: wait for the final one */
                                break;
                        }
                        r->status = h->status;
                        for (size_t i = 0; i < h->n_headers; i++)
                                orch_buf_printf(&r->head, "%s: %s\n", h->headers[i].name,
                                                h->headers[i].value);
                        if (!h->keep_alive)
                                r->closed = true;
                        break;
                }
                case ORCH_HTTP_EVENT_BODY:
                        orch_buf_put(&r->body, ev.body, ev.body_len);
                        break;
                case ORCH_HTTP_EVENT_COMPLETE:
                        if (r->status < 0) {
                                orch_http_parser_next(p);
                                break;
                        }
                        orch_buf_consume(in, used);
                        return r->status;
                case ORCH_HTTP_EVENT_UPGRADE:
                        orch_buf_consume(in, used);
                        return r->status;
                case ORCH_HTTP_EVENT_ERROR:
                        ck_abort_msg("malformed answer from the gateway: %s", ev.reason);
                        break;
                default:
                        break;
                }
                orch_buf_consume(in, used);
        }
}

/* One request on a new connection: the answer's status. */
static int request(int port, const char *raw, struct resp *r)
{
        struct orch_buf in = {0};
        int fd = tcp_connect(port), status;

        send_str(fd, raw);
        status = read_response(fd, &in, startswith(raw, "HEAD ") != NULL, r);
        close(fd);
        orch_buf_release(&in);
        return status;
}

/* A GET of path with the given Host; the body is kept in r. */
static int get(int port, const char *host, const char *path, struct resp *r)
{
        char raw[1024];

        orch_snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
        return request(port, raw, r);
}

/* Whether the server closed fd (EOF within a couple of seconds). */
static bool closed_by_peer(int fd)
{
        char c;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};

        if (poll(&pfd, 1, 3000) <= 0)
                return false;
        return recv(fd, &c, 1, 0) <= 0;
}

static const char *instance_of(const struct resp *r, char *buf, size_t size)
{
        return resp_header(r, "X-Instance", buf, size);
}

/* ---- gateway tests ---- */

START_TEST(test_gw_routing)
{
        struct fixture f;
        struct orch_svc *web, *api, *root;
        struct resp r = {0};
        char v[128];

        fix_init(&f);
        web = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {path: /web, strip_prefix: true}\n");
        api = fix_service(&f, "kind: service\nname: api\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {host: api.example.com}\n");
        root = fix_service(&f,
                           "kind: service\nname: root\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, web, backend_start(&f, "web-1")->port);
        fix_instance(&f, api, backend_start(&f, "api-1")->port);
        fix_instance(&f, root, backend_start(&f, "root-1")->port);
        fix_start(&f, NULL, 2);

        ck_assert_int_eq(get(f.port, "x", "/web/echo?a=1", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "web-1");
        ck_assert_msg(startswith(r.body.data, "GET /echo?a=1 HTTP/1.1\n"), "%s", r.body.data);
        ck_assert_int_eq(get(f.port, "x", "/web", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "web-1");
        ck_assert_str_eq(r.body.data, "orch-testprog web-1\n");
        /* orch-testprog knows no /website: its 404, not the gateway's */
        ck_assert_int_eq(get(f.port, "x", "/website", &r), 404);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "root-1");
        /* dot segments are resolved before routing, and the upstream sees the same path */
        ck_assert_int_eq(get(f.port, "x", "/web/../echo", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "root-1");
        ck_assert_msg(startswith(r.body.data, "GET /echo HTTP/1.1\n"), "%s", r.body.data);
        ck_assert_int_eq(get(f.port, "x", "/../etc", &r), 400);
        ck_assert(r.closed);
        ck_assert_int_eq(get(f.port, "API.example.com:8080", "/echo", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "api-1");
        ck_assert_ptr_nonnull(strstr(r.body.data, "\nHost: API.example.com:8080\n"));
        /* absolute-form: the authority decides */
        ck_assert_int_eq(
                request(f.port, "GET http://api.example.com/echo HTTP/1.1\r\nHost: other\r\n\r\n", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "api-1");
        ck_assert_int_eq(request(f.port, "GET /echo HTTP/1.0\r\n\r\n", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "root-1");
        ck_assert(r.closed);
        /* HEAD: the length of what GET would get, no body */
        ck_assert_int_eq(request(f.port, "HEAD /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
        ck_assert_str_eq(resp_header(&r, "Content-Length", v, sizeof v), "1000");
        ck_assert_uint_eq(r.body.len, 0);
        ck_assert_int_eq(request(f.port, "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", &r), 501);

        /* no route: 404 */
        fix_service(&f, "kind: service\nname: root\ncommand: [x]\nports: [{name: http}]\n"
                        "route: {path: /only}\n");
        fix_event(&f, "service.applied", "root", NULL);
        ck_assert_int_eq(get(f.port, "x", "/website", &r), 404);
        ck_assert_ptr_nonnull(strstr(r.body.data, "no route"));
        ck_assert_ptr_null(instance_of(&r, v, sizeof v));
        ck_assert_ptr_nonnull(resp_header(&r, "X-Request-Id", v, sizeof v));
        ck_assert(!r.closed);
        ck_assert_int_eq(get(f.port, "x", "/only/x", &r), 404);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "root-1");
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_balance_and_503)
{
        struct fixture f;
        struct orch_svc *svc;
        struct orch_inst *inst[3];
        struct resp r = {0};
        size_t counts[3] = {0};
        char v[128];

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        for (int i = 0; i < 3; i++) {
                char id[16];
                orch_snprintf(id, sizeof id, "b%d", i);
                inst[i] = fix_instance(&f, svc, backend_start(&f, id)->port);
        }
        fix_start(&f, NULL, 2);
        /* new connections (spread over the workers by the kernel) and one kept-alive connection */
        for (int i = 0; i < 300; i++) {
                ck_assert_int_eq(get(f.port, "x", "/", &r), 200);
                counts[instance_of(&r, v, sizeof v)[1] - '0']++;
        }
        for (int i = 0; i < 3; i++)
                ck_assert_msg(counts[i] >= 70 && counts[i] <= 130, "b%d got %zu of 300", i, counts[i]);
        {
                int fd = tcp_connect(f.port);
                struct orch_buf in = {0};
                memset(counts, 0, sizeof counts);
                for (int i = 0; i < 300; i++) {
                        send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
                        counts[instance_of(&r, v, sizeof v)[1] - '0']++;
                }
                for (int i = 0; i < 3; i++)
                        ck_assert_uint_eq(counts[i], 100);
                close(fd);
                orch_buf_release(&in);
        }
        /* no healthy instance: 503 */
        for (int i = 0; i < 3; i++)
                fix_instance_gone(&f, inst[i]);
        ck_assert_int_eq(get(f.port, "x", "/", &r), 503);
        ck_assert_ptr_nonnull(resp_header(&r, "Retry-After", v, sizeof v));
        ck_assert_ptr_nonnull(strstr(r.body.data, "no healthy instance of web"));
        resp_release(&r);
        fix_release(&f);
}
END_TEST

struct hammer {
        int port;
        atomic_bool stop;
        atomic_int ok, failed, done;
        int last_bad;
};

static void *hammer_main(void *arg)
{
        struct hammer *h = arg;
        struct orch_buf in = {0};
        struct resp r = {0};
        int fd = -1;

        while (!atomic_load(&h->stop)) {
                int s;

                /* alternate kept-alive connections and new ones */
                if (fd < 0)
                        fd = tcp_connect(h->port);
                send_str(fd, "GET /slow?ms=2 HTTP/1.1\r\nHost: x\r\n\r\n");
                s = read_response(fd, &in, false, &r);
                if (s == 200) {
                        atomic_fetch_add(&h->ok, 1);
                } else {
                        atomic_fetch_add(&h->failed, 1);
                        h->last_bad = s;
                }
                if (r.closed || s != 200 || atomic_load(&h->ok) % 7 == 0) {
                        close(fd);
                        fd = -1;
                        orch_buf_reset(&in);
                }
        }
        if (fd >= 0)
                close(fd);
        orch_buf_release(&in);
        resp_release(&r);
        atomic_store(&h->done, 1);
        return NULL;
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

START_TEST(test_gw_kill_instance)
{
        struct fixture f;
        struct orch_svc *svc;
        struct orch_inst *a;
        struct hammer h[3];
        pthread_t th[3];
        struct orch_buf metrics = {0};

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        a = fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_instance(&f, svc, backend_start(&f, "b")->port);
        fix_start(&f, NULL, 2);
        for (int i = 0; i < 3; i++) {
                h[i] = (struct hammer){.port = f.port};
                ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
        }
        sleep_ms(400);
        /* the process dies; for a second the registry still lists it (as when a health check has not failed
         * yet): the gateway's retries and passive health keep the clients from noticing */
        backend_kill(&f.be[0]);
        sleep_ms(1000);
        fix_instance_gone(&f, a);
        sleep_ms(300);
        for (int i = 0; i < 3; i++) {
                atomic_store(&h[i].stop, true);
                pthread_join(th[i], NULL);
        }
        for (int i = 0; i < 3; i++) {
                ck_assert_msg(atomic_load(&h[i].failed) == 0, "client %d: %d failed (last status %d), %d ok",
                              i, atomic_load(&h[i].failed), h[i].last_bad, atomic_load(&h[i].ok));
                ck_assert_int_gt(atomic_load(&h[i].ok), 50);
        }
        orch_gateway_metrics(f.gw, &metrics);
        ck_assert_ptr_nonnull(
                strstr(metrics.data, "orch_gateway_requests_total{route=\"web\",class=\"2xx\"}"));
        ck_assert_ptr_null(strstr(metrics.data, "orch_gateway_ejections_total{route=\"web\"} 0\n"));
        orch_buf_release(&metrics);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_connect_refused_retry)
{
        struct fixture f;
        struct orch_svc *svc;
        struct resp r = {0};
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t len = sizeof sa;
        int dead, fd;
        char v[64];

        /* a port nothing listens on */
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        dead = ntohs(sa.sin_port);
        close(fd);

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, svc, dead);
        fix_instance(&f, svc, backend_start(&f, "live")->port);
        fix_start(&f, NULL, 1);
        for (int i = 0; i < 20; i++) {
                ck_assert_int_eq(get(f.port, "x", "/", &r), 200);
                ck_assert_str_eq(instance_of(&r, v, sizeof v), "live");
        }
        /* a POST is retried too: the connect failed, nothing reached an application */
        ck_assert_int_eq(
                request(f.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", &r), 200);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_rate_limit)
{
        struct fixture f;
        struct orch_svc *svc;
        struct resp r = {0};
        char v[64];
        int ok = 0, limited = 0;

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {rate_limit: 5/m}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 2);
        /* new connections land on both workers: the buckets are shared, the limit holds */
        for (int i = 0; i < 12; i++) {
                int s = get(f.port, "x", "/", &r);
                if (s == 200)
                        ok++;
                else if (s == 429)
                        limited++;
        }
        ck_assert_int_eq(ok, 5);
        ck_assert_int_eq(limited, 7);
        ck_assert_int_eq(get(f.port, "x", "/", &r), 429);
        ck_assert_int_ge(atoi_checked(resp_header(&r, "Retry-After", v, sizeof v)), 1);
        ck_assert_int_le(atoi_checked(resp_header(&r, "Retry-After", v, sizeof v)), 12);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_api_key)
{
        struct fixture f;
        struct orch_svc *svc;
        struct resp r = {0};
        json_t *created = NULL;
        const char *why, *key;
        char raw[512], v[128];

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {auth: api-key}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 2);
        ck_assert_int_eq(get(f.port, "x", "/echo", &r), 401);
        ck_assert_ptr_nonnull(resp_header(&r, "WWW-Authenticate", v, sizeof v));
        ck_assert_int_eq(orch_apikeys_create(f.store, "web", "ci", &created, &why), 0);
        orch_gateway_sync(f.gw);
        key = json_string_value(json_object_get(created, "key"));
        ck_assert_int_eq(
                request(f.port, "GET /echo HTTP/1.1\r\nHost: x\r\nX-API-Key: orch_wrong\r\n\r\n", &r), 401);
        orch_snprintf(raw, sizeof raw, "GET /echo HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\n\r\n", key);
        ck_assert_int_eq(request(f.port, raw, &r), 200);
        /* the key stays at the gateway */
        ck_assert_ptr_null(strcasestr(r.body.data, "x-api-key"));
        orch_snprintf(raw, sizeof raw, "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
                      key);
        ck_assert_int_eq(request(f.port, raw, &r), 200);
        ck_assert_ptr_null(strcasestr(r.body.data, "authorization"));
        /* a deleted key no longer opens the door */
        ck_assert_int_eq(orch_apikeys_delete(f.store, json_string_value(json_object_get(created, "id"))), 0);
        orch_gateway_sync(f.gw);
        ck_assert_int_eq(request(f.port, raw, &r), 401);
        json_decref(created);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

/* Each vector on its own connection: 400 (or the status given) and the connection closed. */
static void expect_refused(int port, const char *raw, int status)
{
        struct orch_buf in = {0};
        struct resp r = {0};
        int fd = tcp_connect(port);

        send_str(fd, raw);
        ck_assert_msg(read_response(fd, &in, false, &r) == status, "%s: got %d, expected %d", raw, r.status,
                      status);
        ck_assert_msg(r.closed, "%s: the connection stays open", raw);
        ck_assert_msg(closed_by_peer(fd), "%s: not closed", raw);
        close(fd);
        resp_release(&r);
        orch_buf_release(&in);
}

START_TEST(test_gw_malformed)
{
        static const char *const smuggling[] = {
                /* whitespace before the colon */
                "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
                /* obs-fold */
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity,\r\n chunked\r\n\r\n0\r\n\r\n",
                /* bare LF, bare CR */
                "GET / HTTP/1.1\nHost: x\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
                /* Content-Length and Transfer-Encoding together */
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: "
                "chunked\r\n\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                "5\r\n\r\n0\r\n\r\n",
                /* repeated or invalid Content-Length */
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                /* a Transfer-Encoding other than a final chunked */
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
                "chunked\r\n\r\n0\r\n\r\n",
                "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                /* chunk framing */
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
                /* requests without a Host, with two */
                "GET / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                /* malformed starts */
                "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
                "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
                "GET / HTTP/1.1\r\n: empty\r\nHost: x\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\nX-\x01: a\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        };
        struct fixture f;
        struct orch_svc *svc;
        struct orch_buf big = {0};
        struct resp r = {0};

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {max_body: 10}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 2);
        for (size_t i = 0; i < ELEMENTSOF(smuggling); i++)
                expect_refused(f.port, smuggling[i], 400);
        /* caps: 431 for a huge field and for too many fields, 414 for a huge target */
        orch_buf_puts(&big, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
        for (int i = 0; i < 20000; i++)
                orch_buf_putc(&big, 'a');
        orch_buf_puts(&big, "\r\n\r\n");
        expect_refused(f.port, big.data, 431);
        orch_buf_reset(&big);
        orch_buf_puts(&big, "GET / HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 101; i++)
                orch_buf_printf(&big, "X-H%d: v\r\n", i);
        orch_buf_puts(&big, "\r\n");
        expect_refused(f.port, big.data, 431);
        orch_buf_reset(&big);
        orch_buf_puts(&big, "GET /");
        for (int i = 0; i < 20000; i++)
                orch_buf_putc(&big, 'a');
        orch_buf_puts(&big, " HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_refused(f.port, big.data, 414);
        orch_buf_release(&big);
        /* the route's body cap: announced or chunked */
        expect_refused(f.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
                       413);
        expect_refused(f.port,
                       "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello "
                       "\r\n5\r\nworld\r\n0\r\n\r\n",
                       413);
        /* and the gateway still serves */
        ck_assert_int_eq(request(f.port,
                                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhelloworld",
                                 &r),
                         200);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_slowloris)
{
        struct fixture f;
        struct orch_svc *svc;
        const struct orch_gateway_limits lim = {.header_timeout_ms = 1000};
        const char *slow = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        struct resp r = {0};
        struct orch_buf in = {0};
        uint64_t start;
        int fd, idle;
        bool got_408 = false;

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, &lim, 2);
        start = orch_now_msec();
        fd = tcp_connect(f.port);
        idle = tcp_connect(f.port);
        /* a few bytes a second: the deadline runs from the first byte, however the rest trickles in */
        for (const char *p = slow; *p; p++) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                if (poll(&pfd, 1, 0) > 0) {
                        got_408 = read_response(fd, &in, false, &r) == 408;
                        break;
                }
                send_all(fd, p, 1);
                /* normal clients are served meanwhile */
                if ((p - slow) % 3 == 0)
                        ck_assert_int_eq(get(f.port, "x", "/", &r), 200);
                sleep_ms(100);
        }
        ck_assert_msg(got_408, "the slow client was not answered 408 (status %d)", r.status);
        ck_assert_uint_ge(orch_now_msec() - start, 900);
        ck_assert_uint_le(orch_now_msec() - start, 3000);
        ck_assert(closed_by_peer(fd));
        /* a connection that never sends a byte is closed at the same deadline */
        ck_assert(closed_by_peer(idle));
        close(fd);
        close(idle);
        orch_buf_release(&in);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_bodies_pipelining_upgrade)
{
        struct fixture f;
        struct orch_svc *svc;
        struct resp r = {0};
        struct orch_buf in = {0};
        char v[128], buf[64];
        int fd;

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 2);

        /* a chunked request body, passed on chunked */
        ck_assert_int_eq(request(f.port,
                                 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                                 &r),
                         200);
        ck_assert_ptr_nonnull(strstr(r.body.data, "\nTransfer-Encoding: chunked\n"));
        ck_assert(orch_endswith(r.body.data, "\n\nhello world"));
        /* a chunked answer: chunked to HTTP/1.1, delimited by the close for HTTP/1.0 */
        ck_assert_int_eq(get(f.port, "x", "/chunked?n=3&ms=10", &r), 200);
        ck_assert_str_eq(resp_header(&r, "Transfer-Encoding", v, sizeof v), "chunked");
        ck_assert_uint_gt(r.body.len, 0);
        {
                struct resp r10 = {0};
                ck_assert_int_eq(request(f.port, "GET /chunked?n=3 HTTP/1.0\r\n\r\n", &r10), 200);
                ck_assert_ptr_null(resp_header(&r10, "Transfer-Encoding", v, sizeof v));
                ck_assert(r10.closed);
                ck_assert_uint_eq(r10.body.len, r.body.len);
                resp_release(&r10);
        }
        /* a big answer goes through whole */
        ck_assert_int_eq(get(f.port, "x", "/bytes?n=5000000", &r), 200);
        ck_assert_uint_eq(r.body.len, 5000000);

        /* pipelined requests are answered in order, a slow one first */
        fd = tcp_connect(f.port);
        send_str(fd,
                 "GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /nope/x HTTP/1.1\r\n"
                 "Host: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
        ck_assert_str_eq(r.body.data, "slow\n");
        ck_assert_int_eq(read_response(fd, &in, false, &r), 201);
        ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
        ck_assert(orch_endswith(r.body.data, "\n\nabc"));
        ck_assert_int_eq(read_response(fd, &in, false, &r), 404);
        ck_assert_ptr_nonnull(instance_of(&r, v, sizeof v));
        ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
        ck_assert(r.closed);
        ck_assert(closed_by_peer(fd));
        close(fd);

        /* Upgrade: 101, then raw bytes both ways */
        fd = tcp_connect(f.port);
        orch_buf_reset(&in);
        send_str(fd, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        ck_assert_int_eq(read_response(fd, &in, false, &r), 101);
        ck_assert_str_eq(resp_header(&r, "Upgrade", v, sizeof v), "websocket");
        for (int round = 0; round < 3; round++) {
                size_t got = in.len;
                memcpy(buf, in.data, MIN(in.len, sizeof buf));
                orch_buf_reset(&in);
                send_str(fd, "ping-pong");
                while (got < 9) {
                        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
                        ck_assert_int_gt(n, 0);
                        got += (size_t)n;
                }
                ck_assert_int_eq(memcmp(buf, "ping-pong", 9), 0);
        }
        close(fd);
        /* an upgrade the service refuses is a plain answer, and the connection ends */
        ck_assert_int_eq(
                request(f.port,
                        "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                        &r),
                200);
        ck_assert(r.closed);
        orch_buf_release(&in);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

START_TEST(test_gw_headers_and_pool)
{
        struct fixture f;
        struct orch_svc *svc;
        struct resp r = {0};
        struct orch_buf in = {0};
        char v[128], first[128];
        int fd;

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 1);
        ck_assert_int_eq(request(f.port,
                                 "GET /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: "
                                 "10.1.1.1\r\nX-Request-Id: abc-123\r\n"
                                 "Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nX-Forwarded-Proto: "
                                 "https\r\n\r\n",
                                 &r),
                         200);
        ck_assert_ptr_nonnull(strstr(r.body.data, "\nX-Forwarded-For: 10.1.1.1, 127.0.0.1\n"));
        ck_assert_ptr_nonnull(strstr(r.body.data, "\nX-Forwarded-Proto: http\n"));
        ck_assert_ptr_nonnull(strstr(r.body.data, "\nX-Request-Id: abc-123\n"));
        ck_assert_ptr_null(strstr(r.body.data, "X-Secret"));
        ck_assert_str_eq(resp_header(&r, "X-Request-Id", v, sizeof v), "abc-123");
        /* without one, the gateway makes an id and both sides see it */
        ck_assert_int_eq(get(f.port, "x", "/echo", &r), 200);
        ck_assert_uint_eq(strlen(resp_header(&r, "X-Request-Id", v, sizeof v)), 32);
        ck_assert_ptr_nonnull(strstr(r.body.data, v));

        /* requests on one client connection reuse one pooled upstream connection */
        fd = tcp_connect(f.port);
        send_str(fd, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
        ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
        orch_strlcpy(first, resp_header(&r, "X-Remote-Addr", v, sizeof v), sizeof first);
        for (int i = 0; i < 5; i++) {
                send_str(fd, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
                ck_assert_int_eq(read_response(fd, &in, false, &r), 200);
                ck_assert_str_eq(resp_header(&r, "X-Remote-Addr", v, sizeof v), first);
        }
        close(fd);
        /* and so do requests on other client connections */
        ck_assert_int_eq(get(f.port, "x", "/echo", &r), 200);
        ck_assert_str_eq(resp_header(&r, "X-Remote-Addr", v, sizeof v), first);
        /* the answer's own hop-by-hop fields stay behind; its status and body pass */
        ck_assert_int_eq(get(f.port, "x", "/status/418", &r), 418);
        ck_assert_ptr_null(resp_header(&r, "Keep-Alive", v, sizeof v));
        orch_buf_release(&in);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

struct slow_get {
        int port;
        int status;
        char instance[64];
};

static void *slow_get_main(void *arg)
{
        struct slow_get *s = arg;
        struct resp r = {0};
        char v[64];

        s->status = get(s->port, "x", "/slow?ms=800", &r);
        if (resp_header(&r, "X-Instance", v, sizeof v))
                orch_strlcpy(s->instance, v, sizeof s->instance);
        resp_release(&r);
        return NULL;
}

START_TEST(test_gw_changes_in_flight)
{
        struct fixture f;
        struct orch_svc *svc;
        struct orch_inst *a;
        struct slow_get sg;
        pthread_t th;
        struct resp r = {0};
        char v[64];

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        a = fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, NULL, 2);
        sg = (struct slow_get){.port = f.port};
        ck_assert_int_eq(pthread_create(&th, NULL, slow_get_main, &sg), 0);
        sleep_ms(200);
        /* while a request is with instance a, the route moves and a leaves: that request finishes */
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                              "route: {path: /v2, strip_prefix: true}\n");
        fix_event(&f, "service.applied", "web", NULL);
        fix_instance_gone(&f, a);
        fix_instance(&f, svc, backend_start(&f, "b")->port);
        ck_assert_int_eq(get(f.port, "x", "/v2/echo", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "b");
        ck_assert_int_eq(get(f.port, "x", "/echo", &r), 404);
        ck_assert_ptr_null(instance_of(&r, v, sizeof v));
        pthread_join(th, NULL);
        ck_assert_int_eq(sg.status, 200);
        ck_assert_str_eq(sg.instance, "a");
        /* the route's timeout: 504 */
        fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\n"
                        "route: {timeout: 200ms}\n");
        fix_event(&f, "service.applied", "web", NULL);
        ck_assert_int_eq(get(f.port, "x", "/slow?ms=2000", &r), 504);
        ck_assert_int_eq(get(f.port, "x", "/slow?ms=10", &r), 200);
        ck_assert_str_eq(instance_of(&r, v, sizeof v), "b");
        resp_release(&r);
        fix_release(&f);
}
END_TEST

/* Idle connections cost little and stay within the cap: the next ones get 503. */
START_TEST(test_gw_connection_cap)
{
        struct fixture f;
        struct orch_svc *svc;
        const struct orch_gateway_limits lim = {.max_connections = 20};
        struct resp r = {0};
        struct orch_buf in = {0};
        int fds[20], extra;

        fix_init(&f);
        svc = fix_service(&f, "kind: service\nname: web\ncommand: [x]\nports: [{name: http}]\nroute: {}\n");
        fix_instance(&f, svc, backend_start(&f, "a")->port);
        fix_start(&f, &lim, 1);
        for (int i = 0; i < 20; i++)
                fds[i] = tcp_connect(f.port);
        sleep_ms(100);
        extra = tcp_connect(f.port);
        ck_assert_int_eq(read_response(extra, &in, false, &r), 503);
        close(extra);
        close(fds[0]);
        sleep_ms(100);
        ck_assert_int_eq(get(f.port, "x", "/", &r), 200);
        for (int i = 1; i < 20; i++)
                close(fds[i]);
        orch_buf_release(&in);
        resp_release(&r);
        fix_release(&f);
}
END_TEST

static Suite *gateway_suite(void)
{
        Suite *s = suite_create("gateway");
        TCase *tc = tcase_create("parts");
        TCase *gw = tcase_create("gateway");

        tcase_add_test(tc, test_path_normalize);
        tcase_add_test(tc, test_table_lookup);
        tcase_add_test(tc, test_rewrite_request);
        tcase_add_test(tc, test_rewrite_response);
        tcase_add_test(tc, test_ratelimit);
        tcase_add_test(tc, test_ratelimit_threads);
        tcase_add_test(tc, test_balance);
        tcase_add_test(tc, test_apikeys);
        suite_add_tcase(s, tc);

        tcase_set_timeout(gw, 60);
        tcase_add_test(gw, test_gw_routing);
        tcase_add_test(gw, test_gw_balance_and_503);
        tcase_add_test(gw, test_gw_kill_instance);
        tcase_add_test(gw, test_gw_connect_refused_retry);
        tcase_add_test(gw, test_gw_rate_limit);
        tcase_add_test(gw, test_gw_api_key);
        tcase_add_test(gw, test_gw_malformed);
        tcase_add_test(gw, test_gw_slowloris);
        tcase_add_test(gw, test_gw_bodies_pipelining_upgrade);
        tcase_add_test(gw, test_gw_headers_and_pool);
        tcase_add_test(gw, test_gw_changes_in_flight);
        tcase_add_test(gw, test_gw_connection_cap);
        suite_add_tcase(s, gw);
        return s;
}

ORCH_TEST_MAIN(gateway_suite)
