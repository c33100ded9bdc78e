/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The embedded service registry (SPEC §4, docs/registry.md): for every
 * service, the healthy running endpoints, and one index that rises on every
 * change of any service's endpoint set. Each service remembers the index of
 * its last change; GET /v1/registry/{service}?index=N&wait=D answers at once
 * when that index is above N, and otherwise holds the request until it is or
 * D ends (Consul's blocking queries). In-process subscribers (the gateway)
 * are called on every change.
 *
 * An endpoint is an instance that is running, whose health is passing (or
 * which has no health check and is not failing), that orchd still wants
 * (desired run), on a node that is up. An instance orchd decides to stop
 * leaves the registry at once, `drain_delay` before its stop signal is sent,
 * so that no new request reaches it.
 */

#include <uv.h>

#include "state.h"

struct orch_registry;
struct orch_httpd_req;

struct orch_endpoint {
        const char *instance;
        const char *node;
        const char *address;
        uint16_t port;       /* the first port (or 0 without ports) */
        uint16_t route_port; /* the route's port, for the gateway (0 when no route) */
        const struct orch_inst_port *ports;
        size_t n_ports;
};

/* Called after `service`'s endpoint set changed (it may be empty or the service gone). */
typedef void (*orch_registry_change_fn)(void *userdata, const char *service, uint64_t index);

int orch_registry_new(uv_loop_t *loop, struct orch_state *st, struct orch_registry **ret);
void orch_registry_free(struct orch_registry *reg);

/* Feeds a published event: the instance it names is re-examined, and the index rises when the
 * service's endpoint set changed. Service events (applied, deleted) notify subscribers. */
void orch_registry_on_event(struct orch_registry *reg, const json_t *event);
/* Examines every instance (after a load). */
void orch_registry_refresh_all(struct orch_registry *reg);
/* Is this instance an endpoint? (the rule above) */
bool orch_registry_is_endpoint(const struct orch_inst *inst);

uint64_t orch_registry_index(const struct orch_registry *reg);
/* The service's endpoints as {"index", "endpoints": [...]} (an unknown service: an empty set). */
json_t *orch_registry_json(struct orch_registry *reg, const char *service);
/* The services that have a route, with their endpoints (for the gateway's table). */
typedef void (*orch_registry_visit_fn)(void *userdata, const struct orch_svc *svc, const struct orch_endpoint *eps,
                                       size_t n);
void orch_registry_foreach_routed(struct orch_registry *reg, orch_registry_visit_fn fn, void *userdata);

int orch_registry_subscribe(struct orch_registry *reg, orch_registry_change_fn fn, void *userdata);
/* Drops a subscription (the same fn and userdata); no call after this returns. */
void orch_registry_unsubscribe(struct orch_registry *reg, orch_registry_change_fn fn, void *userdata);

/* The API handler of GET /v1/registry/{service}: answers now or later. */
void orch_registry_handle(struct orch_registry *reg, struct orch_httpd_req *req, const char *service,
                          uint64_t index, uint64_t wait_ms);
