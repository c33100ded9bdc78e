/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The units of the manifest language. Each parser takes the whole string and
 * returns -EINVAL (malformed), -ERANGE (too large) or 0; each formatter writes
 * the canonical spelling, so format(parse(x)) is stable and
 * parse(format(v)) == v for every value (the canonical JSON form relies on it).
 */

#include <stdint.h>

#include "macro.h"

/* "100ms", "2s", "1m30s", "1.5h": a sequence of number+unit, units ms s m h. Milliseconds out. */
int orch_parse_duration(const char *s, uint64_t *ret_ms);
/* Canonical: the largest unit that is exact ("90s" -> "90s", "120s" -> "2m", 0 -> "0s"). */
int orch_format_duration(uint64_t ms, char *buf, size_t size);

/* "128Mi", "1G", "4096": suffixes Ki Mi Gi Ti (1024) and K M G T (1000), or plain bytes. */
int orch_parse_size(const char *s, uint64_t *ret_bytes);
/* Canonical: the largest exact binary unit, else the largest exact decimal unit, else bytes. */
int orch_format_size(uint64_t bytes, char *buf, size_t size);

/* CPU in cores: "0.5", "2", "500m" (millicores). Millicores out; at least 1m. */
int orch_parse_cpu(const char *s, uint32_t *ret_millis);
/* Canonical: whole cores as "2", otherwise millicores as "500m". */
int orch_format_cpu(uint32_t millis, char *buf, size_t size);

/* "100/s", "6000/m", "10/h": a count per period. */
int orch_parse_rate(const char *s, uint32_t *ret_count, uint64_t *ret_period_ms);
int orch_format_rate(uint32_t count, uint64_t period_ms, char *buf, size_t size);

/* The longest duration any field may hold (one year): keeps arithmetic far from overflow. */
#define ORCH_DURATION_MAX_MS (366ULL * 24 * 3600 * 1000)
