/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "util.h"
#include "banned.h"

void orch_buf_release(struct orch_buf *b)
{
        free(b->data);
        *b = (struct orch_buf){0};
}

void orch_buf_reset(struct orch_buf *b)
{
        b->len = 0;
        b->oom = false;
        if (b->data)
                b->data[0] = '\0';
}

int orch_buf_reserve(struct orch_buf *b, size_t extra)
{
        size_t need, cap;
        char *p;

        if (b->oom)
                return -ENOMEM;
        if (extra > SIZE_MAX - b->len - 1)
                goto oom;
        need = b->len + extra + 1;
        if (need <= b->cap)
                return 0;
        cap = b->cap ? b->cap : 64;
        while (cap < need)
                cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        p = realloc(b->data, cap);
        if (!p)
                goto oom;
        b->data = p;
        b->cap = cap;
        return 0;
oom:
        b->oom = true;
        return -ENOMEM;
}

int orch_buf_put(struct orch_buf *b, const void *data, size_t len)
{
        if (orch_buf_reserve(b, len) < 0)
                return -ENOMEM;
        if (len)
                memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return 0;
}

int orch_buf_puts(struct orch_buf *b, const char *s)
{
        return orch_buf_put(b, s, strlen(s));
}

int orch_buf_putc(struct orch_buf *b, char c)
{
        return orch_buf_put(b, &c, 1);
}

int orch_buf_vprintf(struct orch_buf *b, const char *fmt, va_list ap)
{
        va_list aq;
        int n;

        if (b->oom)
                return -ENOMEM;
        va_copy(aq, ap);
        n = vsnprintf(NULL, 0, fmt, aq);
        va_end(aq);
        if (n < 0)
                return -EINVAL;
        if (orch_buf_reserve(b, (size_t)n) < 0)
                return -ENOMEM;
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        b->len += (size_t)n;
        return 0;
}

int orch_buf_printf(struct orch_buf *b, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = orch_buf_vprintf(b, fmt, ap);
        va_end(ap);
        return r;
}

void orch_buf_consume(struct orch_buf *b, size_t n)
{
        if (n >= b->len) {
                orch_buf_reset(b);
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
        b->data[b->len] = '\0';
}

char *orch_buf_steal(struct orch_buf *b)
{
        char *d;

        if (b->oom) {
                orch_buf_release(b);
                return NULL;
        }
        /* A buffer never written to has no storage yet: steal an empty string, terminated like any other. */
        if (!b->data) {
                if (orch_buf_reserve(b, 0) < 0)
                        return NULL;
                b->data[0] = '\0';
        }
        d = b->data;
        *b = (struct orch_buf){0};
        return d;
}

size_t orch_strlcpy(char *dst, const char *src, size_t size)
{
        size_t l = strlen(src);

        if (size > 0) {
                size_t n = l < size - 1 ? l : size - 1;
                memcpy(dst, src, n);
                dst[n] = '\0';
        }
        return l;
}

int orch_snprintf(char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t)n >= size)
                return -ENOBUFS;
        return n;
}

char *orch_strdup_printf(const char *fmt, ...)
{
        struct orch_buf b = {0};
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        return orch_buf_steal(&b);
}

bool orch_endswith(const char *s, const char *suffix)
{
        size_t ls = strlen(s), lx = strlen(suffix);
        return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

char **orch_strv_free(char **v)
{
        if (v) {
                for (char **p = v; *p; p++)
                        free(*p);
                free(v);
        }
        return NULL;
}

size_t orch_strv_length(char *const *v)
{
        size_t n = 0;
        if (v)
                while (v[n])
                        n++;
        return n;
}

char **orch_strv_copy(char *const *v)
{
        size_t n = orch_strv_length(v);
        char **c = calloc(n + 1, sizeof *c);

        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (!(c[i] = strdup(v[i])))
                        return orch_strv_free(c);
        return c;
}

bool orch_strv_contains(char *const *v, const char *s)
{
        for (; v && *v; v++)
                if (streq(*v, s))
                        return true;
        return false;
}

int orch_strv_push(char ***v, const char *s)
{
        size_t n = orch_strv_length(*v);
        char *d = strdup(s);
        char **nv;

        if (!d)
                return -ENOMEM;
        nv = realloc(*v, (n + 2) * sizeof *nv);
        if (!nv) {
                free(d);
                return -ENOMEM;
        }
        nv[n] = d;
        nv[n + 1] = NULL;
        *v = nv;
        return 0;
}

int orch_parse_u64(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        *ret = v;
        return 0;
}

int orch_parse_i64(const char *s, int64_t *ret)
{
        uint64_t u;
        bool neg = false;
        int r;

        if (s && (*s == '-' || *s == '+')) {
                neg = *s == '-';
                s++;
        }
        r = orch_parse_u64(s, &u);
        if (r < 0)
                return r;
        if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX)
                return -ERANGE;
        *ret = neg ? (int64_t)(0 - u) : (int64_t)u;
        return 0;
}

int orch_parse_u32(const char *s, uint32_t *ret)
{
        uint64_t v;
        int r = orch_parse_u64(s, &v);

        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t)v;
        return 0;
}

size_t orch_levenshtein(const char *a, const char *b, size_t max)
{
        size_t la = strlen(a), lb = strlen(b);
        size_t row[65];

        if (lb >= ELEMENTSOF(row) || la >= ELEMENTSOF(row))
                return SIZE_MAX;
        if ((la > lb ? la - lb : lb - la) > max)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t prev = row[0], best;
                row[0] = i;
                best = row[0];
                for (size_t j = 1; j <= lb; j++) {
                        size_t cur = row[j];
                        size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
                        row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), prev + cost);
                        prev = cur;
                        best = MIN(best, row[j]);
                }
                if (best > max)
                        return SIZE_MAX;
        }
        return row[lb] > max ? SIZE_MAX : row[lb];
}

const char *orch_suggest(const char *word, const char *const *candidates, size_t n)
{
        /* Allow about one edit per three characters, at least one and at most three. */
        size_t max = MIN(MAX(strlen(word) / 3, (size_t)1), (size_t)3), best = SIZE_MAX;
        const char *pick = NULL;

        for (size_t i = 0; i < n; i++) {
                size_t d = orch_levenshtein(word, candidates[i], max);
                if (d < best) {
                        best = d;
                        pick = candidates[i];
                }
        }
        return pick;
}

ssize_t orch_utf8_invalid_offset(const char *str, size_t len)
{
        const unsigned char *s = (const unsigned char *)str;
        size_t i = 0;

        while (i < len) {
                unsigned char c = s[i];
                size_t n;
                uint32_t cp;

                if (c == 0)
                        return (ssize_t)i;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf) {
                        n = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        n = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        n = 3;
                        cp = c & 0x07;
                } else
                        return (ssize_t)i;
                if (i + n >= len) /* truncated sequence */
                        return (ssize_t)i;
                for (size_t k = 1; k <= n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return (ssize_t)i;
                        cp = (cp << 6) | (s[i + k] & 0x3f);
                }
                /* overlong forms, surrogates and code points above U+10FFFF */
                if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) ||
                    cp > 0x10ffff)
                        return (ssize_t)i;
                i += n + 1;
        }
        return -1;
}

bool orch_secret_equal(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        unsigned char d = la != lb;

        /* Walk the expected secret's length whatever the input, so timing reveals no prefix. */
        for (size_t i = 0; i < lb; i++)
                d |= (unsigned char)(b[i] ^ (i < la ? a[i] : 0));
        return d == 0;
}

uint64_t orch_now_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

uint64_t orch_now_msec(void)
{
        return orch_now_usec() / USEC_PER_MSEC;
}

uint64_t orch_realtime_msec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * MSEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_MSEC;
}

int orch_format_time(uint64_t realtime_msec, char *buf, size_t size)
{
        /* A busy orchd stamps a million events in a few seconds: the date and time of the last
         * second are kept per thread, and only the milliseconds are written each time. */
        static _Thread_local time_t last = -1;
        static _Thread_local char b[32];
        time_t t = (time_t)(realtime_msec / 1000);
        unsigned ms = (unsigned)(realtime_msec % 1000);
        size_t n;

        if (t != last) {
                struct tm tm;
                if (!gmtime_r(&t, &tm) || strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                        return -EINVAL;
                last = t;
        }
        n = strlen(b);
        if (size < n + 6)
                return -ENOBUFS;
        memcpy(buf, b, n);
        buf[n] = '.';
        buf[n + 1] = (char)('0' + ms / 100);
        buf[n + 2] = (char)('0' + ms / 10 % 10);
        buf[n + 3] = (char)('0' + ms % 10);
        buf[n + 4] = 'Z';
        buf[n + 5] = '\0';
        return 0;
}

int orch_read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
        _cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct orch_buf b = {0};

        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t n;
                if (orch_buf_reserve(&b, 4096) < 0) {
                        orch_buf_release(&b);
                        return -ENOMEM;
                }
                n = read(fd, b.data + b.len, b.cap - b.len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = -errno;
                        orch_buf_release(&b);
                        return r;
                }
                if (n == 0)
                        break;
                b.len += (size_t)n;
                if (b.len > max) {
                        orch_buf_release(&b);
                        return -EFBIG;
                }
        }
        b.data[b.len] = '\0';
        if (ret_len)
                *ret_len = b.len;
        *ret = orch_buf_steal(&b);
        return 0;
}

int orch_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
        _cleanup_(freep) char *tmp = orch_strdup_printf("%s.tmp.%d", path, (int)getpid());
        const char *p = data;
        int fd, r = 0;

        if (!tmp)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, mode) < 0)
                r = -errno;
        while (r == 0 && len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                p += n;
                len -= (size_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int orch_mkdir_p(const char *path, unsigned mode)
{
        _cleanup_(freep) char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1;; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                char c = *s;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = c;
                if (c == '\0')
                        break;
        }
        return 0;
}

int orch_random_bytes(void *buf, size_t n)
{
        unsigned char *p = buf;

        while (n > 0) {
                ssize_t k = getrandom(p, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

int orch_random_hex(char *buf, size_t n)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char raw[64];
        int r;

        if (n > sizeof raw)
                return -EINVAL;
        r = orch_random_bytes(raw, n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                buf[2 * i] = hex[raw[i] >> 4];
                buf[2 * i + 1] = hex[raw[i] & 15];
        }
        buf[2 * n] = '\0';
        return 0;
}
