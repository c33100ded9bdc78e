/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <strings.h>

#include <llhttp.h>

#include "http.h"
#include "banned.h"

/*
 * The lexer is one state machine over raw bytes. States that can see long
 * runs (a target, a field name or value, chunk data) take the whole run at
 * once; everything else is byte by byte. Whatever the lexer accepts is then
 * fed, unchanged and in the same slices, to llhttp, whose callbacks only
 * record what llhttp concluded so that feed_llhttp() can compare.
 */
enum lex_state {
        /* request line */
        L_REQ_START,
        L_REQ_START_LF,
        L_METHOD,
        L_TARGET,
        L_REQ_VERSION,
        /* status line */
        L_RESP_VERSION,
        L_STATUS,
        L_REASON,
        L_START_LINE_LF,
        /* header fields, and the trailer fields of a chunked body */
        L_FIELD_START,
        L_NAME,
        L_VALUE_START,
        L_VALUE,
        L_VALUE_LF,
        L_FIELDS_END_LF,
        /* the HEAD event was reported, the body has not started */
        L_HEAD_DONE,
        L_BODY_IDENTITY,
        L_BODY_EOF,
        L_CHUNK_SIZE_START,
        L_CHUNK_SIZE,
        L_CHUNK_EXT_NAME_START,
        L_CHUNK_EXT_NAME,
        L_CHUNK_EXT_VALUE_START,
        L_CHUNK_EXT_VALUE,
        L_CHUNK_EXT_QUOTED,
        L_CHUNK_EXT_QUOTED_PAIR,
        L_CHUNK_EXT_QUOTED_END,
        L_CHUNK_SIZE_LF,
        L_CHUNK_DATA,
        L_CHUNK_DATA_CR,
        L_CHUNK_DATA_LF,
        /* the body ended; COMPLETE is reported by the next call */
        L_MESSAGE_END,
        L_COMPLETE,
        L_FAILED,
};

enum body_mode {
        BODY_NONE,
        BODY_IDENTITY,
        BODY_CHUNKED,
        BODY_EOF,
};

enum lex_result {
        LEX_MORE,       /* all bytes used */
        LEX_HEAD,       /* the head ended at the last byte used */
        LEX_CHUNK_DATA, /* chunk data starts after the last byte used */
        LEX_END,        /* the message ended at the last byte used */
        LEX_ERROR,
};

/* While the head is parsed a slot holds arena offsets (the arena may move as it grows); once the head
 * is complete the slots are rewritten in place into the public name/value pointers. */
/* orch_http_parser_next() keeps buffers up to these sizes for the next message. */
#define ARENA_KEEP  1024U
#define FIELDS_KEEP 16U

union field_slot {
        struct {
                size_t name;
                size_t value;
        } off;
        struct orch_http_header hdr;
};
_Static_assert(sizeof(union field_slot) == sizeof(struct orch_http_header),
               "field slots must be laid out as an array of orch_http_header");

struct orch_http_parser {
        enum orch_http_kind kind;
        struct orch_http_limits limits;
        uint64_t body_limit;
        bool head_request;

        enum lex_state state;
        bool in_message;
        bool in_trailers;
        bool head_done;
        bool first_field;
        size_t head_bytes; /* of the head, or of the trailer section */
        size_t line_bytes; /* of the current chunk-size line */
        unsigned ver_idx;
        unsigned status_digits;
        unsigned pct_left; /* hex digits still expected after a '%' in the target */
        size_t n_trailers;

        /* The head as received: NUL-terminated strings at the offsets below. */
        struct orch_buf arena;
        size_t method_off, target_off, reason_off, name_off, value_off, value_end;
        union field_slot *fields;
        size_t n_fields, fields_cap;

        /* Framing facts gathered from the fields. */
        bool seen_cl, seen_te, te_chunked_last, te_unsupported;
        unsigned te_chunked;
        unsigned n_host;
        bool conn_close, conn_keep_alive, conn_upgrade, has_upgrade, expect_continue;
        uint64_t content_length;
        enum body_mode body_mode;
        bool upgrade;
        uint64_t chunk_size, chunk_left, body_received;

        struct orch_http_head head;

        llhttp_t ll;
        bool ll_head_done, ll_message_done;
        uint64_t ll_body_bytes;
        const char *ll_disagreement;

        /* Set while llhttp reads the bytes before one the lexer refused: a problem llhttp finds there came
         * first, and reporting it keeps the outcome the same however the input is split. */
        bool replace_error;
        /* llhttp refused the method before the lexer saw the end of the request line: llhttp is fed
         * no more, and the lexer decides between a malformed request line (400: "hello\r\n", "this is
         * not http") and an unknown method in a well-formed one (501, at its end), whatever the reads
         * were. */
        bool ll_bad_method;
        enum lex_state failed_in; /* the lexer's state when fail() was called first */
        int err_status;
        char err_reason[200];
};

/* ---- character classes (RFC 9110 §5.6, RFC 3986) ---- */

/* tchar: ALPHA / DIGIT / "!#$%&'*+-.^_`|~", by table: it runs for every byte of every field name. */
static const bool tchar_table[256] = {
        ['0' ... '9'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true, ['!'] = true, ['#'] = true,
        ['$'] = true,         ['%'] = true,         ['&'] = true,         ['\''] = true, ['*'] = true,
        ['+'] = true,         ['-'] = true,         ['.'] = true,         ['^'] = true,  ['_'] = true,
        ['`'] = true,         ['|'] = true,         ['~'] = true,
};

static bool is_tchar(unsigned char c)
{
        return tchar_table[c];
}

static bool is_digit(unsigned char c)
{
        return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* field-vchar (VCHAR / obs-text), the bytes a field value may start and end with. */
static bool is_field_vchar(unsigned char c)
{
        return (c > 0x20 && c < 0x7f) || c >= 0x80;
}

static bool is_ows(unsigned char c)
{
        return c == ' ' || c == '\t';
}

/* Visible ASCII but '#': a fragment never goes over the wire. '%' is checked separately. */
static bool is_target_char(unsigned char c)
{
        return c > 0x20 && c < 0x7f && c != '#';
}

/* reg-name, IPv4 and port characters of an authority (unreserved / sub-delims / pct-encoded). */
static bool is_host_char(unsigned char c)
{
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c))
                return true;
        return c && strchr("-._~!$&'()*+,;=%", c);
}

/* ---- error reporting ---- */

static const char *describe_byte(unsigned char c, char *buf, size_t size)
{
        switch (c) {
        case '\r':
                return "CR";
        case '\n':
                return "LF";
        case '\0':
                return "NUL";
        case ' ':
                return "a space";
        case '\t':
                return "a tab";
        default:
                break;
        }
        if (c > 0x20 && c < 0x7f)
                snprintf(buf, size, "'%c'", c);
        else
                snprintf(buf, size, "byte 0x%02x", c);
        return buf;
}

/* A copy of s safe to quote in a message (and in JSON): printable ASCII only, bounded. */
static const char *printable(const char *s, char *buf, size_t size)
{
        size_t i = 0, j = 0;

        for (; s[i] && j + 4 < size; i++)
                buf[j++] = ((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f) ? s[i] : '?';
        if (s[i]) {
                while (j + 4 > size)
                        j--;
                memcpy(buf + j, "...", 3);
                j += 3;
        }
        buf[j] = '\0';
        return buf;
}

_printf_(3, 4) static void fail(struct orch_http_parser *p, int status, const char *fmt, ...)
{
        va_list ap;

        /* The first problem found is the one reported. */
        if (p->state == L_FAILED && !p->replace_error)
                return;
        p->replace_error = false;
        if (p->state != L_FAILED)
                p->failed_in = p->state;
        p->state = L_FAILED;
        p->err_status = status;
        va_start(ap, fmt);
        vsnprintf(p->err_reason, sizeof p->err_reason, fmt, ap);
        va_end(ap);
}

static void fail_byte(struct orch_http_parser *p, unsigned char c, const char *where)
{
        char b[16];

        if (c == '\n')
                fail(p, 400, "bare LF %s (lines must end with CRLF)", where);
        else
                fail(p, 400, "unexpected %s %s", describe_byte(c, b, sizeof b), where);
}

static int report_error(struct orch_http_parser *p, struct orch_http_event *ret)
{
        ret->type = ORCH_HTTP_EVENT_ERROR;
        ret->status = p->err_status;
        ret->reason = p->err_reason;
        return 0;
}

/* ---- llhttp, the second opinion ---- */

static int ll_on_headers_complete(llhttp_t *ll)
{
        struct orch_http_parser *p = container_of(ll, struct orch_http_parser, ll);

        p->ll_head_done = true;
        if (p->kind == ORCH_HTTP_REQUEST && !streq(llhttp_method_name(ll->method), p->head.method))
                p->ll_disagreement = "the request method";
        else if (ll->http_major != 1 || ll->http_minor != p->head.version_minor)
                p->ll_disagreement = "the HTTP version";
        else if (!!(ll->flags & F_CHUNKED) != (p->body_mode == BODY_CHUNKED))
                p->ll_disagreement = "chunked transfer coding";
        else if (p->body_mode == BODY_IDENTITY &&
                 (!(ll->flags & F_CONTENT_LENGTH) || ll->content_length != p->content_length))
                p->ll_disagreement = "the Content-Length";
        else if (!!ll->upgrade != p->upgrade)
                p->ll_disagreement = "a protocol upgrade";
        if (p->ll_disagreement)
                return -1;
        /* llhttp 8.1 reads a body after 204 and 304 when they carry a Content-Length, and cannot know that
         * a response answers HEAD: tell it there is no body, as RFC 9112 §6.3 says. */
        if (p->kind == ORCH_HTTP_RESPONSE && p->body_mode == BODY_NONE && !p->upgrade)
                return 1;
        return 0;
}

static int ll_on_body(llhttp_t *ll, const char *at, size_t len)
{
        struct orch_http_parser *p = container_of(ll, struct orch_http_parser, ll);

        p->ll_body_bytes += len;
        return 0;
}

static int ll_on_message_complete(llhttp_t *ll)
{
        struct orch_http_parser *p = container_of(ll, struct orch_http_parser, ll);

        p->ll_message_done = true;
        return 0;
}

static const llhttp_settings_t ll_settings = {
        .on_headers_complete = ll_on_headers_complete,
        .on_body = ll_on_body,
        .on_message_complete = ll_on_message_complete,
};

static void fail_llhttp(struct orch_http_parser *p, llhttp_errno_t e)
{
        switch (e) {
        case HPE_INVALID_METHOD:
                /* The lexer checks that it is a token: it is just not a method llhttp knows. llhttp stops at
                 * the first byte that matches no method, so the name is not quoted: it would depend on how
                 * much of it had arrived. */
                fail(p, 501, "unknown request method (methods are case-sensitive)");
                break;
        case HPE_INVALID_VERSION:
                fail(p, 505, "unsupported HTTP version");
                break;
        /* llhttp notices these a few bytes before the lexer does (inside the value rather than at its end):
         * say the same thing the lexer would. */
        case HPE_INVALID_TRANSFER_ENCODING:
                fail(p, 400, "Transfer-Encoding must end with a single chunked (llhttp: %s)",
                     strna(llhttp_get_error_reason(&p->ll)));
                break;
        case HPE_INVALID_CONTENT_LENGTH:
        case HPE_UNEXPECTED_CONTENT_LENGTH:
                fail(p, 400, "invalid Content-Length (llhttp: %s)", strna(llhttp_get_error_reason(&p->ll)));
                break;
        default:
                fail(p, 400, "malformed message (llhttp: %s)", strna(llhttp_get_error_reason(&p->ll)));
                break;
        }
}

/* The states of a request line (a status line has its own but for its end). */
static bool in_request_line(enum lex_state s)
{
        return (s >= L_REQ_START && s <= L_REQ_VERSION) || s == L_START_LINE_LF;
}

/* Feeds llhttp exactly what the lexer accepted and checks that it read it the same way. message_end:
 * the lexer says the message ends with the last of these bytes. Returns false after fail(). */
static bool feed_llhttp(struct orch_http_parser *p, const char *data, size_t n, bool message_end)
{
        llhttp_errno_t e = HPE_OK;

        if (p->ll_bad_method)
                return true;
        if (n > 0)
                e = llhttp_execute(&p->ll, data, n);
        if (e == HPE_INVALID_METHOD && p->kind == ORCH_HTTP_REQUEST) {
                /* The request line is not over yet: its end says which error this is. */
                if (in_request_line(p->state)) {
                        p->ll_bad_method = true;
                        return true;
                }
                /* The lexer refused the request line itself: a malformed line is the first problem. */
                if (p->replace_error && in_request_line(p->failed_in))
                        return false;
        }
        if (p->ll_disagreement) {
                fail(p, 400, "ambiguous message: llhttp reads %s differently", p->ll_disagreement);
                return false;
        }
        if (e == HPE_PAUSED_UPGRADE) {
                if (!message_end || !p->upgrade || llhttp_get_error_pos(&p->ll) != data + n) {
                        fail(p, 400, "ambiguous message: llhttp sees a protocol switch");
                        return false;
                }
        } else if (e != HPE_OK) {
                fail_llhttp(p, e);
                return false;
        } else if (message_end && p->upgrade) {
                fail(p, 400, "ambiguous message: llhttp does not see the protocol switch");
                return false;
        }
        if (p->ll_head_done != p->head_done || p->ll_message_done != message_end ||
            p->ll_body_bytes != p->body_received) {
                fail(p, 400, "ambiguous message: llhttp sees the %s elsewhere",
                     p->ll_head_done != p->head_done     ? "end of the head"
                     : p->ll_message_done != message_end ? "end of the message"
                                                         : "end of the body");
                return false;
        }
        return true;
}

/* ---- the head ---- */

static inline bool arena_put(struct orch_http_parser *p, const char *s, size_t n)
{
        struct orch_buf *b = &p->arena;

        /* Trailer fields are checked but not kept: the head's pointers into the arena are live. */
        if (p->in_trailers)
                return true;
        /* The lexer appends a head a byte at a time: the common case, room in the arena, stays a
         * memcpy (a call to orch_buf_put per byte was a third of a proxied request's cost). */
        if (_likely_(b->data && !b->oom && b->len + n < b->cap)) {
                memcpy(b->data + b->len, s, n);
                b->len += n;
                b->data[b->len] = '\0';
                return true;
        }
        return orch_buf_put(b, s, n) >= 0;
}

static bool arena_end_string(struct orch_http_parser *p)
{
        return arena_put(p, "", 1);
}

static const char *arena_str(const struct orch_http_parser *p, size_t off)
{
        return p->arena.data + off;
}

/* An authority: host [ ":" port ], host an IP-literal, IPv4 address or reg-name (RFC 3986 §3.2.2).
 * No userinfo: RFC 9110 §4.2.4 makes it an error in http URIs. */
static bool authority_valid(const char *s, size_t len, bool need_port)
{
        size_t i = 0, port_start;

        if (len > 0 && s[0] == '[') {
                for (i = 1; i < len && s[i] != ']'; i++)
                        if (hex_value((unsigned char)s[i]) < 0 && s[i] != ':' && s[i] != '.')
                                return false;
                if (i >= len || i == 1)
                        return false;
                i++;
        } else {
                for (; i < len && s[i] != ':'; i++)
                        if (!is_host_char((unsigned char)s[i]))
                                return false;
        }
        if (i == len)
                return !need_port;
        if (s[i] != ':')
                return false;
        port_start = ++i;
        for (; i < len; i++)
                if (!is_digit((unsigned char)s[i]))
                        return false;
        if (i - port_start > 5)
                return false;
        return !need_port || i > port_start;
}

/* Splits a path-and-query into NUL-terminated copies at the end of the arena. */
static bool store_path_query(struct orch_http_parser *p, const char *s, size_t len, size_t *ret_path,
                             size_t *ret_query)
{
        const char *q = memchr(s, '?', len);
        size_t plen = q ? (size_t)(q - s) : len;

        *ret_path = p->arena.len;
        if (plen == 0 ? !arena_put(p, "/", 1) : !arena_put(p, s, plen))
                return false;
        if (!arena_end_string(p))
                return false;
        *ret_query = SIZE_MAX;
        if (q) {
                *ret_query = p->arena.len;
                if (!arena_put(p, q + 1, len - plen - 1) || !arena_end_string(p))
                        return false;
        }
        return true;
}

/* The request-target forms of RFC 9112 §3.2, each only with the methods that may use it. Returns the
 * arena offsets of the path, query and authority (SIZE_MAX: none); false on allocation failure. */
static bool process_request_line(struct orch_http_parser *p, size_t *ret_path, size_t *ret_query,
                                 size_t *ret_authority)
{
        size_t target_len = strlen(arena_str(p, p->target_off));
        const char *target, *method, *rest;
        bool connect;

        /* The parts are copied to the end of the arena: reserve room for all of them (the path, the query,
         * the authority, a "/" and their NULs) first so that the pointers below stay valid. */
        if (orch_buf_reserve(&p->arena, target_len + 4) < 0)
                return false;
        target = arena_str(p, p->target_off);
        method = arena_str(p, p->method_off);
        connect = streq(method, "CONNECT");
        *ret_path = *ret_query = *ret_authority = SIZE_MAX;
        if (connect) {
                if (!authority_valid(target, target_len, true)) {
                        fail(p, 400, "a CONNECT request needs a host:port target");
                        return true;
                }
                *ret_authority = p->target_off;
                return true;
        }
        if (streq(target, "*")) {
                if (!streq(method, "OPTIONS")) {
                        fail(p, 400, "the asterisk-form target \"*\" is only allowed with OPTIONS");
                        return true;
                }
                *ret_path = p->target_off;
                return true;
        }
        if (target[0] == '/')
                return store_path_query(p, target, target_len, ret_path, ret_query);

        rest = NULL;
        if (strncasecmp(target, "http://", 7) == 0)
                rest = target + 7;
        else if (strncasecmp(target, "https://", 8) == 0)
                rest = target + 8;
        if (rest) {
                size_t alen = strcspn(rest, "/?");

                if (alen == 0 || !authority_valid(rest, alen, false)) {
                        fail(p, 400, "invalid authority in the absolute-form request target");
                        return true;
                }
                *ret_authority = p->arena.len;
                if (!arena_put(p, rest, alen) || !arena_end_string(p))
                        return false;
                return store_path_query(p, rest + alen, strlen(rest + alen), ret_path, ret_query);
        }
        fail(p, 400, "the request target must be a path, an absolute http URI, or \"*\"");
        return true;
}

/* Walks a comma-separated list (RFC 9110 §5.6.1), skipping empty elements; returns false when an element
 * is not a token. */
static bool list_next(const char **s, const char **ret_elem, size_t *ret_len)
{
        const char *p = *s;

        for (;;) {
                const char *start, *end;

                while (is_ows((unsigned char)*p) || *p == ',')
                        p++;
                if (!*p) {
                        *ret_elem = NULL;
                        *s = p;
                        return true;
                }
                start = p;
                while (*p && *p != ',')
                        p++;
                end = p;
                while (end > start && is_ows((unsigned char)end[-1]))
                        end--;
                for (const char *c = start; c < end; c++)
                        if (!is_tchar((unsigned char)*c))
                                return false;
                *ret_elem = start;
                *ret_len = (size_t)(end - start);
                *s = p;
                return true;
        }
}

static bool token_is(const char *elem, size_t len, const char *word)
{
        return strlen(word) == len && strncasecmp(elem, word, len) == 0;
}

static void process_field(struct orch_http_parser *p)
{
        const char *name = arena_str(p, p->name_off), *value = arena_str(p, p->value_off);
        const char *s = value, *elem;
        /* Compared by length first: most fields are none of these. */
        size_t name_len = strlen(name), len;
        char b[48];

#define NAME_IS(lit) (name_len == sizeof lit - 1 && strcasecmp(name, lit) == 0)
        if (NAME_IS("content-length")) {
                uint64_t v;
                int r;

                /* Even an identical repeat is refused: proxies that merge and proxies that take the first
                 * or the last copy would otherwise frame the body differently. */
                if (p->seen_cl) {
                        fail(p, 400, "repeated Content-Length header");
                        return;
                }
                p->seen_cl = true;
                r = orch_parse_u64(value, &v);
                if (r == -ERANGE || (r == 0 && v > INT64_MAX)) {
                        fail(p, 400, "Content-Length out of range");
                        return;
                }
                if (r < 0) {
                        fail(p, 400, "invalid Content-Length \"%s\" (digits only)",
                             printable(value, b, sizeof b));
                        return;
                }
                p->content_length = v;
        } else if (NAME_IS("transfer-encoding")) {
                p->seen_te = true;
                for (;;) {
                        if (!list_next(&s, &elem, &len)) {
                                fail(p, 400, "malformed Transfer-Encoding \"%s\"",
                                     printable(value, b, sizeof b));
                                return;
                        }
                        if (!elem)
                                break;
                        if (token_is(elem, len, "chunked")) {
                                p->te_chunked++;
                                p->te_chunked_last = true;
                        } else {
                                p->te_unsupported = true;
                                p->te_chunked_last = false;
                        }
                }
        } else if (NAME_IS("host")) {
                p->n_host++;
                if (!authority_valid(value, strlen(value), false)) {
                        fail(p, 400, "invalid Host header \"%s\"", printable(value, b, sizeof b));
                        return;
                }
        } else if (NAME_IS("connection")) {
                for (;;) {
                        if (!list_next(&s, &elem, &len)) {
                                fail(p, 400, "malformed Connection header \"%s\"",
                                     printable(value, b, sizeof b));
                                return;
                        }
                        if (!elem)
                                break;
                        if (token_is(elem, len, "close"))
                                p->conn_close = true;
                        else if (token_is(elem, len, "keep-alive"))
                                p->conn_keep_alive = true;
                        else if (token_is(elem, len, "upgrade"))
                                p->conn_upgrade = true;
                }
        } else if (NAME_IS("upgrade")) {
                p->has_upgrade = true;
        } else if (NAME_IS("expect") && p->kind == ORCH_HTTP_REQUEST) {
                /* RFC 9110 §10.1.1: an HTTP/1.0 client cannot mean 100-continue; ignore it there. */
                if (p->head.version_minor == 0)
                        return;
                if (strcasecmp(value, "100-continue") != 0) {
                        fail(p, 417, "unsupported expectation \"%s\"", printable(value, b, sizeof b));
                        return;
                }
                p->expect_continue = true;
        }
#undef NAME_IS
}

static bool add_field(struct orch_http_parser *p)
{
        if (p->n_fields == p->fields_cap) {
                size_t cap = p->fields_cap ? p->fields_cap * 2 : 8;
                union field_slot *f;

                cap = MIN(cap, MAX(p->limits.max_headers, (size_t)1));
                f = reallocarray(p->fields, cap, sizeof *f);
                if (!f)
                        return false;
                p->fields = f;
                p->fields_cap = cap;
        }
        p->fields[p->n_fields].off.name = p->name_off;
        p->fields[p->n_fields].off.value = p->value_off;
        p->n_fields++;
        return true;
}

/* Framing and connection rules of RFC 9112 §6 and §9 once every field is known. */
static void finish_request_head(struct orch_http_parser *p)
{
        bool connect = streq(p->head.method, "CONNECT");

        if (p->head.version_minor == 1 && p->n_host == 0) {
                fail(p, 400, "missing Host header (required in HTTP/1.1)");
                return;
        }
        if (p->n_host > 1) {
                fail(p, 400, "more than one Host header");
                return;
        }
        if (p->seen_te && p->seen_cl) {
                fail(p, 400, "both Content-Length and Transfer-Encoding");
                return;
        }
        if (p->seen_te && p->head.version_minor == 0) {
                fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
                return;
        }
        if (p->seen_te) {
                if (!p->te_chunked_last || p->te_chunked > 1) {
                        fail(p, 400, "Transfer-Encoding must end with a single chunked");
                        return;
                }
                if (p->te_unsupported) {
                        fail(p, 501, "unsupported transfer coding (only chunked is implemented)");
                        return;
                }
        }
        if (connect && (p->seen_te || (p->seen_cl && p->content_length > 0))) {
                fail(p, 400, "a CONNECT request cannot have content");
                return;
        }
        if (p->has_upgrade && p->conn_upgrade && p->head.version_minor == 0) {
                /* RFC 9110 §7.8 says to ignore it, llhttp would switch: refuse rather than guess. */
                fail(p, 400, "Upgrade in an HTTP/1.0 request");
                return;
        }
        p->upgrade = connect || (p->has_upgrade && p->conn_upgrade);
        if (p->head.version_minor == 1)
                p->head.keep_alive = !p->conn_close;
        else
                p->head.keep_alive = p->conn_keep_alive && !p->conn_close;
        if (connect)
                p->body_mode = BODY_NONE;
        else if (p->seen_te)
                p->body_mode = BODY_CHUNKED;
        else if (p->seen_cl && p->content_length > 0)
                p->body_mode = BODY_IDENTITY;
        else
                p->body_mode = BODY_NONE;
}

static void finish_response_head(struct orch_http_parser *p)
{
        int status = p->head.status;

        if (p->seen_te && p->seen_cl) {
                fail(p, 400, "both Content-Length and Transfer-Encoding");
                return;
        }
        p->upgrade = status == 101 && p->has_upgrade && p->conn_upgrade;
        if (status / 100 == 1 || status == 204 || status == 304 || p->head_request) {
                p->body_mode = BODY_NONE;
        } else if (p->seen_te) {
                if (!p->te_chunked_last || p->te_chunked > 1 || p->te_unsupported) {
                        fail(p, 501, "unsupported Transfer-Encoding (only chunked is implemented)");
                        return;
                }
                p->body_mode = BODY_CHUNKED;
        } else if (p->seen_cl) {
                p->body_mode = p->content_length > 0 ? BODY_IDENTITY : BODY_NONE;
        } else {
                p->body_mode = BODY_EOF;
        }
        if (p->head.version_minor == 1)
                p->head.keep_alive = !p->conn_close && p->body_mode != BODY_EOF;
        else
                p->head.keep_alive = p->conn_keep_alive && !p->conn_close && p->body_mode != BODY_EOF;
}

/* Returns false on allocation failure; semantic errors go through fail(). */
static bool finish_head(struct orch_http_parser *p)
{
        size_t path = SIZE_MAX, query = SIZE_MAX, authority = SIZE_MAX;
        struct orch_http_head *h = &p->head;

        if (p->kind == ORCH_HTTP_REQUEST) {
                if (!process_request_line(p, &path, &query, &authority))
                        return false;
                if (p->state == L_FAILED)
                        return true;
                h->method = arena_str(p, p->method_off);
                finish_request_head(p);
        } else {
                finish_response_head(p);
        }
        if (p->state == L_FAILED)
                return true;

        /* The arena does not move any more until orch_http_parser_next(): hand out pointers. */
        for (size_t i = 0; i < p->n_fields; i++) {
                size_t n = p->fields[i].off.name, v = p->fields[i].off.value;
                p->fields[i].hdr.name = arena_str(p, n);
                p->fields[i].hdr.value = arena_str(p, v);
        }
        h->headers = p->n_fields ? &p->fields[0].hdr : NULL;
        h->n_headers = p->n_fields;
        if (p->kind == ORCH_HTTP_REQUEST) {
                h->method = arena_str(p, p->method_off);
                h->target = arena_str(p, p->target_off);
                h->path = path != SIZE_MAX ? arena_str(p, path) : NULL;
                h->query = query != SIZE_MAX ? arena_str(p, query) : NULL;
                h->authority = authority != SIZE_MAX ? arena_str(p, authority) : NULL;
                h->host = orch_http_head_header(h, "Host");
                h->expect_continue = p->expect_continue;
        } else {
                h->reason = arena_str(p, p->reason_off);
        }
        h->chunked = p->body_mode == BODY_CHUNKED;
        h->has_content_length = p->seen_cl;
        h->content_length = p->content_length;
        h->upgrade = p->upgrade;
        p->head_done = true;
        return true;
}

static void too_large(struct orch_http_parser *p)
{
        if (p->in_trailers)
                fail(p, 431, "trailer section larger than %zu bytes", p->limits.max_header_bytes);
        else if (p->state == L_TARGET)
                fail(p, 414, "request target longer than the %zu-byte header limit",
                     p->limits.max_header_bytes);
        else
                fail(p, 431, "request header section larger than %zu bytes", p->limits.max_header_bytes);
}

/* ---- the lexer ---- */

static void start_field_section(struct orch_http_parser *p)
{
        p->state = L_FIELD_START;
        p->first_field = true;
}

static enum lex_result lex_chunk_byte(struct orch_http_parser *p, unsigned char c)
{
        char b[16];
        int v;

        if (++p->line_bytes > ORCH_HTTP_MAX_CHUNK_LINE && p->state != L_CHUNK_DATA_CR &&
            p->state != L_CHUNK_DATA_LF) {
                fail(p, 400, "chunk-size line longer than %u bytes", ORCH_HTTP_MAX_CHUNK_LINE);
                return LEX_ERROR;
        }
        switch (p->state) {
        case L_CHUNK_SIZE_START:
                if ((v = hex_value(c)) < 0) {
                        fail(p, 400, "invalid chunk size: %s", describe_byte(c, b, sizeof b));
                        return LEX_ERROR;
                }
                p->chunk_size = (uint64_t)v;
                p->state = L_CHUNK_SIZE;
                return LEX_MORE;
        case L_CHUNK_SIZE:
                if ((v = hex_value(c)) >= 0) {
                        if (p->chunk_size > (UINT64_MAX >> 8)) {
                                fail(p, 400, "chunk size too large");
                                return LEX_ERROR;
                        }
                        p->chunk_size = p->chunk_size * 16 + (uint64_t)v;
                        return LEX_MORE;
                }
                if (c == ';') {
                        p->state = L_CHUNK_EXT_NAME_START;
                        return LEX_MORE;
                }
                if (c == '\r') {
                        p->state = L_CHUNK_SIZE_LF;
                        return LEX_MORE;
                }
                fail_byte(p, c, "in a chunk size");
                return LEX_ERROR;
        case L_CHUNK_EXT_NAME_START:
                if (!is_tchar(c)) {
                        fail_byte(p, c, "at the start of a chunk extension");
                        return LEX_ERROR;
                }
                p->state = L_CHUNK_EXT_NAME;
                return LEX_MORE;
        case L_CHUNK_EXT_NAME:
        case L_CHUNK_EXT_VALUE:
                if (is_tchar(c))
                        return LEX_MORE;
                if (c == '=' && p->state == L_CHUNK_EXT_NAME) {
                        p->state = L_CHUNK_EXT_VALUE_START;
                        return LEX_MORE;
                }
                if (c == ';') {
                        p->state = L_CHUNK_EXT_NAME_START;
                        return LEX_MORE;
                }
                if (c == '\r') {
                        p->state = L_CHUNK_SIZE_LF;
                        return LEX_MORE;
                }
                fail_byte(p, c, "in a chunk extension");
                return LEX_ERROR;
        case L_CHUNK_EXT_VALUE_START:
                if (c == '"') {
                        p->state = L_CHUNK_EXT_QUOTED;
                        return LEX_MORE;
                }
                if (is_tchar(c)) {
                        p->state = L_CHUNK_EXT_VALUE;
                        return LEX_MORE;
                }
                fail_byte(p, c, "in a chunk extension value");
                return LEX_ERROR;
        case L_CHUNK_EXT_QUOTED:
                if (c == '"') {
                        p->state = L_CHUNK_EXT_QUOTED_END;
                        return LEX_MORE;
                }
                if (c == '\\') {
                        p->state = L_CHUNK_EXT_QUOTED_PAIR;
                        return LEX_MORE;
                }
                if (c == '\t' || (c >= 0x20 && c != 0x7f))
                        return LEX_MORE;
                fail_byte(p, c, "in a quoted chunk extension");
                return LEX_ERROR;
        case L_CHUNK_EXT_QUOTED_PAIR:
                if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
                        p->state = L_CHUNK_EXT_QUOTED;
                        return LEX_MORE;
                }
                fail_byte(p, c, "in a quoted chunk extension");
                return LEX_ERROR;
        case L_CHUNK_EXT_QUOTED_END:
                if (c == ';') {
                        p->state = L_CHUNK_EXT_NAME_START;
                        return LEX_MORE;
                }
                if (c == '\r') {
                        p->state = L_CHUNK_SIZE_LF;
                        return LEX_MORE;
                }
                fail_byte(p, c, "after a quoted chunk extension");
                return LEX_ERROR;
        case L_CHUNK_SIZE_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR in a chunk-size line");
                        return LEX_ERROR;
                }
                p->line_bytes = 0;
                if (p->chunk_size == 0) {
                        p->in_trailers = true;
                        p->head_bytes = 0;
                        start_field_section(p);
                        return LEX_MORE;
                }
                /* Refuse before reading the chunk, not after buffering it. */
                if (p->chunk_size > p->body_limit || p->body_received > p->body_limit - p->chunk_size) {
                        fail(p, 413, "body larger than %" PRIu64 " bytes", p->body_limit);
                        return LEX_ERROR;
                }
                p->chunk_left = p->chunk_size;
                p->state = L_CHUNK_DATA;
                return LEX_CHUNK_DATA;
        case L_CHUNK_DATA_CR:
                if (c != '\r') {
                        /* llhttp 8.1 would skip these bytes: the classic chunk-size smuggling vector. */
                        fail(p, 400, "chunk data longer than its size (no CRLF after it)");
                        return LEX_ERROR;
                }
                p->state = L_CHUNK_DATA_LF;
                return LEX_MORE;
        case L_CHUNK_DATA_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR after chunk data");
                        return LEX_ERROR;
                }
                p->line_bytes = 0;
                p->state = L_CHUNK_SIZE_START;
                return LEX_MORE;
        default:
                fail(p, 400, "internal parser state error");
                return LEX_ERROR;
        }
}

/* One byte of a start line or a field section (head or trailers). */
static enum lex_result lex_head_byte(struct orch_http_parser *p, unsigned char c)
{
        static const char version[] = "HTTP/1.1";
        char b[48];

        switch (p->state) {
        case L_REQ_START:
                if (c == '\r') {
                        /* RFC 9112 §2.2: ignore empty lines before a request-line. */
                        p->state = L_REQ_START_LF;
                        return LEX_MORE;
                }
                if (!is_tchar(c)) {
                        fail_byte(p, c, "at the start of the request line");
                        return LEX_ERROR;
                }
                p->method_off = p->arena.len;
                if (!arena_put(p, (const char *)&c, 1))
                        return LEX_ERROR;
                p->state = L_METHOD;
                return LEX_MORE;
        case L_REQ_START_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR before the request line");
                        return LEX_ERROR;
                }
                p->state = L_REQ_START;
                return LEX_MORE;
        case L_METHOD:
                if (c == ' ') {
                        if (!arena_end_string(p))
                                return LEX_ERROR;
                        p->target_off = p->arena.len;
                        p->state = L_TARGET;
                        return LEX_MORE;
                }
                if (!is_tchar(c)) {
                        fail_byte(p, c, "in the request method (expected a single space after it)");
                        return LEX_ERROR;
                }
                if (p->arena.len - p->method_off >= 32) {
                        fail(p, 501, "unknown request method (longer than 32 bytes)");
                        return LEX_ERROR;
                }
                return arena_put(p, (const char *)&c, 1) ? LEX_MORE : LEX_ERROR;
        case L_TARGET:
                if (c == ' ') {
                        if (p->arena.len == p->target_off) {
                                fail(p, 400,
                                     "empty request target (expected a single space after the method)");
                                return LEX_ERROR;
                        }
                        if (p->pct_left) {
                                fail(p, 400, "truncated percent-escape in the request target");
                                return LEX_ERROR;
                        }
                        if (!arena_end_string(p))
                                return LEX_ERROR;
                        p->ver_idx = 0;
                        p->state = L_REQ_VERSION;
                        return LEX_MORE;
                }
                if (p->pct_left) {
                        if (hex_value(c) < 0) {
                                fail(p, 400, "malformed percent-escape in the request target");
                                return LEX_ERROR;
                        }
                        p->pct_left--;
                } else if (c == '%') {
                        p->pct_left = 2;
                } else if (!is_target_char(c)) {
                        fail_byte(p, c, "in the request target");
                        return LEX_ERROR;
                }
                return arena_put(p, (const char *)&c, 1) ? LEX_MORE : LEX_ERROR;
        case L_REQ_VERSION:
        case L_RESP_VERSION:
                if (p->ver_idx < 8) {
                        bool ok = p->ver_idx == 5 || p->ver_idx == 7
                                          ? is_digit(c)
                                          : c == (unsigned char)version[p->ver_idx];

                        if (!ok) {
                                if (c == '\n' || c == '\r')
                                        fail_byte(p, c, "in the HTTP version");
                                else
                                        fail(p, 400,
                                             "malformed HTTP version (expected HTTP/1.1 or HTTP/1.0)");
                                return LEX_ERROR;
                        }
                        if (p->ver_idx == 5 && c != '1') {
                                fail(p, 505, "unsupported HTTP version %c.x (only 1.0 and 1.1)", c);
                                return LEX_ERROR;
                        }
                        if (p->ver_idx == 7) {
                                if (c > '1') {
                                        fail(p, 505, "unsupported HTTP version 1.%c (only 1.0 and 1.1)", c);
                                        return LEX_ERROR;
                                }
                                p->head.version_minor = (unsigned)(c - '0');
                        }
                        p->ver_idx++;
                        return LEX_MORE;
                }
                if (p->state == L_REQ_VERSION) {
                        if (c == '\r') {
                                p->state = L_START_LINE_LF;
                                return LEX_MORE;
                        }
                        fail_byte(p, c, "after the HTTP version");
                        return LEX_ERROR;
                }
                if (c != ' ') {
                        fail_byte(p, c, "after the HTTP version (expected a space)");
                        return LEX_ERROR;
                }
                p->status_digits = 0;
                p->head.status = 0;
                p->state = L_STATUS;
                return LEX_MORE;
        case L_STATUS:
                if (p->status_digits < 3) {
                        if (!is_digit(c)) {
                                fail_byte(p, c, "in the status code");
                                return LEX_ERROR;
                        }
                        p->head.status = p->head.status * 10 + (c - '0');
                        p->status_digits++;
                        return LEX_MORE;
                }
                if (p->head.status < 100 || p->head.status > 599) {
                        fail(p, 400, "status code %d out of range", p->head.status);
                        return LEX_ERROR;
                }
                p->reason_off = p->arena.len;
                if (c == ' ') {
                        p->state = L_REASON;
                        return LEX_MORE;
                }
                if (c == '\r') {
                        /* Tolerated on the client side: some servers omit the space before an empty reason.
                         */
                        p->state = L_START_LINE_LF;
                        return arena_end_string(p) ? LEX_MORE : LEX_ERROR;
                }
                fail_byte(p, c, "after the status code");
                return LEX_ERROR;
        case L_REASON:
                if (c == '\r') {
                        p->state = L_START_LINE_LF;
                        return arena_end_string(p) ? LEX_MORE : LEX_ERROR;
                }
                if (!is_field_vchar(c) && !is_ows(c)) {
                        fail_byte(p, c, "in the reason phrase");
                        return LEX_ERROR;
                }
                return arena_put(p, (const char *)&c, 1) ? LEX_MORE : LEX_ERROR;
        case L_START_LINE_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR at the end of the start line");
                        return LEX_ERROR;
                }
                /* a well-formed request line with a method llhttp does not know */
                if (p->ll_bad_method) {
                        fail(p, 501, "unknown request method (methods are case-sensitive)");
                        return LEX_ERROR;
                }
                start_field_section(p);
                return LEX_MORE;
        case L_FIELD_START:
                if (c == '\r') {
                        p->state = L_FIELDS_END_LF;
                        return LEX_MORE;
                }
                if (is_ows(c)) {
                        if (p->first_field)
                                fail(p, 400, "whitespace before the first %s field",
                                     p->in_trailers ? "trailer" : "header");
                        else
                                fail(p, 400,
                                     "obsolete line folding (a field line starting with whitespace)");
                        return LEX_ERROR;
                }
                if (c == ':') {
                        fail(p, 400, "empty field name");
                        return LEX_ERROR;
                }
                if (!is_tchar(c)) {
                        fail_byte(p, c, "at the start of a field name");
                        return LEX_ERROR;
                }
                if (p->in_trailers ? ++p->n_trailers > p->limits.max_headers
                                   : p->n_fields >= p->limits.max_headers) {
                        fail(p, 431, "more than %zu %s fields", p->limits.max_headers,
                             p->in_trailers ? "trailer" : "header");
                        return LEX_ERROR;
                }
                p->first_field = false;
                p->name_off = p->arena.len;
                p->state = L_NAME;
                return arena_put(p, (const char *)&c, 1) ? LEX_MORE : LEX_ERROR;
        case L_NAME:
                if (c == ':') {
                        if (!arena_end_string(p))
                                return LEX_ERROR;
                        /* Caught at the colon, before llhttp objects in its own words. */
                        if (p->seen_cl && !p->in_trailers &&
                            strcasecmp(arena_str(p, p->name_off), "content-length") == 0) {
                                fail(p, 400, "repeated Content-Length header");
                                return LEX_ERROR;
                        }
                        p->value_off = p->value_end = p->arena.len;
                        p->state = L_VALUE_START;
                        return LEX_MORE;
                }
                if (is_ows(c)) {
                        fail(p, 400, "whitespace between the field name \"%s\" and the colon",
                             p->in_trailers ? "(trailer)"
                                            : printable(arena_str(p, p->name_off), b, sizeof b));
                        return LEX_ERROR;
                }
                if (!is_tchar(c)) {
                        fail_byte(p, c, "in a field name");
                        return LEX_ERROR;
                }
                return arena_put(p, (const char *)&c, 1) ? LEX_MORE : LEX_ERROR;
        case L_VALUE_START:
        case L_VALUE:
                if (c == '\r') {
                        p->state = L_VALUE_LF;
                        return LEX_MORE;
                }
                if (is_ows(c)) {
                        if (p->state == L_VALUE_START)
                                return LEX_MORE;
                } else if (is_field_vchar(c)) {
                        p->state = L_VALUE;
                } else {
                        char nb[48];

                        fail(p, 400, "%s%s in the value of the field \"%s\"",
                             c == '\n' ? "bare LF" : "unexpected ",
                             c == '\n' ? "" : describe_byte(c, b, sizeof b),
                             p->in_trailers ? "(trailer)"
                                            : printable(arena_str(p, p->name_off), nb, sizeof nb));
                        return LEX_ERROR;
                }
                if (!arena_put(p, (const char *)&c, 1))
                        return LEX_ERROR;
                if (!is_ows(c))
                        p->value_end = p->arena.len;
                return LEX_MORE;
        case L_VALUE_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR in the value of the field \"%s\"",
                             p->in_trailers ? "(trailer)"
                                            : printable(arena_str(p, p->name_off), b, sizeof b));
                        return LEX_ERROR;
                }
                p->state = L_FIELD_START;
                if (p->in_trailers)
                        return LEX_MORE;
                /* Drop trailing whitespace: the value ends at its last visible byte. */
                p->arena.len = p->value_end;
                if (!arena_end_string(p) || !add_field(p))
                        return LEX_ERROR;
                process_field(p);
                return p->state == L_FAILED ? LEX_ERROR : LEX_MORE;
        case L_FIELDS_END_LF:
                if (c != '\n') {
                        fail(p, 400, "bare CR at the end of the %s section",
                             p->in_trailers ? "trailer" : "header");
                        return LEX_ERROR;
                }
                if (p->in_trailers)
                        return LEX_END;
                if (!finish_head(p))
                        return LEX_ERROR;
                return p->state == L_FAILED ? LEX_ERROR : LEX_HEAD;
        default:
                fail(p, 400, "internal parser state error");
                return LEX_ERROR;
        }
}

enum run_kind {
        RUN_VALUE,  /* field-vchar and whitespace */
        RUN_NAME,   /* tchar */
        RUN_TARGET, /* target characters but '%' (an escape is checked byte by byte) */
};

static bool in_run(enum run_kind kind, unsigned char c)
{
        switch (kind) {
        case RUN_VALUE:
                return is_field_vchar(c) || is_ows(c);
        case RUN_NAME:
                return is_tchar(c);
        case RUN_TARGET:
                return is_target_char(c) && c != '%';
        }
        return false;
}

/* The end of the run of `kind` that starts with data[i] (which head_bytes already counts), counted
 * into head_bytes. The run stops at the cap so that the error falls on the first byte beyond it, as
 * it does byte by byte: llhttp then reads the same prefix whatever the reads were. */
static size_t run_end(struct orch_http_parser *p, const char *data, size_t i, size_t len, enum run_kind kind)
{
        size_t room = p->limits.max_header_bytes - p->head_bytes, j = i + 1;

        while (j < len && j - i - 1 < room && in_run(kind, (unsigned char)data[j]))
                j++;
        p->head_bytes += j - i - 1;
        return j;
}

static bool in_field_section(enum lex_state s)
{
        return s >= L_FIELD_START && s <= L_FIELDS_END_LF;
}

/* Runs the lexer over data until an event boundary. *ret_used: the bytes it accepted. An allocation
 * failure is LEX_ERROR without fail() (the caller reports -ENOMEM). */
static enum lex_result lex(struct orch_http_parser *p, const char *data, size_t len, size_t *ret_used)
{
        size_t i = 0;
        enum lex_result r = LEX_MORE;

        while (i < len) {
                unsigned char c = (unsigned char)data[i];
                bool head = p->state < L_HEAD_DONE || in_field_section(p->state);

                if (p->state == L_CHUNK_DATA) {
                        r = LEX_CHUNK_DATA;
                        break;
                }
                if (head && ++p->head_bytes > p->limits.max_header_bytes) {
                        too_large(p);
                        r = LEX_ERROR;
                        break;
                }
                if (!p->in_message)
                        p->in_message = true;
                /* Runs of value, name and target bytes, the bulk of a head, skip the per-byte
                 * dispatch: the run is what the byte-by-byte states would append one at a time. */
                if (p->state == L_VALUE && (is_field_vchar(c) || is_ows(c))) {
                        size_t j = run_end(p, data, i, len, RUN_VALUE), k;

                        if (!arena_put(p, data + i, j - i)) {
                                r = LEX_ERROR;
                                break;
                        }
                        for (k = j; k > i && is_ows((unsigned char)data[k - 1]); k--)
                                ;
                        if (k > i)
                                p->value_end = p->arena.len - (j - k);
                        i = j;
                        continue;
                }
                if ((p->state == L_NAME && is_tchar(c)) ||
                    (p->state == L_TARGET && p->pct_left == 0 && is_target_char(c) && c != '%')) {
                        size_t j = run_end(p, data, i, len, p->state == L_NAME ? RUN_NAME : RUN_TARGET);

                        if (!arena_put(p, data + i, j - i)) {
                                r = LEX_ERROR;
                                break;
                        }
                        i = j;
                        continue;
                }
                r = head ? lex_head_byte(p, c) : lex_chunk_byte(p, c);
                if (r == LEX_ERROR)
                        break;
                i++;
                if (r != LEX_MORE)
                        break;
        }
        *ret_used = i;
        return r;
}

/* ---- the public parser ---- */

int orch_http_parser_new(enum orch_http_kind kind, const struct orch_http_limits *limits,
                         struct orch_http_parser **ret)
{
        struct orch_http_parser *p;

        if (kind != ORCH_HTTP_REQUEST && kind != ORCH_HTTP_RESPONSE)
                return -EINVAL;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->kind = kind;
        if (limits)
                p->limits = *limits;
        if (p->limits.max_header_bytes == 0)
                p->limits.max_header_bytes = ORCH_HTTP_DEFAULT_MAX_HEADER_BYTES;
        if (p->limits.max_headers == 0)
                p->limits.max_headers = ORCH_HTTP_DEFAULT_MAX_HEADERS;
        if (p->limits.max_body_bytes == 0)
                p->limits.max_body_bytes = ORCH_HTTP_DEFAULT_MAX_BODY_BYTES;
        orch_http_parser_next(p);
        *ret = p;
        return 0;
}

struct orch_http_parser *orch_http_parser_free(struct orch_http_parser *p)
{
        if (p) {
                orch_buf_release(&p->arena);
                free(p->fields);
                free(p);
        }
        return NULL;
}

void orch_http_parser_next(struct orch_http_parser *p)
{
        bool head_request = p->head_request;

        /* The next message of a connection most likely has a head like this one's: buffers of a usual
         * size are kept (growing them again cost ~1,500 instructions a message, a tenth of a proxied
         * request), larger ones given back. Idle connections that must hold less drop the whole
         * parser (the gateway does above a thousand connections a worker). */
        if (p->arena.cap > ARENA_KEEP)
                orch_buf_release(&p->arena);
        else
                orch_buf_reset(&p->arena);
        if (p->fields_cap > FIELDS_KEEP) {
                free(p->fields);
                p->fields = NULL;
                p->fields_cap = 0;
        }
        p->n_fields = 0;

        p->state = p->kind == ORCH_HTTP_REQUEST ? L_REQ_START : L_RESP_VERSION;
        p->in_message = p->in_trailers = p->head_done = p->first_field = false;
        p->head_bytes = p->line_bytes = p->n_trailers = 0;
        p->ver_idx = p->status_digits = p->pct_left = 0;
        p->method_off = p->target_off = p->reason_off = p->name_off = p->value_off = p->value_end = 0;
        p->seen_cl = p->seen_te = p->te_chunked_last = p->te_unsupported = false;
        p->te_chunked = p->n_host = 0;
        p->conn_close = p->conn_keep_alive = p->conn_upgrade = p->has_upgrade = p->expect_continue = false;
        p->content_length = 0;
        p->body_mode = BODY_NONE;
        p->upgrade = false;
        p->chunk_size = p->chunk_left = p->body_received = 0;
        p->head = (struct orch_http_head){0};
        p->head_request = head_request;
        p->body_limit = p->limits.max_body_bytes;

        llhttp_init(&p->ll, p->kind == ORCH_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &ll_settings);
        p->ll_head_done = p->ll_message_done = false;
        p->ll_body_bytes = 0;
        p->ll_disagreement = NULL;
        p->ll_bad_method = false;
        p->err_status = 0;
        p->err_reason[0] = '\0';
}

const struct orch_http_head *orch_http_parser_head(const struct orch_http_parser *p)
{
        return p->head_done ? &p->head : NULL;
}

bool orch_http_parser_in_message(const struct orch_http_parser *p)
{
        return p->in_message;
}

void orch_http_parser_set_body_limit(struct orch_http_parser *p, uint64_t max_body_bytes)
{
        p->body_limit = max_body_bytes;
}

void orch_http_parser_set_head_request(struct orch_http_parser *p, bool head_request)
{
        p->head_request = head_request;
}

static int complete(struct orch_http_parser *p, struct orch_http_event *ret)
{
        p->state = L_COMPLETE;
        ret->type = p->upgrade ? ORCH_HTTP_EVENT_UPGRADE : ORCH_HTTP_EVENT_COMPLETE;
        return 0;
}

static void start_body(struct orch_http_parser *p)
{
        switch (p->body_mode) {
        case BODY_NONE:
                p->state = L_MESSAGE_END;
                break;
        case BODY_IDENTITY:
                if (p->content_length > p->body_limit) {
                        fail(p, 413,
                             "body of %" PRIu64 " bytes is larger than the limit of %" PRIu64 " bytes",
                             p->content_length, p->body_limit);
                        break;
                }
                p->state = L_BODY_IDENTITY;
                break;
        case BODY_CHUNKED:
                p->line_bytes = 0;
                p->state = L_CHUNK_SIZE_START;
                break;
        case BODY_EOF:
                p->state = L_BODY_EOF;
                break;
        }
}

int orch_http_parser_execute(struct orch_http_parser *p, const char *data, size_t len,
                             struct orch_http_event *ret)
{
        size_t used = 0;
        enum lex_result r;

        *ret = (struct orch_http_event){.type = ORCH_HTTP_EVENT_NEED_MORE};
        if (!data)
                len = 0;
        if (p->state == L_COMPLETE)
                return -EBUSY;
        if (p->state == L_HEAD_DONE)
                start_body(p);
        if (p->state == L_FAILED)
                return report_error(p, ret);
        if (p->state == L_MESSAGE_END)
                return complete(p, ret);

        if (p->state == L_BODY_IDENTITY || p->state == L_BODY_EOF) {
                size_t n = len;
                bool ends;

                if (p->state == L_BODY_IDENTITY) {
                        n = (size_t)MIN((uint64_t)len, p->content_length - p->body_received);
                } else {
                        /* Up to the cap, then an error at the first byte beyond it, however the bytes
                         * are split between calls. */
                        n = (size_t)MIN((uint64_t)len, p->body_limit - MIN(p->body_limit, p->body_received));
                        if (n == 0 && len > 0) {
                                fail(p, 413, "body larger than %" PRIu64 " bytes", p->body_limit);
                                return report_error(p, ret);
                        }
                }
                if (n == 0)
                        return 0;
                p->body_received += n;
                ends = p->state == L_BODY_IDENTITY && p->body_received == p->content_length;
                if (!feed_llhttp(p, data, n, ends))
                        return report_error(p, ret);
                if (ends)
                        p->state = L_MESSAGE_END;
                ret->type = ORCH_HTTP_EVENT_BODY;
                ret->consumed = n;
                ret->body = data;
                ret->body_len = n;
                return 0;
        }

        r = lex(p, data, len, &used);
        switch (r) {
        case LEX_ERROR:
                if (p->state != L_FAILED)
                        return -ENOMEM;
                p->replace_error = true;
                (void)feed_llhttp(p, data, used, false);
                p->replace_error = false;
                return report_error(p, ret);
        case LEX_MORE:
                if (!feed_llhttp(p, data, used, false))
                        return report_error(p, ret);
                ret->consumed = used;
                return 0;
        case LEX_HEAD:
                if (!feed_llhttp(p, data, used, p->body_mode == BODY_NONE))
                        return report_error(p, ret);
                p->state = L_HEAD_DONE;
                ret->type = ORCH_HTTP_EVENT_HEAD;
                ret->consumed = used;
                return 0;
        case LEX_END:
                if (!feed_llhttp(p, data, used, true))
                        return report_error(p, ret);
                ret->consumed = used;
                return complete(p, ret);
        case LEX_CHUNK_DATA: {
                size_t n = (size_t)MIN((uint64_t)(len - used), p->chunk_left);

                p->chunk_left -= n;
                p->body_received += n;
                if (p->chunk_left == 0)
                        p->state = L_CHUNK_DATA_CR;
                if (!feed_llhttp(p, data, used + n, false))
                        return report_error(p, ret);
                ret->consumed = used + n;
                if (n > 0) {
                        ret->type = ORCH_HTTP_EVENT_BODY;
                        ret->body = data + used;
                        ret->body_len = n;
                }
                return 0;
        }
        }
        return -EINVAL;
}

int orch_http_parser_finish(struct orch_http_parser *p, struct orch_http_event *ret)
{
        *ret = (struct orch_http_event){.type = ORCH_HTTP_EVENT_NEED_MORE};
        switch (p->state) {
        case L_FAILED:
                return report_error(p, ret);
        case L_COMPLETE:
                return 0;
        case L_MESSAGE_END:
                return complete(p, ret);
        case L_HEAD_DONE:
                if (p->body_mode == BODY_NONE)
                        return complete(p, ret);
                if (p->body_mode != BODY_EOF)
                        break;
                p->state = L_BODY_EOF;
                return orch_http_parser_finish(p, ret);
        case L_BODY_EOF:
                if (llhttp_finish(&p->ll) != HPE_OK || !p->ll_message_done) {
                        fail(p, 400,
                             "ambiguous message: llhttp does not see the end of the message at the close");
                        return report_error(p, ret);
                }
                return complete(p, ret);
        default:
                if (!p->in_message)
                        return 0;
                break;
        }
        fail(p, 400, "the connection closed in the middle of a message");
        return report_error(p, ret);
}

const char *orch_http_head_header(const struct orch_http_head *h, const char *name)
{
        /* The first byte folded (letters only fold to each other under | 0x20) rules most out without
         * a call: the gateway looks up fields of every head. */
        unsigned char first = (unsigned char)name[0] | 0x20;

        for (size_t i = 0; i < h->n_headers; i++)
                if (((unsigned char)h->headers[i].name[0] | 0x20) == first &&
                    strcasecmp(h->headers[i].name, name) == 0)
                        return h->headers[i].value;
        return NULL;
}

/* ---- builders ---- */

const char *orch_http_status_reason(int status)
{
        static const struct {
                int status;
                const char *reason;
        } table[] = {
                {100, "Continue"},
                {101, "Switching Protocols"},
                {200, "OK"},
                {201, "Created"},
                {202, "Accepted"},
                {203, "Non-Authoritative Information"},
                {204, "No Content"},
                {205, "Reset Content"},
                {206, "Partial Content"},
                {300, "Multiple Choices"},
                {301, "Moved Permanently"},
                {302, "Found"},
                {303, "See Other"},
                {304, "Not Modified"},
                {307, "Temporary Redirect"},
                {308, "Permanent Redirect"},
                {400, "Bad Request"},
                {401, "Unauthorized"},
                {403, "Forbidden"},
                {404, "Not Found"},
                {405, "Method Not Allowed"},
                {406, "Not Acceptable"},
                {408, "Request Timeout"},
                {409, "Conflict"},
                {410, "Gone"},
                {411, "Length Required"},
                {412, "Precondition Failed"},
                {413, "Content Too Large"},
                {414, "URI Too Long"},
                {415, "Unsupported Media Type"},
                {416, "Range Not Satisfiable"},
                {417, "Expectation Failed"},
                {421, "Misdirected Request"},
                {422, "Unprocessable Content"},
                {426, "Upgrade Required"},
                {428, "Precondition Required"},
                {429, "Too Many Requests"},
                {431, "Request Header Fields Too Large"},
                {500, "Internal Server Error"},
                {501, "Not Implemented"},
                {502, "Bad Gateway"},
                {503, "Service Unavailable"},
                {504, "Gateway Timeout"},
                {505, "HTTP Version Not Supported"},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].status == status)
                        return table[i].reason;
        return "Unknown";
}

bool orch_http_token_valid(const char *s)
{
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if (!is_tchar((unsigned char)*s))
                        return false;
        return true;
}

bool orch_http_field_value_valid(const char *s)
{
        size_t len;

        if (!s)
                return false;
        len = strlen(s);
        if (len > 0 && (is_ows((unsigned char)s[0]) || is_ows((unsigned char)s[len - 1])))
                return false;
        for (; *s; s++)
                if (!is_field_vchar((unsigned char)*s) && !is_ows((unsigned char)*s))
                        return false;
        return true;
}

static void buf_truncate(struct orch_buf *b, size_t len)
{
        if (b->oom || !b->data)
                return;
        b->len = len;
        b->data[len] = '\0';
}

static int put_fields_and_framing(struct orch_buf *out, const struct orch_http_header *headers, size_t n,
                                  int64_t body_length)
{
        if (body_length < ORCH_HTTP_BODY_NONE)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!orch_http_token_valid(headers[i].name) ||
                    !orch_http_field_value_valid(headers[i].value))
                        return -EINVAL;
                /* Framing is ours to write: a second copy is exactly what smuggling needs. */
                if (strcasecmp(headers[i].name, "Content-Length") == 0 ||
                    strcasecmp(headers[i].name, "Transfer-Encoding") == 0)
                        return -EINVAL;
                orch_buf_printf(out, "%s: %s\r\n", headers[i].name, headers[i].value);
        }
        if (body_length >= 0)
                orch_buf_printf(out, "Content-Length: %" PRId64 "\r\n", body_length);
        else if (body_length == ORCH_HTTP_BODY_CHUNKED)
                orch_buf_puts(out, "Transfer-Encoding: chunked\r\n");
        orch_buf_puts(out, "\r\n");
        return out->oom ? -ENOMEM : 0;
}

int orch_http_response_head(struct orch_buf *out, int status, const struct orch_http_header *headers,
                            size_t n_headers, int64_t body_length)
{
        size_t mark = out->len;
        int r;

        if (status < 100 || status > 599)
                return -EINVAL;
        orch_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, orch_http_status_reason(status));
        r = put_fields_and_framing(out, headers, n_headers, body_length);
        if (r < 0)
                buf_truncate(out, mark);
        return r;
}

int orch_http_request_head(struct orch_buf *out, const char *method, const char *target,
                           const struct orch_http_header *headers, size_t n_headers, int64_t body_length)
{
        size_t mark = out->len;
        int r;

        if (!orch_http_token_valid(method) || !target || !*target)
                return -EINVAL;
        for (const char *c = target; *c; c++)
                if (!is_target_char((unsigned char)*c) && *c != '%')
                        return -EINVAL;
        orch_buf_printf(out, "%s %s HTTP/1.1\r\n", method, target);
        r = put_fields_and_framing(out, headers, n_headers, body_length);
        if (r < 0)
                buf_truncate(out, mark);
        return r;
}

int orch_http_chunk(struct orch_buf *out, const void *data, size_t len)
{
        if (len == 0)
                return 0;
        orch_buf_printf(out, "%zx\r\n", len);
        orch_buf_put(out, data, len);
        orch_buf_puts(out, "\r\n");
        return out->oom ? -ENOMEM : 0;
}

int orch_http_chunk_end(struct orch_buf *out)
{
        return orch_buf_puts(out, "0\r\n\r\n");
}

/* ---- URLs ---- */

int orch_http_percent_decode(const char *s, size_t len, bool plus_is_space, char **ret)
{
        _cleanup_(freep) char *d = malloc(len + 1);
        size_t j = 0;

        if (!d)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c == '%') {
                        int hi, lo;

                        if (len - i < 3)
                                return -EINVAL;
                        hi = hex_value((unsigned char)s[i + 1]);
                        lo = hex_value((unsigned char)s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return -EINVAL;
                        d[j++] = (char)(hi * 16 + lo);
                        i += 2;
                } else if (c == '+' && plus_is_space) {
                        d[j++] = ' ';
                } else if (c == '\0') {
                        return -EINVAL;
                } else {
                        d[j++] = (char)c;
                }
        }
        d[j] = '\0';
        *ret = TAKE_PTR(d);
        return 0;
}

int orch_http_query_get(const char *query, const char *name, char **ret)
{
        const char *s = query;

        if (!query)
                return -ENOENT;
        while (*s) {
                size_t plen = strcspn(s, "&");
                const char *eq = memchr(s, '=', plen);
                size_t nlen = eq ? (size_t)(eq - s) : plen;
                _cleanup_(freep) char *key = NULL;
                int r;

                if (plen > 0) {
                        r = orch_http_percent_decode(s, nlen, true, &key);
                        if (r < 0)
                                return r;
                        if (streq(key, name)) {
                                if (!eq)
                                        return (*ret = strdup("")) ? 0 : -ENOMEM;
                                return orch_http_percent_decode(eq + 1, plen - nlen - 1, true, ret);
                        }
                }
                s += plen;
                if (*s == '&')
                        s++;
        }
        return -ENOENT;
}
