/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <time.h>

#include "output.h"
#include "util.h"
#include "banned.h"

struct orch_table {
        size_t n_columns;
        char **cells; /* row-major, the header row first */
        bool *colour; /* per column */
        size_t n_rows;
        size_t cap_rows;
};

int orch_output_format_from_string(const char *s, enum orch_output_format *ret)
{
        static const char *const names[_ORCH_OUTPUT_FORMAT_MAX] = {
                [ORCH_OUTPUT_TABLE] = "table",
                [ORCH_OUTPUT_WIDE] = "wide",
                [ORCH_OUTPUT_JSON] = "json",
                [ORCH_OUTPUT_NAME] = "name",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i])) {
                        *ret = (enum orch_output_format)i;
                        return 0;
                }
        return -EINVAL;
}

struct orch_table *orch_table_new(size_t n_columns, const char *const *headers)
{
        struct orch_table *t = calloc(1, sizeof *t);

        if (!t)
                return NULL;
        t->n_columns = n_columns;
        t->colour = calloc(n_columns, sizeof *t->colour);
        if (!t->colour || orch_table_add_row(t, headers) < 0)
                return orch_table_free(t);
        return t;
}

struct orch_table *orch_table_free(struct orch_table *t)
{
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->colour);
        free(t);
        return NULL;
}

void orch_table_colour_column(struct orch_table *t, size_t column)
{
        if (column < t->n_columns)
                t->colour[column] = true;
}

int orch_table_add_row(struct orch_table *t, const char *const *cells)
{
        if (t->n_rows == t->cap_rows) {
                size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
                char **n = realloc(t->cells, cap * t->n_columns * sizeof *n);
                if (!n)
                        return -ENOMEM;
                t->cells = n;
                t->cap_rows = cap;
        }
        for (size_t c = 0; c < t->n_columns; c++) {
                char *s = strdup(cells[c] && *cells[c] ? cells[c] : "-");
                if (!s) {
                        while (c-- > 0)
                                free(t->cells[t->n_rows * t->n_columns + c]);
                        return -ENOMEM;
                }
                t->cells[t->n_rows * t->n_columns + c] = s;
        }
        t->n_rows++;
        return 0;
}

size_t orch_table_rows(const struct orch_table *t)
{
        return t->n_rows > 0 ? t->n_rows - 1 : 0;
}

/* Display width of a UTF-8 string: code points, which is right for everything we print. */
static size_t width(const char *s)
{
        size_t w = 0;
        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        w++;
        return w;
}

void orch_table_print(const struct orch_table *t, FILE *f, unsigned indent)
{
        _cleanup_(freep) size_t *widths = calloc(t->n_columns, sizeof *widths);

        if (!widths)
                return;
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_columns; c++)
                        widths[c] = MAX(widths[c], width(t->cells[r * t->n_columns + c]));
        for (size_t r = 0; r < t->n_rows; r++) {
                fprintf(f, "%*s", (int)indent, "");
                for (size_t c = 0; c < t->n_columns; c++) {
                        const char *cell = t->cells[r * t->n_columns + c];
                        const char *col = r > 0 && t->colour[c] ? orch_colour_state(cell) : "";

                        fprintf(f, "%s%s%s", col, cell, *col ? orch_colour_reset() : "");
                        /* no trailing blanks after the last column */
                        if (c + 1 < t->n_columns)
                                fprintf(f, "%*s", (int)(widths[c] - width(cell) + 2), "");
                }
                fputc('\n', f);
        }
}

int orch_output_json(const json_t *j, FILE *f)
{
        if (json_dumpf(j, f, JSON_INDENT(2) | JSON_ENCODE_ANY) < 0)
                return -EIO;
        fputc('\n', f);
        return 0;
}

void orch_kv(FILE *f, unsigned indent, const char *key, const char *fmt, ...)
{
        va_list ap;
        int pad = ORCH_KV_KEY_WIDTH - (int)indent - (int)strlen(key) - 1;

        fprintf(f, "%*s%s:%*s ", (int)indent, "", key, MAX(pad, 0), "");
        va_start(ap, fmt);
        vfprintf(f, fmt, ap);
        va_end(ap);
        fputc('\n', f);
}

void orch_kv_state(FILE *f, unsigned indent, const char *key, const char *state, const char *extra)
{
        const char *col = orch_colour_state(strempty(state));

        orch_kv(f, indent, key, "%s%s%s%s%s", col, state ? state : "-", *col ? orch_colour_reset() : "",
                extra && *extra ? " " : "", strempty(extra));
}

bool orch_output_colour(void)
{
        static int on = -1;

        if (on < 0) {
                const char *term = getenv("TERM");
                const char *no_colour = getenv("NO_COLOR");

                /* https://no-color.org: set (to anything but the empty string) turns colour off */
                on = isatty(STDOUT_FILENO) && !(no_colour && *no_colour) && !(term && streq(term, "dumb"));
        }
        return on;
}

const char *orch_colour_state(const char *state)
{
        static const struct {
                const char *word;
                const char *colour;
        } map[] = {
                {"running", "\033[32m"},  {"ready", "\033[32m"},    {"passing", "\033[32m"},
                {"complete", "\033[32m"}, {"pending", "\033[33m"},  {"starting", "\033[33m"},
                {"stopping", "\033[33m"}, {"draining", "\033[33m"}, {"progressing", "\033[33m"},
                {"unknown", "\033[33m"},  {"failed", "\033[31m"},   {"lost", "\033[31m"},
                {"down", "\033[31m"},     {"failing", "\033[31m"},
        };

        if (!orch_output_colour())
                return "";
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (streq(map[i].word, state))
                        return map[i].colour;
        return "";
}

const char *orch_colour_reset(void)
{
        return orch_output_colour() ? "\033[0m" : "";
}

void orch_format_age(uint64_t realtime_msec, char *buf, size_t size)
{
        uint64_t now = orch_realtime_msec(), s;

        if (realtime_msec == 0) {
                orch_strlcpy(buf, "-", size);
                return;
        }
        s = now > realtime_msec ? (now - realtime_msec) / 1000 : 0;
        if (s < 60)
                orch_snprintf(buf, size, "%" PRIu64 "s", s);
        else if (s < 3600)
                orch_snprintf(buf, size, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
        else if (s < 86400)
                orch_snprintf(buf, size, "%" PRIu64 "h%" PRIu64 "m", s / 3600, (s % 3600) / 60);
        else
                orch_snprintf(buf, size, "%" PRIu64 "d%" PRIu64 "h", s / 86400, (s % 86400) / 3600);
}

int orch_parse_time(const char *s, uint64_t *ret_msec)
{
        struct tm tm = {0};
        const char *p;
        uint64_t ms = 0;
        unsigned digits = 0;
        time_t t;

        if (!s)
                return -EINVAL;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                        if (digits < 3)
                                ms = ms * 10 + (uint64_t)(*p - '0');
                if (digits == 0)
                        return -EINVAL;
                for (; digits < 3; digits++)
                        ms *= 10;
        }
        if (!streq(p, "Z"))
                return -EINVAL;
        t = timegm(&tm);
        if (t < 0)
                return -EINVAL;
        *ret_msec = (uint64_t)t * 1000 + ms;
        return 0;
}

void orch_format_age_json(const json_t *time, char *buf, size_t size)
{
        uint64_t ms = 0;

        if (!json_is_string(time) || orch_parse_time(json_string_value(time), &ms) < 0)
                ms = 0;
        orch_format_age(ms, buf, size);
}

void orch_format_bytes(uint64_t bytes, char *buf, size_t size)
{
        static const char *const units[] = {"Ki", "Mi", "Gi", "Ti", "Pi"};
        double v = (double)bytes;
        uint64_t tenths;
        size_t u = 0;

        if (bytes < 1024) {
                orch_snprintf(buf, size, "%" PRIu64, bytes);
                return;
        }
        v /= 1024;
        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        /* in tenths, rounded; whole numbers without ".0": 512Mi, not 512.0Mi */
        tenths = (uint64_t)(v * 10 + 0.5);
        if (tenths % 10 == 0)
                orch_snprintf(buf, size, "%" PRIu64 "%s", tenths / 10, units[u]);
        else
                orch_snprintf(buf, size, "%" PRIu64 ".%" PRIu64 "%s", tenths / 10, tenths % 10, units[u]);
}

void orch_format_cores(double cores, char *buf, size_t size)
{
        size_t l;

        if (orch_snprintf(buf, size, "%.3f", cores) < 0)
                return;
        l = strlen(buf);
        while (l > 0 && buf[l - 1] == '0')
                buf[--l] = '\0';
        if (l > 0 && buf[l - 1] == '.')
                buf[--l] = '\0';
}

const char *orch_json_str(const json_t *o, const char *key)
{
        return json_string_value(json_object_get(o, key));
}

void orch_json_int_text(const json_t *o, const char *key, char *buf, size_t size)
{
        const json_t *v = json_object_get(o, key);

        if (json_is_integer(v))
                orch_snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else
                orch_strlcpy(buf, "-", size);
}

void orch_output_event(const json_t *event, FILE *f, unsigned indent)
{
        const char *time = orch_json_str(event, "time");
        const char *type = orch_json_str(event, "type");
        const char *message = orch_json_str(event, "message");

        fprintf(f, "%*s%-24s  %-18s  %s\n", (int)indent, "", time ? time : "-", type ? type : "-",
                message ? message : "");
}
