/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "router.h"
#include "util.h"
#include "banned.h"

/* Pattern and path segments are compared one by one; a route is at most this deep. */
#define MAX_SEGMENTS 16

struct segments {
        size_t n;
        char *v[MAX_SEGMENTS];
};

static void segments_release(struct segments *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        s->n = 0;
}

/* Splits "/a/b%2Fc" into decoded segments {"a", "b/c"}. -EINVAL for a malformed escape, -E2BIG for too
 * many segments, -ENOENT for anything that is not an absolute path. */
static int split_path(const char *path, struct segments *ret)
{
        const char *p = path;

        ret->n = 0;
        if (!path || path[0] != '/')
                return -ENOENT;
        p++;
        for (;;) {
                size_t len = strcspn(p, "/");
                int r;

                if (ret->n == MAX_SEGMENTS) {
                        segments_release(ret);
                        return -E2BIG;
                }
                r = orch_http_percent_decode(p, len, false, &ret->v[ret->n]);
                if (r < 0) {
                        segments_release(ret);
                        return r;
                }
                ret->n++;
                p += len;
                if (*p != '/')
                        return 0;
                p++;
        }
}

/* Matches a pattern against decoded segments, filling params (pointers into segs, not copies). */
static bool match(const char *pattern, const struct segments *segs, struct orch_router_params *params)
{
        const char *p = pattern + 1;
        size_t i = 0;

        params->n = 0;
        for (;; i++) {
                size_t len = strcspn(p, "/");

                if (i >= segs->n)
                        return false;
                if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
                        /* A parameter matches any non-empty segment. */
                        if (segs->v[i][0] == '\0' || params->n == ORCH_ROUTER_MAX_PARAMS)
                                return false;
                        params->names[params->n] = p + 1;
                        params->values[params->n] = segs->v[i];
                        params->n++;
                } else if (strlen(segs->v[i]) != len || strncmp(segs->v[i], p, len) != 0) {
                        return false;
                }
                p += len;
                if (*p != '/')
                        return i + 1 == segs->n;
                p++;
        }
}

/* Appends a method to an Allow list ("GET, HEAD, POST") once. */
static void allow_add(struct orch_buf *allow, const char *method)
{
        size_t l = strlen(method);

        for (const char *p = allow->data; p && *p;) {
                size_t n = strcspn(p, ",");
                if (n == l && strncmp(p, method, l) == 0)
                        return;
                p += n;
                p += strspn(p, ", ");
        }
        orch_buf_printf(allow, "%s%s", allow->len ? ", " : "", method);
}

const char *orch_router_param(const struct orch_router_params *params, const char *name)
{
        size_t l = strlen(name);

        for (size_t i = 0; i < params->n; i++)
                if (strncmp(params->names[i], name, l) == 0 && params->names[i][l] == '}')
                        return params->values[i];
        return NULL;
}

int orch_router_dispatch(const struct orch_http_route *routes, size_t n_routes, struct orch_httpd_req *req,
                         void *userdata)
{
        const struct orch_http_head *head = orch_httpd_req_head(req);
        struct segments segs = {0};
        struct orch_router_params params;
        struct orch_buf allow = {0};
        const struct orch_http_route *found = NULL;
        bool head_method = streq(head->method, "HEAD");
        int r;

        r = split_path(head->path, &segs);
        if (r == -EINVAL) {
                orch_httpd_respond_error(req, 400, "malformed percent-escape in the path");
                return 0;
        }
        if (r < 0) {
                orch_httpd_respond_error(req, 404, "no such resource: %s", head->target);
                return 0;
        }
        for (size_t i = 0; i < n_routes && !found; i++) {
                struct orch_router_params tmp;

                if (!match(routes[i].pattern, &segs, &tmp))
                        continue;
                if (streq(routes[i].method, head->method) ||
                    (head_method && streq(routes[i].method, "GET"))) {
                        found = &routes[i];
                        params = tmp;
                } else {
                        allow_add(&allow, routes[i].method);
                        if (streq(routes[i].method, "GET"))
                                allow_add(&allow, "HEAD");
                }
        }
        /* An exact method wins over HEAD's use of GET routes, whatever their order. */
        if (found && head_method && !streq(found->method, "HEAD")) {
                for (size_t i = 0; i < n_routes; i++) {
                        struct orch_router_params tmp;

                        if (streq(routes[i].method, "HEAD") && match(routes[i].pattern, &segs, &tmp)) {
                                found = &routes[i];
                                params = tmp;
                                break;
                        }
                }
        }
        if (found) {
                found->handler(req, &params, userdata);
        } else if (allow.len) {
                if (allow.oom || orch_httpd_req_add_header(req, "Allow", allow.data) < 0)
                        r = -ENOMEM;
                orch_httpd_respond_error(req, 405, "method %s not allowed here (allowed: %s)", head->method,
                                         allow.data ? allow.data : "");
        } else {
                orch_httpd_respond_error(req, 404, "no such resource: %s", head->path);
        }
        orch_buf_release(&allow);
        segments_release(&segs);
        return r == -ENOMEM ? -ENOMEM : 0;
}
