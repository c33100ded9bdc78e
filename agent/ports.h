/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Dynamic port allocation (SPEC §1 `--port-range`, §2 `ports`).
 *
 * The allocator hands out ports from one inclusive range. A port is live from
 * the moment it is allocated or reserved until it is released; a live port is
 * never handed out again. Candidates are taken round-robin from a cursor that
 * moves past every port handed out, so a port released a moment ago is the
 * last one to come back: a client still holding its address then meets a
 * refused connection rather than an unrelated instance.
 *
 * Before a port is handed out it is checked free by binding it (TCP,
 * 0.0.0.0 and, when the host has IPv6, [::]; without SO_REUSEADDR, so a
 * listener or a connection in TIME_WAIT on that port makes it busy). A port
 * some other process holds is skipped and stays available for later calls.
 *
 * Cost: one bitmap of the range (8 KiB for all 65535 ports); an allocation
 * skips live ports a word at a time and binds only candidates that are not
 * live, so it stays cheap with a thousand instances on the node.
 */

#include <stdint.h>

#include "macro.h"

#define ORCH_PORTS_DEFAULT_RANGE "20000-29999"

struct orch_ports;

/* Parses "A-B" (decimal, 1 <= A <= B <= 65535) and writes a reason for a person into `reason`
 * (which may be NULL) on -EINVAL. */
int orch_ports_parse_range(const char *s, uint16_t *ret_lo, uint16_t *ret_hi, char *reason,
                           size_t reason_size);

/* -EINVAL unless 1 <= lo <= hi. */
int orch_ports_new(uint16_t lo, uint16_t hi, struct orch_ports **ret);
struct orch_ports *orch_ports_free(struct orch_ports *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_ports *, orch_ports_free)

/*
 * Hands out a free port and makes it live. -EADDRNOTAVAIL when every port of the range is live
 * or held by another process; other -errno when the bind check itself cannot run (-EMFILE, say).
 * On failure `reason` (may be NULL) says why, naming the range, e.g.
 * "no free port in 20000-20009: 7 held by instances, 3 in use by other processes".
 */
int orch_ports_allocate(struct orch_ports *p, uint16_t *ret_port, char *reason, size_t reason_size);

/*
 * Makes a specific port live without a bind check: for an instance re-adopted after an agent
 * restart, which is itself listening on it. -EADDRINUSE when the port is live already,
 * -ERANGE when it is outside the range (such a port can never be handed out, so the caller may
 * keep using it without a reservation).
 */
int orch_ports_reserve(struct orch_ports *p, uint16_t port);

/* Makes a live port available again. -ENOENT when it is not live, -ERANGE outside the range. */
int orch_ports_release(struct orch_ports *p, uint16_t port);

bool orch_ports_is_live(const struct orch_ports *p, uint16_t port);
size_t orch_ports_n_live(const struct orch_ports *p);
void orch_ports_get_range(const struct orch_ports *p, uint16_t *ret_lo, uint16_t *ret_hi);
