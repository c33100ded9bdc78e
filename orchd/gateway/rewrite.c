/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <strings.h>

#include "rewrite.h"
#include "banned.h"

struct token {
        const char *s;
        size_t len;
};

struct options {
        struct token t[GW_MAX_CONNECTION_OPTIONS];
        size_t n;
};

/* The fields every hop removes (RFC 9110 §7.6.1), and those the gateway writes itself. */
static bool hop_by_hop(const char *name)
{
        switch (name[0] | 0x20) {
        case 'c':
                return strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Content-Length") == 0;
        case 'k':
                return strcasecmp(name, "Keep-Alive") == 0;
        case 'p':
                return strcasecmp(name, "Proxy-Connection") == 0;
        case 't':
                return strcasecmp(name, "TE") == 0 || strcasecmp(name, "Trailer") == 0 ||
                       strcasecmp(name, "Transfer-Encoding") == 0;
        case 'u':
                return strcasecmp(name, "Upgrade") == 0;
        default:
                return false;
        }
}

/* The names listed in every Connection field. */
static int connection_options(const struct orch_http_head *h, struct options *o)
{
        o->n = 0;
        for (size_t i = 0; i < h->n_headers; i++) {
                const char *v = h->headers[i].value;

                if (strcasecmp(h->headers[i].name, "Connection") != 0)
                        continue;
                while (*v) {
                        size_t n;

                        while (*v == ' ' || *v == '\t' || *v == ',')
                                v++;
                        n = strcspn(v, " \t,");
                        if (n == 0)
                                break;
                        if (o->n == GW_MAX_CONNECTION_OPTIONS)
                                return -E2BIG;
                        o->t[o->n++] = (struct token){v, n};
                        v += n;
                }
        }
        return 0;
}

static bool listed(const struct options *o, const char *name)
{
        size_t len = strlen(name);

        for (size_t i = 0; i < o->n; i++)
                if (o->t[i].len == len && strncasecmp(o->t[i].s, name, len) == 0)
                        return true;
        return false;
}

static void put(struct orch_buf *b, const char *s, size_t n)
{
        orch_buf_put(b, s, n);
}

static void puts_(struct orch_buf *b, const char *s)
{
        orch_buf_put(b, s, strlen(s));
}

static void field(struct orch_buf *b, const char *name, const char *value)
{
        puts_(b, name);
        put(b, ": ", 2);
        puts_(b, value);
        put(b, "\r\n", 2);
}

static void put_u64(struct orch_buf *b, uint64_t v)
{
        char buf[24];
        size_t i = sizeof buf;

        do {
                buf[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        put(b, buf + i, sizeof buf - i);
}

static void framing(struct orch_buf *b, int64_t body_length)
{
        if (body_length >= 0) {
                put(b, "Content-Length: ", 16);
                put_u64(b, (uint64_t)body_length);
                put(b, "\r\n", 2);
        } else if (body_length == ORCH_HTTP_BODY_CHUNKED) {
                put(b, "Transfer-Encoding: chunked\r\n", 28);
        }
}

bool gw_request_id_valid(const char *s)
{
        size_t n = 0;

        if (!s)
                return false;
        for (; s[n]; n++) {
                char c = s[n];
                if (n >= GW_REQUEST_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                                (c >= '0' && c <= '9') || strchr("._:+/=-", c)))
                        return false;
        }
        return n > 0;
}

const char *gw_request_api_key(const struct orch_http_head *head, bool *ret_bearer)
{
        const char *v = orch_http_head_header(head, "X-API-Key");

        *ret_bearer = false;
        if (v && *v)
                return v;
        v = orch_http_head_header(head, "Authorization");
        /* the auth-scheme is case-insensitive (RFC 9110 §11.1) */
        if (v && strncasecmp(v, "Bearer ", 7) == 0) {
                v += 7;
                while (*v == ' ')
                        v++;
                if (*v) {
                        *ret_bearer = true;
                        return v;
                }
        }
        return NULL;
}

int gw_rewrite_request(struct orch_buf *out, const struct gw_request_out *r)
{
        const struct orch_http_head *h = r->head;
        struct options o;
        size_t mark = out->len, need;
        bool xff = false;
        int k;

        k = connection_options(h, &o);
        if (k < 0)
                return k;
        need = strlen(h->method) + strlen(r->path) + (h->query ? strlen(h->query) : 0) + 256;
        for (size_t i = 0; i < h->n_headers; i++)
                need += strlen(h->headers[i].name) + strlen(h->headers[i].value) + 4;
        orch_buf_reserve(out, need);

        puts_(out, h->method);
        put(out, " ", 1);
        puts_(out, r->path);
        if (h->query) {
                put(out, "?", 1);
                puts_(out, h->query);
        }
        put(out, " HTTP/1.1\r\n", 11);
        /* RFC 9112 §3.2.2: an absolute-form target's authority replaces Host. */
        if (h->authority)
                field(out, "Host", h->authority);
        else if (h->host)
                field(out, "Host", h->host);
        else if (r->default_host)
                field(out, "Host", r->default_host);

        for (size_t i = 0; i < h->n_headers; i++) {
                const char *name = h->headers[i].name;

                if (hop_by_hop(name) || listed(&o, name) || strcasecmp(name, "Host") == 0 ||
                    strcasecmp(name, "Expect") == 0 || strcasecmp(name, "X-Forwarded-Proto") == 0 ||
                    strcasecmp(name, "X-Request-Id") == 0 ||
                    (r->drop_api_key && strcasecmp(name, "X-API-Key") == 0) ||
                    (r->drop_authorization && strcasecmp(name, "Authorization") == 0))
                        continue;
                if (strcasecmp(name, "X-Forwarded-For") == 0) {
                        /* all of them in one field, in order, then the client */
                        if (xff)
                                continue;
                        xff = true;
                        put(out, "X-Forwarded-For: ", 17);
                        for (size_t j = i; j < h->n_headers; j++)
                                if (strcasecmp(h->headers[j].name, "X-Forwarded-For") == 0 &&
                                    *h->headers[j].value) {
                                        puts_(out, h->headers[j].value);
                                        put(out, ", ", 2);
                                }
                        puts_(out, r->client_addr);
                        put(out, "\r\n", 2);
                        continue;
                }
                field(out, name, h->headers[i].value);
        }
        if (!xff)
                field(out, "X-Forwarded-For", r->client_addr);
        put(out, "X-Forwarded-Proto: http\r\n", 25);
        field(out, "X-Request-Id", r->request_id);
        if (r->upgrade) {
                const char *up = orch_http_head_header(h, "Upgrade");
                if (up && *up)
                        field(out, "Upgrade", up);
                put(out, "Connection: upgrade\r\n", 21);
        }
        framing(out, r->body_length);
        put(out, "\r\n", 2);
        if (out->oom) {
                if (out->data && out->len >= mark) {
                        out->len = mark;
                        out->data[mark] = '\0';
                }
                return -ENOMEM;
        }
        return 0;
}

int gw_rewrite_response(struct orch_buf *out, const struct gw_response_out *r)
{
        const struct orch_http_head *h = r->head;
        struct options o;
        size_t need = 128;
        bool has_id = false;
        int k;

        k = connection_options(h, &o);
        if (k < 0)
                return k;
        for (size_t i = 0; i < h->n_headers; i++)
                need += strlen(h->headers[i].name) + strlen(h->headers[i].value) + 4;
        orch_buf_reserve(out, need + strlen(h->reason ? h->reason : ""));

        put(out, "HTTP/1.1 ", 9);
        put_u64(out, (uint64_t)h->status);
        put(out, " ", 1);
        puts_(out, h->reason ? h->reason : "");
        put(out, "\r\n", 2);
        for (size_t i = 0; i < h->n_headers; i++) {
                const char *name = h->headers[i].name;

                if (hop_by_hop(name) || listed(&o, name))
                        continue;
                if (strcasecmp(name, "X-Request-Id") == 0)
                        has_id = true;
                field(out, name, h->headers[i].value);
        }
        if (!has_id && r->request_id)
                field(out, "X-Request-Id", r->request_id);
        if (r->upgrade) {
                const char *up = orch_http_head_header(h, "Upgrade");
                if (up && *up)
                        field(out, "Upgrade", up);
                put(out, "Connection: upgrade\r\n", 21);
        } else if (r->close) {
                put(out, "Connection: close\r\n", 19);
        } else if (r->http10_keep_alive) {
                put(out, "Connection: keep-alive\r\n", 24);
        }
        framing(out, r->body_length);
        put(out, "\r\n", 2);
        return out->oom ? -ENOMEM : 0;
}

int64_t gw_response_framing(const struct orch_http_head *h, bool head_request, bool client_http11,
                            bool *ret_chunked, bool *ret_close)
{
        *ret_chunked = *ret_close = false;
        if (head_request || h->status == 204 || h->status == 304 || h->status < 200)
                return h->has_content_length && h->status >= 200 && h->status != 204
                               ? (int64_t)h->content_length
                               : ORCH_HTTP_BODY_NONE;
        if (h->has_content_length)
                return (int64_t)h->content_length;
        if (client_http11) {
                *ret_chunked = true;
                return ORCH_HTTP_BODY_CHUNKED;
        }
        /* HTTP/1.0 has no chunks: the body ends with the connection */
        *ret_close = true;
        return ORCH_HTTP_BODY_NONE;
}
