/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <openssl/evp.h>

#include "json.h"
#include "manifest.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/*
 * The canonical JSON form of a service, and what is derived from it: equality, deep copies and
 * the revision. Every field is written, defaults included, with the manifest's key names and
 * the canonical unit spellings of lib/units.h; values whose default is "not set" (workdir,
 * group, route.host, a rate limit, the driver, a whole health or route block) are left out,
 * which is how a manifest says "not set". orch_json_dumps_canonical() sorts the keys, so the
 * bytes depend only on the values.
 */

/* Collects allocation failures so the builder reads as a list of fields. */
struct jb {
        bool oom;
};

static json_t *put(struct jb *b, json_t *obj, const char *key, json_t *v)
{
        if (!obj || !v || json_object_set_new(obj, key, v) < 0)
                b->oom = true;
        return v;
}

static void put_str(struct jb *b, json_t *obj, const char *key, const char *value)
{
        put(b, obj, key, json_string(value));
}

static void put_uint(struct jb *b, json_t *obj, const char *key, uint64_t value)
{
        put(b, obj, key, json_integer((json_int_t)value));
}

static void put_bool(struct jb *b, json_t *obj, const char *key, bool value)
{
        put(b, obj, key, json_boolean(value));
}

static void put_duration(struct jb *b, json_t *obj, const char *key, uint64_t ms)
{
        char buf[32];

        if (orch_format_duration(ms, buf, sizeof buf) < 0)
                b->oom = true;
        else
                put_str(b, obj, key, buf);
}

static void put_size(struct jb *b, json_t *obj, const char *key, uint64_t bytes)
{
        char buf[32];

        if (orch_format_size(bytes, buf, sizeof buf) < 0)
                b->oom = true;
        else
                put_str(b, obj, key, buf);
}

static json_t *strv_to_json(struct jb *b, char *const *v)
{
        json_t *a = json_array();

        for (size_t i = 0; a && v && v[i]; i++)
                if (json_array_append_new(a, json_string(v[i])) < 0)
                        b->oom = true;
        return a;
}

static void put_health(struct jb *b, json_t *o, const struct orch_health *h)
{
        json_t *j;

        if (h->type == ORCH_HEALTH_NONE)
                return;
        j = put(b, o, "health", json_object());
        put_str(b, j, "type", orch_health_type_to_string(h->type));
        if (h->type == ORCH_HEALTH_HTTP || h->type == ORCH_HEALTH_TCP)
                put_str(b, j, "port", strempty(h->port));
        if (h->type == ORCH_HEALTH_HTTP)
                put_str(b, j, "path", h->path ? h->path : "/");
        if (h->type == ORCH_HEALTH_EXEC)
                put(b, j, "command", strv_to_json(b, h->command));
        put_duration(b, j, "interval", h->interval_ms);
        put_duration(b, j, "timeout", h->timeout_ms);
        put_duration(b, j, "grace", h->grace_ms);
        put_uint(b, j, "unhealthy_threshold", h->unhealthy_threshold);
        put_uint(b, j, "healthy_threshold", h->healthy_threshold);
        put_str(b, j, "on_unhealthy", orch_on_unhealthy_to_string(h->on_unhealthy));
}

static void put_route(struct jb *b, json_t *o, const struct orch_route *r)
{
        json_t *j;
        char rate[48];

        if (!r->enabled)
                return;
        j = put(b, o, "route", json_object());
        put_str(b, j, "path", r->path ? r->path : "/");
        if (r->host)
                put_str(b, j, "host", r->host);
        put_bool(b, j, "strip_prefix", r->strip_prefix);
        put_str(b, j, "port", strempty(r->port));
        if (r->rate_count > 0) {
                if (orch_format_rate(r->rate_count, r->rate_period_ms, rate, sizeof rate) < 0)
                        b->oom = true;
                else
                        put_str(b, j, "rate_limit", rate);
                put_uint(b, j, "rate_burst", r->rate_burst);
        }
        put_str(b, j, "auth", orch_route_auth_to_string(r->auth));
        put_size(b, j, "max_body", r->max_body);
        put_duration(b, j, "timeout", r->timeout_ms);
}

int orch_service_to_json(const struct orch_service *s, json_t **ret)
{
        _cleanup_json_ json_t *o = json_object();
        struct jb b = {0};
        json_t *j, *a;
        char buf[32];

        if (!s->name || !s->command || !s->command[0])
                return -EINVAL;
        put_str(&b, o, "kind", "service");
        put_str(&b, o, "name", s->name);
        put_uint(&b, o, "replicas", s->replicas);
        if (s->command_is_shell && orch_strv_length(s->command) == 3)
                put_str(&b, o, "command", s->command[2]);
        else
                put(&b, o, "command", strv_to_json(&b, s->command));
        j = put(&b, o, "env", json_object());
        for (size_t i = 0; i < s->n_env; i++)
                put_str(&b, j, s->env[i].name, s->env[i].value);
        if (s->workdir)
                put_str(&b, o, "workdir", s->workdir);
        put_str(&b, o, "user", s->user ? s->user : "nobody");
        if (s->group)
                put_str(&b, o, "group", s->group);

        j = put(&b, o, "resources", json_object());
        if (s->resources.cpu_millis) {
                if (orch_format_cpu(s->resources.cpu_millis, buf, sizeof buf) < 0)
                        b.oom = true;
                else
                        put_str(&b, j, "cpu", buf);
        }
        if (s->resources.memory)
                put_size(&b, j, "memory", s->resources.memory);
        if (s->resources.pids)
                put_uint(&b, j, "pids", s->resources.pids);

        a = put(&b, o, "ports", json_array());
        for (size_t i = 0; a && i < s->n_ports; i++) {
                json_t *p = json_object();
                put_str(&b, p, "name", s->ports[i].name);
                if (json_array_append_new(a, p) < 0)
                        b.oom = true;
        }

        put_health(&b, o, &s->health);

        j = put(&b, o, "restart", json_object());
        put_str(&b, j, "policy", orch_restart_policy_to_string(s->restart.policy));
        put_duration(&b, j, "backoff", s->restart.backoff_ms);
        put_duration(&b, j, "max_backoff", s->restart.max_backoff_ms);
        put_duration(&b, j, "reset_after", s->restart.reset_after_ms);

        j = put(&b, o, "stop", json_object());
        put_str(&b, j, "signal", strempty(orch_signal_to_string(s->stop.signal)));
        put_duration(&b, j, "timeout", s->stop.timeout_ms);

        j = put(&b, o, "placement", json_object());
        a = put(&b, j, "constraints", json_array());
        for (size_t i = 0; a && i < s->placement.n_constraints; i++) {
                const struct orch_constraint *c = &s->placement.constraints[i];
                if (json_array_append_new(
                            a, json_sprintf("%s%s%s", c->key, c->negate ? "!=" : "=", c->value)) < 0)
                        b.oom = true;
        }
        put_str(&b, j, "strategy", orch_strategy_to_string(s->placement.strategy));

        j = put(&b, o, "update", json_object());
        put_uint(&b, j, "max_surge", s->update.max_surge);
        put_uint(&b, j, "max_unavailable", s->update.max_unavailable);
        put_duration(&b, j, "min_healthy", s->update.min_healthy_ms);
        put_duration(&b, j, "progress_deadline", s->update.progress_deadline_ms);
        put_bool(&b, j, "auto_revert", s->update.auto_revert);

        put_route(&b, o, &s->route);

        j = put(&b, o, "logs", json_object());
        put_size(&b, j, "max_size", s->logs.max_size);
        put_uint(&b, j, "max_files", s->logs.max_files);

        j = put(&b, o, "sandbox", json_object());
        put_bool(&b, j, "no_new_privileges", s->sandbox.no_new_privileges);
        put_bool(&b, j, "private_tmp", s->sandbox.private_tmp);
        put_bool(&b, j, "protect_system", s->sandbox.protect_system);
        put_bool(&b, j, "dynamic_user", s->sandbox.dynamic_user);

        if (s->driver != ORCH_DRIVER_DEFAULT)
                put_str(&b, o, "driver", orch_driver_to_string(s->driver));

        if (b.oom)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int canonical_string(const struct orch_service *s, bool template_only, char **ret)
{
        _cleanup_json_ json_t *j = NULL;
        char *text;
        int r;

        r = orch_service_to_json(s, &j);
        if (r < 0)
                return r;
        if (template_only) {
                /* How many, how replaced and how reached: not what an instance runs. */
                json_object_del(j, "replicas");
                json_object_del(j, "update");
                json_object_del(j, "route");
        }
        text = orch_json_dumps_canonical(j);
        if (!text)
                return -ENOMEM;
        *ret = text;
        return 0;
}

static int sha256_hex(const char *data, char *out, size_t hex_chars)
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;

        if (!EVP_Digest(data, strlen(data), md, &n, EVP_sha256(), NULL) || n * 2 < hex_chars)
                return -EIO;
        for (size_t i = 0; i < hex_chars; i++)
                out[i] = hex[i % 2 ? md[i / 2] & 15 : md[i / 2] >> 4];
        out[hex_chars] = '\0';
        return 0;
}

int orch_service_revision(const struct orch_service *s, char ret[ORCH_REVISION_LEN + 1])
{
        _cleanup_(freep) char *text = NULL;
        int r = canonical_string(s, true, &text);

        return r < 0 ? r : sha256_hex(text, ret, ORCH_REVISION_LEN);
}

int orch_service_spec_hash(const struct orch_service *s, char ret[65])
{
        _cleanup_(freep) char *text = NULL;
        int r = canonical_string(s, false, &text);

        return r < 0 ? r : sha256_hex(text, ret, 64);
}

bool orch_service_equal(const struct orch_service *a, const struct orch_service *b)
{
        _cleanup_(freep) char *x = NULL, *y = NULL;

        if (canonical_string(a, false, &x) < 0 || canonical_string(b, false, &y) < 0)
                return false;
        return streq(x, y);
}

int orch_service_dup(const struct orch_service *s, struct orch_service **ret)
{
        _cleanup_json_ json_t *j = NULL;
        struct orch_service *copy;
        struct orch_diags diags = {0};
        int r;

        r = orch_service_to_json(s, &j);
        if (r < 0)
                return r;
        r = orch_service_from_json(j, s->source_file, &copy, &diags);
        orch_diags_release(&diags);
        if (r < 0)
                return r;
        if (!s->source_file) {
                free(copy->source_file);
                copy->source_file = NULL;
        }
        copy->source_line = s->source_line;
        copy->source_column = s->source_column;
        *ret = copy;
        return 0;
}
