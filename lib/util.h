/* SPDX-License-Identifier: MIT */
#pragma once

/* String, buffer and number helpers: the bounded replacements for what banned.h forbids. */

#include <stdarg.h>
#include <stdint.h>

#include "macro.h"

/* A growable byte buffer, always NUL-terminated. After an allocation failure `oom` is set and
 * further appends are ignored, so callers check once at the end. */
struct orch_buf {
        char *data;
        size_t len;
        size_t cap;
        bool oom;
};

void orch_buf_release(struct orch_buf *b);
void orch_buf_reset(struct orch_buf *b);
int orch_buf_reserve(struct orch_buf *b, size_t extra);
int orch_buf_put(struct orch_buf *b, const void *data, size_t len);
int orch_buf_puts(struct orch_buf *b, const char *s);
int orch_buf_putc(struct orch_buf *b, char c);
_printf_(2, 3) int orch_buf_printf(struct orch_buf *b, const char *fmt, ...);
_printf_(2, 0) int orch_buf_vprintf(struct orch_buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void orch_buf_consume(struct orch_buf *b, size_t n);
/* Takes the data out (the caller frees it); the buffer is empty afterwards. */
char *orch_buf_steal(struct orch_buf *b);

/* Copies at most size-1 bytes and always terminates; returns strlen(src) (truncation when >= size). */
size_t orch_strlcpy(char *dst, const char *src, size_t size);
/* snprintf that returns -ENOBUFS on truncation instead of a length. */
_printf_(3, 4) int orch_snprintf(char *buf, size_t size, const char *fmt, ...);
/* Allocating printf; NULL on allocation failure. */
_printf_(1, 2) char *orch_strdup_printf(const char *fmt, ...);
bool orch_endswith(const char *s, const char *suffix);

/* NULL-terminated string vectors. */
char **orch_strv_free(char **v);
size_t orch_strv_length(char *const *v);
char **orch_strv_copy(char *const *v);
bool orch_strv_contains(char *const *v, const char *s);
/* Appends a copy of s; -ENOMEM on failure (the vector is unchanged). */
int orch_strv_push(char ***v, const char *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, orch_strv_free)

/* Strict decimal parsing: the whole string, no sign for unsigned, no overflow. -EINVAL/-ERANGE. */
int orch_parse_u64(const char *s, uint64_t *ret);
int orch_parse_i64(const char *s, int64_t *ret);
int orch_parse_u32(const char *s, uint32_t *ret);

/* Edit distance, for "did you mean" suggestions; gives up (returns SIZE_MAX) above `max`. */
size_t orch_levenshtein(const char *a, const char *b, size_t max);
/* The closest candidate to `word` within a distance that makes sense for its length, or NULL. */
const char *orch_suggest(const char *word, const char *const *candidates, size_t n);

/* Validates UTF-8 and rejects NUL bytes; returns the offset of the first bad byte or -1 if valid. */
ssize_t orch_utf8_invalid_offset(const char *s, size_t len);

/* Constant-time comparison of secrets (tokens): the time depends only on the lengths. */
bool orch_secret_equal(const char *a, const char *b);

/* Monotonic time. */
uint64_t orch_now_usec(void);
uint64_t orch_now_msec(void);
/* Wall clock in milliseconds since the epoch. */
uint64_t orch_realtime_msec(void);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-26T10:54:22.123Z */
int orch_format_time(uint64_t realtime_msec, char *buf, size_t size);

/* Reads a whole (small) file, NUL-terminated; refuses files larger than max. */
int orch_read_file(const char *path, size_t max, char **ret, size_t *ret_len);
/* Writes a file atomically (temp file + fsync + rename) with the given mode. */
int orch_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* mkdir -p with the given mode for created components. */
int orch_mkdir_p(const char *path, unsigned mode);
/* Fills buf with n random bytes from getrandom(). */
int orch_random_bytes(void *buf, size_t n);
/* n random bytes as 2n lowercase hex characters plus NUL into buf (size >= 2n+1). */
int orch_random_hex(char *buf, size_t n);
