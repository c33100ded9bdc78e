/* SPDX-License-Identifier: MIT */
#pragma once

/* The states both ends of the protocol, the API and the CLI talk about (SPEC §3). */

#include "macro.h"

enum orch_instance_state {
        ORCH_INSTANCE_PENDING,  /* placed or waiting to (re)start: not running, backoff included */
        ORCH_INSTANCE_STARTING, /* process being created, or running but not yet past its first health check */
        ORCH_INSTANCE_RUNNING,
        ORCH_INSTANCE_STOPPING, /* stop signal sent, waiting for the cgroup to empty */
        ORCH_INSTANCE_EXITED,   /* ended by itself, successfully or on request */
        ORCH_INSTANCE_FAILED,   /* ended with an error and will not be restarted */
        ORCH_INSTANCE_LOST,     /* its node went down (orchd only) */
        _ORCH_INSTANCE_STATE_MAX,
        _ORCH_INSTANCE_STATE_INVALID = -1,
};

enum orch_health_state {
        ORCH_HEALTH_UNKNOWN,
        ORCH_HEALTH_PASSING,
        ORCH_HEALTH_FAILING,
        _ORCH_HEALTH_STATE_MAX,
        _ORCH_HEALTH_STATE_INVALID = -1,
};

enum orch_node_state {
        ORCH_NODE_READY,
        ORCH_NODE_DOWN,
        ORCH_NODE_DRAINING,
        _ORCH_NODE_STATE_MAX,
        _ORCH_NODE_STATE_INVALID = -1,
};

const char *orch_instance_state_to_string(enum orch_instance_state s);
enum orch_instance_state orch_instance_state_from_string(const char *s);
const char *orch_health_state_to_string(enum orch_health_state s);
enum orch_health_state orch_health_state_from_string(const char *s);
const char *orch_node_state_to_string(enum orch_node_state s);
enum orch_node_state orch_node_state_from_string(const char *s);
