/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The registry over DNS (docs/registry.md, "DNS"): a small authoritative UDP
 * server for the zone `orch.` that answers from the registry, so programs
 * that only know DNS find healthy instances too.
 *
 *   A/AAAA  <service>.orch.             the addresses of the healthy endpoints
 *   SRV     <service>.orch.             one record per endpoint: its first port, and the target
 *                                       <instance>.<service>.orch. (with its address in the
 *                                       additional section)
 *   A/AAAA  <instance>.<service>.orch.  that endpoint's address
 *
 * Names are matched case-insensitively. TTLs are 1 s: endpoints change with
 * the registry. A service without endpoints answers NOERROR with no records;
 * an unknown name NXDOMAIN; a name outside `orch.` REFUSED; anything that is
 * not a well-formed standard query FORMERR or NOTIMP. Answers beyond 512
 * bytes (or the client's EDNS0 size, at most 1232) are truncated (TC).
 */

#include <uv.h>

#include "state.h"

struct orch_dns;

int orch_dns_new(uv_loop_t *loop, struct orch_state *st, const char *listen, struct orch_dns **ret);
void orch_dns_free(struct orch_dns *dns);
int orch_dns_port(const struct orch_dns *dns);

/* The answer to one query packet, for the server and the tests: writes at most `size` bytes into
 * `out` and returns the length, or -1 when the packet deserves no answer at all (too short to
 * carry an id, or a response). */
ssize_t orch_dns_answer(struct orch_state *st, const uint8_t *query, size_t len, uint8_t *out, size_t size);
