/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "units.h"
#include "util.h"
#include "banned.h"

/*
 * Parses "<digits>[.<digits>]" at *p into a fixed-point value scaled by 10^9 so that the
 * fractional part survives the unit multiplication exactly ("1.5s" is 1500 ms, "0.1Mi" fails
 * because it is not a whole number of bytes). Advances *p.
 */
static int parse_decimal(const char **p, uint64_t *ret_int, uint64_t *ret_frac_nano)
{
        const char *s = *p;
        uint64_t iv = 0, frac = 0, scale = 100000000ULL;
        bool digits = false;

        while (*s >= '0' && *s <= '9') {
                if (iv > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                iv = iv * 10 + (uint64_t)(*s - '0');
                s++;
                digits = true;
        }
        if (*s == '.') {
                s++;
                if (!(*s >= '0' && *s <= '9'))
                        return -EINVAL;
                while (*s >= '0' && *s <= '9') {
                        if (scale == 0 && *s != '0')
                                return -EINVAL; /* more precision than anything we store */
                        frac += (uint64_t)(*s - '0') * scale;
                        scale /= 10;
                        s++;
                }
        }
        if (!digits)
                return -EINVAL;
        *p = s;
        *ret_int = iv;
        *ret_frac_nano = frac;
        return 0;
}

/* iv.frac * mult, exactly; -EINVAL when the result is not whole, -ERANGE on overflow. */
static int scale_exact(uint64_t iv, uint64_t frac_nano, uint64_t mult, uint64_t *ret)
{
        uint64_t whole, part;

        if (mult && iv > UINT64_MAX / mult)
                return -ERANGE;
        whole = iv * mult;
        /* frac_nano * mult / 1e9 must be an integer; split mult to avoid overflow. */
        if (frac_nano) {
                unsigned __int128 x = (unsigned __int128)frac_nano * mult;
                if (x % NSEC_PER_SEC)
                        return -EINVAL;
                part = (uint64_t)(x / NSEC_PER_SEC);
                if (whole > UINT64_MAX - part)
                        return -ERANGE;
                whole += part;
        }
        *ret = whole;
        return 0;
}

int orch_parse_duration(const char *s, uint64_t *ret_ms)
{
        static const struct {
                const char *suffix;
                uint64_t ms;
        } units[] = {
                /* "ms" before "m": longest match first */
                {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000},
        };
        uint64_t total = 0;

        if (!s || !*s)
                return -EINVAL;
        while (*s) {
                uint64_t iv, frac, v;
                const char *unit = NULL;
                uint64_t mult = 0;
                int r = parse_decimal(&s, &iv, &frac);

                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                        const char *rest = startswith(s, units[i].suffix);
                        if (rest && !(rest[0] >= 'a' && rest[0] <= 'z')) {
                                unit = units[i].suffix;
                                mult = units[i].ms;
                                s = rest;
                                break;
                        }
                }
                if (!unit)
                        return -EINVAL; /* a number needs its unit: "5" could mean anything */
                r = scale_exact(iv, frac, mult, &v);
                if (r < 0)
                        return r;
                if (v > ORCH_DURATION_MAX_MS || total > ORCH_DURATION_MAX_MS - v)
                        return -ERANGE;
                total += v;
        }
        *ret_ms = total;
        return 0;
}

int orch_format_duration(uint64_t ms, char *buf, size_t size)
{
        int r;

        if (ms == 0)
                r = orch_snprintf(buf, size, "0s");
        else if (ms % (3600 * 1000) == 0)
                r = orch_snprintf(buf, size, "%" PRIu64 "h", ms / (3600 * 1000));
        else if (ms % (60 * 1000) == 0)
                r = orch_snprintf(buf, size, "%" PRIu64 "m", ms / (60 * 1000));
        else if (ms % 1000 == 0)
                r = orch_snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
        else
                r = orch_snprintf(buf, size, "%" PRIu64 "ms", ms);
        return r < 0 ? r : 0;
}

static const struct {
        const char *suffix;
        uint64_t mult;
} size_units[] = {
        {"Ki", 1ULL << 10}, {"Mi", 1ULL << 20}, {"Gi", 1ULL << 30}, {"Ti", 1ULL << 40},
        {"K", 1000ULL}, {"M", 1000ULL * 1000}, {"G", 1000ULL * 1000 * 1000}, {"T", 1000ULL * 1000 * 1000 * 1000},
};

int orch_parse_size(const char *s, uint64_t *ret_bytes)
{
        uint64_t iv, frac, mult = 1;
        int r;

        if (!s || !*s)
                return -EINVAL;
        r = parse_decimal(&s, &iv, &frac);
        if (r < 0)
                return r;
        if (*s) {
                mult = 0;
                for (size_t i = 0; i < ELEMENTSOF(size_units); i++)
                        if (streq(s, size_units[i].suffix)) {
                                mult = size_units[i].mult;
                                break;
                        }
                if (!mult)
                        return -EINVAL;
        }
        return scale_exact(iv, frac, mult, ret_bytes);
}

int orch_format_size(uint64_t bytes, char *buf, size_t size)
{
        int r = -1;

        if (bytes == 0)
                return orch_snprintf(buf, size, "0") < 0 ? -ENOBUFS : 0;
        /* binary units first (largest first), then decimal ones */
        for (int pass = 0; pass < 2 && r < 0; pass++)
                for (int i = 3; i >= 0; i--) {
                        size_t k = (size_t)(pass * 4 + i);
                        if (bytes % size_units[k].mult == 0) {
                                r = orch_snprintf(buf, size, "%" PRIu64 "%s", bytes / size_units[k].mult,
                                                  size_units[k].suffix);
                                if (r < 0)
                                        return r;
                                break;
                        }
                }
        if (r < 0 && (r = orch_snprintf(buf, size, "%" PRIu64, bytes)) < 0)
                return r;
        return 0;
}

int orch_parse_cpu(const char *s, uint32_t *ret_millis)
{
        uint64_t iv, frac, v;
        int r;

        if (!s || !*s)
                return -EINVAL;
        r = parse_decimal(&s, &iv, &frac);
        if (r < 0)
                return r;
        if (streq(s, "m")) {
                if (frac)
                        return -EINVAL; /* "0.5m" is finer than a millicore */
                v = iv;
        } else if (*s)
                return -EINVAL;
        else {
                r = scale_exact(iv, frac, 1000, &v);
                if (r < 0)
                        return r;
        }
        if (v == 0)
                return -EINVAL;
        if (v > 1000000) /* a thousand cores */
                return -ERANGE;
        *ret_millis = (uint32_t)v;
        return 0;
}

int orch_format_cpu(uint32_t millis, char *buf, size_t size)
{
        int r;

        if (millis % 1000 == 0)
                r = orch_snprintf(buf, size, "%u", millis / 1000);
        else
                r = orch_snprintf(buf, size, "%um", millis);
        return r < 0 ? r : 0;
}

int orch_parse_rate(const char *s, uint32_t *ret_count, uint64_t *ret_period_ms)
{
        const char *slash;
        char num[32];
        uint32_t count;
        uint64_t period;
        int r;

        if (!s || !(slash = strchr(s, '/')) || (size_t)(slash - s) >= sizeof num)
                return -EINVAL;
        memcpy(num, s, (size_t)(slash - s));
        num[slash - s] = '\0';
        r = orch_parse_u32(num, &count);
        if (r < 0)
                return r;
        if (count == 0)
                return -EINVAL;
        if (streq(slash + 1, "s"))
                period = 1000;
        else if (streq(slash + 1, "m"))
                period = 60 * 1000;
        else if (streq(slash + 1, "h"))
                period = 3600 * 1000;
        else
                return -EINVAL;
        *ret_count = count;
        *ret_period_ms = period;
        return 0;
}

int orch_format_rate(uint32_t count, uint64_t period_ms, char *buf, size_t size)
{
        const char *unit = period_ms == 3600 * 1000 ? "h" : period_ms == 60 * 1000 ? "m" : "s";
        return orch_snprintf(buf, size, "%u/%s", count, unit) < 0 ? -ENOBUFS : 0;
}
