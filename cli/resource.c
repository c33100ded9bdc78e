/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "client.h"
#include "resource.h"
#include "util.h"
#include "banned.h"

static const struct {
        const char *plural, *singular, *alias;
} names[_ORCH_RESOURCE_MAX] = {
        [ORCH_RESOURCE_SERVICES] = {"services", "service", "svc"},
        [ORCH_RESOURCE_INSTANCES] = {"instances", "instance", "inst"},
        [ORCH_RESOURCE_NODES] = {"nodes", "node", "no"},
};

int orch_resource_from_string(const char *s, enum orch_resource *ret)
{
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i].plural) || streq(s, names[i].singular) || streq(s, names[i].alias)) {
                        *ret = (enum orch_resource)i;
                        return 0;
                }
        return -EINVAL;
}

const char *orch_resource_plural(enum orch_resource k)
{
        return k < _ORCH_RESOURCE_MAX ? names[k].plural : NULL;
}

const char *orch_resource_singular(enum orch_resource k)
{
        return k < _ORCH_RESOURCE_MAX ? names[k].singular : NULL;
}

int orch_resource_target(enum orch_resource k, const char *name, const char *service, const char *node,
                         char **ret)
{
        _cleanup_(freep) char *escaped = NULL;
        struct orch_buf b = {0};
        const char *sep = "?";

        orch_buf_printf(&b, "/v1/%s", names[k].plural);
        if (name) {
                escaped = orch_client_escape(name);
                if (!escaped) {
                        orch_buf_release(&b);
                        return -ENOMEM;
                }
                orch_buf_printf(&b, "/%s", escaped);
        }
        for (size_t i = 0; i < 2; i++) {
                const char *key = i == 0 ? "service" : "node", *value = i == 0 ? service : node;
                _cleanup_(freep) char *v = NULL;

                if (!value)
                        continue;
                v = orch_client_escape(value);
                if (!v) {
                        orch_buf_release(&b);
                        return -ENOMEM;
                }
                orch_buf_printf(&b, "%s%s=%s", sep, key, v);
                sep = "&";
        }
        if (b.oom) {
                orch_buf_release(&b);
                return -ENOMEM;
        }
        *ret = orch_buf_steal(&b);
        return 0;
}
