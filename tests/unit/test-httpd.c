/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

#include "http.h"
#include "httpd.h"
#include "net.h"
#include "json.h"
#include "router.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * A real server on 127.0.0.1:0 in a libuv loop run by the test, and a client thread that speaks raw
 * bytes over blocking sockets and reads answers with the strict response parser. The thread only
 * records what it saw; the assertions run in the test's own thread once the loop has stopped.
 */

struct fixture;
typedef void (*client_fn)(struct fixture *f);

struct fixture {
        uv_loop_t loop;
        uv_async_t stop;
        struct orch_httpd *h;
        int port;
        client_fn client;
        pthread_t thread;
        /* What the client saw. */
        struct orch_buf log;
        /* What the server saw. */
        atomic_int closed;  /* close callbacks */
        atomic_int handled; /* handler calls */
        atomic_bool congested_seen;
        bool shutting_down;
        int closed_before_shutdown;
        /* Handler state. */
        uv_timer_t timer;
        bool timer_used;
        struct orch_httpd_req *held;
        unsigned stream_left;
        bool rude;
};

/* ---- the server side ---- */

static void on_req_closed(struct orch_httpd_req *req, void *userdata)
{
        struct fixture *f = userdata;

        if (f->held == req) {
                f->held = NULL;
                uv_timer_stop(&f->timer);
        }
        if (!f->shutting_down)
                f->closed_before_shutdown++;
        atomic_fetch_add(&f->closed, 1);
}

static void h_hello(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        orch_httpd_respond(req, 200, "text/plain", "hello\n", 6);
}

static void h_echo(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        size_t len;
        const char *body = orch_httpd_req_body(req, &len);

        /* The body is a string, also when it is empty. */
        if (!body || body[len] != '\0') {
                orch_httpd_respond_error(req, 500, "body not NUL-terminated");
                return;
        }
        orch_httpd_respond(req, 200, "application/octet-stream", body, len);
}

static void h_service(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        _cleanup_json_ json_t *j = json_pack("{s:s}", "name", orch_router_param(p, "name"));

        orch_httpd_req_add_header(req, "X-Orch-Index", "7");
        orch_httpd_respond_json(req, 200, j);
}

static void h_scale(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        orch_httpd_respond_error(req, 409, "cannot scale %s", orch_router_param(p, "name"));
}

static void on_slow_timer(uv_timer_t *t)
{
        struct fixture *f = container_of(t, struct fixture, timer);
        struct orch_httpd_req *req = f->held;

        f->held = NULL;
        if (req)
                orch_httpd_respond(req, 200, "text/plain", "slow\n", 5);
}

/* Deferred: answered by a timer, like a blocking query. */
static void h_slow(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        struct fixture *f = userdata;
        _cleanup_(freep) char *ms = NULL;
        uint64_t v = 50;

        if (orch_httpd_req_query(req, "ms", &ms) == 0)
                orch_parse_u64(ms, &v);
        f->held = req;
        orch_httpd_req_set_close_cb(req, on_req_closed, f);
        uv_timer_start(&f->timer, on_slow_timer, v, 0);
}

static void on_stream_timer(uv_timer_t *t)
{
        struct fixture *f = container_of(t, struct fixture, timer);
        char line[32];
        int n;

        if (!f->held)
                return;
        n = snprintf(line, sizeof line, "chunk %u\n", f->stream_left);
        orch_httpd_stream_write(f->held, line, (size_t)n);
        if (--f->stream_left == 0) {
                orch_httpd_stream_end(f->held);
                f->held = NULL;
                uv_timer_stop(t);
        }
}

static void h_stream(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        struct fixture *f = userdata;

        f->held = req;
        f->stream_left = 3;
        orch_httpd_req_set_close_cb(req, on_req_closed, f);
        orch_httpd_stream_start(req, 200, "application/x-ndjson");
        uv_timer_start(&f->timer, on_stream_timer, 10, 10);
}

/* Never answers: only the close callback ends it. */
static void h_wait(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        struct fixture *f = userdata;

        f->held = req;
        orch_httpd_req_set_close_cb(req, on_req_closed, f);
        orch_httpd_stream_start(req, 200, "application/x-ndjson");
        orch_httpd_stream_write(req, "{\"index\":1}\n", 12);
}

static void on_flood_timer(uv_timer_t *t)
{
        struct fixture *f = container_of(t, struct fixture, timer);
        static char block[256 * 1024];

        if (!f->held)
                return;
        /* A well-behaved streamer writes only while the client keeps up; a rude one does not ask. */
        if (!f->rude && orch_httpd_stream_congested(f->held)) {
                atomic_store(&f->congested_seen, true);
                return;
        }
        memset(block, 'x', sizeof block);
        orch_httpd_stream_write(f->held, block, sizeof block);
}

static void h_flood(struct orch_httpd_req *req, const struct orch_router_params *p, void *userdata)
{
        struct fixture *f = userdata;

        f->held = req;
        orch_httpd_req_set_close_cb(req, on_req_closed, f);
        orch_httpd_stream_start(req, 200, "application/octet-stream");
        uv_timer_start(&f->timer, on_flood_timer, 1, 5);
}

static const struct orch_http_route routes[] = {
        {"GET", "/hello", h_hello},
        {"POST", "/echo", h_echo},
        {"GET", "/v1/services/{name}", h_service},
        {"DELETE", "/v1/services/{name}", h_service},
        {"POST", "/v1/services/{name}/scale", h_scale},
        {"GET", "/slow", h_slow},
        {"GET", "/stream", h_stream},
        {"GET", "/wait", h_wait},
        {"GET", "/flood", h_flood},
};

static void handler(struct orch_httpd_req *req, void *userdata)
{
        struct fixture *f = userdata;

        atomic_fetch_add(&f->handled, 1);
        orch_router_dispatch(routes, ELEMENTSOF(routes), req, userdata);
}

static void *client_main(void *arg)
{
        struct fixture *f = arg;

        f->client(f);
        uv_async_send(&f->stop);
        return NULL;
}

static void on_server_freed(void *userdata)
{
}

static void on_stop(uv_async_t *a)
{
        struct fixture *f = container_of(a, struct fixture, stop);

        f->shutting_down = true;
        orch_httpd_free(f->h, on_server_freed, f);
        uv_close((uv_handle_t *)&f->stop, NULL);
        uv_close((uv_handle_t *)&f->timer, NULL);
}

/* Runs client in a thread against a fresh server; returns when both are done. */
static void run_fixture(struct fixture *f, struct orch_httpd_config *cfg, client_fn client)
{
        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        ck_assert_int_eq(uv_async_init(&f->loop, &f->stop, on_stop), 0);
        ck_assert_int_eq(uv_timer_init(&f->loop, &f->timer), 0);
        cfg->listen = cfg->listen ? cfg->listen : "127.0.0.1:0";
        cfg->handler = handler;
        cfg->userdata = f;
        ck_assert_int_eq(orch_httpd_new(&f->loop, cfg, &f->h), 0);
        f->port = orch_httpd_port(f->h);
        ck_assert_int_gt(f->port, 0);
        f->client = client;
        ck_assert_int_eq(pthread_create(&f->thread, NULL, client_main, f), 0);
        ck_assert_int_eq(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(pthread_join(f->thread, NULL), 0);
        ck_assert_int_eq(uv_loop_close(&f->loop), 0);
        orch_buf_putc(&f->log, '\0');
}

/* ---- the client side (runs in the thread: no check assertions here) ---- */

static int client_connect(struct fixture *f)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
        struct timeval tv = {.tv_sec = 5};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                orch_buf_puts(&f->log, "connect failed\n");
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        return fd;
}

static void client_send(int fd, const char *s, size_t len)
{
        while (len > 0) {
                ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
                if (n <= 0)
                        return;
                s += n;
                len -= (size_t)n;
        }
}

#define SEND(fd, lit) client_send((fd), (lit), sizeof(lit) - 1)

static uint64_t now_ms(void)
{
        return orch_now_msec();
}

/* Reads up to n answers and logs each as "STATUS [Connection: ..] [chunked] BODY"; then "EOF" if the
 * server closed. head: the answers are to HEAD requests. */
static void client_read(struct fixture *f, int fd, int n, bool head)
{
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        struct orch_buf pending = {0}, body = {0};
        char buf[65536];
        int got = 0;

        if (orch_http_parser_new(ORCH_HTTP_RESPONSE, NULL, &p) < 0)
                return;
        orch_http_parser_set_head_request(p, head);
        while (got < n) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                size_t used = 0;

                if (r <= 0) {
                        struct orch_http_event ev;
                        orch_http_parser_finish(p, &ev);
                        if (ev.type == ORCH_HTTP_EVENT_COMPLETE)
                                orch_buf_printf(&f->log, "%d %s\n", orch_http_parser_head(p)->status,
                                                body.data ? body.data : "");
                        orch_buf_puts(&f->log, r == 0 ? "EOF\n" : "TIMEOUT\n");
                        break;
                }
                orch_buf_put(&pending, buf, (size_t)r);
                for (;;) {
                        struct orch_http_event ev;
                        const struct orch_http_head *h;
                        const char *conn;

                        if (orch_http_parser_execute(p, pending.data + used, pending.len - used, &ev) < 0)
                                break;
                        used += ev.consumed;
                        if (ev.type == ORCH_HTTP_EVENT_NEED_MORE)
                                break;
                        if (ev.type == ORCH_HTTP_EVENT_BODY)
                                orch_buf_put(&body, ev.body, ev.body_len);
                        if (ev.type == ORCH_HTTP_EVENT_ERROR) {
                                orch_buf_printf(&f->log, "BAD RESPONSE %s\n", ev.reason);
                                got = n;
                                break;
                        }
                        if (ev.type != ORCH_HTTP_EVENT_COMPLETE)
                                continue;
                        h = orch_http_parser_head(p);
                        conn = orch_http_head_header(h, "Connection");
                        orch_buf_printf(&f->log, "%d%s%s%s%s %s\n", h->status, conn ? " [" : "",
                                        conn ? conn : "", conn ? "]" : "", h->chunked ? " [chunked]" : "",
                                        body.data ? body.data : "");
                        orch_buf_reset(&body);
                        orch_http_parser_next(p);
                        if (h->status != 100)
                                got++;
                        if (got == n)
                                break;
                }
                orch_buf_consume(&pending, used);
        }
        orch_buf_release(&pending);
        orch_buf_release(&body);
}

/* Waits for the server to close the connection. */
static void client_expect_eof(struct fixture *f, int fd)
{
        char b[256];
        ssize_t r = recv(fd, b, sizeof b, 0);

        if (r == 0)
                orch_buf_printf(&f->log, "EOF\n");
        else if (r < 0)
                orch_buf_printf(&f->log, "no EOF (%s)\n", strerror(errno));
        else
                orch_buf_printf(&f->log, "unexpected data: %.*s\n", (int)r, b);
}

static bool wait_for(atomic_int *v, int want, unsigned ms)
{
        uint64_t end = now_ms() + ms;

        while (atomic_load(v) < want) {
                if (now_ms() > end)
                        return false;
                usleep(5000);
        }
        return true;
}

/* ---- tests ---- */

static void client_keep_alive(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        SEND(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        client_read(f, fd, 1, false);
        SEND(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping");
        client_read(f, fd, 1, false);
        SEND(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        client_read(f, fd, 1, false);
        SEND(fd, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        client_read(f, fd, 1, false);
        client_expect_eof(f, fd);
        close(fd);
}

START_TEST(test_keep_alive)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_keep_alive);
        ck_assert_str_eq(f.log.data, "200 hello\n\n200 ping\n200 \n200 [close] hello\n\nEOF\n");
        ck_assert_int_eq(atomic_load(&f.handled), 4);
        orch_buf_release(&f.log);
}
END_TEST

static void client_pipelining(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        /* The deferred /slow answer must still come first. */
        SEND(fd, "GET /slow?ms=150 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /v1/services/web HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                 "GET /slow?ms=20 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        client_read(f, fd, 5, false);
        client_expect_eof(f, fd);
        close(fd);
}

START_TEST(test_pipelining_order)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_pipelining);
        ck_assert_str_eq(f.log.data, "200 slow\n\n200 hello\n\n200 {\"name\":\"web\"}\n\n200 ok\n"
                                     "200 [close] slow\n\nEOF\n");
        orch_buf_release(&f.log);
}
END_TEST

static void client_stream(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        SEND(fd, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        client_read(f, fd, 2, false);
        close(fd);
        /* HTTP/1.0 gets the stream delimited by the close. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        SEND(fd, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        client_read(f, fd, 1, false);
        close(fd);
}

START_TEST(test_streamed)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_stream);
        ck_assert_str_eq(f.log.data, "200 [chunked] chunk 3\nchunk 2\nchunk 1\n\n200 hello\n\n"
                                     "200 chunk 3\nchunk 2\nchunk 1\n\nEOF\n");
        ck_assert_int_eq(f.closed_before_shutdown, 0);
        orch_buf_release(&f.log);
}
END_TEST

static void client_disconnect(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        SEND(fd, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n");
        usleep(100 * 1000);
        close(fd);
        orch_buf_puts(&f->log, wait_for(&f->closed, 1, 3000) ? "close callback\n" : "no close callback\n");
        /* A deferred request whose client leaves. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        SEND(fd, "GET /slow?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
        usleep(100 * 1000);
        close(fd);
        orch_buf_puts(&f->log, wait_for(&f->closed, 2, 3000) ? "close callback\n" : "no close callback\n");
        /* Gone with a reset while the stream keeps writing: the server must survive its next writes. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        SEND(fd, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
        usleep(50 * 1000);
        {
                struct linger lg = {.l_onoff = 1, .l_linger = 0};
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(fd);
        orch_buf_puts(&f->log, wait_for(&f->closed, 3, 3000) ? "close callback\n" : "no close callback\n");
}

START_TEST(test_client_disconnect)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_disconnect);
        ck_assert_str_eq(f.log.data, "close callback\nclose callback\nclose callback\n");
        ck_assert_int_eq(f.closed_before_shutdown, 3);
        orch_buf_release(&f.log);
}
END_TEST

static void client_shutdown_pending(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        SEND(fd, "GET /slow?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
        /* Wait until the handler holds it, then let the fixture shut the server down. */
        wait_for(&f->handled, 1, 3000);
}

START_TEST(test_shutdown_releases_requests)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_shutdown_pending);
        ck_assert_int_eq(atomic_load(&f.closed), 1);
        ck_assert_int_eq(f.closed_before_shutdown, 0);
        orch_buf_release(&f.log);
}
END_TEST

static void client_limits(struct fixture *f)
{
        int a = client_connect(f), b = client_connect(f), c, d;

        if (a < 0 || b < 0)
                return;
        /* A third connection over max_connections = 2. */
        c = client_connect(f);
        if (c < 0)
                return;
        client_read(f, c, 1, false);
        close(c);
        /* Once one leaves there is room again. */
        close(a);
        usleep(100 * 1000);
        d = client_connect(f);
        if (d < 0)
                return;
        SEND(d, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        client_read(f, d, 1, false);
        close(d);
        close(b);
}

START_TEST(test_connection_limit)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {.max_connections = 2};

        run_fixture(&f, &cfg, client_limits);
        ck_assert_str_eq(f.log.data,
                         "503 [close] {\"error\":\"too many connections\"}\n\n200 [close] hello\n\n");
        orch_buf_release(&f.log);
}
END_TEST

static void client_slow(struct fixture *f)
{
        uint64_t start;
        int fd = client_connect(f);

        if (fd < 0)
                return;
        /* Slowloris: a byte every 50 ms never beats an absolute head deadline of 300 ms. */
        start = now_ms();
        for (const char *s =
                     "GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
             *s; s++) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};

                client_send(fd, s, 1);
                if (poll(&pfd, 1, 50) > 0)
                        break;
        }
        client_read(f, fd, 1, false);
        orch_buf_printf(&f->log, "after %s\n", now_ms() - start < 1000 ? "<1s" : ">=1s");
        close(fd);
        /* Connected but silent: closed without an answer. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        client_expect_eof(f, fd);
        close(fd);
        /* A body that stops coming. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        SEND(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
        client_read(f, fd, 1, false);
        close(fd);
        /* Kept alive, then idle. */
        fd = client_connect(f);
        if (fd < 0)
                return;
        SEND(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        client_read(f, fd, 1, false);
        client_expect_eof(f, fd);
        close(fd);
}

START_TEST(test_timeouts)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {
                .header_timeout_ms = 300, .body_timeout_ms = 300, .idle_timeout_ms = 300};

        run_fixture(&f, &cfg, client_slow);
        ck_assert_str_eq(f.log.data,
                         "408 [close] {\"error\":\"request head not complete within 300 ms\"}\n\n"
                         "after <1s\nEOF\n"
                         "408 [close] {\"error\":\"no request body data for 300 ms\"}\n\n"
                         "200 hello\n\nEOF\n");
        ck_assert_int_eq(atomic_load(&f.handled), 1);
        orch_buf_release(&f.log);
}
END_TEST

static void client_malformed(struct fixture *f)
{
        static const char *const bad[] = {
                "GET / HTTP/1.1\r\nHost : t\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: "
                "chunked\r\n\r\n0\r\n\r\n",
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n01234567890123456",
                "GET / HTTP/1.1\r\nHost: t\r\nX-Big: "
                "0123456789012345678901234567890123456789012345678901234567890123"
                "456789012345678901234567890123456789\r\n\r\n",
                "BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET / HTTP/2.0\r\nHost: t\r\n\r\n",
                "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: t\r\nExpect: tea\r\n\r\n",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int fd = client_connect(f);
                if (fd < 0)
                        return;
                client_send(fd, bad[i], strlen(bad[i]));
                client_read(f, fd, 1, false);
                client_expect_eof(f, fd);
                close(fd);
        }
}

START_TEST(test_malformed)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {.max_body_bytes = 16, .max_header_bytes = 100};

        run_fixture(&f, &cfg, client_malformed);
        ck_assert_str_eq(
                f.log.data,
                "400 [close] {\"error\":\"whitespace between the field name \\\"Host\\\" and the "
                "colon\"}\n\nEOF\n"
                "400 [close] {\"error\":\"obsolete line folding (a field line starting with "
                "whitespace)\"}\n\nEOF\n"
                "400 [close] {\"error\":\"both Content-Length and Transfer-Encoding\"}\n\nEOF\n"
                "413 [close] {\"error\":\"body of 17 bytes is larger than the limit of 16 bytes\"}\n\nEOF\n"
                "431 [close] {\"error\":\"request header section larger than 100 bytes\"}\n\nEOF\n"
                "501 [close] {\"error\":\"unknown request method (methods are case-sensitive)\"}\n\nEOF\n"
                "505 [close] {\"error\":\"unsupported HTTP version 2.x (only 1.0 and 1.1)\"}\n\nEOF\n"
                "501 [close] {\"error\":\"CONNECT is not supported\"}\n\nEOF\n"
                "417 [close] {\"error\":\"unsupported expectation \\\"tea\\\"\"}\n\nEOF\n");
        ck_assert_int_eq(atomic_load(&f.handled), 0);
        orch_buf_release(&f.log);
}
END_TEST

static void client_misc(struct fixture *f)
{
        int fd = client_connect(f);

        if (fd < 0)
                return;
        /* Expect: 100-continue gets its interim answer before the body is sent. */
        SEND(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        {
                char b[64];
                ssize_t n = recv(fd, b, sizeof b - 1, 0);
                b[n > 0 ? n : 0] = '\0';
                orch_buf_printf(&f->log, "interim: %s", b);
        }
        SEND(fd, "hi");
        client_read(f, fd, 1, false);
        /* HEAD: the GET route answers, without a body. */
        SEND(fd, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        client_read(f, fd, 1, true);
        /* Router: 404, 405 with Allow, decoded parameters, HTTP/1.0 keep-alive. */
        SEND(fd, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                 "PUT /v1/services/web HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                 "GET /v1/services/a%2Fb%20c HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /v1/services/web/scale HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                 "GET /v1/services/ HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                 "GET /hello HTTP/1.0\r\n\r\n");
        client_read(f, fd, 7, false);
        client_expect_eof(f, fd);
        close(fd);
}

START_TEST(test_misc)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {0};

        run_fixture(&f, &cfg, client_misc);
        ck_assert_str_eq(f.log.data,
                         "interim: HTTP/1.1 100 Continue\r\n\r\n"
                         "200 hi\n"
                         "200 \n"
                         "404 {\"error\":\"no such resource: /nope\"}\n\n"
                         "405 {\"error\":\"method PUT not allowed here (allowed: GET, HEAD, DELETE)\"}\n\n"
                         "200 {\"name\":\"a/b c\"}\n\n"
                         "409 {\"error\":\"cannot scale web\"}\n\n"
                         "404 {\"error\":\"no such resource: /v1/services/\"}\n\n"
                         "200 [keep-alive] hello\n\n"
                         "200 [close] hello\n\n"
                         "EOF\n");
        orch_buf_release(&f.log);
}
END_TEST

static void client_slow_reader(struct fixture *f)
{
        int fd = client_connect(f);
        int rcv = 4096;

        if (fd < 0)
                return;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        SEND(fd, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
        /* Never read: the server must drop us after write_timeout_ms above the high-water mark. */
        orch_buf_puts(&f->log, wait_for(&f->closed, 1, 5000) ? "dropped\n" : "not dropped\n");
        close(fd);
}

START_TEST(test_slow_reader_dropped)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {.write_high_water = 64 * 1024, .write_timeout_ms = 300};

        run_fixture(&f, &cfg, client_slow_reader);
        ck_assert_str_eq(f.log.data, "dropped\n");
        ck_assert(atomic_load(&f.congested_seen));
        ck_assert_int_eq(f.closed_before_shutdown, 1);
        orch_buf_release(&f.log);
}
END_TEST

static void client_ipv6(struct fixture *f)
{
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
                                  .sin6_port = htons((uint16_t)f->port),
                                  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                orch_buf_puts(&f->log, "connect failed\n");
                if (fd >= 0)
                        close(fd);
                return;
        }
        SEND(fd, "GET /hello HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n");
        client_read(f, fd, 1, false);
        close(fd);
}

static void client_leaves_congested(struct fixture *f)
{
        int fd = client_connect(f);
        int rcv = 4096;

        if (fd < 0)
                return;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        SEND(fd, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
        /* Once congested the server stops reading: it learns that we left from a failed write, not from a
         * read, and must still run the close callback. */
        for (unsigned i = 0; i < 300 && !atomic_load(&f->congested_seen); i++)
                usleep(10 * 1000);
        close(fd);
        orch_buf_puts(&f->log, wait_for(&f->closed, 1, 5000) ? "close callback\n" : "no close callback\n");
}

START_TEST(test_client_leaves_while_congested)
{
        struct fixture f = {0};
        struct orch_httpd_config cfg = {.write_high_water = 64 * 1024, .write_timeout_ms = 60 * 1000};

        run_fixture(&f, &cfg, client_leaves_congested);
        ck_assert_str_eq(f.log.data, "close callback\n");
        ck_assert(atomic_load(&f.congested_seen));
        orch_buf_release(&f.log);
}
END_TEST

START_TEST(test_rude_streamer_bounded)
{
        /* The handler ignores congestion and the write timeout is far away: the backlog cap drops the
         * client long before it. */
        struct fixture f = {.rude = true};
        struct orch_httpd_config cfg = {.write_high_water = 64 * 1024, .write_timeout_ms = 60 * 1000};

        run_fixture(&f, &cfg, client_slow_reader);
        ck_assert_str_eq(f.log.data, "dropped\n");
        ck_assert_int_eq(f.closed_before_shutdown, 1);
        orch_buf_release(&f.log);
}
END_TEST

START_TEST(test_ipv6_and_addresses)
{
        static const char *const bad[] = {"bad host:80", "1.2.3.4",   "[::1]80",  "1.2.3.4:99999",
                                          "[::1:80",      ":80",       "1.2.3:80", "",
                                          "[::1]:",       "1.2.3.4:-1",  "0x7f.1:80", "0x7f000001:80", "256.1.1.1:80", "1.2.3.4.5:80"};
        struct fixture f = {0};
        struct orch_httpd_config cfg = {.listen = "[::1]:0"};
        struct orch_httpd *h;
        uv_loop_t loop;
        int fd;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct orch_httpd_config c = {.listen = bad[i], .handler = handler};
                ck_assert_msg(orch_httpd_new(&loop, &c, &h) == -EINVAL, "accepted %s", bad[i]);
        }
        /* a host name is resolved (once, at the start) */
        {
                struct orch_httpd_config c = {.listen = "localhost:0", .handler = handler};

                struct sockaddr_storage ss;
                socklen_t len;

                /* IPv4 first: what connects to localhost:PORT by default is 127.0.0.1 */
                ck_assert_int_eq(orch_parse_listen("localhost:7070", &ss, &len), 0);
                ck_assert_int_eq(ss.ss_family, AF_INET);
                ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr), INADDR_LOOPBACK);
                ck_assert_uint_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), 7070);
                ck_assert_int_eq(orch_httpd_new(&loop, &c, &h), 0);
                ck_assert_int_gt(orch_httpd_port(h), 0);
                orch_httpd_free(h, NULL, NULL);
                ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        }
        ck_assert_int_eq(uv_loop_close(&loop), 0);

        /* Only where ::1 exists. */
        {
                struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};

                fd = socket(AF_INET6, SOCK_STREAM, 0);
                if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                        fprintf(stderr,
                                "test_ipv6_and_addresses: no IPv6 loopback here, IPv6 part skipped\n");
                        if (fd >= 0)
                                close(fd);
                        return;
                }
                close(fd);
        }
        run_fixture(&f, &cfg, client_ipv6);
        ck_assert_str_eq(f.log.data, "200 [close] hello\n\n");
        orch_buf_release(&f.log);
}
END_TEST

START_TEST(test_sigpipe_ignored)
{
        /* libuv writes with write(2): a write after a client's reset must not kill the daemon. */
        struct orch_httpd *h;
        struct orch_httpd_config cfg = {.listen = "127.0.0.1:0", .handler = handler};
        struct sigaction sa;
        uv_loop_t loop;

        signal(SIGPIPE, SIG_DFL);
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_httpd_new(&loop, &cfg, &h), 0);
        ck_assert_int_eq(sigaction(SIGPIPE, NULL, &sa), 0);
        ck_assert(sa.sa_handler == SIG_IGN);
        orch_httpd_free(h, NULL, NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_bind_in_use)
{
        struct orch_httpd *a, *b;
        struct orch_httpd_config cfg = {.listen = "127.0.0.1:0", .handler = handler};
        char addr[32];
        uv_loop_t loop;

        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_httpd_new(&loop, &cfg, &a), 0);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", orch_httpd_port(a));
        cfg.listen = addr;
        ck_assert_int_eq(orch_httpd_new(&loop, &cfg, &b), -EADDRINUSE);
        orch_httpd_free(a, NULL, NULL);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static Suite *httpd_suite(void)
{
        Suite *s = suite_create("httpd");
        TCase *tc = tcase_create("server");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_keep_alive);
        tcase_add_test(tc, test_pipelining_order);
        tcase_add_test(tc, test_streamed);
        tcase_add_test(tc, test_client_disconnect);
        tcase_add_test(tc, test_shutdown_releases_requests);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_timeouts);
        tcase_add_test(tc, test_malformed);
        tcase_add_test(tc, test_misc);
        tcase_add_test(tc, test_slow_reader_dropped);
        tcase_add_test(tc, test_rude_streamer_bounded);
        tcase_add_test(tc, test_client_leaves_while_congested);
        tcase_add_test(tc, test_ipv6_and_addresses);
        tcase_add_test(tc, test_bind_in_use);
        tcase_add_test(tc, test_sigpipe_ignored);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(httpd_suite)
