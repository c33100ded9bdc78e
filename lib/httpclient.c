/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>

#include "httpclient.h"
#include "util.h"
#include "banned.h"

#define READ_CHUNK                (64U * 1024U)
#define MAX_RESPONSE_HEADER_BYTES (64U * 1024U)
#define MAX_RESPONSE_HEADERS      256U

struct orch_httpclient {
        struct orch_http_url url;
        char *authorization;
        uint64_t connect_ms, read_ms, max_body;
        char error[320];
};

_printf_(3, 4) static int fail(struct orch_httpclient *c, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(c->error, sizeof c->error, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- URLs ---- */

void orch_http_url_release(struct orch_http_url *u)
{
        free(u->host);
        free(u->path);
        *u = (struct orch_http_url){0};
}

static bool is_name_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_';
}

int orch_http_url_parse(const char *url, struct orch_http_url *ret)
{
        struct orch_http_url u = {0};
        const char *s, *host, *host_end, *rest;
        uint32_t port = 80;

        if (!url)
                return -EINVAL;
        if (strncasecmp(url, "https://", 8) == 0)
                return -EPROTONOSUPPORT;
        if (strncasecmp(url, "http://", 7) != 0)
                return -EINVAL;
        s = url + 7;
        if (*s == '[') {
                struct in6_addr a6;
                char buf[INET6_ADDRSTRLEN];

                host = s + 1;
                host_end = strchr(host, ']');
                if (!host_end || (size_t)(host_end - host) >= sizeof buf)
                        return -EINVAL;
                memcpy(buf, host, (size_t)(host_end - host));
                buf[host_end - host] = '\0';
                if (inet_pton(AF_INET6, buf, &a6) != 1)
                        return -EINVAL;
                rest = host_end + 1;
        } else {
                host = s;
                for (host_end = s; is_name_char(*host_end); host_end++)
                        ;
                rest = host_end;
        }
        if (host_end == host)
                return -EINVAL;
        if (*rest == ':') {
                const char *digits = ++rest;
                char pbuf[8];

                while (*rest >= '0' && *rest <= '9')
                        rest++;
                if (rest == digits || (size_t)(rest - digits) >= sizeof pbuf)
                        return -EINVAL;
                memcpy(pbuf, digits, (size_t)(rest - digits));
                pbuf[rest - digits] = '\0';
                if (orch_parse_u32(pbuf, &port) < 0 || port == 0 || port > 65535)
                        return -EINVAL;
        }
        /* Only a path may follow: no userinfo, query or fragment in a base URL. */
        if (*rest && *rest != '/')
                return -EINVAL;
        for (const char *p = rest; *p; p++)
                if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#')
                        return -EINVAL;
        u.host = strndup(host, (size_t)(host_end - host));
        u.path = strdup(rest);
        if (!u.host || !u.path) {
                orch_http_url_release(&u);
                return -ENOMEM;
        }
        for (size_t l = strlen(u.path); l > 0 && u.path[l - 1] == '/'; l--)
                u.path[l - 1] = '\0';
        u.port = (uint16_t)port;
        *ret = u;
        return 0;
}

/* ---- responses ---- */

void orch_http_response_release(struct orch_http_response *r)
{
        for (size_t i = 0; i < r->n_headers; i++) {
                free((char *)r->headers[i].name);
                free((char *)r->headers[i].value);
        }
        free(r->headers);
        free(r->reason);
        free(r->body);
        *r = (struct orch_http_response){0};
}

const char *orch_http_response_header(const struct orch_http_response *r, const char *name)
{
        for (size_t i = 0; i < r->n_headers; i++)
                if (strcasecmp(r->headers[i].name, name) == 0)
                        return r->headers[i].value;
        return NULL;
}

static int copy_head(const struct orch_http_head *h, struct orch_http_response *r)
{
        r->status = h->status;
        r->reason = strdup(h->reason ? h->reason : "");
        if (!r->reason)
                return -ENOMEM;
        if (h->n_headers == 0)
                return 0;
        r->headers = calloc(h->n_headers, sizeof *r->headers);
        if (!r->headers)
                return -ENOMEM;
        for (size_t i = 0; i < h->n_headers; i++) {
                r->headers[i].name = strdup(h->headers[i].name);
                r->headers[i].value = strdup(h->headers[i].value);
                r->n_headers++;
                if (!r->headers[i].name || !r->headers[i].value)
                        return -ENOMEM;
        }
        return 0;
}

/* ---- the client ---- */

int orch_httpclient_new(const char *base_url, struct orch_httpclient **ret)
{
        struct orch_httpclient *c = calloc(1, sizeof *c);
        int r;

        if (!c)
                return -ENOMEM;
        r = orch_http_url_parse(base_url, &c->url);
        if (r < 0) {
                free(c);
                return r;
        }
        c->connect_ms = ORCH_HTTPCLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
        c->read_ms = ORCH_HTTPCLIENT_DEFAULT_READ_TIMEOUT_MS;
        c->max_body = ORCH_HTTPCLIENT_DEFAULT_MAX_BODY;
        *ret = c;
        return 0;
}

struct orch_httpclient *orch_httpclient_free(struct orch_httpclient *c)
{
        if (c) {
                orch_http_url_release(&c->url);
                free(c->authorization);
                free(c);
        }
        return NULL;
}

int orch_httpclient_set_token(struct orch_httpclient *c, const char *token)
{
        char *a = NULL;

        if (token) {
                a = orch_strdup_printf("Bearer %s", token);
                if (!a)
                        return -ENOMEM;
                /* A token read from a file may end with a newline: that would split the request. */
                if (!*token || !orch_http_field_value_valid(a)) {
                        free(a);
                        return -EINVAL;
                }
        }
        free(c->authorization);
        c->authorization = a;
        return 0;
}

void orch_httpclient_set_timeouts(struct orch_httpclient *c, uint64_t connect_ms, uint64_t read_ms)
{
        c->connect_ms = connect_ms ? connect_ms : ORCH_HTTPCLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
        c->read_ms = read_ms;
}

void orch_httpclient_set_max_body(struct orch_httpclient *c, uint64_t max_body)
{
        c->max_body = max_body ? max_body : ORCH_HTTPCLIENT_DEFAULT_MAX_BODY;
}

const char *orch_httpclient_error(const struct orch_httpclient *c)
{
        return c->error[0] ? c->error : "no error";
}

/* "127.0.0.1:7070", "[::1]:7070", "example.com:80": for messages and the Host header. */
static void format_authority(const struct orch_http_url *u, char *buf, size_t size)
{
        if (strchr(u->host, ':'))
                snprintf(buf, size, "[%s]:%u", u->host, u->port);
        else
                snprintf(buf, size, "%s:%u", u->host, u->port);
}

/* Waits until fd is ready for events; timeout_ms 0 waits forever. */
static int wait_fd(int fd, short events, uint64_t timeout_ms)
{
        struct pollfd pfd = {.fd = fd, .events = events};
        int r;

        do
                r = poll(&pfd, 1, timeout_ms ? (int)MIN(timeout_ms, (uint64_t)INT32_MAX) : -1);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        if (r == 0)
                return -ETIMEDOUT;
        return 0;
}

static int connect_one(const struct sockaddr *sa, socklen_t salen, uint64_t timeout_ms, int *ret_fd)
{
        _cleanup_(closep) int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int err = 0, one = 1;
        socklen_t elen = sizeof err;
        int r;

        if (fd < 0)
                return -errno;
        if (connect(fd, sa, salen) < 0) {
                if (errno != EINPROGRESS)
                        return -errno;
                r = wait_fd(fd, POLLOUT, timeout_ms);
                if (r < 0)
                        return r;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
                        return -errno;
                if (err)
                        return -err;
        }
        /* The request goes out in one or two writes: do not let Nagle hold the second back. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int connect_any(struct orch_httpclient *c, int *ret_fd)
{
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
        struct addrinfo *res = NULL;
        char port[8], where[300];
        int r = -EHOSTUNREACH;

        format_authority(&c->url, where, sizeof where);
        snprintf(port, sizeof port, "%u", c->url.port);
        /* Literal addresses never touch the resolver (nor need AI_ADDRCONFIG's view of interfaces). */
        if (strchr(c->url.host, ':') || inet_aton(c->url.host, &(struct in_addr){0}))
                hints.ai_flags = AI_NUMERICHOST;
        r = getaddrinfo(c->url.host, port, &hints, &res);
        if (r != 0)
                return fail(c, r == EAI_NONAME ? -ENOENT : -EHOSTUNREACH, "cannot resolve %s: %s",
                            c->url.host, r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        r = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = connect_one(ai->ai_addr, ai->ai_addrlen, c->connect_ms, ret_fd);
                if (r == 0)
                        break;
        }
        freeaddrinfo(res);
        if (r == -ETIMEDOUT)
                return fail(c, r, "connect to %s: no answer within %" PRIu64 " ms", where, c->connect_ms);
        if (r < 0)
                return fail(c, r, "connect to %s: %s", where, strerror(-r));
        return 0;
}

static int build_request(struct orch_httpclient *c, const struct orch_httpclient_request *req,
                         struct orch_buf *out)
{
        _cleanup_(freep) struct orch_http_header *hs = NULL;
        _cleanup_(freep) char *target = NULL;
        char host[300];
        size_t n = 0;
        int64_t length = ORCH_HTTP_BODY_NONE;
        int r;

        if (!req->method || !req->target || req->target[0] != '/')
                return fail(c, -EINVAL, "invalid request: a method and a target starting with / are needed");
        target = orch_strdup_printf("%s%s", c->url.path, req->target);
        hs = calloc(req->n_headers + 5, sizeof *hs);
        if (!target || !hs)
                return -ENOMEM;
        format_authority(&c->url, host, sizeof host);
        hs[n++] = (struct orch_http_header){"Host", host};
        hs[n++] = (struct orch_http_header){"User-Agent", "orch/" ORCH_VERSION};
        if (c->authorization)
                hs[n++] = (struct orch_http_header){"Authorization", c->authorization};
        if (req->content_type)
                hs[n++] = (struct orch_http_header){"Content-Type", req->content_type};
        hs[n++] = (struct orch_http_header){"Connection", "close"};
        for (size_t i = 0; i < req->n_headers; i++) {
                /* A second copy of a field the client writes would make the request ambiguous. */
                for (size_t k = 0; k < n && req->headers[i].name; k++)
                        if (strcasecmp(req->headers[i].name, hs[k].name) == 0)
                                return fail(c, -EINVAL, "the %s header is set by the client itself",
                                            req->headers[i].name);
        }
        for (size_t i = 0; i < req->n_headers; i++)
                hs[n++] = req->headers[i];
        /* POST and PUT always say how long their body is, even when it is empty. */
        if (req->body_len > 0 || !(streq(req->method, "GET") || streq(req->method, "HEAD") ||
                                   streq(req->method, "DELETE") || streq(req->method, "OPTIONS")))
                length = (int64_t)req->body_len;
        r = orch_http_request_head(out, req->method, target, hs, n, length);
        if (r == -EINVAL)
                return fail(c, r, "invalid request line or header field in %s %s", req->method, req->target);
        if (r < 0)
                return r;
        if (req->body_len > 0 && orch_buf_put(out, req->body, req->body_len) < 0)
                return -ENOMEM;
        return 0;
}

static int send_all(struct orch_httpclient *c, int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                int r;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        r = wait_fd(fd, POLLOUT, c->read_ms);
                        if (r < 0)
                                return r;
                        continue;
                }
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

struct reader {
        struct orch_httpclient *c;
        bool stream;
        unsigned flags;
        orch_httpclient_data_fn cb;
        void *userdata;
        struct orch_http_response *resp;
        struct orch_buf body, line;
        bool interim, streaming_body, done;
};

/* Hands body data to the callback, whole or by lines. A non-zero return ends the request. */
static int deliver(struct reader *rd, const char *data, size_t len)
{
        int r;

        if (!(rd->flags & ORCH_HTTPCLIENT_LINES))
                return rd->cb(data, len, rd->userdata);
        while (len > 0) {
                const char *nl = memchr(data, '\n', len);
                size_t n = nl ? (size_t)(nl - data) : len;

                if (rd->line.len + n > ORCH_HTTPCLIENT_MAX_LINE)
                        return fail(rd->c, -EFBIG, "a line of the streamed answer is longer than %u bytes",
                                    ORCH_HTTPCLIENT_MAX_LINE);
                if (orch_buf_put(&rd->line, data, n) < 0)
                        return -ENOMEM;
                if (!nl)
                        break;
                if (rd->line.len > 0 && rd->line.data[rd->line.len - 1] == '\r')
                        rd->line.len--;
                r = rd->cb(rd->line.data ? rd->line.data : "", rd->line.len, rd->userdata);
                orch_buf_reset(&rd->line);
                if (r != 0)
                        return r;
                data = nl + 1;
                len -= n + 1;
        }
        return 0;
}

static int on_event(struct reader *rd, struct orch_http_parser *p, const struct orch_http_event *ev)
{
        struct orch_httpclient *c = rd->c;
        const struct orch_http_head *h;
        char where[300];
        int r;

        switch (ev->type) {
        case ORCH_HTTP_EVENT_HEAD:
                h = orch_http_parser_head(p);
                /* 100 Continue and friends come before the real answer. */
                rd->interim = h->status / 100 == 1 && h->status != 101;
                if (rd->interim)
                        return 0;
                r = copy_head(h, rd->resp);
                if (r < 0)
                        return r;
                if (rd->stream && h->status / 100 == 2) {
                        rd->streaming_body = true;
                        orch_http_parser_set_body_limit(p, UINT64_MAX);
                }
                return 0;
        case ORCH_HTTP_EVENT_BODY:
                if (rd->streaming_body)
                        return deliver(rd, ev->body, ev->body_len);
                return orch_buf_put(&rd->body, ev->body, ev->body_len);
        case ORCH_HTTP_EVENT_COMPLETE:
                if (rd->interim) {
                        orch_http_parser_next(p);
                        return 0;
                }
                rd->done = true;
                if (rd->streaming_body && rd->line.len > 0) {
                        r = rd->cb(rd->line.data, rd->line.len, rd->userdata);
                        orch_buf_reset(&rd->line);
                        return r;
                }
                return 0;
        case ORCH_HTTP_EVENT_UPGRADE:
                format_authority(&c->url, where, sizeof where);
                return fail(c, -EBADMSG, "%s switched protocols, which was not asked for", where);
        case ORCH_HTTP_EVENT_ERROR:
                format_authority(&c->url, where, sizeof where);
                if (ev->status == 413)
                        return fail(c, -EFBIG, "the answer from %s is larger than %" PRIu64 " bytes", where,
                                    c->max_body);
                return fail(c, -EBADMSG, "malformed answer from %s: %s", where, ev->reason);
        default:
                return 0;
        }
}

static int read_response(struct reader *rd, int fd)
{
        struct orch_httpclient *c = rd->c;
        struct orch_http_limits limits = {
                .max_header_bytes = MAX_RESPONSE_HEADER_BYTES,
                .max_headers = MAX_RESPONSE_HEADERS,
                .max_body_bytes = c->max_body,
        };
        _cleanup_(orch_http_parser_freep) struct orch_http_parser *p = NULL;
        _cleanup_(freep) char *buf = malloc(READ_CHUNK);
        struct orch_buf pending = {0};
        char where[300];
        int r;

        if (!buf)
                return -ENOMEM;
        r = orch_http_parser_new(ORCH_HTTP_RESPONSE, &limits, &p);
        if (r < 0)
                return r;
        format_authority(&c->url, where, sizeof where);
        while (!rd->done) {
                struct orch_http_event ev;
                ssize_t n = recv(fd, buf, READ_CHUNK, MSG_DONTWAIT);
                size_t used = 0;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                r = wait_fd(fd, POLLIN, c->read_ms);
                                if (r == -ETIMEDOUT) {
                                        r = fail(c, r, "no answer from %s within %" PRIu64 " ms", where,
                                                 c->read_ms);
                                        break;
                                }
                                if (r < 0)
                                        break;
                                continue;
                        }
                        r = fail(c, -errno, "reading from %s: %s", where, strerror(errno));
                        break;
                }
                if (n == 0) {
                        r = orch_http_parser_finish(p, &ev);
                        if (r == 0 && ev.type == ORCH_HTTP_EVENT_NEED_MORE)
                                r = fail(c, -EBADMSG, "%s closed the connection without an answer", where);
                        else if (r == 0)
                                r = on_event(rd, p, &ev);
                        break;
                }
                /* The parser consumes everything except what follows an answer; keep that for the next one
                 * (after a 100 Continue) and drop it after the real answer. */
                if (orch_buf_put(&pending, buf, (size_t)n) < 0) {
                        r = -ENOMEM;
                        break;
                }
                r = 0;
                while (r == 0 && !rd->done) {
                        r = orch_http_parser_execute(p, pending.data + used, pending.len - used, &ev);
                        if (r < 0)
                                break;
                        used += ev.consumed;
                        if (ev.type == ORCH_HTTP_EVENT_NEED_MORE)
                                break;
                        r = on_event(rd, p, &ev);
                }
                orch_buf_consume(&pending, used);
                if (r != 0)
                        break;
        }
        orch_buf_release(&pending);
        return r;
}

static int do_request(struct orch_httpclient *c, const struct orch_httpclient_request *req, bool stream,
                      unsigned flags, orch_httpclient_data_fn cb, void *userdata,
                      struct orch_http_response *ret)
{
        _cleanup_(closep) int fd = -1;
        struct orch_http_response resp = {0};
        struct orch_buf out = {0};
        struct reader rd = {
                .c = c,
                .stream = stream,
                .flags = flags,
                .cb = cb,
                .userdata = userdata,
                .resp = &resp,
        };
        char where[300];
        int r, send_r;

        c->error[0] = '\0';
        r = build_request(c, req, &out);
        if (r < 0)
                goto out;
        r = connect_any(c, &fd);
        if (r < 0)
                goto out;
        send_r = send_all(c, fd, out.data, out.len);
        /* A server may answer (413, 401) and close before it has read the whole body: read its answer. */
        if (send_r < 0 && send_r != -EPIPE && send_r != -ECONNRESET) {
                format_authority(&c->url, where, sizeof where);
                r = fail(c, send_r, send_r == -ETIMEDOUT ? "sending to %s: timed out" : "sending to %s: %s",
                         where, strerror(-send_r));
                goto out;
        }
        r = read_response(&rd, fd);
        if (r == 0 && !rd.done)
                r = fail(c, -EBADMSG, "the answer ended early");
        if (r != 0)
                goto out;
        if (!rd.streaming_body) {
                /* An empty body is still a string. */
                if (orch_buf_put(&rd.body, "", 0) < 0) {
                        r = -ENOMEM;
                        goto out;
                }
                resp.body_len = rd.body.len;
                resp.body = orch_buf_steal(&rd.body);
        }
        *ret = resp;
        resp = (struct orch_http_response){0};
out:
        if (r == -ENOMEM && !c->error[0])
                fail(c, r, "out of memory");
        orch_buf_release(&out);
        orch_buf_release(&rd.body);
        orch_buf_release(&rd.line);
        orch_http_response_release(&resp);
        return r;
}

int orch_httpclient_request(struct orch_httpclient *c, const struct orch_httpclient_request *req,
                            struct orch_http_response *ret)
{
        return do_request(c, req, false, 0, NULL, NULL, ret);
}

int orch_httpclient_stream(struct orch_httpclient *c, const struct orch_httpclient_request *req,
                           unsigned flags, orch_httpclient_data_fn cb, void *userdata,
                           struct orch_http_response *ret)
{
        if (!cb)
                return -EINVAL;
        return do_request(c, req, true, flags, cb, userdata, ret);
}
