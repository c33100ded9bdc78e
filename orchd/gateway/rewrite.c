/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <strings.h>

#include "rewrite.h"
#include "banned.h"

/*
 * Both heads are written in one pass into space reserved beforehand (an upper bound of what they can
 * need), and each field name is classified once, by its length and then one comparison: this runs for
 * every request and every answer.
 */

enum field_class {
        C_OTHER,
        C_CONNECTION,
        C_HOP,     /* Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade: removed by every hop */
        C_FRAMING, /* Content-Length, Transfer-Encoding: the gateway writes its own */
        C_HOST,
        C_EXPECT,
        C_XFF,
        C_XFP,
        C_XRI,
        C_API_KEY,
        C_AUTHORIZATION,
};

/* A field name against a known one in lower case: for token characters, c | 0x20 folds exactly the
 * letters (no other token character lands on a letter or '-'). */
static bool name_is(const char *name, const char *lower, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if ((char)(name[i] | 0x20) != lower[i])
                        return false;
        return true;
}

static enum field_class classify(const char *name, size_t len)
{
#define IS(s) name_is(name, s, sizeof s - 1)
        /* by length first: most fields of a head are none of these */
        switch (len) {
        case 2:
                return IS("te") ? C_HOP : C_OTHER;
        case 4:
                return IS("host") ? C_HOST : C_OTHER;
        case 6:
                return IS("expect") ? C_EXPECT : C_OTHER;
        case 7:
                return IS("trailer") || IS("upgrade") ? C_HOP : C_OTHER;
        case 9:
                return IS("x-api-key") ? C_API_KEY : C_OTHER;
        case 10:
                return IS("connection") ? C_CONNECTION : IS("keep-alive") ? C_HOP : C_OTHER;
        case 12:
                return IS("x-request-id") ? C_XRI : C_OTHER;
        case 13:
                return IS("authorization") ? C_AUTHORIZATION : C_OTHER;
        case 14:
                return IS("content-length") ? C_FRAMING : C_OTHER;
        case 15:
                return IS("x-forwarded-for") ? C_XFF : C_OTHER;
        case 16:
                return IS("proxy-connection") ? C_HOP : C_OTHER;
        case 17:
                return IS("transfer-encoding") ? C_FRAMING : IS("x-forwarded-proto") ? C_XFP : C_OTHER;
        default:
                return C_OTHER;
        }
#undef IS
}

/* What the writers need of each field, measured once. */
struct info {
        uint8_t c; /* enum field_class */
        size_t name_len;
        size_t value_len;
};

struct options {
        struct {
                const char *s;
                size_t len;
        } t[GW_MAX_CONNECTION_OPTIONS];
        size_t n;
};

/* The names listed in every Connection field. */
static int connection_options(const struct orch_http_head *h, const struct info *fi, struct options *o)
{
        o->n = 0;
        for (size_t i = 0; i < h->n_headers; i++) {
                const char *v = h->headers[i].value;

                if (fi[i].c != C_CONNECTION)
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
                        o->t[o->n].s = v;
                        o->t[o->n++].len = n;
                        v += n;
                }
        }
        return 0;
}

static bool listed(const struct options *o, const char *name, size_t len)
{
        for (size_t i = 0; i < o->n; i++)
                if (o->t[i].len == len && strncasecmp(o->t[i].s, name, len) == 0)
                        return true;
        return false;
}

/* A cursor into reserved space. */
struct out {
        char *p;
};

static void put(struct out *o, const char *s, size_t n)
{
        memcpy(o->p, s, n);
        o->p += n;
}

#define PUT_LITERAL(o, s) put(o, s, sizeof s - 1)

static void puts_(struct out *o, const char *s)
{
        put(o, s, strlen(s));
}

static void field(struct out *o, const char *name, size_t name_len, const char *value)
{
        put(o, name, name_len);
        PUT_LITERAL(o, ": ");
        puts_(o, value);
        PUT_LITERAL(o, "\r\n");
}

/* A field of the head as it came, with the lengths measured already. */
static void copy_field(struct out *o, const struct orch_http_header *h, const struct info *fi)
{
        put(o, h->name, fi->name_len);
        PUT_LITERAL(o, ": ");
        put(o, h->value, fi->value_len);
        PUT_LITERAL(o, "\r\n");
}

static void put_u64(struct out *o, uint64_t v)
{
        char buf[24];
        size_t i = sizeof buf;

        do {
                buf[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        put(o, buf + i, sizeof buf - i);
}

static void framing(struct out *o, int64_t body_length)
{
        if (body_length >= 0) {
                PUT_LITERAL(o, "Content-Length: ");
                put_u64(o, (uint64_t)body_length);
                PUT_LITERAL(o, "\r\n");
        } else if (body_length == ORCH_HTTP_BODY_CHUNKED) {
                PUT_LITERAL(o, "Transfer-Encoding: chunked\r\n");
        }
}

/* What the fields of a head take at most; each one's class and lengths go to fi (n_headers entries). */
static size_t measure(const struct orch_http_head *h, struct info *fi)
{
        size_t need = 0;

        for (size_t i = 0; i < h->n_headers; i++) {
                fi[i].name_len = strlen(h->headers[i].name);
                fi[i].value_len = strlen(h->headers[i].value);
                fi[i].c = (uint8_t)classify(h->headers[i].name, fi[i].name_len);
                need += fi[i].name_len + fi[i].value_len + 4;
        }
        return need;
}

/* Room for the fixed lines both heads may add: status or request line, framing, Connection. */
#define FIXED_NEED 256U
/* Field information lives on the stack up to this many fields (the parser's default cap is 100). */
#define STACK_FIELDS 128U

static struct info *info_for(const struct orch_http_head *h, struct info *stack)
{
        return h->n_headers <= STACK_FIELDS ? stack : calloc(h->n_headers, sizeof *stack);
}

static void info_done(struct info *fi, struct info *stack)
{
        if (fi != stack)
                free(fi);
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

static int finish(struct orch_buf *out, struct out *o)
{
        out->len = (size_t)(o->p - out->data);
        out->data[out->len] = '\0';
        return 0;
}

int gw_rewrite_request(struct orch_buf *out, const struct gw_request_out *r)
{
        const struct orch_http_head *h = r->head;
        const char *host = h->authority ? h->authority : h->host ? h->host : r->default_host;
        const char *upgrade = r->upgrade ? orch_http_head_header(h, "Upgrade") : NULL;
        struct info stack[STACK_FIELDS], *fi = info_for(h, stack);
        struct options opts;
        struct out o;
        size_t need, xff_len = 0;
        bool xff = false;
        int k;

        if (!fi)
                return -ENOMEM;
        need = measure(h, fi) + FIXED_NEED + strlen(h->method) + strlen(r->path) +
               (h->query ? strlen(h->query) + 1 : 0) + (host ? strlen(host) : 0) + strlen(r->client_addr) +
               strlen(r->request_id) + (upgrade ? strlen(upgrade) : 0);
        k = connection_options(h, fi, &opts);
        for (size_t i = 0; i < h->n_headers; i++)
                if (fi[i].c == C_XFF)
                        xff_len += 2;
        if (k >= 0 && orch_buf_reserve(out, need + xff_len) < 0)
                k = -ENOMEM;
        if (k < 0) {
                info_done(fi, stack);
                return k;
        }
        o.p = out->data + out->len;

        puts_(&o, h->method);
        PUT_LITERAL(&o, " ");
        puts_(&o, r->path);
        if (h->query) {
                PUT_LITERAL(&o, "?");
                puts_(&o, h->query);
        }
        PUT_LITERAL(&o, " HTTP/1.1\r\n");
        /* RFC 9112 §3.2.2: an absolute-form target's authority replaces Host */
        if (host)
                field(&o, "Host", 4, host);
        for (size_t i = 0; i < h->n_headers; i++) {
                const char *name = h->headers[i].name;

                /* the key the gateway checked stays at the gateway */
                if ((fi[i].c == C_API_KEY && r->drop_api_key) ||
                    (fi[i].c == C_AUTHORIZATION && r->drop_authorization))
                        continue;
                switch (fi[i].c) {
                case C_API_KEY:
                case C_AUTHORIZATION:
                case C_OTHER:
                        if (opts.n > 0 && listed(&opts, name, fi[i].name_len))
                                continue;
                        copy_field(&o, &h->headers[i], &fi[i]);
                        continue;
                case C_XFF:
                        /* all of them in one field, in order, then the client */
                        if (xff)
                                continue;
                        xff = true;
                        PUT_LITERAL(&o, "X-Forwarded-For: ");
                        for (size_t j = i; j < h->n_headers; j++)
                                if (fi[j].c == C_XFF && fi[j].value_len > 0) {
                                        put(&o, h->headers[j].value, fi[j].value_len);
                                        PUT_LITERAL(&o, ", ");
                                }
                        puts_(&o, r->client_addr);
                        PUT_LITERAL(&o, "\r\n");
                        continue;
                default:
                        /* hop-by-hop and framing fields, and those the gateway writes itself */
                        continue;
                }
        }
        if (!xff)
                field(&o, "X-Forwarded-For", 15, r->client_addr);
        PUT_LITERAL(&o, "X-Forwarded-Proto: http\r\n");
        field(&o, "X-Request-Id", 12, r->request_id);
        if (r->upgrade) {
                if (upgrade && *upgrade)
                        field(&o, "Upgrade", 7, upgrade);
                PUT_LITERAL(&o, "Connection: upgrade\r\n");
        }
        framing(&o, r->body_length);
        PUT_LITERAL(&o, "\r\n");
        info_done(fi, stack);
        return finish(out, &o);
}

int gw_rewrite_response(struct orch_buf *out, const struct gw_response_out *r)
{
        const struct orch_http_head *h = r->head;
        const char *upgrade = r->upgrade ? orch_http_head_header(h, "Upgrade") : NULL;
        struct info stack[STACK_FIELDS], *fi = info_for(h, stack);
        struct options opts;
        struct out o;
        size_t need;
        bool has_id = false;
        int k;

        if (!fi)
                return -ENOMEM;
        need = measure(h, fi) + FIXED_NEED + (h->reason ? strlen(h->reason) : 0) +
               (r->request_id ? strlen(r->request_id) : 0) + (upgrade ? strlen(upgrade) : 0);
        k = connection_options(h, fi, &opts);
        if (k >= 0 && orch_buf_reserve(out, need) < 0)
                k = -ENOMEM;
        if (k < 0) {
                info_done(fi, stack);
                return k;
        }
        o.p = out->data + out->len;

        PUT_LITERAL(&o, "HTTP/1.1 ");
        put_u64(&o, (uint64_t)h->status);
        PUT_LITERAL(&o, " ");
        if (h->reason)
                puts_(&o, h->reason);
        PUT_LITERAL(&o, "\r\n");
        for (size_t i = 0; i < h->n_headers; i++) {
                if (fi[i].c == C_CONNECTION || fi[i].c == C_HOP || fi[i].c == C_FRAMING)
                        continue;
                if (opts.n > 0 && listed(&opts, h->headers[i].name, fi[i].name_len))
                        continue;
                if (fi[i].c == C_XRI)
                        has_id = true;
                copy_field(&o, &h->headers[i], &fi[i]);
        }
        if (!has_id && r->request_id)
                field(&o, "X-Request-Id", 12, r->request_id);
        if (r->upgrade) {
                if (upgrade && *upgrade)
                        field(&o, "Upgrade", 7, upgrade);
                PUT_LITERAL(&o, "Connection: upgrade\r\n");
        } else if (r->close) {
                PUT_LITERAL(&o, "Connection: close\r\n");
        } else if (r->http10_keep_alive) {
                PUT_LITERAL(&o, "Connection: keep-alive\r\n");
        }
        framing(&o, r->body_length);
        PUT_LITERAL(&o, "\r\n");
        info_done(fi, stack);
        return finish(out, &o);
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
