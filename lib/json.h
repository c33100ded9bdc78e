/* SPDX-License-Identifier: MIT */
#pragma once

/* Helpers on jansson: typed getters that distinguish "missing" from "wrong type", canonical dumps. */

#include <stdint.h>

#include <jansson.h>

#include "macro.h"

static inline void orch_json_decrefp(json_t **j)
{
        if (*j)
                json_decref(*j);
}
#define _cleanup_json_ _cleanup_(orch_json_decrefp)

/* Compact, keys sorted, UTF-8: the same value always dumps to the same bytes. */
char *orch_json_dumps_canonical(const json_t *j);
/* Compact, insertion order (for wire messages). */
char *orch_json_dumps_compact(const json_t *j);

/* Getters: 0 on success, -ENOENT when the key is missing (or null), -EINVAL on a wrong type or range. */
int orch_json_get_string(const json_t *obj, const char *key, const char **ret);
int orch_json_get_u64(const json_t *obj, const char *key, uint64_t *ret);
int orch_json_get_u32(const json_t *obj, const char *key, uint32_t *ret);
int orch_json_get_i64(const json_t *obj, const char *key, int64_t *ret);
int orch_json_get_bool(const json_t *obj, const char *key, bool *ret);
/* Borrowed references. */
int orch_json_get_object(const json_t *obj, const char *key, json_t **ret);
int orch_json_get_array(const json_t *obj, const char *key, json_t **ret);

/* Sets key to a new string / integer (steals nothing); -ENOMEM on failure. */
int orch_json_set_string(json_t *obj, const char *key, const char *value);
int orch_json_set_u64(json_t *obj, const char *key, uint64_t value);
