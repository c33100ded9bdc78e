/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>

#include "diag.h"
#include "util.h"
#include "banned.h"

#define DIAGS_DEFAULT_MAX 100

void orch_diags_add(struct orch_diags *d, const char *file, unsigned line, unsigned column, const char *fmt, ...)
{
        size_t max = d->max ? d->max : DIAGS_DEFAULT_MAX;
        struct orch_buf msg = {0};
        va_list ap;

        if (d->n >= max) {
                d->truncated = true;
                return;
        }
        if (d->n == d->cap) {
                size_t cap = d->cap ? d->cap * 2 : 8;
                struct orch_diag *n = realloc(d->items, cap * sizeof *n);
                if (!n) {
                        d->truncated = true;
                        return;
                }
                d->items = n;
                d->cap = cap;
        }
        va_start(ap, fmt);
        orch_buf_vprintf(&msg, fmt, ap);
        va_end(ap);
        d->items[d->n] = (struct orch_diag){
                .file = strdup(file ? file : "<input>"),
                .line = line,
                .column = column,
                .message = orch_buf_steal(&msg),
        };
        if (!d->items[d->n].file || !d->items[d->n].message) {
                free(d->items[d->n].file);
                free(d->items[d->n].message);
                d->truncated = true;
                return;
        }
        d->n++;
}

void orch_diags_release(struct orch_diags *d)
{
        for (size_t i = 0; i < d->n; i++) {
                free(d->items[i].file);
                free(d->items[i].message);
        }
        free(d->items);
        *d = (struct orch_diags){.max = d->max};
}

char *orch_diag_format(const struct orch_diag *e)
{
        if (e->line)
                return orch_strdup_printf("%s:%u:%u: error: %s", e->file, e->line, e->column, e->message);
        return orch_strdup_printf("%s: error: %s", e->file, e->message);
}

void orch_diags_print(const struct orch_diags *d, FILE *f)
{
        for (size_t i = 0; i < d->n; i++) {
                _cleanup_(freep) char *s = orch_diag_format(&d->items[i]);
                if (s)
                        fprintf(f, "%s\n", s);
        }
        if (d->truncated)
                fprintf(f, "too many errors; stopped after %zu\n", d->n);
}

json_t *orch_diags_to_json(const struct orch_diags *d)
{
        json_t *a = json_array();

        for (size_t i = 0; a && i < d->n; i++) {
                const struct orch_diag *e = &d->items[i];
                json_t *o = json_pack("{s:s, s:i, s:i, s:s}", "file", e->file, "line", (json_int_t)e->line,
                                      "column", (json_int_t)e->column, "message", e->message);
                if (!o || json_array_append_new(a, o) < 0) {
                        json_decref(a);
                        return NULL;
                }
        }
        return a;
}
