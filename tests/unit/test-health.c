/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include <uv.h>

#include "health.h"
#include "list.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * Each test runs a real check against a real server (or command) on its own libuv loop, and
 * ends by stopping the check and closing the server; uv_loop_close() returning 0 then proves
 * that the check closed every handle it opened.
 */

enum srv_mode {
        SRV_STATUS,   /* answers with the statuses of `script`, the last one repeated */
        SRV_GARBAGE,  /* a line that is not HTTP */
        SRV_BINARY,   /* a few bytes of another protocol, no newline */
        SRV_LONG,     /* "HTTP/1.1 200 " and then no end of line */
        SRV_BAD_CODE, /* a status line with a four-digit code */
        SRV_CLOSE,    /* closes without an answer */
        SRV_SILENT,   /* never answers */
        SRV_RESET,    /* resets the connection as soon as it is accepted */
};

struct srv;

struct conn {
        struct orch_list link;
        struct srv *srv;
        uv_tcp_t tcp;
        uv_write_t wreq;
        char buf[2048];
        size_t len;
        bool answered;
        char resp[512];
};

struct srv {
        uv_loop_t *loop;
        uv_tcp_t listener;
        uint16_t port;
        enum srv_mode mode;
        const int *script;
        size_t n_script;
        unsigned n_accepted;
        unsigned n_open;
        unsigned max_open;
        uint64_t accept_ms[64];
        char last_request[2048];
        struct orch_list conns;
        void (*on_accept)(struct srv *s);
};

struct transition {
        enum orch_health_state old_state, new_state;
        char reason[ORCH_HEALTH_REASON_MAX];
        uint64_t at_ms;   /* since the check started */
        unsigned request; /* server connections so far */
};

struct ctx {
        uv_loop_t loop;
        struct srv srv;
        bool have_srv;
        struct orch_health_check *check;
        uv_timer_t deadline;
        uint64_t t0;
        struct transition t[16];
        size_t n_t;
        size_t want_t; /* stop after this many transitions */
        bool stopped;
};

static void on_conn_close(uv_handle_t *h)
{
        free(h->data);
}

static void conn_close(struct conn *c)
{
        if (uv_is_closing((uv_handle_t *)&c->tcp))
                return;
        orch_list_remove(&c->link);
        c->srv->n_open--;
        uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_conn_write(uv_write_t *w, int status)
{
        conn_close(w->data);
}

static void conn_answer(struct conn *c)
{
        struct srv *s = c->srv;
        uv_buf_t b;
        int n = 0;

        switch (s->mode) {
        case SRV_STATUS: {
                unsigned i = MIN(s->n_accepted, (unsigned)s->n_script) - 1;
                int status = s->script[i];
                n = orch_snprintf(
                        c->resp, sizeof c->resp,
                        "HTTP/1.1 %d Whatever\r\n%sContent-Length: 2\r\nConnection: close\r\n\r\nok", status,
                        status / 100 == 3 ? "Location: /elsewhere\r\n" : "");
                break;
        }
        case SRV_GARBAGE:
                n = orch_snprintf(c->resp, sizeof c->resp, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
                break;
        case SRV_BINARY:
                memcpy(c->resp, "\x16\x03\x01\x00", 4);
                n = 4;
                break;
        case SRV_LONG:
                n = orch_snprintf(c->resp, sizeof c->resp, "HTTP/1.1 200 ");
                memset(c->resp + n, 'a', 400);
                n += 400;
                break;
        case SRV_BAD_CODE:
                n = orch_snprintf(c->resp, sizeof c->resp, "HTTP/1.1 2000 OK\r\n\r\n");
                break;
        case SRV_CLOSE:
                conn_close(c);
                return;
        case SRV_SILENT:
        case SRV_RESET:
                return;
        }
        ck_assert_int_gt(n, 0);
        b = uv_buf_init(c->resp, (unsigned)n);
        c->wreq.data = c;
        ck_assert_int_eq(uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_conn_write), 0);
}

static void on_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct conn *c = h->data;

        *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void on_conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
        struct conn *c = st->data;

        if (nread < 0) {
                conn_close(c);
                return;
        }
        c->len += (size_t)nread;
        c->buf[c->len] = '\0';
        if (!c->answered && strstr(c->buf, "\r\n\r\n")) {
                c->answered = true;
                orch_strlcpy(c->srv->last_request, c->buf, sizeof c->srv->last_request);
                conn_answer(c);
        }
}

static void on_connection(uv_stream_t *l, int status)
{
        struct srv *s = container_of((uv_tcp_t *)l, struct srv, listener);
        struct conn *c;

        ck_assert_int_eq(status, 0);
        c = calloc(1, sizeof *c);
        ck_assert_ptr_nonnull(c);
        c->srv = s;
        ck_assert_int_eq(uv_tcp_init(s->loop, &c->tcp), 0);
        c->tcp.data = c;
        ck_assert_int_eq(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
        orch_list_append(&s->conns, &c->link);
        if (s->n_accepted < ELEMENTSOF(s->accept_ms))
                s->accept_ms[s->n_accepted] = orch_now_msec();
        s->n_accepted++;
        s->n_open++;
        s->max_open = MAX(s->max_open, s->n_open);
        if (s->mode == SRV_RESET) {
                struct linger lg = {.l_onoff = 1, .l_linger = 0};
                uv_os_fd_t fd;
                ck_assert_int_eq(uv_fileno((uv_handle_t *)&c->tcp, &fd), 0);
                ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
                conn_close(c);
                return;
        }
        ck_assert_int_eq(uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read), 0);
        if (s->on_accept)
                s->on_accept(s);
}

static void srv_start(struct ctx *x, enum srv_mode mode, const int *script, size_t n_script)
{
        struct srv *s = &x->srv;
        struct sockaddr_in sa;
        struct sockaddr_storage ss;
        int len = sizeof ss;

        s->loop = &x->loop;
        s->mode = mode;
        s->script = script;
        s->n_script = n_script;
        orch_list_init(&s->conns);
        ck_assert_int_eq(uv_tcp_init(&x->loop, &s->listener), 0);
        uv_ip4_addr("127.0.0.1", 0, &sa);
        ck_assert_int_eq(uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0), 0);
        ck_assert_int_eq(uv_listen((uv_stream_t *)&s->listener, 16, on_connection), 0);
        ck_assert_int_eq(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len), 0);
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        x->have_srv = true;
}

static void srv_close(struct ctx *x)
{
        struct orch_list *i, *tmp;

        if (!x->have_srv)
                return;
        x->have_srv = false;
        orch_list_foreach_safe(i, tmp, &x->srv.conns)
                conn_close(orch_list_entry(i, struct conn, link));
        uv_close((uv_handle_t *)&x->srv.listener, NULL);
}

static void finish(struct ctx *x)
{
        if (x->stopped)
                return;
        x->stopped = true;
        orch_health_stop(x->check);
        srv_close(x);
        uv_close((uv_handle_t *)&x->deadline, NULL);
}

static void on_transition(struct orch_health_check *c, enum orch_health_state old_state,
                          enum orch_health_state new_state, const char *reason, void *userdata)
{
        struct ctx *x = userdata;
        struct transition *t;

        ck_assert_ptr_eq(c, x->check);
        ck_assert_msg(!x->stopped, "callback after stop");
        ck_assert_uint_lt(x->n_t, ELEMENTSOF(x->t));
        ck_assert_int_eq(orch_health_get_state(c), new_state);
        ck_assert_str_eq(orch_health_get_last_result(c), reason);
        t = &x->t[x->n_t++];
        t->old_state = old_state;
        t->new_state = new_state;
        orch_strlcpy(t->reason, reason, sizeof t->reason);
        t->at_ms = orch_now_msec() - x->t0;
        t->request = x->srv.n_accepted;
        if (x->n_t == x->want_t)
                finish(x);
}

static void on_deadline(uv_timer_t *t)
{
        finish(container_of(t, struct ctx, deadline));
}

static struct orch_health spec(enum orch_health_type type, uint64_t interval_ms, uint64_t timeout_ms)
{
        return (struct orch_health){
                .type = type,
                .path = (char *)"/healthz",
                .interval_ms = interval_ms,
                .timeout_ms = timeout_ms,
                .grace_ms = 0,
                .unhealthy_threshold = 1,
                .healthy_threshold = 1,
        };
}

static void ctx_init(struct ctx *x)
{
        *x = (struct ctx){0};
        ck_assert_int_eq(uv_loop_init(&x->loop), 0);
        orch_list_init(&x->srv.conns);
}

static struct orch_health_params params(struct ctx *x, const struct orch_health *h, uint16_t port)
{
        return (struct orch_health_params){
                .spec = h,
                .port = port,
                .output_fd = -1,
                .instance = "web-1",
                .cb = on_transition,
                .userdata = x,
        };
}

/* Starts the check, runs the loop until `want` transitions or `deadline_ms`, and checks that the
 * stopped check left no handle behind. With `want` reached, the check is stopped from inside its
 * own callback, as a supervisor restarting an unhealthy instance does. */
static void run(struct ctx *x, const struct orch_health_params *p, size_t want, uint64_t deadline_ms)
{
        x->want_t = want;
        ck_assert_int_eq(uv_timer_init(&x->loop, &x->deadline), 0);
        ck_assert_int_eq(uv_timer_start(&x->deadline, on_deadline, deadline_ms, 0), 0);
        x->t0 = orch_now_msec();
        ck_assert_int_eq(orch_health_start(&x->loop, p, &x->check), 0);
        ck_assert_int_eq(orch_health_get_state(x->check), ORCH_HEALTH_UNKNOWN);
        ck_assert_str_eq(orch_health_get_last_result(x->check), "");
        ck_assert_int_eq(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&x->loop), 0);
}

static void expect(const struct ctx *x, size_t i, enum orch_health_state old_state,
                   enum orch_health_state new_state, const char *reason)
{
        ck_assert_msg(x->n_t > i, "only %zu transitions, wanted #%zu", x->n_t, i);
        ck_assert_int_eq(x->t[i].old_state, old_state);
        ck_assert_int_eq(x->t[i].new_state, new_state);
        ck_assert_str_eq(x->t[i].reason, reason);
}

static void run_http(enum srv_mode mode, const int *script, size_t n_script,
                     enum orch_health_state want_state, const char *want_reason)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 50, 1000);
        struct orch_health_params p;

        ctx_init(&x);
        srv_start(&x, mode, script, n_script);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, want_state, want_reason);
        ck_assert_uint_eq(x.t[0].request, 1);
}

START_TEST(test_http_200_passes)
{
        static const int script[] = {200};
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 50, 1000);
        struct orch_health_params p;
        char host[64];

        ctx_init(&x);
        srv_start(&x, SRV_STATUS, script, 1);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_PASSING, "GET /healthz: 200");
        /* The first attempt starts right away. */
        ck_assert_uint_lt(x.t[0].at_ms, 500);

        ck_assert_msg(startswith(x.srv.last_request, "GET /healthz HTTP/1.1\r\n"), "request: %s",
                      x.srv.last_request);
        ck_assert_int_ge(orch_snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%u\r\n", x.srv.port), 0);
        ck_assert_ptr_nonnull(strstr(x.srv.last_request, host));
        ck_assert_ptr_nonnull(strstr(x.srv.last_request, "\r\nUser-Agent: orch-health\r\n"));
        ck_assert_ptr_nonnull(strstr(x.srv.last_request, "\r\nConnection: close\r\n"));
}
END_TEST

START_TEST(test_http_503_fails)
{
        static const int script[] = {503};
        run_http(SRV_STATUS, script, 1, ORCH_HEALTH_FAILING, "GET /healthz: 503");
}
END_TEST

START_TEST(test_http_redirect_passes)
{
        static const int script[] = {302};
        run_http(SRV_STATUS, script, 1, ORCH_HEALTH_PASSING, "GET /healthz: 302");
}
END_TEST

START_TEST(test_http_404_and_1xx_fail)
{
        static const int s404[] = {404};
        static const int s101[] = {101};
        run_http(SRV_STATUS, s404, 1, ORCH_HEALTH_FAILING, "GET /healthz: 404");
        run_http(SRV_STATUS, s101, 1, ORCH_HEALTH_FAILING, "GET /healthz: 101");
}
END_TEST

START_TEST(test_http_not_http_fails)
{
        run_http(SRV_GARBAGE, NULL, 0, ORCH_HEALTH_FAILING, "GET /healthz: not an HTTP answer");
        run_http(SRV_BINARY, NULL, 0, ORCH_HEALTH_FAILING, "GET /healthz: not an HTTP answer");
        run_http(SRV_BAD_CODE, NULL, 0, ORCH_HEALTH_FAILING, "GET /healthz: not an HTTP answer");
        run_http(SRV_LONG, NULL, 0, ORCH_HEALTH_FAILING, "GET /healthz: status line longer than 256 bytes");
        run_http(SRV_CLOSE, NULL, 0, ORCH_HEALTH_FAILING,
                 "GET /healthz: connection closed without an answer");
}
END_TEST

/* A server that resets every connection as soon as it accepts it: each attempt fails (at the
 * connect, the send or the read, depending on when the reset arrives), and none of it reaches
 * the test process, whose SIGPIPE disposition is the default, fatal one. */
START_TEST(test_http_reset_no_sigpipe)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 10, 1000);
        struct orch_health_params p;

        ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
        h.unhealthy_threshold = 10;
        ctx_init(&x);
        srv_start(&x, SRV_RESET, NULL, 0);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        ck_assert_uint_eq(x.n_t, 1);
        ck_assert_int_eq(x.t[0].new_state, ORCH_HEALTH_FAILING);
        ck_assert_uint_eq(x.t[0].request, 10);
        ck_assert_msg(startswith(x.t[0].reason, "GET /healthz: ") || startswith(x.t[0].reason, "connect "),
                      "reason: %s", x.t[0].reason);
}
END_TEST

START_TEST(test_http_timeout)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 50, 100);
        struct orch_health_params p;

        ctx_init(&x);
        srv_start(&x, SRV_SILENT, NULL, 0);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_FAILING, "timeout after 100ms");
        ck_assert_uint_ge(x.t[0].at_ms, 100);
        ck_assert_uint_lt(x.t[0].at_ms, 1000);
}
END_TEST

/* A loopback port nothing listens on: bound and closed again (never listened, so no TIME_WAIT). */
static uint16_t closed_port(void)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sa;
        _cleanup_(closep) int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        return ntohs(sa.sin_port);
}

START_TEST(test_connection_refused)
{
        for (int type = ORCH_HEALTH_HTTP; type <= ORCH_HEALTH_TCP; type++) {
                struct ctx x;
                struct orch_health h = spec((enum orch_health_type)type, 50, 1000);
                struct orch_health_params p;
                uint16_t port = closed_port();
                char want[128];

                ctx_init(&x);
                p = params(&x, &h, port);
                run(&x, &p, 1, 3000);
                ck_assert_int_ge(
                        orch_snprintf(want, sizeof want, "connect 127.0.0.1:%u: Connection refused", port),
                        0);
                expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_FAILING, want);
        }
}
END_TEST

START_TEST(test_tcp_passes)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_TCP, 50, 1000);
        struct orch_health_params p;
        char want[64];

        ctx_init(&x);
        srv_start(&x, SRV_SILENT, NULL, 0);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        ck_assert_int_ge(orch_snprintf(want, sizeof want, "connect 127.0.0.1:%u: ok", x.srv.port), 0);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_PASSING, want);
}
END_TEST

START_TEST(test_thresholds)
{
        /* healthy_threshold 2, unhealthy_threshold 3: passing at the 2nd answer; a single 503 in
         * between two runs of 200 resets nothing that matters; failing at the 3rd 503 in a row
         * (answer 7); one 200 is not enough to come back, two are (answer 9). */
        static const int script[] = {200, 200, 503, 200, 503, 503, 503, 200, 200};
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 20, 1000);
        struct orch_health_params p;

        h.healthy_threshold = 2;
        h.unhealthy_threshold = 3;
        ctx_init(&x);
        srv_start(&x, SRV_STATUS, script, ELEMENTSOF(script));
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 3, 3500);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_PASSING, "GET /healthz: 200");
        ck_assert_uint_eq(x.t[0].request, 2);
        expect(&x, 1, ORCH_HEALTH_PASSING, ORCH_HEALTH_FAILING, "GET /healthz: 503");
        ck_assert_uint_eq(x.t[1].request, 7);
        expect(&x, 2, ORCH_HEALTH_FAILING, ORCH_HEALTH_PASSING, "GET /healthz: 200");
        ck_assert_uint_eq(x.t[2].request, 9);
}
END_TEST

START_TEST(test_grace)
{
        static const int s503[] = {503};
        static const int s200[] = {200};
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 50, 1000);
        struct orch_health_params p;

        /* Failures in the first 300ms do not count; the first one after does. */
        h.grace_ms = 300;
        ctx_init(&x);
        srv_start(&x, SRV_STATUS, s503, 1);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_FAILING, "GET /healthz: 503");
        ck_assert_uint_ge(x.t[0].at_ms, 300);
        ck_assert_uint_ge(x.t[0].request, 4);

        /* Passes count during the grace. */
        h.grace_ms = 10000;
        ctx_init(&x);
        srv_start(&x, SRV_STATUS, s200, 1);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_PASSING, "GET /healthz: 200");
        ck_assert_uint_eq(x.t[0].request, 1);

        /* A re-adopted instance that started 10s ago is past a 5s grace: the first failure counts. */
        h.grace_ms = 5000;
        ctx_init(&x);
        srv_start(&x, SRV_STATUS, s503, 1);
        p = params(&x, &h, x.srv.port);
        p.started_at_ms = orch_realtime_msec() - 10000;
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, ORCH_HEALTH_FAILING, "GET /healthz: 503");
        ck_assert_uint_eq(x.t[0].request, 1);

        /* ... and one that started 4.8s ago has 200ms of it left. */
        ctx_init(&x);
        srv_start(&x, SRV_STATUS, s503, 1);
        p = params(&x, &h, x.srv.port);
        p.started_at_ms = orch_realtime_msec() - 4800;
        run(&x, &p, 1, 3000);
        ck_assert_uint_ge(x.t[0].at_ms, 150);
        ck_assert_uint_lt(x.t[0].at_ms, 2000);
        ck_assert_uint_ge(x.t[0].request, 3);
}
END_TEST

START_TEST(test_no_overlap)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 30, 60);
        struct orch_health_params p;

        /* A server that never answers: each attempt times out after 60ms, the next comes 30ms
         * later, and never two connections at once. */
        h.unhealthy_threshold = 1000;
        ctx_init(&x);
        srv_start(&x, SRV_SILENT, NULL, 0);
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 700);
        ck_assert_uint_eq(x.n_t, 0);
        ck_assert_uint_ge(x.srv.n_accepted, 3);
        ck_assert_uint_eq(x.srv.max_open, 1);
        for (unsigned i = 1; i < x.srv.n_accepted; i++)
                /* 90ms apart, less libuv's cached loop time and scheduling noise; an attempt
                 * started `interval` after the previous one started would be 30ms apart. */
                ck_assert_uint_ge(x.srv.accept_ms[i] - x.srv.accept_ms[i - 1], 75);
}
END_TEST

static struct ctx *stop_ctx;

static void stop_on_accept(struct srv *s)
{
        finish(stop_ctx);
}

START_TEST(test_stop_during_http_check)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_HTTP, 50, 1000);
        struct orch_health_params p;

        ctx_init(&x);
        srv_start(&x, SRV_SILENT, NULL, 0);
        stop_ctx = &x;
        x.srv.on_accept = stop_on_accept;
        p = params(&x, &h, x.srv.port);
        run(&x, &p, 1, 3000);
        ck_assert_uint_eq(x.n_t, 0);
        ck_assert_uint_eq(x.srv.n_accepted, 1);
}
END_TEST

START_TEST(test_invalid_params)
{
        struct ctx x;
        struct orch_health h;
        struct orch_health_params p;
        struct orch_health_check *c = NULL;
        char *no_cmd[] = {NULL};

        ctx_init(&x);
        h = spec(ORCH_HEALTH_NONE, 50, 1000);
        p = params(&x, &h, 80);
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h = spec(ORCH_HEALTH_HTTP, 0, 1000);
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h = spec(ORCH_HEALTH_HTTP, 50, 0);
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h = spec(ORCH_HEALTH_HTTP, 50, 1000);
        h.path = (char *)"/a b";
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h.path = (char *)"healthz";
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h = spec(ORCH_HEALTH_TCP, 50, 1000);
        p.port = 0;
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        h = spec(ORCH_HEALTH_EXEC, 50, 1000);
        h.command = no_cmd;
        ck_assert_int_eq(orch_health_start(&x.loop, &p, &c), -EINVAL);
        ck_assert_ptr_null(c);
        ck_assert_int_eq(uv_run(&x.loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&x.loop), 0);
}
END_TEST

/* exec */

static void run_exec(char **argv, char **envp, int output_fd, uint64_t timeout_ms,
                     enum orch_health_state want, const char *want_reason)
{
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_EXEC, 50, timeout_ms);
        struct orch_health_params p;

        h.command = argv;
        ctx_init(&x);
        p = params(&x, &h, 0);
        p.envp = envp;
        p.output_fd = output_fd;
        run(&x, &p, 1, 3000);
        expect(&x, 0, ORCH_HEALTH_UNKNOWN, want, want_reason);
}

START_TEST(test_exec_pass_fail)
{
        char *t[] = {(char *)"/bin/true", NULL};
        char *f[] = {(char *)"/bin/false", NULL};
        char *sig[] = {(char *)"/bin/sh", (char *)"-c", (char *)"kill -TERM $$", NULL};
        char *missing[] = {(char *)"/nonexistent/check", NULL};
        char *env_cmd[] = {(char *)"/bin/sh", (char *)"-c", (char *)"test \"$ORCH_INSTANCE\" = web-1", NULL};
        char *envp[] = {(char *)"ORCH_INSTANCE=web-1", (char *)"PATH=/usr/bin:/bin", NULL};

        run_exec(t, NULL, -1, 1000, ORCH_HEALTH_PASSING, "/bin/true: exit status 0");
        run_exec(f, NULL, -1, 1000, ORCH_HEALTH_FAILING, "/bin/false: exit status 1");
        run_exec(sig, NULL, -1, 1000, ORCH_HEALTH_FAILING, "/bin/sh: killed by SIGTERM");
        run_exec(env_cmd, envp, -1, 1000, ORCH_HEALTH_PASSING, "/bin/sh: exit status 0");
        run_exec(env_cmd, NULL, -1, 1000, ORCH_HEALTH_FAILING, "/bin/sh: exit status 1");

        /* A command that cannot start fails with spawn's reason, not an exit status. */
        {
                struct ctx x;
                struct orch_health h = spec(ORCH_HEALTH_EXEC, 50, 1000);
                struct orch_health_params p;

                h.command = missing;
                ctx_init(&x);
                p = params(&x, &h, 0);
                run(&x, &p, 1, 3000);
                ck_assert_uint_eq(x.n_t, 1);
                ck_assert_int_eq(x.t[0].new_state, ORCH_HEALTH_FAILING);
                ck_assert_msg(strstr(x.t[0].reason, "/nonexistent/check") &&
                                      strstr(x.t[0].reason, "No such file or directory"),
                              "reason: %s", x.t[0].reason);
        }
}
END_TEST

START_TEST(test_exec_output)
{
        char tmpl[] = "/tmp/orch-test-health-XXXXXX";
        char *cmd[] = {(char *)"/bin/sh", (char *)"-c", (char *)"echo checked; echo oops >&2", NULL};
        _cleanup_(closep) int fd = mkstemp(tmpl);
        char buf[64] = {0};

        ck_assert_int_ge(fd, 0);
        unlink(tmpl);
        run_exec(cmd, NULL, fd, 1000, ORCH_HEALTH_PASSING, "/bin/sh: exit status 0");
        ck_assert_int_eq(pread(fd, buf, sizeof buf - 1, 0), 13);
        ck_assert_str_eq(buf, "checked\noops\n");
}
END_TEST

/* Whether a process is gone: no such pid, or a zombie nobody reaped yet (an orphan of a test
 * process whose init does not reap). */
static bool process_gone(pid_t pid)
{
        char path[64], *stat = NULL;
        size_t len;
        bool gone = true;

        ck_assert_int_ge(orch_snprintf(path, sizeof path, "/proc/%d/stat", (int)pid), 0);
        if (orch_read_file(path, 4096, &stat, &len) == 0) {
                const char *s = strrchr(stat, ')');
                gone = s && (s[2] == 'Z' || s[2] == 'X');
                free(stat);
        }
        return gone;
}

static bool wait_gone(pid_t pid, uint64_t ms)
{
        uint64_t end = orch_now_msec() + ms;

        while (!process_gone(pid)) {
                if (orch_now_msec() > end)
                        return false;
                usleep(10000);
        }
        return true;
}

static void read_pids(const char *path, pid_t *a, pid_t *b)
{
        _cleanup_(freep) char *data = NULL;
        size_t len;
        int x = 0, y = 0;

        ck_assert_int_eq(orch_read_file(path, 256, &data, &len), 0);
        ck_assert_int_eq(sscanf(data, "%d %d", &x, &y), 2);
        *a = x;
        *b = y;
}

START_TEST(test_exec_timeout_kills_group)
{
        char dir[] = "/tmp/orch-test-health-XXXXXX";
        _cleanup_(freep) char *pidfile = NULL, *script = NULL;
        char *cmd[] = {(char *)"/bin/sh", (char *)"-c", NULL, NULL};
        pid_t sh, child;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        pidfile = orch_strdup_printf("%s/pids", dir);
        /* A shell that leaves a child behind in its process group, then waits forever. */
        script = orch_strdup_printf("sleep 30 & echo $$ $! > %s.tmp; mv %s.tmp %s; wait", pidfile, pidfile,
                                    pidfile);
        cmd[2] = script;
        run_exec(cmd, NULL, -1, 300, ORCH_HEALTH_FAILING, "timeout after 300ms");
        read_pids(pidfile, &sh, &child);
        ck_assert_msg(wait_gone(sh, 1000), "the command %d survived its timeout", (int)sh);
        ck_assert_msg(wait_gone(child, 1000), "the command's child %d survived the timeout", (int)child);
        unlink(pidfile);
        rmdir(dir);
}
END_TEST

static void stop_soon(uv_timer_t *t)
{
        struct ctx *x = t->data;
        finish(x);
        uv_close((uv_handle_t *)t, NULL);
}

START_TEST(test_stop_during_exec_check)
{
        char dir[] = "/tmp/orch-test-health-XXXXXX";
        _cleanup_(freep) char *pidfile = NULL, *script = NULL;
        char *cmd[] = {(char *)"/bin/sh", (char *)"-c", NULL, NULL};
        struct ctx x;
        struct orch_health h = spec(ORCH_HEALTH_EXEC, 50, 2000);
        struct orch_health_params p;
        uv_timer_t soon;
        pid_t sh, child;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        pidfile = orch_strdup_printf("%s/pids", dir);
        script = orch_strdup_printf("sleep 30 & echo $$ $! > %s.tmp; mv %s.tmp %s; wait", pidfile, pidfile,
                                    pidfile);
        cmd[2] = script;
        h.command = cmd;
        ctx_init(&x);
        p = params(&x, &h, 0);
        ck_assert_int_eq(uv_timer_init(&x.loop, &soon), 0);
        soon.data = &x;
        ck_assert_int_eq(uv_timer_start(&soon, stop_soon, 300, 0), 0);
        /* The loop ends only once the command was killed and reaped: its handle closes then. */
        run(&x, &p, 1, 3000);
        ck_assert_uint_eq(x.n_t, 0);
        read_pids(pidfile, &sh, &child);
        ck_assert(process_gone(sh));
        ck_assert_msg(wait_gone(child, 1000), "the command's child %d survived the stop", (int)child);
        unlink(pidfile);
        rmdir(dir);
}
END_TEST

static Suite *health_suite(void)
{
        Suite *s = suite_create("health");
        TCase *http = tcase_create("http");
        TCase *tcp = tcase_create("tcp");
        TCase *logic = tcase_create("logic");
        TCase *exec = tcase_create("exec");

        tcase_add_test(http, test_http_200_passes);
        tcase_add_test(http, test_http_503_fails);
        tcase_add_test(http, test_http_redirect_passes);
        tcase_add_test(http, test_http_404_and_1xx_fail);
        tcase_add_test(http, test_http_not_http_fails);
        tcase_add_test(http, test_http_reset_no_sigpipe);
        tcase_add_test(http, test_http_timeout);
        tcase_add_test(tcp, test_connection_refused);
        tcase_add_test(tcp, test_tcp_passes);
        tcase_add_test(logic, test_thresholds);
        tcase_add_test(logic, test_grace);
        tcase_add_test(logic, test_no_overlap);
        tcase_add_test(logic, test_stop_during_http_check);
        tcase_add_test(logic, test_invalid_params);
        tcase_add_test(exec, test_exec_pass_fail);
        tcase_add_test(exec, test_exec_output);
        tcase_add_test(exec, test_exec_timeout_kills_group);
        tcase_add_test(exec, test_stop_during_exec_check);
        tcase_set_timeout(logic, 10);
        tcase_set_timeout(exec, 10);
        suite_add_tcase(s, http);
        suite_add_tcase(s, tcp);
        suite_add_tcase(s, logic);
        suite_add_tcase(s, exec);
        return s;
}

ORCH_TEST_MAIN(health_suite)
