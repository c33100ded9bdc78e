/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <signal.h>

#include "client.h"
#include "json.h"
#include "util.h"
#include "banned.h"

/* A token file is one line; anything much larger is not a token file. */
#define TOKEN_FILE_MAX 4096
/* /v1/events answers at most this many events per request (orchd/api.c, EVENTS_PAGE_MAX). */
#define EVENTS_PAGE 10000

struct orch_client {
        struct orch_httpclient *http;
        char *addr;
};

static const char *addr_override;

void orch_client_set_addr(const char *addr)
{
        addr_override = addr;
}

/* Trailing blanks and newlines of a token file are not part of the token. */
static void strip_trailing_space(char *s)
{
        size_t l = strlen(s);

        while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' ' || s[l - 1] == '\t'))
                s[--l] = '\0';
}

/* The token: ORCH_TOKEN, else ORCH_TOKEN_FILE (which must be readable), else the default file when
 * it is readable. *ret stays NULL when there is none: the server's 401 then says what is missing. */
static int find_token(char **ret)
{
        const char *env = getenv("ORCH_TOKEN"), *file = getenv("ORCH_TOKEN_FILE");
        _cleanup_(freep) char *buf = NULL;
        size_t len;
        int r;

        *ret = NULL;
        if (env && *env) {
                *ret = strdup(env);
                return *ret ? 0 : -ENOMEM;
        }
        if (file && *file) {
                r = orch_read_file(file, TOKEN_FILE_MAX, &buf, &len);
                if (r < 0) {
                        fprintf(stderr, "orch: cannot read the token file %s (ORCH_TOKEN_FILE): %s\n", file,
                                strerror(-r));
                        return r;
                }
        } else if (orch_read_file(ORCH_CLIENT_DEFAULT_TOKEN_FILE, TOKEN_FILE_MAX, &buf, &len) < 0)
                return 0;
        if (strlen(buf) != len) {
                fprintf(stderr, "orch: the token file %s holds a NUL byte\n",
                        file && *file ? file : ORCH_CLIENT_DEFAULT_TOKEN_FILE);
                return -EBADMSG;
        }
        strip_trailing_space(buf);
        if (!*buf) {
                fprintf(stderr, "orch: the token file %s is empty\n",
                        file && *file ? file : ORCH_CLIENT_DEFAULT_TOKEN_FILE);
                return -EBADMSG;
        }
        *ret = TAKE_PTR(buf);
        return 0;
}

int orch_client_new(struct orch_client **ret)
{
        _cleanup_(orch_client_freep) struct orch_client *c = calloc(1, sizeof *c);
        _cleanup_(freep) char *token = NULL;
        const char *addr = addr_override, *origin = "--addr";
        int r;

        if (!c) {
                fputs("orch: out of memory\n", stderr);
                return -ENOMEM;
        }
        if (!addr) {
                addr = getenv("ORCH_ADDR");
                origin = "ORCH_ADDR";
        }
        if (!addr || !*addr) {
                addr = ORCH_CLIENT_DEFAULT_ADDR;
                origin = "the default";
        }
        /* "127.0.0.1:7070" is what people type; the scheme is implied */
        c->addr = strstr(addr, "://") ? strdup(addr) : orch_strdup_printf("http://%s", addr);
        if (!c->addr) {
                fputs("orch: out of memory\n", stderr);
                return -ENOMEM;
        }
        r = orch_httpclient_new(c->addr, &c->http);
        if (r == -EPROTONOSUPPORT) {
                fprintf(stderr, "orch: %s (%s): only http:// is supported\n", addr, origin);
                return -EINVAL;
        }
        if (r == -EINVAL) {
                fprintf(stderr, "orch: %s (%s): not an address like http://HOST:PORT\n", addr, origin);
                return r;
        }
        if (r < 0) {
                fprintf(stderr, "orch: %s\n", strerror(-r));
                return r;
        }
        r = find_token(&token);
        if (r < 0)
                return r;
        r = orch_httpclient_set_token(c->http, token);
        if (r < 0) {
                fputs("orch: the API token holds characters that cannot be sent in a header\n", stderr);
                return -EBADMSG;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

struct orch_client *orch_client_free(struct orch_client *c)
{
        if (!c)
                return NULL;
        orch_httpclient_free(c->http);
        free(c->addr);
        free(c);
        return NULL;
}

const char *orch_client_addr(const struct orch_client *c)
{
        return c->addr;
}

void orch_client_no_read_timeout(struct orch_client *c)
{
        orch_httpclient_set_timeouts(c->http, 0, 0);
}

/* Transport failures, said once. Before a connection exists it is "cannot reach"; afterwards the
 * client's own sentence (a timeout, a malformed answer) says what happened. */
static int transport_error(struct orch_client *c, int r)
{
        const char *e = orch_httpclient_error(c->http), *rest;

        if (r == -ENOMEM) {
                fputs("orch: out of memory\n", stderr);
                return r;
        }
        if (startswith(e, "connect to ") && (rest = strstr(e, ": ")))
                fprintf(stderr, "orch: cannot reach orchd at %s: %s\n", c->addr, rest + 2);
        else if (startswith(e, "cannot resolve "))
                fprintf(stderr, "orch: cannot reach orchd at %s: %s\n", c->addr, e);
        else
                fprintf(stderr, "orch: orchd at %s: %s\n", c->addr, e);
        return r;
}

int orch_client_request(struct orch_client *c, const char *method, const char *target,
                        const char *content_type, const void *body, size_t body_len,
                        struct orch_http_response *ret)
{
        struct orch_httpclient_request req = {
                .method = method,
                .target = target,
                .content_type = content_type,
                .body = body,
                .body_len = body_len,
        };
        int r = orch_httpclient_request(c->http, &req, ret);

        if (r < 0)
                return transport_error(c, r);
        return 0;
}

const char *orch_client_error_text(const struct orch_http_response *r, char *buf, size_t size)
{
        _cleanup_json_ json_t *j = NULL;
        const char *e;

        if (r->body && r->body_len > 0) {
                j = json_loadb(r->body, r->body_len, 0, NULL);
                e = json_string_value(json_object_get(j, "error"));
                if (e && *e) {
                        orch_strlcpy(buf, e, size);
                        /* one line, whatever the server sent */
                        for (char *p = buf; *p; p++)
                                if (*p == '\n' || *p == '\r')
                                        *p = ' ';
                        return buf;
                }
        }
        orch_snprintf(buf, size, "HTTP %d %s", r->status, r->reason && *r->reason ? r->reason : "error");
        return buf;
}

static int status_to_errno(int status)
{
        switch (status) {
        case 400:
                return -EINVAL;
        case 401:
        case 403:
                return -EACCES;
        case 404:
                return -ENOENT;
        case 409:
                return -EBUSY;
        default:
                return -EPROTO;
        }
}

int orch_client_print_error(const struct orch_http_response *r)
{
        char buf[1024];

        fprintf(stderr, "orch: %s\n", orch_client_error_text(r, buf, sizeof buf));
        return status_to_errno(r->status);
}

int orch_client_json(struct orch_client *c, const char *method, const char *target, const json_t *body,
                     json_t **ret, int *ret_status)
{
        _cleanup_(orch_http_response_release) struct orch_http_response resp = {0};
        _cleanup_(freep) char *text = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (body) {
                text = orch_json_dumps_compact(body);
                if (!text) {
                        fputs("orch: out of memory\n", stderr);
                        return -ENOMEM;
                }
        }
        r = orch_client_request(c, method, target, text ? "application/json" : NULL, text,
                                text ? strlen(text) : 0, &resp);
        if (r < 0)
                return r;
        if (ret_status)
                *ret_status = resp.status;
        if (resp.status / 100 != 2)
                return orch_client_print_error(&resp);
        if (!ret)
                return 0;
        j = json_loadb(resp.body ? resp.body : "", resp.body_len, 0, &err);
        if (!j) {
                fprintf(stderr, "orch: orchd at %s answered %s %s with invalid JSON: %s\n", c->addr, method,
                        target, err.text);
                return -EBADMSG;
        }
        *ret = j;
        return 0;
}

/* Tells a stop by the caller's callback from a failure of the transport. */
struct stream_call {
        orch_httpclient_data_fn cb;
        void *userdata;
        int cb_ret;
};

static int stream_data(const char *data, size_t len, void *userdata)
{
        struct stream_call *s = userdata;

        s->cb_ret = s->cb(data, len, s->userdata);
        return s->cb_ret != 0 ? 1 : 0;
}

int orch_client_stream(struct orch_client *c, const char *target, unsigned flags, orch_httpclient_data_fn cb,
                       void *userdata)
{
        _cleanup_(orch_http_response_release) struct orch_http_response resp = {0};
        struct orch_httpclient_request req = {.method = "GET", .target = target};
        struct stream_call s = {.cb = cb, .userdata = userdata};
        int r = orch_httpclient_stream(c->http, &req, flags, stream_data, &s, &resp);

        if (s.cb_ret != 0)
                return s.cb_ret;
        if (r < 0)
                return transport_error(c, r);
        if (resp.status / 100 != 2)
                return orch_client_print_error(&resp);
        return 0;
}

struct events_pager {
        orch_client_event_fn cb;
        void *userdata;
        uint64_t last;
        size_t n;
        const char *addr;
};

static int events_line(const char *line, size_t len, void *userdata)
{
        struct events_pager *p = userdata;
        _cleanup_json_ json_t *ev = NULL;
        uint64_t index;

        if (len == 0)
                return 0;
        ev = json_loadb(line, len, 0, NULL);
        if (!json_is_object(ev) || orch_json_get_u64(ev, "index", &index) < 0) {
                fprintf(stderr, "orch: orchd at %s sent an event that is not a JSON object with an index\n",
                        p->addr);
                return -EBADMSG;
        }
        p->last = MAX(p->last, index);
        p->n++;
        return p->cb(ev, line, len, p->userdata);
}

int orch_client_events(struct orch_client *c, uint64_t since, orch_client_event_fn cb, void *userdata)
{
        struct events_pager p = {.cb = cb, .userdata = userdata, .last = since, .addr = c->addr};

        for (;;) {
                char target[64];
                int r;

                orch_snprintf(target, sizeof target, "/v1/events?since=%" PRIu64, p.last);
                p.n = 0;
                r = orch_client_stream(c, target, ORCH_HTTPCLIENT_LINES, events_line, &p);
                if (r != 0)
                        return r;
                /* a short page is the end of the history */
                if (p.n < EVENTS_PAGE)
                        return 0;
        }
}

char *orch_client_escape(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        struct orch_buf b = {0};

        orch_buf_reserve(&b, strlen(s) + 1);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '.' || *p == '_' || *p == '~')
                        orch_buf_putc(&b, (char)*p);
                else {
                        orch_buf_putc(&b, '%');
                        orch_buf_putc(&b, hex[*p >> 4]);
                        orch_buf_putc(&b, hex[*p & 15]);
                }
        }
        if (b.oom) {
                orch_buf_release(&b);
                return NULL;
        }
        return b.data ? orch_buf_steal(&b) : strdup("");
}

static void on_interrupt(int sig)
{
        /* stdout is flushed after every piece written, so nothing is lost by leaving here */
        _exit(0);
}

void orch_client_exit_on_interrupt(void)
{
        struct sigaction sa = {.sa_handler = on_interrupt};

        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
}
