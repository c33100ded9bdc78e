/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "http.h"
#include "httpclient.h"
#include "httpd.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * The client against two kinds of servers: a tiny scripted one (a thread that accepts one connection,
 * records the request, and writes canned bytes, for exact and broken answers), and the real orchd
 * server (a libuv loop in a thread) for streaming and early answers end to end.
 */

struct tiny {
        int lfd;
        int port;
        pthread_t thread;
        const char *const *parts; /* written in order, NULL-terminated */
        unsigned delay_ms;        /* between parts */
        unsigned silence_ms;      /* before the first part */
        bool no_answer;           /* close right after reading the request */
        struct orch_buf request;  /* what arrived */
};

static void *tiny_main(void *arg)
{
        struct tiny *t = arg;
        struct timeval tv = {.tv_sec = 2};
        char buf[4096];
        size_t want = SIZE_MAX;
        int fd = accept(t->lfd, NULL, NULL);

        if (fd < 0)
                return NULL;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        /* The head, then as many body bytes as Content-Length says. */
        while (t->request.len < want) {
                ssize_t n = recv(fd, buf, sizeof buf, 0);
                const char *end;

                if (n <= 0)
                        break;
                orch_buf_put(&t->request, buf, (size_t)n);
                end = strstr(t->request.data, "\r\n\r\n");
                if (end && want == SIZE_MAX) {
                        const char *cl = strcasestr(t->request.data, "\r\nContent-Length: ");
                        uint64_t v = 0;
                        want = (size_t)(end + 4 - t->request.data);
                        if (cl && cl < end) {
                                char num[24] = "";
                                sscanf(cl + 18, "%23[0-9]", num);
                                orch_parse_u64(num, &v);
                                want += (size_t)v;
                        }
                }
        }
        if (!t->no_answer) {
                usleep(t->silence_ms * 1000);
                for (const char *const *p = t->parts; p && *p; p++) {
                        send(fd, *p, strlen(*p), MSG_NOSIGNAL);
                        if (p[1])
                                usleep(t->delay_ms * 1000);
                }
        }
        /* Half-close, then read what is left so the client never sees a reset. */
        shutdown(fd, SHUT_WR);
        while (recv(fd, buf, sizeof buf, 0) > 0)
                ;
        close(fd);
        return NULL;
}

static void tiny_start(struct tiny *t)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sa;

        t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(t->lfd, 0);
        ck_assert_int_eq(bind(t->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(listen(t->lfd, 4), 0);
        ck_assert_int_eq(getsockname(t->lfd, (struct sockaddr *)&sa, &len), 0);
        t->port = ntohs(sa.sin_port);
        ck_assert_int_eq(pthread_create(&t->thread, NULL, tiny_main, t), 0);
}

static void tiny_stop(struct tiny *t)
{
        pthread_join(t->thread, NULL);
        close(t->lfd);
        orch_buf_putc(&t->request, '\0');
}

static struct orch_httpclient *client_for(int port, const char *prefix)
{
        struct orch_httpclient *c;
        char url[128];

        snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, prefix);
        ck_assert_int_eq(orch_httpclient_new(url, &c), 0);
        return c;
}

START_TEST(test_get)
{
        static const char *const parts[] = {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                            "X-Orch-Index: 42\r\nContent-Length: 2\r\n\r\n{}",
                                            NULL};
        struct tiny t = {.parts = parts};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c = NULL;
        struct orch_http_response r = {0};
        struct orch_httpclient_request req = {.method = "GET", .target = "/v1/services?x=1"};
        char want[256];

        tiny_start(&t);
        c = client_for(t.port, "/api/");
        ck_assert_int_eq(orch_httpclient_set_token(c, "s3cret"), 0);
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        tiny_stop(&t);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.reason, "OK");
        ck_assert_str_eq(r.body, "{}");
        ck_assert_uint_eq(r.body_len, 2);
        ck_assert_str_eq(orch_http_response_header(&r, "x-orch-index"), "42");
        ck_assert_ptr_null(orch_http_response_header(&r, "X-None"));
        snprintf(want, sizeof want,
                 "GET /api/v1/services?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: orch/" ORCH_VERSION
                 "\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n",
                 t.port);
        ck_assert_str_eq(t.request.data, want);
        orch_http_response_release(&r);
        orch_buf_release(&t.request);
}
END_TEST

START_TEST(test_post_chunked_answer)
{
        static const char *const parts[] = {
                "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"",
                "\r\n3\r\n:1}\r\n0\r\n\r\n", NULL};
        struct tiny t = {.parts = parts, .delay_ms = 50};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c = NULL;
        struct orch_http_header extra[] = {{"X-Dry-Run", "1"}};
        struct orch_httpclient_request req = {.method = "POST",
                                              .target = "/v1/apply",
                                              .content_type = "application/yaml",
                                              .body = "kind: service\n",
                                              .body_len = 14,
                                              .headers = extra,
                                              .n_headers = 1};
        struct orch_http_response r = {0};

        tiny_start(&t);
        c = client_for(t.port, "");
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        tiny_stop(&t);
        ck_assert_int_eq(r.status, 201);
        ck_assert_str_eq(r.body, "{\"a\":1}");
        ck_assert_msg(
                strstr(t.request.data, "Content-Type: application/yaml\r\n") &&
                        strstr(t.request.data, "X-Dry-Run: 1\r\nContent-Length: 14\r\n\r\nkind: service\n"),
                "%s", t.request.data);
        orch_http_response_release(&r);
        orch_buf_release(&t.request);
}
END_TEST

START_TEST(test_eof_body_and_interim)
{
        static const char *const eof_parts[] = {"HTTP/1.0 200 OK\r\n\r\nuntil ", "the close", NULL};
        static const char *const interim_parts[] = {"HTTP/1.1 100 Continue\r\n\r\n",
                                                    "HTTP/1.1 204 No Content\r\n\r\n", NULL};
        struct tiny t1 = {.parts = eof_parts, .delay_ms = 30}, t2 = {.parts = interim_parts};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c1 = NULL, *c2 = NULL;
        struct orch_httpclient_request req = {.method = "PUT", .target = "/x"};
        struct orch_http_response r1 = {0}, r2 = {0};

        tiny_start(&t1);
        c1 = client_for(t1.port, "");
        ck_assert_int_eq(orch_httpclient_request(c1, &req, &r1), 0);
        tiny_stop(&t1);
        ck_assert_str_eq(r1.body, "until the close");
        /* PUT without a body still says Content-Length: 0. */
        ck_assert_msg(strstr(t1.request.data, "Content-Length: 0\r\n"), "%s", t1.request.data);

        tiny_start(&t2);
        c2 = client_for(t2.port, "");
        ck_assert_int_eq(orch_httpclient_request(c2, &req, &r2), 0);
        tiny_stop(&t2);
        ck_assert_int_eq(r2.status, 204);
        ck_assert_str_eq(r2.body, "");
        orch_http_response_release(&r1);
        orch_http_response_release(&r2);
        orch_buf_release(&t1.request);
        orch_buf_release(&t2.request);
}
END_TEST

struct lines {
        struct orch_buf got;
        int stop_after;
        int n;
};

static int on_line(const char *data, size_t len, void *userdata)
{
        struct lines *l = userdata;

        orch_buf_printf(&l->got, "<%.*s>", (int)len, data);
        return ++l->n == l->stop_after ? 42 : 0;
}

START_TEST(test_stream_lines)
{
        static const char *const parts[] = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                            "a\r\n{\"i\":1}\n{\"\r\n",
                                            "6\r\ni\":2}\n\r\n",
                                            "5\r\n{\"i\":\r\n",
                                            "3\r\n3}\n\r\n",
                                            "4\r\nlast\r\n0\r\n\r\n",
                                            NULL};
        static const char *const missing[] = {"HTTP/1.1 404 Not Found\r\nContent-Length: 25\r\n\r\n"
                                              "{\"error\":\"no such thing\"}",
                                              NULL};
        struct tiny t = {.parts = parts, .delay_ms = 20}, t2 = {.parts = parts, .delay_ms = 20},
                    t3 = {.parts = missing};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c = NULL;
        struct orch_httpclient_request req = {.method = "GET", .target = "/v1/events?follow=1"};
        struct orch_http_response r = {0};
        struct lines l = {0};

        tiny_start(&t);
        c = client_for(t.port, "");
        orch_httpclient_set_timeouts(c, 0, 0);
        ck_assert_int_eq(orch_httpclient_stream(c, &req, ORCH_HTTPCLIENT_LINES, on_line, &l, &r), 0);
        tiny_stop(&t);
        orch_buf_putc(&l.got, '\0');
        ck_assert_str_eq(l.got.data, "<{\"i\":1}><{\"i\":2}><{\"i\":3}><last>");
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_null(r.body);
        orch_http_response_release(&r);

        /* The callback stops the stream: its value comes back. */
        orch_buf_reset(&l.got);
        l.n = 0;
        l.stop_after = 2;
        tiny_start(&t2);
        c = orch_httpclient_free(c);
        c = client_for(t2.port, "");
        ck_assert_int_eq(orch_httpclient_stream(c, &req, ORCH_HTTPCLIENT_LINES, on_line, &l, &r), 42);
        tiny_stop(&t2);
        ck_assert_str_eq(l.got.data, "<{\"i\":1}><{\"i\":2}>");

        /* Not 2xx: the body is read whole, for the error message. */
        orch_buf_reset(&l.got);
        l.n = 0;
        tiny_start(&t3);
        c = orch_httpclient_free(c);
        c = client_for(t3.port, "");
        ck_assert_int_eq(orch_httpclient_stream(c, &req, ORCH_HTTPCLIENT_LINES, on_line, &l, &r), 0);
        tiny_stop(&t3);
        ck_assert_int_eq(r.status, 404);
        ck_assert_str_eq(r.body, "{\"error\":\"no such thing\"}");
        ck_assert_uint_eq(l.got.len, 0);
        orch_http_response_release(&r);
        orch_buf_release(&l.got);
        orch_buf_release(&t.request);
        orch_buf_release(&t2.request);
        orch_buf_release(&t3.request);
}
END_TEST

START_TEST(test_errors)
{
        static const char *const big[] = {
                "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789", NULL};
        static const char *const bare_lf[] = {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", NULL};
        static const char *const cut[] = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", NULL};
        struct tiny t1 = {.parts = big}, t2 = {.parts = bare_lf}, t3 = {.parts = cut},
                    t4 = {.no_answer = true}, t5 = {.parts = big, .silence_ms = 600};
        struct orch_httpclient_request req = {.method = "GET", .target = "/"};
        struct orch_http_response r = {0};
        struct orch_httpclient *c;
        char msg[128];
        int port;

        tiny_start(&t1);
        c = client_for(t1.port, "");
        orch_httpclient_set_max_body(c, 10);
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EFBIG);
        snprintf(msg, sizeof msg, "the answer from 127.0.0.1:%d is larger than 10 bytes", t1.port);
        ck_assert_str_eq(orch_httpclient_error(c), msg);
        tiny_stop(&t1);
        orch_httpclient_free(c);

        tiny_start(&t2);
        c = client_for(t2.port, "");
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EBADMSG);
        ck_assert_msg(strstr(orch_httpclient_error(c), "malformed answer") &&
                              strstr(orch_httpclient_error(c), "bare LF"),
                      "%s", orch_httpclient_error(c));
        tiny_stop(&t2);
        orch_httpclient_free(c);

        tiny_start(&t3);
        c = client_for(t3.port, "");
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EBADMSG);
        ck_assert_msg(strstr(orch_httpclient_error(c), "closed in the middle"), "%s",
                      orch_httpclient_error(c));
        tiny_stop(&t3);
        orch_httpclient_free(c);

        tiny_start(&t4);
        c = client_for(t4.port, "");
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EBADMSG);
        ck_assert_msg(strstr(orch_httpclient_error(c), "closed the connection without an answer"), "%s",
                      orch_httpclient_error(c));
        tiny_stop(&t4);
        orch_httpclient_free(c);

        tiny_start(&t5);
        c = client_for(t5.port, "");
        orch_httpclient_set_timeouts(c, 0, 200);
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -ETIMEDOUT);
        snprintf(msg, sizeof msg, "no answer from 127.0.0.1:%d within 200 ms", t5.port);
        ck_assert_str_eq(orch_httpclient_error(c), msg);
        tiny_stop(&t5);
        orch_httpclient_free(c);

        /* Nobody listens on a port just released. */
        tiny_start(&t1);
        port = t1.port;
        c = client_for(t1.port, "");
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        orch_http_response_release(&r);
        tiny_stop(&t1);
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -ECONNREFUSED);
        snprintf(msg, sizeof msg, "connect to 127.0.0.1:%d: Connection refused", port);
        ck_assert_str_eq(orch_httpclient_error(c), msg);
        /* Bad requests never leave the client. */
        req.target = "no-slash";
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EINVAL);
        req.target = "/a b";
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), -EINVAL);
        {
                struct orch_http_header dup[] = {{"host", "evil"}};
                struct orch_httpclient_request bad = {
                        .method = "GET", .target = "/", .headers = dup, .n_headers = 1};
                ck_assert_int_eq(orch_httpclient_request(c, &bad, &r), -EINVAL);
                ck_assert_str_eq(orch_httpclient_error(c), "the host header is set by the client itself");
        }
        orch_httpclient_free(c);
        orch_buf_release(&t1.request);
        orch_buf_release(&t2.request);
        orch_buf_release(&t3.request);
        orch_buf_release(&t4.request);
        orch_buf_release(&t5.request);
}
END_TEST

START_TEST(test_urls)
{
        static const struct {
                const char *url;
                const char *host;
                unsigned port;
                const char *path;
        } ok[] = {
                {"http://127.0.0.1:7070", "127.0.0.1", 7070, ""},
                {"HTTP://[::1]:7070/", "::1", 7070, ""},
                {"http://orch.example.com", "orch.example.com", 80, ""},
                {"http://h:1/api/v//", "h", 1, "/api/v"},
        };
        static const char *const bad[] = {"",
                                          "127.0.0.1:7070",
                                          "ftp://h",
                                          "http://",
                                          "http://:80",
                                          "http://h:0",
                                          "http://h:65536",
                                          "http://h:x",
                                          "http://u@h",
                                          "http://h?x",
                                          "http://h/#f",
                                          "http://[::1",
                                          "http://[zz]:1",
                                          "http://h/a b",
                                          "http://h:80:90"};
        struct orch_httpclient *c;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                struct orch_http_url u;
                ck_assert_msg(orch_http_url_parse(ok[i].url, &u) == 0, "%s", ok[i].url);
                ck_assert_str_eq(u.host, ok[i].host);
                ck_assert_uint_eq(u.port, ok[i].port);
                ck_assert_str_eq(u.path, ok[i].path);
                orch_http_url_release(&u);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct orch_http_url u;
                ck_assert_msg(orch_http_url_parse(bad[i], &u) == -EINVAL, "accepted %s", bad[i]);
        }
        ck_assert_int_eq(orch_httpclient_new("https://h", &c), -EPROTONOSUPPORT);
        ck_assert_int_eq(orch_httpclient_new("http://h", &c), 0);
        ck_assert_int_eq(orch_httpclient_set_token(c, "abc\n"), -EINVAL);
        ck_assert_int_eq(orch_httpclient_set_token(c, ""), -EINVAL);
        ck_assert_int_eq(orch_httpclient_set_token(c, "abc"), 0);
        ck_assert_int_eq(orch_httpclient_set_token(c, NULL), 0);
        orch_httpclient_free(c);
}
END_TEST

START_TEST(test_host_name)
{
        /* localhost may resolve to ::1 first, where nobody listens: the next address is tried. */
        static const char *const parts[] = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", NULL};
        struct tiny t = {.parts = parts};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c = NULL;
        struct orch_httpclient_request req = {.method = "GET", .target = "/"};
        struct orch_http_response r = {0};
        char url[64];

        tiny_start(&t);
        snprintf(url, sizeof url, "http://localhost:%d", t.port);
        ck_assert_int_eq(orch_httpclient_new(url, &c), 0);
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        tiny_stop(&t);
        ck_assert_str_eq(r.body, "ok");
        ck_assert_msg(strstr(t.request.data, "Host: localhost:"), "%s", t.request.data);
        orch_http_response_release(&r);
        orch_buf_release(&t.request);
        c = orch_httpclient_free(c);
        ck_assert_int_eq(orch_httpclient_new("http://no-such-host.invalid:1", &c), 0);
        ck_assert_int_lt(orch_httpclient_request(c, &req, &r), 0);
        ck_assert_msg(strstr(orch_httpclient_error(c), "cannot resolve no-such-host.invalid"), "%s",
                      orch_httpclient_error(c));
}
END_TEST

/* ---- against orchd's own server ---- */

struct live {
        uv_loop_t loop;
        uv_async_t stop;
        uv_timer_t timer;
        struct orch_httpd *h;
        struct orch_httpd_req *streaming;
        unsigned sent;
        pthread_t thread;
};

static void on_tick(uv_timer_t *t)
{
        struct live *l = container_of(t, struct live, timer);
        char line[32];
        int n;

        if (!l->streaming)
                return;
        n = snprintf(line, sizeof line, "{\"index\":%u}\n", ++l->sent);
        /* Lines cut in two writes: the client must put them back together. */
        orch_httpd_stream_write(l->streaming, line, 5);
        orch_httpd_stream_write(l->streaming, line + 5, (size_t)n - 5);
        if (l->sent == 5) {
                orch_httpd_stream_end(l->streaming);
                l->streaming = NULL;
                uv_timer_stop(t);
        }
}

static void live_handler(struct orch_httpd_req *req, void *userdata)
{
        struct live *l = userdata;
        size_t len;

        if (streq(orch_httpd_req_head(req)->path, "/events")) {
                l->streaming = req;
                orch_httpd_stream_start(req, 200, "application/x-ndjson");
                uv_timer_start(&l->timer, on_tick, 10, 10);
                return;
        }
        orch_httpd_req_body(req, &len);
        orch_httpd_respond_error(req, 200, "got %zu bytes", len);
}

static void on_live_stop(uv_async_t *a)
{
        struct live *l = container_of(a, struct live, stop);

        orch_httpd_free(l->h, NULL, NULL);
        uv_close((uv_handle_t *)&l->stop, NULL);
        uv_close((uv_handle_t *)&l->timer, NULL);
}

static void *live_main(void *arg)
{
        struct live *l = arg;

        uv_run(&l->loop, UV_RUN_DEFAULT);
        return NULL;
}

START_TEST(test_against_httpd)
{
        struct live l = {0};
        struct orch_httpd_config cfg = {
                .listen = "127.0.0.1:0", .max_body_bytes = 1024, .handler = live_handler};
        _cleanup_(orch_httpclient_freep) struct orch_httpclient *c = NULL;
        struct orch_httpclient_request req = {.method = "GET", .target = "/events"};
        struct orch_http_response r = {0};
        struct lines lines = {0};
        _cleanup_(freep) char *big = malloc(4 << 20);

        cfg.userdata = &l;
        ck_assert_ptr_nonnull(big);
        memset(big, 'y', 4 << 20);
        ck_assert_int_eq(uv_loop_init(&l.loop), 0);
        ck_assert_int_eq(uv_async_init(&l.loop, &l.stop, on_live_stop), 0);
        ck_assert_int_eq(uv_timer_init(&l.loop, &l.timer), 0);
        ck_assert_int_eq(orch_httpd_new(&l.loop, &cfg, &l.h), 0);
        c = client_for(orch_httpd_port(l.h), "");
        ck_assert_int_eq(pthread_create(&l.thread, NULL, live_main, &l), 0);

        ck_assert_int_eq(orch_httpclient_stream(c, &req, ORCH_HTTPCLIENT_LINES, on_line, &lines, &r), 0);
        orch_buf_putc(&lines.got, '\0');
        ck_assert_str_eq(lines.got.data,
                         "<{\"index\":1}><{\"index\":2}><{\"index\":3}><{\"index\":4}><{\"index\":5}>");
        orch_http_response_release(&r);

        /* A small body is read... */
        req = (struct orch_httpclient_request){
                .method = "POST", .target = "/x", .body = big, .body_len = 1000};
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        ck_assert_str_eq(r.body, "{\"error\":\"got 1000 bytes\"}\n");
        orch_http_response_release(&r);
        /* ... a large one is refused before it is read, and the answer still reaches the client. */
        req.body_len = 4 << 20;
        ck_assert_int_eq(orch_httpclient_request(c, &req, &r), 0);
        ck_assert_int_eq(r.status, 413);
        ck_assert_str_eq(r.body,
                         "{\"error\":\"body of 4194304 bytes is larger than the limit of 1024 bytes\"}\n");
        orch_http_response_release(&r);

        uv_async_send(&l.stop);
        pthread_join(l.thread, NULL);
        ck_assert_int_eq(uv_loop_close(&l.loop), 0);
        orch_buf_release(&lines.got);
}
END_TEST

static Suite *httpclient_suite(void)
{
        Suite *s = suite_create("httpclient");
        TCase *tc = tcase_create("client");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_get);
        tcase_add_test(tc, test_post_chunked_answer);
        tcase_add_test(tc, test_eof_body_and_interim);
        tcase_add_test(tc, test_stream_lines);
        tcase_add_test(tc, test_errors);
        tcase_add_test(tc, test_urls);
        tcase_add_test(tc, test_host_name);
        tcase_add_test(tc, test_against_httpd);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(httpclient_suite)
