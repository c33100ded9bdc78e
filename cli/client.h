/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The verbs' connection to orchd (SPEC §4) on top of lib/httpclient.h.
 *
 * The server comes from --addr, else ORCH_ADDR, else http://127.0.0.1:7070; the
 * token from ORCH_TOKEN, else the file named by ORCH_TOKEN_FILE, else
 * /var/lib/orch/admin.token when it is readable (orchd's default data dir).
 *
 * This layer is the edge where failures meet the user: every function prints
 * its error as one line on stderr ("orch: cannot reach orchd at ADDR: REASON",
 * or the server's {"error"} text) and returns -errno, so a verb only maps a
 * negative return to ORCH_EXIT_FAILURE. HTTP errors map to -EINVAL (400),
 * -EACCES (401, 403), -ENOENT (404), -EBUSY (409) and -EPROTO (anything else).
 */

#include <jansson.h>

#include "httpclient.h"
#include "macro.h"

#define ORCH_CLIENT_DEFAULT_ADDR       "http://127.0.0.1:7070"
#define ORCH_CLIENT_DEFAULT_TOKEN_FILE "/var/lib/orch/admin.token"

/* --addr: overrides ORCH_ADDR for every client made afterwards. */
void orch_client_set_addr(const char *addr);

struct orch_client;

/* Resolves the address and the token; prints why it cannot (a bad address, an unreadable
 * ORCH_TOKEN_FILE). -EINVAL for a bad address: the caller exits with ORCH_EXIT_USAGE. */
int orch_client_new(struct orch_client **ret);
struct orch_client *orch_client_free(struct orch_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_client *, orch_client_free)

/* The base URL as the user will recognise it ("http://127.0.0.1:7070"). */
const char *orch_client_addr(const struct orch_client *c);

/* No read timeout: for requests that wait (follow streams, rollouts). */
void orch_client_no_read_timeout(struct orch_client *c);

/* Any request; the answer, whatever its status, goes to ret (nothing is printed for an HTTP
 * error: see orch_client_print_error). Transport failures are printed and returned. */
int orch_client_request(struct orch_client *c, const char *method, const char *target,
                        const char *content_type, const void *body, size_t body_len,
                        struct orch_http_response *ret);

/* The server's reason for a non-2xx answer: {"error"} when the body has it, else the status line. */
const char *orch_client_error_text(const struct orch_http_response *r, char *buf, size_t size);
/* Prints "orch: REASON" and returns the -errno for the status. */
int orch_client_print_error(const struct orch_http_response *r);

/* A request with an optional JSON body whose 2xx answer is JSON: *ret gets it (ret may be NULL).
 * Errors are printed; ret_status (optional) gets the HTTP status when there was one. */
int orch_client_json(struct orch_client *c, const char *method, const char *target, const json_t *body,
                     json_t **ret, int *ret_status);

/* GET whose 2xx body is streamed to cb (ORCH_HTTPCLIENT_LINES for one line at a time). A non-zero
 * return of cb ends the stream and is returned. */
int orch_client_stream(struct orch_client *c, const char *target, unsigned flags, orch_httpclient_data_fn cb,
                       void *userdata);

/* Reads every event of /v1/events with an index above `since` (paging through the server's
 * batches), calling cb with each parsed object and its line as sent; a non-zero return of cb stops. */
typedef int (*orch_client_event_fn)(json_t *event, const char *line, size_t len, void *userdata);
int orch_client_events(struct orch_client *c, uint64_t since, orch_client_event_fn cb, void *userdata);

/* A path segment or query value with everything but RFC 3986 unreserved characters
 * percent-encoded (the caller frees it; NULL on allocation failure). */
char *orch_client_escape(const char *s);

/* Ctrl-C ends a follow stream as if it had ended by itself: exit status 0, output flushed. */
void orch_client_exit_on_interrupt(void);
