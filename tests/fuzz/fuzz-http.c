/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "http.h"
#include "util.h"
#include "banned.h"

/*
 * libFuzzer target for lib/http.c: the strict lexer with llhttp in lockstep.
 *
 * The first byte picks the mode (request or response, HEAD, small caps) and seeds the read sizes. The
 * rest is parsed twice, once in one read and once in reads of random sizes, the way a server reads
 * a socket (unconsumed bytes come first in the next read). Oracles, any failure aborts:
 *   - both runs report the same events, heads, bodies and errors;
 *   - the parser never consumes more than it was given, body pieces are never empty, bodies respect
 *     the cap;
 *   - every accepted head is strict: lines end in CRLF, no bare CR or LF, no obs-fold, field names
 *     are tokens and values hold no control bytes;
 *   - a complete message never contains CL together with TE, or two CL.
 */

struct mode {
        enum orch_http_kind kind;
        bool head_request;
        struct orch_http_limits limits;
        uint32_t seed;
};

#define check(cond)                                                                                   \
        do {                                                                                          \
                if (!(cond)) {                                                                        \
                        fprintf(stderr, "fuzz-http: check failed at line %d: %s\n", __LINE__, #cond); \
                        abort();                                                                      \
                }                                                                                     \
        } while (0)

static void check_head_bytes(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '\r')
                        check(i + 1 < len && s[i + 1] == '\n');
                if (s[i] == '\n') {
                        check(i > 0 && s[i - 1] == '\r');
                        /* obs-fold: a line that starts with whitespace */
                        check(i + 1 >= len || (s[i + 1] != ' ' && s[i + 1] != '\t'));
                }
                check(s[i] != '\0');
        }
        check(len >= 4 && memcmp(s + len - 4, "\r\n\r\n", 4) == 0);
}

static void check_head(const struct orch_http_head *h, enum orch_http_kind kind)
{
        unsigned n_cl = 0, n_te = 0;

        if (kind == ORCH_HTTP_REQUEST) {
                check(orch_http_token_valid(h->method));
                check(h->target && *h->target);
        } else {
                check(h->status >= 100 && h->status <= 599);
        }
        check(h->version_minor <= 1);
        for (size_t i = 0; i < h->n_headers; i++) {
                check(orch_http_token_valid(h->headers[i].name));
                check(orch_http_field_value_valid(h->headers[i].value));
                if (strcasecmp(h->headers[i].name, "Content-Length") == 0)
                        n_cl++;
                if (strcasecmp(h->headers[i].name, "Transfer-Encoding") == 0)
                        n_te++;
        }
        check(n_cl <= 1);
        check(!(n_cl && n_te));
        check(!h->chunked || n_te > 0);
}

static uint32_t next_rand(uint32_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        return *s;
}

/* Runs the parser over data and returns its transcript. split: random read sizes instead of one read. */
static char *run(const struct mode *m, const char *data, size_t len, bool split)
{
        struct orch_http_parser *p = NULL;
        struct orch_buf t = {0}, pending = {0}, bodies = {0};
        uint32_t seed = m->seed | 1;
        size_t off = 0, stream = 0, msg_start = 0;
        uint64_t body = 0;
        bool stop = false;

        check(orch_http_parser_new(m->kind, &m->limits, &p) == 0);
        orch_http_parser_set_head_request(p, m->head_request);
        while (!stop && off < len) {
                size_t n = split ? 1 + next_rand(&seed) % 64 : len, used = 0;

                n = MIN(n, len - off);
                check(orch_buf_put(&pending, data + off, n) == 0);
                off += n;
                for (;;) {
                        struct orch_http_event ev;
                        const struct orch_http_head *h;
                        int r = orch_http_parser_execute(p, pending.data + used, pending.len - used, &ev);

                        if (r == -ENOMEM)
                                abort();
                        check(r == 0);
                        check(ev.consumed <= pending.len - used);
                        used += ev.consumed;
                        stream += ev.consumed;
                        /* NEED_MORE and the cuts between body pieces depend on the read sizes: the
                         * transcript has neither. */
                        if (ev.type != ORCH_HTTP_EVENT_NEED_MORE && ev.type != ORCH_HTTP_EVENT_BODY) {
                                if (bodies.len) {
                                        orch_buf_printf(&t, "body(%zu:", bodies.len);
                                        orch_buf_put(&t, bodies.data, bodies.len);
                                        orch_buf_puts(&t, ") ");
                                        orch_buf_reset(&bodies);
                                }
                                orch_buf_printf(&t, "%d ", ev.type);
                        }
                        switch (ev.type) {
                        case ORCH_HTTP_EVENT_NEED_MORE:
                                check(used == pending.len);
                                break;
                        case ORCH_HTTP_EVENT_HEAD:
                                h = orch_http_parser_head(p);
                                check(h);
                                check_head(h, m->kind);
                                /* In one read, stream is also the offset in data: check the head's raw
                                 * bytes. */
                                if (!split) {
                                        size_t start = msg_start;

                                        /* Requests may start with empty lines; skip them. */
                                        while (start + 1 < stream && data[start] == '\r' &&
                                               data[start + 1] == '\n')
                                                start += 2;
                                        check_head_bytes(data + start, stream - start);
                                }
                                orch_buf_printf(&t, "(%s %s %d %u %d %d %" PRIu64 " %zu)", strna(h->method),
                                                strna(h->target), h->status, h->version_minor, h->keep_alive,
                                                h->chunked, h->content_length, h->n_headers);
                                for (size_t i = 0; i < h->n_headers; i++)
                                        orch_buf_printf(&t, "[%s:%s]", h->headers[i].name,
                                                        h->headers[i].value);
                                break;
                        case ORCH_HTTP_EVENT_BODY:
                                /* A body piece is the tail of what the event consumed. */
                                check(ev.body_len > 0 && ev.body_len <= ev.consumed &&
                                      ev.body == pending.data + used - ev.body_len);
                                body += ev.body_len;
                                check(body <= m->limits.max_body_bytes);
                                orch_buf_put(&bodies, ev.body, ev.body_len);
                                break;
                        case ORCH_HTTP_EVENT_COMPLETE:
                                body = 0;
                                msg_start = stream;
                                {
                                        struct orch_http_event again;

                                        check(orch_http_parser_execute(p, NULL, 0, &again) == -EBUSY);
                                }
                                orch_http_parser_next(p);
                                break;
                        case ORCH_HTTP_EVENT_UPGRADE:
                        case ORCH_HTTP_EVENT_ERROR:
                                if (ev.type == ORCH_HTTP_EVENT_ERROR) {
                                        check(ev.status >= 400 && ev.status <= 505 && ev.reason &&
                                              *ev.reason);
                                        orch_buf_printf(&t, "(%d %s)", ev.status, ev.reason);
                                }
                                stop = true;
                                break;
                        default:
                                abort();
                        }
                        if (stop || ev.type == ORCH_HTTP_EVENT_NEED_MORE)
                                break;
                }
                orch_buf_consume(&pending, used);
        }
        if (!stop) {
                struct orch_http_event ev;

                check(orch_http_parser_finish(p, &ev) == 0);
                orch_buf_printf(&t, "finish %d %d body(%zu:", ev.type, ev.status, bodies.len);
                orch_buf_put(&t, bodies.data, bodies.len);
                orch_buf_putc(&t, ')');
        }
        orch_buf_release(&pending);
        orch_buf_release(&bodies);
        orch_http_parser_free(p);
        check(!t.oom);
        return orch_buf_steal(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct mode m = {0};
        char *whole, *split;

        if (size < 1)
                return 0;
        m.kind = data[0] & 1 ? ORCH_HTTP_RESPONSE : ORCH_HTTP_REQUEST;
        m.head_request = data[0] & 2;
        /* Small caps half of the time, so the fuzzer reaches 431/413/414 cheaply. */
        if (data[0] & 4)
                m.limits = (struct orch_http_limits){
                        .max_header_bytes = 256, .max_headers = 8, .max_body_bytes = 64};
        else
                m.limits = (struct orch_http_limits){.max_body_bytes = ORCH_HTTP_DEFAULT_MAX_BODY_BYTES};
        m.seed = (uint32_t)data[0] * 2654435761u;
        whole = run(&m, (const char *)data + 1, size - 1, false);
        split = run(&m, (const char *)data + 1, size - 1, true);
        if (!streq(whole, split)) {
                fprintf(stderr, "fuzz-http: one read and random reads disagree\nwhole: %s\nsplit: %s\n",
                        whole, split);
                abort();
        }
        free(whole);
        free(split);
        return 0;
}
