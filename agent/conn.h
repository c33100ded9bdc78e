/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The agent's connection to orchd (docs/protocol.md): dials the server and
 * keeps dialling with backoff, says hello with every instance the supervisor
 * holds, executes orchd's commands with the fencing rules, forwards the
 * supervisor's events and heartbeats, and streams logs on request. With
 * stop_after_disconnect, instances are stopped once orchd has been out of
 * reach that long.
 */

#include <stdint.h>

#include <uv.h>

#include "supervisor.h"

struct orch_logs;
struct orch_conn;

struct orch_conn_label {
        const char *key;
        const char *value;
};

struct orch_conn_config {
        const char *server; /* host:port */
        const char *node;
        const char *token;
        const char *address; /* advertised address of the node's instances; "" lets orchd use the peer address */
        const struct orch_conn_label *labels;
        size_t n_labels;
        uint32_t cpu_millis;
        uint64_t memory;
        const char *const *drivers;
        size_t n_drivers;
        uint64_t stop_after_disconnect_ms; /* 0: off */
        /* Called when the connection is established and orchd welcomed the node (READY=1). */
        void (*on_ready)(void *userdata);
        void *userdata;
};

/* HOST:PORT (or [IPv6]:PORT) with a port from 1 to 65535 and no white space or control bytes. */
bool orch_conn_server_valid(const char *server);
int orch_conn_new(uv_loop_t *loop, struct orch_supervisor *sv, struct orch_logs *logs,
                  const struct orch_conn_config *cfg, struct orch_conn **ret);
/* Starts dialling. */
int orch_conn_start(struct orch_conn *c);
/* Forwards a supervisor event (wire it to struct orch_supervisor_config.on_event). */
void orch_conn_event(struct orch_conn *c, const struct orch_sv_info *info);
bool orch_conn_is_connected(const struct orch_conn *c);
/* Closes the connection and its timers; memory goes once the handles are closed. */
void orch_conn_close(struct orch_conn *c);
