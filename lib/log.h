/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Logging: one logfmt line per message on stderr
 *   ts=2026-11-26T10:54:22.123Z level=info service=web instance=web-1 msg="instance started" pid=42
 * or, when the process runs under systemd with its stderr connected to the
 * journal, a journald entry with structured fields (ORCH_SERVICE,
 * ORCH_INSTANCE, ORCH_NODE). liborch itself never logs above debug: it
 * returns errors and the caller, which knows what to do, logs them once.
 */

#include <stdarg.h>

#include "macro.h"

enum orch_log_level {
        ORCH_LOG_ERROR,
        ORCH_LOG_WARN,
        ORCH_LOG_INFO,
        ORCH_LOG_DEBUG,
        _ORCH_LOG_LEVEL_MAX,
};

/* Optional context of a message: which service, instance and node it is about. */
struct orch_log_ctx {
        const char *service;
        const char *instance;
        const char *node;
};

enum orch_log_target {
        ORCH_LOG_TARGET_STDERR,
        ORCH_LOG_TARGET_JOURNAL,
};

void orch_log_set_level(enum orch_log_level level);
enum orch_log_level orch_log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -EINVAL for anything else. */
int orch_log_level_from_string(const char *s, enum orch_log_level *ret);
const char *orch_log_level_to_string(enum orch_log_level level);
void orch_log_set_target(enum orch_log_target target);
/* Picks the journal when stderr is connected to it (JOURNAL_STREAM), stderr otherwise. */
void orch_log_open_auto(void);
/* Name of the program, logged as "prog=" (optional). */
void orch_log_set_program(const char *name);
/* Node name added to every line as node= and ORCH_NODE= (optional). */
void orch_log_set_node(const char *node);

struct orch_buf;
/* Appends " key=value" in logfmt to b (the value quoted and escaped when it is not a simple token);
 * nothing when value is NULL. For other logfmt lines, such as the gateway's access log. */
void orch_log_append_field(struct orch_buf *b, const char *key, const char *value);

/* Extra key=value fields follow the message: pass NULL-terminated pairs of strings. */
void orch_log_fields(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg, ...)
        __attribute__((sentinel));

_printf_(3, 4) void orch_log(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *fmt, ...);
_printf_(3, 0) void orch_logv(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *fmt,
                              va_list ap);

#define log_error(...) orch_log(ORCH_LOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)  orch_log(ORCH_LOG_WARN, NULL, __VA_ARGS__)
#define log_info(...)  orch_log(ORCH_LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)                                                                                       \
        do {                                                                                                 \
                if (_unlikely_(orch_log_get_level() >= ORCH_LOG_DEBUG))                                      \
                        orch_log(ORCH_LOG_DEBUG, NULL, __VA_ARGS__);                                         \
        } while (0)

/* Log with an errno-style error appended as err="...", and return the (negative) error. */
#define log_error_errno(r, fmt, ...) orch_log_errno(ORCH_LOG_ERROR, NULL, r, fmt, ##__VA_ARGS__)
#define log_warn_errno(r, fmt, ...)  orch_log_errno(ORCH_LOG_WARN, NULL, r, fmt, ##__VA_ARGS__)
_printf_(4, 5) int orch_log_errno(enum orch_log_level level, const struct orch_log_ctx *ctx, int r,
                                  const char *fmt, ...);
