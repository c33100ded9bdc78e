/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "types.h"
#include "banned.h"

static const char *const instance_states[_ORCH_INSTANCE_STATE_MAX] = {
        [ORCH_INSTANCE_PENDING] = "pending", [ORCH_INSTANCE_STARTING] = "starting",
        [ORCH_INSTANCE_RUNNING] = "running", [ORCH_INSTANCE_STOPPING] = "stopping",
        [ORCH_INSTANCE_EXITED] = "exited",   [ORCH_INSTANCE_FAILED] = "failed",
        [ORCH_INSTANCE_LOST] = "lost",
};

static const char *const health_states[_ORCH_HEALTH_STATE_MAX] = {
        [ORCH_HEALTH_UNKNOWN] = "unknown",
        [ORCH_HEALTH_PASSING] = "passing",
        [ORCH_HEALTH_FAILING] = "failing",
};

static const char *const node_states[_ORCH_NODE_STATE_MAX] = {
        [ORCH_NODE_READY] = "ready",
        [ORCH_NODE_DOWN] = "down",
        [ORCH_NODE_DRAINING] = "draining",
};

static int lookup(const char *const *table, size_t n, const char *s)
{
        if (s)
                for (size_t i = 0; i < n; i++)
                        if (table[i] && streq(table[i], s))
                                return (int)i;
        return -1;
}

const char *orch_instance_state_to_string(enum orch_instance_state s)
{
        return (unsigned)s < _ORCH_INSTANCE_STATE_MAX ? instance_states[s] : NULL;
}

enum orch_instance_state orch_instance_state_from_string(const char *s)
{
        return (enum orch_instance_state)lookup(instance_states, _ORCH_INSTANCE_STATE_MAX, s);
}

const char *orch_health_state_to_string(enum orch_health_state s)
{
        return (unsigned)s < _ORCH_HEALTH_STATE_MAX ? health_states[s] : NULL;
}

enum orch_health_state orch_health_state_from_string(const char *s)
{
        return (enum orch_health_state)lookup(health_states, _ORCH_HEALTH_STATE_MAX, s);
}

const char *orch_node_state_to_string(enum orch_node_state s)
{
        return (unsigned)s < _ORCH_NODE_STATE_MAX ? node_states[s] : NULL;
}

enum orch_node_state orch_node_state_from_string(const char *s)
{
        return (enum orch_node_state)lookup(node_states, _ORCH_NODE_STATE_MAX, s);
}
