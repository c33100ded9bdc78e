/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Output shared by the verbs: aligned tables (`get`), key/value blocks
 * (`describe`), exact JSON (`-o json`), event lines (`events`, `describe`),
 * human forms of times, sizes and CPU, and colour only when stdout is a
 * terminal and NO_COLOR is unset.
 */

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "macro.h"

enum orch_output_format {
        ORCH_OUTPUT_TABLE,
        ORCH_OUTPUT_WIDE,
        ORCH_OUTPUT_JSON,
        ORCH_OUTPUT_NAME, /* one name per line, for scripts and shell completion */
        _ORCH_OUTPUT_FORMAT_MAX,
};

/* Parses "table", "wide", "json" or "name"; -EINVAL otherwise. */
int orch_output_format_from_string(const char *s, enum orch_output_format *ret);

struct orch_table;

struct orch_table *orch_table_new(size_t n_columns, const char *const *headers);
struct orch_table *orch_table_free(struct orch_table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_table *, orch_table_free)
/* Cells of this column that are state words (running, failed, ready, ...) are coloured. */
void orch_table_colour_column(struct orch_table *t, size_t column);
/* Adds a row of n_columns cells (NULL or "" prints as "-"); -ENOMEM on failure. */
int orch_table_add_row(struct orch_table *t, const char *const *cells);
size_t orch_table_rows(const struct orch_table *t); /* without the header */
/* Prints with columns aligned to the widest cell, two spaces apart, header first, each line
 * preceded by `indent` spaces. */
void orch_table_print(const struct orch_table *t, FILE *f, unsigned indent);

/* Pretty JSON (indent 2, keys in the order received) followed by a newline. */
int orch_output_json(const json_t *j, FILE *f);

/* `describe` blocks: "KEY:" padded to a common column, then the value. */
#define ORCH_KV_KEY_WIDTH 18
_printf_(4, 5) void orch_kv(FILE *f, unsigned indent, const char *key, const char *fmt, ...);
/* A state word as a value, coloured on a terminal. */
void orch_kv_state(FILE *f, unsigned indent, const char *key, const char *state, const char *extra);

/* ANSI colour helpers: return "" when colour is off. */
bool orch_output_colour(void);
const char *orch_colour_state(const char *state);
const char *orch_colour_reset(void);

/* Human forms. Age since a realtime in ms: "45s", "3m12s", "2h5m", "4d3h"; "-" for 0. */
void orch_format_age(uint64_t realtime_msec, char *buf, size_t size);
/* The age of an RFC 3339 time from the API ("-" when it is null or not a time). */
void orch_format_age_json(const json_t *time, char *buf, size_t size);
/* RFC 3339 with a Z (what the API writes) to realtime ms; -EINVAL for anything else. */
int orch_parse_time(const char *s, uint64_t *ret_msec);
/* Bytes with a binary unit and at most one decimal: "512Mi", "7.7Gi", "900". */
void orch_format_bytes(uint64_t bytes, char *buf, size_t size);
/* Cores with at most three decimals and no trailing zeros: "4", "0.5", "0.125". */
void orch_format_cores(double cores, char *buf, size_t size);

/* Small JSON accessors for printing: a string member or NULL (also for null and non-strings);
 * an integer member as text ("-" when absent). */
const char *orch_json_str(const json_t *o, const char *key);
void orch_json_int_text(const json_t *o, const char *key, char *buf, size_t size);

/* One event of /v1/events as a readable line: "TIME  TYPE  MESSAGE". */
void orch_output_event(const json_t *event, FILE *f, unsigned indent);
