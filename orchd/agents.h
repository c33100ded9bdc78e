/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * orchd's agent endpoint (docs/protocol.md): accepts agent connections,
 * authenticates and fences their hello, sends the reconciler's commands in
 * batches, applies events to the cluster model, and declares nodes down when
 * their heartbeats stop for the TTL.
 *
 * Heartbeat interval and TTL grow with the cluster so that orchd receives at
 * most `max_heartbeat_rate` heartbeats per second in total:
 *   interval = max(heartbeat_ms, ceil(1000 * nodes / max_heartbeat_rate)) ms
 *   ttl      = ttl_factor * interval
 */

#include <uv.h>

#include "state.h"

struct orch_agents;
struct orch_reconciler;

struct orch_agents_config {
        const char *listen;          /* host:port */
        const char *join_token;      /* compared in constant time */
        uint64_t heartbeat_ms;       /* base interval, default 1000 */
        uint32_t ttl_factor;         /* default 3 */
        uint32_t max_heartbeat_rate; /* heartbeats per second in total, default 1000 */
        uint32_t max_connections;    /* default 10000 */
        /* An instance orchd stops leaves the registry at once and gets its stop signal this much
         * later, so that no new request reaches it (0: at once). */
        uint64_t drain_delay_ms;
};

int orch_agents_new(uv_loop_t *loop, struct orch_state *st, const struct orch_agents_config *cfg,
                    struct orch_agents **ret);
/* Starts listening; -errno with a logged reason. */
int orch_agents_listen(struct orch_agents *a);
void orch_agents_set_reconciler(struct orch_agents *a, struct orch_reconciler *rc);
/* Closes every connection and handle; the object is freed when they are closed. */
void orch_agents_close(struct orch_agents *a);

/* The reconciler's outlets (struct orch_reconciler_ops). */
void orch_agents_start_instance(void *agents, struct orch_inst *inst);
void orch_agents_stop_instance(void *agents, struct orch_inst *inst, const char *reason);
void orch_agents_flush(void *agents);

/* The current interval and TTL (they grow with the number of nodes). */
uint64_t orch_agents_heartbeat_ms(const struct orch_agents *a);
uint64_t orch_agents_ttl_ms(const struct orch_agents *a);
size_t orch_agents_connected(const struct orch_agents *a);

/*
 * Log streaming for the API: asks the instance's agent for its log. `on_data` receives chunks of
 * text; `on_end` is called exactly once, with NULL when the stream ended normally or a reason
 * (agent disconnected, instance unknown). orch_agents_logs_cancel() ends a following stream
 * early (on_end is not called after a cancel).
 */
struct orch_log_stream;
typedef void (*orch_log_data_fn)(void *userdata, const char *data, size_t len);
typedef void (*orch_log_end_fn)(void *userdata, const char *error);
int orch_agents_logs(struct orch_agents *a, struct orch_inst *inst, uint64_t tail, bool follow,
                     orch_log_data_fn on_data, orch_log_end_fn on_end, void *userdata,
                     struct orch_log_stream **ret);
void orch_agents_logs_cancel(struct orch_log_stream *s);
