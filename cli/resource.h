/* SPDX-License-Identifier: MIT */
#pragma once

/* The kinds of object `get` and `describe` name, their spellings and their API paths. */

#include "macro.h"

enum orch_resource {
        ORCH_RESOURCE_SERVICES,
        ORCH_RESOURCE_INSTANCES,
        ORCH_RESOURCE_NODES,
        _ORCH_RESOURCE_MAX,
};

/* "services", "service", "svc"; "instances", "instance", "inst"; "nodes", "node", "no". */
int orch_resource_from_string(const char *s, enum orch_resource *ret);
const char *orch_resource_plural(enum orch_resource k);
const char *orch_resource_singular(enum orch_resource k);

/* The API target: /v1/KIND, /v1/KIND/NAME, or /v1/instances?service=S&node=N (names escaped). */
int orch_resource_target(enum orch_resource k, const char *name, const char *service, const char *node,
                         char **ret);
