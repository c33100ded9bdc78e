/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>

#include <systemd/sd-journal.h>

#include "log.h"
#include "util.h"
#include "banned.h"

static enum orch_log_level log_level = ORCH_LOG_INFO;
static enum orch_log_target log_target = ORCH_LOG_TARGET_STDERR;
static const char *log_program;
static const char *log_node;

static const char *const level_names[_ORCH_LOG_LEVEL_MAX] = {
        [ORCH_LOG_ERROR] = "error",
        [ORCH_LOG_WARN] = "warn",
        [ORCH_LOG_INFO] = "info",
        [ORCH_LOG_DEBUG] = "debug",
};

static const int level_priorities[_ORCH_LOG_LEVEL_MAX] = {
        [ORCH_LOG_ERROR] = LOG_ERR,
        [ORCH_LOG_WARN] = LOG_WARNING,
        [ORCH_LOG_INFO] = LOG_INFO,
        [ORCH_LOG_DEBUG] = LOG_DEBUG,
};

void orch_log_set_level(enum orch_log_level level)
{
        log_level = level;
}

enum orch_log_level orch_log_get_level(void)
{
        return log_level;
}

const char *orch_log_level_to_string(enum orch_log_level level)
{
        return level < _ORCH_LOG_LEVEL_MAX ? level_names[level] : NULL;
}

int orch_log_level_from_string(const char *s, enum orch_log_level *ret)
{
        for (size_t i = 0; i < _ORCH_LOG_LEVEL_MAX; i++)
                if (streq(s, level_names[i])) {
                        *ret = (enum orch_log_level)i;
                        return 0;
                }
        return -EINVAL;
}

void orch_log_set_target(enum orch_log_target target)
{
        log_target = target;
}

void orch_log_open_auto(void)
{
        /* systemd sets JOURNAL_STREAM=DEV:INODE for the stream stderr is connected to. It is
         * inherited by children, so compare with what stderr really is. */
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
            (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
                log_target = ORCH_LOG_TARGET_JOURNAL;
        else
                log_target = ORCH_LOG_TARGET_STDERR;
}

void orch_log_set_program(const char *name)
{
        log_program = name;
}

void orch_log_set_node(const char *node)
{
        log_node = node;
}

/* Appends a logfmt value: bare when it is a simple token, quoted and escaped otherwise. */
static void append_value(struct orch_buf *b, const char *v)
{
        bool quote = *v == '\0';

        for (const char *p = v; *p && !quote; p++)
                if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p >= 0x7f)
                        quote = true;
        if (!quote) {
                orch_buf_puts(b, v);
                return;
        }
        orch_buf_putc(b, '"');
        for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
                switch (*p) {
                case '"':
                        orch_buf_puts(b, "\\\"");
                        break;
                case '\\':
                        orch_buf_puts(b, "\\\\");
                        break;
                case '\n':
                        orch_buf_puts(b, "\\n");
                        break;
                case '\t':
                        orch_buf_puts(b, "\\t");
                        break;
                case '\r':
                        orch_buf_puts(b, "\\r");
                        break;
                default:
                        if (*p < ' ' || *p == 0x7f)
                                orch_buf_printf(b, "\\x%02x", *p);
                        else
                                orch_buf_putc(b, (char)*p);
                }
        }
        orch_buf_putc(b, '"');
}

void orch_log_append_field(struct orch_buf *b, const char *key, const char *value)
{
        if (!value)
                return;
        orch_buf_putc(b, ' ');
        orch_buf_puts(b, key);
        orch_buf_putc(b, '=');
        append_value(b, value);
}

static void emit_stderr(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg,
                        va_list fields)
{
        char ts[64];
        struct timespec now;
        struct tm tm;
        struct orch_buf b = {0};

        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        orch_buf_printf(&b, "ts=%s.%03ldZ level=%s", ts, now.tv_nsec / 1000000L, level_names[level]);
        orch_log_append_field(&b, "prog", log_program);
        orch_log_append_field(&b, "node", log_node);
        if (ctx) {
                orch_log_append_field(&b, "service", ctx->service);
                orch_log_append_field(&b, "instance", ctx->instance);
                if (ctx->node && !streq_ptr(ctx->node, log_node))
                        orch_log_append_field(&b, "node", ctx->node);
        }
        orch_log_append_field(&b, "msg", msg);
        for (;;) {
                const char *k = va_arg(fields, const char *);
                if (!k)
                        break;
                orch_log_append_field(&b, k, va_arg(fields, const char *));
        }
        orch_buf_putc(&b, '\n');
        if (b.oom)
                fputs("level=error msg=\"out of memory while logging\"\n", stderr);
        else
                (void)!write(STDERR_FILENO, b.data, b.len); /* one write: lines from threads never interleave */
        orch_buf_release(&b);
}

static void emit_journal(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg,
                         va_list fields)
{
        struct orch_buf parts[16] = {0};
        struct iovec iov[16];
        size_t n = 0;

        orch_buf_printf(&parts[n++], "PRIORITY=%d", level_priorities[level]);
        orch_buf_printf(&parts[n++], "MESSAGE=%s", msg);
        if (log_program)
                orch_buf_printf(&parts[n++], "SYSLOG_IDENTIFIER=%s", log_program);
        if (ctx && ctx->service)
                orch_buf_printf(&parts[n++], "ORCH_SERVICE=%s", ctx->service);
        if (ctx && ctx->instance)
                orch_buf_printf(&parts[n++], "ORCH_INSTANCE=%s", ctx->instance);
        if ((ctx && ctx->node) || log_node)
                orch_buf_printf(&parts[n++], "ORCH_NODE=%s", ctx && ctx->node ? ctx->node : log_node);
        for (;;) {
                const char *k = va_arg(fields, const char *), *v;
                if (!k)
                        break;
                v = va_arg(fields, const char *);
                if (!v || n >= ELEMENTSOF(parts))
                        continue;
                /* journald field names are upper case: ORCH_<KEY> */
                orch_buf_puts(&parts[n], "ORCH_");
                for (const char *p = k; *p; p++)
                        orch_buf_putc(&parts[n], (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A')
                                                 : (*p == '-' || *p == '.') ? '_' : *p);
                orch_buf_printf(&parts[n++], "=%s", v);
        }
        for (size_t i = 0; i < n; i++)
                iov[i] = (struct iovec){.iov_base = parts[i].data, .iov_len = parts[i].len};
        if (sd_journal_sendv(iov, (int)n) < 0) {
                /* journald went away: keep the message on stderr rather than lose it */
                log_target = ORCH_LOG_TARGET_STDERR;
                fprintf(stderr, "level=%s msg=\"%s\"\n", level_names[level], msg);
        }
        for (size_t i = 0; i < n; i++)
                orch_buf_release(&parts[i]);
}

static void emit(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg, va_list fields)
{
        if (log_target == ORCH_LOG_TARGET_JOURNAL)
                emit_journal(level, ctx, msg, fields);
        else
                emit_stderr(level, ctx, msg, fields);
}

static void emit_fields(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg, ...)
{
        va_list ap;
        va_start(ap, msg);
        emit(level, ctx, msg, ap);
        va_end(ap);
}

void orch_log_fields(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *msg, ...)
{
        va_list ap;

        if (level > log_level)
                return;
        va_start(ap, msg);
        emit(level, ctx, msg, ap);
        va_end(ap);
}

void orch_logv(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *fmt, va_list ap)
{
        char buf[2048];

        if (level > log_level)
                return;
        vsnprintf(buf, sizeof buf, fmt, ap);
        emit_fields(level, ctx, buf, NULL);
}

void orch_log(enum orch_log_level level, const struct orch_log_ctx *ctx, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        orch_logv(level, ctx, fmt, ap);
        va_end(ap);
}

int orch_log_errno(enum orch_log_level level, const struct orch_log_ctx *ctx, int r, const char *fmt, ...)
{
        char buf[2048];
        va_list ap;

        if (level > log_level)
                return r;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        emit_fields(level, ctx, buf, "err", strerror(r < 0 ? -r : r), NULL);
        return r;
}
