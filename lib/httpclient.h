/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * A small blocking HTTP/1.1 client for the orch CLI and for tests: one request
 * per connection (Connection: close), plain http only, connect and read
 * timeouts, responses read by the strict parser of lib/http.h, and bodies
 * capped (64 MiB by default). A streaming mode hands the body over as it
 * arrives, or a line at a time, for `orch events -f` and `orch logs -f`.
 *
 * Functions return -errno; orch_httpclient_error() then holds a sentence for
 * the user ("connect to 127.0.0.1:7070: Connection refused").
 */

#include <stdint.h>

#include "http.h"
#include "macro.h"

#define ORCH_HTTPCLIENT_DEFAULT_CONNECT_TIMEOUT_MS (10U * 1000U)
#define ORCH_HTTPCLIENT_DEFAULT_READ_TIMEOUT_MS    (60U * 1000U)
#define ORCH_HTTPCLIENT_DEFAULT_MAX_BODY           (64ULL * 1024ULL * 1024ULL)
/* Streaming by lines: a longer line is an error. */
#define ORCH_HTTPCLIENT_MAX_LINE (1024U * 1024U)

struct orch_http_url {
        char *host;    /* without brackets for IPv6 */
        uint16_t port; /* 80 when the URL has none */
        char *path;    /* a prefix for every request target, without a trailing '/'; "" for none */
};

/* Parses http://HOST[:PORT][/PREFIX]: -EINVAL for anything else, -EPROTONOSUPPORT for https. */
int orch_http_url_parse(const char *url, struct orch_http_url *ret);
void orch_http_url_release(struct orch_http_url *u);

struct orch_http_response {
        int status;
        char *reason;
        struct orch_http_header *headers; /* owned copies */
        size_t n_headers;
        char *body; /* NUL-terminated; not filled by a streamed 2xx answer */
        size_t body_len;
};

void orch_http_response_release(struct orch_http_response *r);
const char *orch_http_response_header(const struct orch_http_response *r, const char *name);

struct orch_httpclient_request {
        const char *method;
        const char *target;                     /* "/v1/services?x=1", after the URL's path prefix */
        const struct orch_http_header *headers; /* extra fields */
        size_t n_headers;
        const char *content_type;
        const void *body;
        size_t body_len;
};

struct orch_httpclient;

int orch_httpclient_new(const char *base_url, struct orch_httpclient **ret);
struct orch_httpclient *orch_httpclient_free(struct orch_httpclient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_httpclient *, orch_httpclient_free)

/* Authorization: Bearer TOKEN on every request (NULL: none). -EINVAL for a token that cannot be sent. */
int orch_httpclient_set_token(struct orch_httpclient *c, const char *token);
/* 0 keeps the default for connect; 0 for read means no read timeout (follow streams). */
void orch_httpclient_set_timeouts(struct orch_httpclient *c, uint64_t connect_ms, uint64_t read_ms);
void orch_httpclient_set_max_body(struct orch_httpclient *c, uint64_t max_body);
/* What went wrong in the last failed call. */
const char *orch_httpclient_error(const struct orch_httpclient *c);

/* Sends the request and reads the whole answer (any status) into ret. Errors: -ECONNREFUSED and the
 * other connect errors, -ETIMEDOUT, -EFBIG (body over the cap), -EBADMSG (malformed response),
 * -EHOSTUNREACH/-ENOENT (name resolution), -ENOMEM. */
int orch_httpclient_request(struct orch_httpclient *c, const struct orch_httpclient_request *req,
                            struct orch_http_response *ret);

/* Called with each piece (or line, without its '\n') of a streamed body; a non-zero return stops the
 * stream and becomes orch_httpclient_stream()'s return value. */
typedef int (*orch_httpclient_data_fn)(const char *data, size_t len, void *userdata);

#define ORCH_HTTPCLIENT_LINES 1U

/* Like orch_httpclient_request(), but a 2xx body goes to cb as it arrives instead of into ret (other
 * statuses are read whole into ret, so the caller can print the error). With ORCH_HTTPCLIENT_LINES,
 * cb gets one line at a time; a last line without '\n' is delivered at the end. */
int orch_httpclient_stream(struct orch_httpclient *c, const struct orch_httpclient_request *req,
                           unsigned flags, orch_httpclient_data_fn cb, void *userdata,
                           struct orch_http_response *ret);
