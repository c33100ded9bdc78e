/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Routes of an HTTP API: a method and a path pattern whose segments are
 * literals or {name} parameters ("/v1/services/{name}/scale"). Segments are
 * percent-decoded before they are compared or handed over, so %2F inside a
 * segment is data, not a separator. A path that matches no pattern is a 404;
 * one that matches with another method is a 405 with an Allow header; HEAD
 * is served by GET routes.
 */

#include "httpd.h"

#define ORCH_ROUTER_MAX_PARAMS 8

struct orch_router_params {
        size_t n;
        const char *names[ORCH_ROUTER_MAX_PARAMS]; /* point into the pattern */
        char *values[ORCH_ROUTER_MAX_PARAMS];      /* decoded */
};

/* params live until the handler returns: a deferred handler copies what it keeps. */
typedef void (*orch_route_fn)(struct orch_httpd_req *req, const struct orch_router_params *params,
                              void *userdata);

struct orch_http_route {
        const char *method;
        const char *pattern;
        orch_route_fn handler;
};

/* Calls the handler of the first route that matches, or answers 400 (a malformed escape in the path),
 * 404 or 405 itself. Returns 0, or -ENOMEM after answering 503. */
int orch_router_dispatch(const struct orch_http_route *routes, size_t n_routes, struct orch_httpd_req *req,
                         void *userdata);
/* A parameter's decoded value, NULL when the pattern has no such name. */
const char *orch_router_param(const struct orch_router_params *params, const char *name);
