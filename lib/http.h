/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Strict, incremental HTTP/1.1 message parsing (requests for orchd's API and
 * the gateway, responses for the CLI client and the gateway's upstreams),
 * plus the small builders every side needs: response and request heads,
 * chunked encoding, reason phrases, percent-decoding and query parameters.
 *
 * Two parsers read every byte. A strict lexer (RFC 9112, without any of the
 * tolerance it allows) decides where the head, each chunk and the message
 * end, rejects what request smuggling relies on (obs-fold, whitespace
 * before the colon, bare CR or LF, Content-Length together with
 * Transfer-Encoding, repeated or malformed Content-Length, a
 * Transfer-Encoding other than a lone final "chunked", chunk data not
 * followed by CRLF, ...) and collects the head. llhttp is fed exactly the
 * same bytes in lockstep and must agree: on the method, the framing of the
 * body and the byte where the message ends. Any disagreement is a 400, so a
 * message is accepted only when both read it the same way. See docs/http.md.
 *
 * The parser is pull-style: orch_http_parser_execute() consumes input up to
 * the next event (a head, a piece of body, the end of the message, an error)
 * and says how many bytes it took. Bytes it did not consume must be passed
 * again at the start of the next call. After the end of a message it stops
 * until orch_http_parser_next(), so a server parses a pipelined request only
 * once it is ready to answer it. Between messages a parser keeps its head
 * buffers up to a usual size (1 KiB of text, 16 fields) for the next one and
 * gives larger ones back; a caller that must hold less frees the parser.
 */

#include <stdint.h>
#include <sys/types.h>

#include "macro.h"
#include "util.h"

enum orch_http_kind {
        ORCH_HTTP_REQUEST,
        ORCH_HTTP_RESPONSE,
};

/* Caps on what one message may make the parser hold. 0 in a field means the default. */
struct orch_http_limits {
        /* Start line, header fields and their CRLFs: 431 (414 when the request target alone is too long).
         * The same cap applies to a chunked message's trailer section. Default 16 KiB. */
        size_t max_header_bytes;
        /* Header field lines (and trailer field lines): 431. Default 100. */
        size_t max_headers;
        /* The body, after removing chunked framing: 413. Default 8 MiB. Can be changed per message
         * after its head with orch_http_parser_set_body_limit(). */
        uint64_t max_body_bytes;
};

#define ORCH_HTTP_DEFAULT_MAX_HEADER_BYTES (16U * 1024U)
#define ORCH_HTTP_DEFAULT_MAX_HEADERS      100U
#define ORCH_HTTP_DEFAULT_MAX_BODY_BYTES   (8ULL * 1024ULL * 1024ULL)
/* A chunk-size line with its extensions; longer ones are a 400 (unbounded extensions are a DoS). */
#define ORCH_HTTP_MAX_CHUNK_LINE 4096U

struct orch_http_header {
        const char *name;  /* as received; compare case-insensitively */
        const char *value; /* without leading and trailing whitespace */
};

/* The head of a message. Every pointer stays valid until orch_http_parser_next() or _free(). */
struct orch_http_head {
        /* Requests. */
        const char *method;    /* "GET", ... (case-sensitive, one llhttp knows) */
        const char *target;    /* the request-target as received */
        const char *path;      /* origin-form and absolute-form: the path ("/" when empty), not decoded;
                                * "*" for asterisk-form; NULL for CONNECT */
        const char *query;     /* after '?', not decoded; NULL when there is no '?' */
        const char *authority; /* absolute-form and CONNECT: host[:port] from the target; else NULL */
        const char *host;      /* the Host header field (NULL when absent, allowed in HTTP/1.0) */
        /* Responses. */
        int status;
        const char *reason;

        unsigned version_minor; /* HTTP/1.<minor>: 0 or 1 */
        const struct orch_http_header *headers;
        size_t n_headers;

        bool keep_alive; /* another message may follow on this connection */
        bool chunked;
        bool has_content_length;
        uint64_t content_length;
        /* Upgrade (Connection: upgrade + Upgrade, or a CONNECT request, or a 101 response): the message
         * ends with ORCH_HTTP_EVENT_UPGRADE and what follows it is not HTTP unless the caller decides to
         * ignore the upgrade and calls orch_http_parser_next(). */
        bool upgrade;
        bool expect_continue; /* Expect: 100-continue */
};

enum orch_http_event_type {
        ORCH_HTTP_EVENT_NEED_MORE, /* every byte consumed, nothing to report: read more */
        ORCH_HTTP_EVENT_HEAD,      /* orch_http_parser_head() is ready */
        ORCH_HTTP_EVENT_BODY,      /* body/body_len: a piece of the body (pointing into the input) */
        ORCH_HTTP_EVENT_COMPLETE,  /* the message ended; call orch_http_parser_next() for the next one */
        ORCH_HTTP_EVENT_UPGRADE,   /* the message ended and the connection switches protocols */
        ORCH_HTTP_EVENT_ERROR,     /* status and reason say what is wrong; the parser stays failed */
        _ORCH_HTTP_EVENT_MAX,
};

struct orch_http_event {
        enum orch_http_event_type type;
        size_t consumed; /* bytes of the input used, also for events other than NEED_MORE */
        const char *body;
        size_t body_len;
        /* ERROR: the status to answer (400, 413, 414, 417, 431, 501, 505) and a sentence for a human. */
        int status;
        const char *reason;
};

struct orch_http_parser;

int orch_http_parser_new(enum orch_http_kind kind, const struct orch_http_limits *limits,
                         struct orch_http_parser **ret);
struct orch_http_parser *orch_http_parser_free(struct orch_http_parser *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_http_parser *, orch_http_parser_free)

/* Parses data up to the next event. Returns 0, -ENOMEM, or -EBUSY when called after COMPLETE or
 * UPGRADE without orch_http_parser_next(). Call it again (with the unconsumed rest, possibly
 * empty) until it reports NEED_MORE: events may consume no bytes. */
int orch_http_parser_execute(struct orch_http_parser *p, const char *data, size_t len,
                             struct orch_http_event *ret);
/* The peer closed its side. Completes a response whose body runs until the close; reports an error
 * for any other message cut short; NEED_MORE when no message had started. */
int orch_http_parser_finish(struct orch_http_parser *p, struct orch_http_event *ret);
/* Forgets the message that completed and gets ready for the next one. */
void orch_http_parser_next(struct orch_http_parser *p);

/* The head of the current message: NULL before its HEAD event. */
const struct orch_http_head *orch_http_parser_head(const struct orch_http_parser *p);
/* True once a byte of a message has been consumed (servers time the head from here). */
bool orch_http_parser_in_message(const struct orch_http_parser *p);
/* The body limit of the current message; call between its HEAD event and its body. */
void orch_http_parser_set_body_limit(struct orch_http_parser *p, uint64_t max_body_bytes);
/* Responses: the request was HEAD, so this response has no body whatever its header says.
 * Call before the response's head is parsed. */
void orch_http_parser_set_head_request(struct orch_http_parser *p, bool head_request);

/* First value of a header field (case-insensitive name), or NULL. */
const char *orch_http_head_header(const struct orch_http_head *h, const char *name);

/* "OK", "Not Found", ...; "Unknown" for codes without a registered phrase. */
const char *orch_http_status_reason(int status);

/* token (RFC 9110 §5.6.2) and field-value (no CTLs but HTAB, no leading or trailing whitespace). */
bool orch_http_token_valid(const char *s);
bool orch_http_field_value_valid(const char *s);

/* Framing of the body announced by a head that is built here. */
#define ORCH_HTTP_BODY_CHUNKED (-1) /* Transfer-Encoding: chunked */
#define ORCH_HTTP_BODY_NONE    (-2) /* no framing header: 1xx/204/304, or a body that ends at close */

/* Appends "HTTP/1.1 STATUS REASON", the header fields, the framing header (Content-Length for
 * body_length >= 0) and the empty line. Names and values are validated (no response splitting);
 * Content-Length and Transfer-Encoding must not be among the fields. -EINVAL leaves out unchanged. */
int orch_http_response_head(struct orch_buf *out, int status, const struct orch_http_header *headers,
                            size_t n_headers, int64_t body_length);
/* The same for a request line: METHOD TARGET HTTP/1.1. */
int orch_http_request_head(struct orch_buf *out, const char *method, const char *target,
                           const struct orch_http_header *headers, size_t n_headers, int64_t body_length);
/* One chunk (appends nothing for len 0: an empty chunk would end the body), and the last chunk. */
int orch_http_chunk(struct orch_buf *out, const void *data, size_t len);
int orch_http_chunk_end(struct orch_buf *out);

/* Percent-decodes s[0..len). plus_is_space decodes '+' as a space (query strings). Rejects malformed
 * escapes and anything that decodes to NUL with -EINVAL. */
int orch_http_percent_decode(const char *s, size_t len, bool plus_is_space, char **ret);
/* The decoded value of the first parameter `name` in a query string ("a=1&b=2"); a parameter
 * without '=' has the value "". -ENOENT when absent, -EINVAL when malformed. */
int orch_http_query_get(const char *query, const char *name, char **ret);
