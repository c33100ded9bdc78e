/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Diagnostics of user input: a list of "FILE:LINE:COLUMN: error: MESSAGE"
 * entries. Validation collects all of them instead of stopping at the first,
 * so a user fixes a manifest in one round. Positions are 1-based; 0 means
 * unknown (input that did not come from a file, such as JSON over the API
 * without positions).
 */

#include <jansson.h>

#include "macro.h"

struct orch_diag {
        char *file;
        unsigned line;
        unsigned column;
        char *message;
};

struct orch_diags {
        struct orch_diag *items;
        size_t n;
        size_t cap;
        /* Stop collecting after this many (0: the default, 100) so hostile input cannot exhaust memory. */
        size_t max;
        bool truncated;
};

_printf_(5, 6) void orch_diags_add(struct orch_diags *d, const char *file, unsigned line, unsigned column,
                                   const char *fmt, ...);
void orch_diags_release(struct orch_diags *d);
/* Prints every entry, one per line, as FILE:LINE:COLUMN: error: MESSAGE. */
void orch_diags_print(const struct orch_diags *d, FILE *f);
/* The same as a JSON array of {"file","line","column","message"} for API errors. */
json_t *orch_diags_to_json(const struct orch_diags *d);
/* One entry formatted as FILE:LINE:COLUMN: error: MESSAGE (the caller frees it). */
char *orch_diag_format(const struct orch_diag *e);
