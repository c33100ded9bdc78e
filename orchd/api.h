/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * orchd's HTTP API (SPEC §4) on orchd/httpd.c: authentication, routing and
 * the handlers. Every call but GET /healthz needs `Authorization: Bearer
 * <admin token>`, compared in constant time. Answers are JSON; errors are
 * {"error": "..."} (apply adds "errors": [{file, line, column, message}]).
 */

#include <uv.h>

#include "state.h"
#include "util.h"

struct orch_api;
struct orch_agents;
struct orch_reconciler;
struct orch_registry;

struct orch_api_config {
        const char *listen;
        const char *admin_token;
        struct orch_state *st;
        struct orch_agents *agents;
        struct orch_reconciler *rc;
        struct orch_registry *registry; /* NULL: the registry endpoints answer 404 */
        /* Optional extra lines for /metrics (the gateway's), appended to the buffer. */
        void (*metrics_extra)(void *userdata, struct orch_buf *out);
        void *metrics_userdata;
};

int orch_api_new(uv_loop_t *loop, const struct orch_api_config *cfg, struct orch_api **ret);
void orch_api_free(struct orch_api *api, void (*done)(void *), void *userdata);
int orch_api_port(const struct orch_api *api);

/* Feeds an event (already persisted) to the clients following /v1/events. */
void orch_api_publish_event(struct orch_api *api, uint64_t index, json_t *event);
