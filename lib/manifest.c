/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "manifest.h"
#include "units.h"
#include "util.h"
#include "yaml-tree.h"
#include "banned.h"

/*
 * Validation: a positioned node tree (lib/yaml-tree.h) becomes a struct orch_service. Each
 * block of the manifest is a table of fields; parse_block() walks a mapping once, reports
 * unknown keys (with a suggestion) and duplicate keys, and hands every value to its field's
 * parser. Rules that tie fields together run once the block is read (block post functions).
 * Every error is reported, with the position of the offending key or value; parsing goes on
 * after an error so that the user sees all of them in one round.
 */

#define PATH_BUF        160
#define MAX_PORTS       64
#define MAX_CONSTRAINTS 64
#define MAX_REPLICAS    10000u
#define MAX_ENV_NAME    255
#define MAX_HTTP_PATH   1024
#define MAX_FS_PATH     4095

struct vctx {
        const char *file;
        struct orch_diags *diags;
        unsigned errors;
        bool ports_ok; /* port references can be checked (the port list itself was valid) */
};

_printf_(3, 4) static void verr(struct vctx *c, const struct orch_ynode *n, const char *fmt, ...)
{
        struct orch_buf msg = {0};
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&msg, fmt, ap);
        va_end(ap);
        orch_diags_add(c->diags, c->file, n ? n->line : 0, n ? n->column : 0, "%s",
                       msg.oom ? "out of memory" : strempty(msg.data));
        orch_buf_release(&msg);
        c->errors++;
}

static const char *join(char buf[static PATH_BUF], const char *parent, const char *key)
{
        char s[ORCH_YTREE_SHORT];

        (void)orch_snprintf(buf, PATH_BUF, "%s%s%s", parent, *parent ? "." : "", orch_ytree_shorten(key, s));
        return buf;
}

static const char *join_index(char buf[static PATH_BUF], const char *parent, size_t i)
{
        (void)orch_snprintf(buf, PATH_BUF, "%s[%zu]", parent, i);
        return buf;
}

/* "web.yaml:7:13" style reference to another node, for "first declared at" hints. */
static const char *where(const struct orch_ynode *n, char buf[static 32])
{
        if (n->line == 0)
                return "elsewhere in the input";
        (void)orch_snprintf(buf, 32, "line %u", n->line);
        return buf;
}

/* -------------------------------------------------------------------------------------------- */
/* String tables */

static const char *const restart_policy_names[_ORCH_RESTART_POLICY_MAX] = {
        [ORCH_RESTART_ALWAYS] = "always",
        [ORCH_RESTART_ON_FAILURE] = "on-failure",
        [ORCH_RESTART_NEVER] = "never",
};

static const char *const health_type_names[_ORCH_HEALTH_TYPE_MAX] = {
        [ORCH_HEALTH_NONE] = "none",
        [ORCH_HEALTH_HTTP] = "http",
        [ORCH_HEALTH_TCP] = "tcp",
        [ORCH_HEALTH_EXEC] = "exec",
};

static const char *const on_unhealthy_names[_ORCH_ON_UNHEALTHY_MAX] = {
        [ORCH_ON_UNHEALTHY_RESTART] = "restart",
        [ORCH_ON_UNHEALTHY_IGNORE] = "ignore",
};

static const char *const strategy_names[_ORCH_STRATEGY_MAX] = {
        [ORCH_STRATEGY_SPREAD] = "spread",
        [ORCH_STRATEGY_BINPACK] = "binpack",
};

static const char *const driver_names[_ORCH_DRIVER_MAX] = {
        [ORCH_DRIVER_DEFAULT] = "default",
        [ORCH_DRIVER_EXEC] = "exec",
        [ORCH_DRIVER_SYSTEMD] = "systemd",
};

static const char *const route_auth_names[_ORCH_ROUTE_AUTH_MAX] = {
        [ORCH_ROUTE_AUTH_NONE] = "none",
        [ORCH_ROUTE_AUTH_API_KEY] = "api-key",
};

static const char *table_lookup(const char *const *table, size_t n, int i)
{
        return i >= 0 && (size_t)i < n ? table[i] : NULL;
}

const char *orch_restart_policy_to_string(enum orch_restart_policy p)
{
        return table_lookup(restart_policy_names, ELEMENTSOF(restart_policy_names), (int)p);
}

const char *orch_health_type_to_string(enum orch_health_type t)
{
        return table_lookup(health_type_names, ELEMENTSOF(health_type_names), (int)t);
}

const char *orch_on_unhealthy_to_string(enum orch_on_unhealthy o)
{
        return table_lookup(on_unhealthy_names, ELEMENTSOF(on_unhealthy_names), (int)o);
}

const char *orch_strategy_to_string(enum orch_strategy s)
{
        return table_lookup(strategy_names, ELEMENTSOF(strategy_names), (int)s);
}

const char *orch_driver_to_string(enum orch_driver d)
{
        return table_lookup(driver_names, ELEMENTSOF(driver_names), (int)d);
}

const char *orch_route_auth_to_string(enum orch_route_auth a)
{
        return table_lookup(route_auth_names, ELEMENTSOF(route_auth_names), (int)a);
}

int orch_driver_from_string(const char *s, enum orch_driver *ret)
{
        for (size_t i = 0; i < ELEMENTSOF(driver_names); i++)
                if (streq(s, driver_names[i])) {
                        *ret = (enum orch_driver)i;
                        return 0;
                }
        return -EINVAL;
}

/* The signals a service may ask to be stopped with: the ones programs handle for a shutdown. */
static const struct {
        const char *name;
        int sig;
} signals[] = {
        {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"ABRT", SIGABRT},
        {"KILL", SIGKILL}, {"USR1", SIGUSR1},   {"USR2", SIGUSR2}, {"ALRM", SIGALRM},
        {"TERM", SIGTERM}, {"WINCH", SIGWINCH}, {"PWR", SIGPWR},
};

int orch_signal_from_string(const char *s, int *ret)
{
        const char *name = s;
        uint32_t n;

        if (orch_parse_u32(s, &n) == 0) {
                if (!orch_signal_to_string((int)n))
                        return -EINVAL;
                *ret = (int)n;
                return 0;
        }
        if (strncasecmp(name, "SIG", 3) == 0)
                name += 3;
        for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                if (strcasecmp(name, signals[i].name) == 0) {
                        *ret = signals[i].sig;
                        return 0;
                }
        return -EINVAL;
}

const char *orch_signal_to_string(int sig)
{
        for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                if (signals[i].sig == sig)
                        return signals[i].name;
        return NULL;
}

/* -------------------------------------------------------------------------------------------- */
/* Name checks */

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
        return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* ^[a-z][a-z0-9-]{0,max-1}$ */
static bool dns_label_valid(const char *s, size_t max)
{
        size_t n = 0;

        if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
                return false;
        for (; s[n]; n++)
                if (!is_lower_alnum(s[n]) && s[n] != '-')
                        return false;
        return n <= max;
}

bool orch_service_name_valid(const char *name)
{
        return dns_label_valid(name, ORCH_NAME_MAX);
}

bool orch_port_name_valid(const char *name)
{
        return dns_label_valid(name, 31);
}

static bool env_name_valid(const char *s)
{
        size_t n = 0;

        if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return false;
        for (; s[n]; n++)
                if (!is_alnum(s[n]) && s[n] != '_')
                        return false;
        return n <= MAX_ENV_NAME;
}

/* User and group names as shadow-utils accepts them (letters, digits, '_', '-', '.', an optional
 * trailing '$' for machine accounts), or a numeric id. */
static bool account_name_valid(const char *s)
{
        uint32_t id;
        size_t n = 0;

        if (orch_parse_u32(s, &id) == 0)
                return id != UINT32_MAX; /* (uid_t)-1 means "no change" to setresuid() */
        if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
                return false;
        for (; s[n]; n++) {
                if (s[n] == '$' && s[n + 1] == '\0')
                        break;
                if (!is_alnum(s[n]) && s[n] != '_' && s[n] != '-' && s[n] != '.')
                        return false;
        }
        return n <= 32;
}

/* Node label keys and values (placement constraints), as the agent's --label accepts them. */
static bool label_key_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 63 || !is_alnum(s[0]) || !is_alnum(s[n - 1]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_alnum(s[i]) && !strchr("._/-", s[i]))
                        return false;
        return true;
}

static bool label_value_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_alnum(s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

/* A DNS name: labels of [a-z0-9-], not starting or ending with '-', at most 253 characters. */
static bool host_valid(const char *s)
{
        size_t label = 0, n = strlen(s);

        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (s[i] == '.' || s[i] == '\0') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!is_lower_alnum(s[i]) && !(s[i] == '-' && label > 0))
                        return false;
                label++;
        }
        return true;
}

/* A URL path prefix: starts with '/', printable ASCII, no space, query or fragment. */
static bool http_path_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > MAX_HTTP_PATH || s[0] != '/')
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '?' || s[i] == '#')
                        return false;
        return true;
}

static bool abs_path_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > MAX_FS_PATH || s[0] != '/')
                return false;
        /* ".." would let a relative walk escape what the path seems to name */
        for (const char *p = s; (p = strstr(p, "..")); p += 2)
                if (p[-1] == '/' && (p[2] == '/' || p[2] == '\0'))
                        return false;
        return true;
}

/* The environment variable a port is exported as: PORT_<NAME>, '-' as '_', upper case. */
static void port_env_suffix(const char *port, char *buf, size_t size)
{
        size_t i = 0;

        for (; port[i] && i + 1 < size; i++)
                buf[i] = port[i] == '-' ? '_'
                                        : (char)(port[i] >= 'a' && port[i] <= 'z' ? port[i] - 32 : port[i]);
        buf[i] = '\0';
}

/* -------------------------------------------------------------------------------------------- */
/* Lookup helpers */

const struct orch_port *orch_service_find_port(const struct orch_service *s, const char *name)
{
        int i = orch_service_port_index(s, name);
        return i < 0 ? NULL : &s->ports[i];
}

int orch_service_port_index(const struct orch_service *s, const char *name)
{
        for (size_t i = 0; name && i < s->n_ports; i++)
                if (streq(s->ports[i].name, name))
                        return (int)i;
        return -1;
}

/* "http, metrics" for messages (the first few). */
static void port_list(const struct orch_service *s, char *buf, size_t size)
{
        struct orch_buf b = {0};

        for (size_t i = 0; i < s->n_ports && i < 8; i++)
                orch_buf_printf(&b, "%s%s", i ? ", " : "", s->ports[i].name);
        if (s->n_ports > 8)
                orch_buf_puts(&b, ", ...");
        orch_strlcpy(buf, b.oom ? "" : strempty(b.data), size);
        orch_buf_release(&b);
}

/* -------------------------------------------------------------------------------------------- */
/* Scalars */

static bool is_scalar(const struct orch_ynode *v, enum orch_yscalar_kind k)
{
        return v->type == ORCH_YNODE_SCALAR && v->kind == k;
}

/* Text of a scalar that may stand for a string: strings and, where allowed, numbers. */
static const char *stringish(const struct orch_ynode *v, bool numbers_too)
{
        if (v->type != ORCH_YNODE_SCALAR)
                return NULL;
        if (v->kind == ORCH_YSCALAR_STRING)
                return v->value;
        if (numbers_too && (v->kind == ORCH_YSCALAR_INT || v->kind == ORCH_YSCALAR_FLOAT))
                return v->value;
        return NULL;
}

static const char *want_string(struct vctx *c, const struct orch_ynode *v, const char *path)
{
        if (is_scalar(v, ORCH_YSCALAR_STRING))
                return v->value;
        if (is_scalar(v, ORCH_YSCALAR_BOOL) || is_scalar(v, ORCH_YSCALAR_INT) ||
            is_scalar(v, ORCH_YSCALAR_FLOAT))
                verr(c, v, "%s: expected a string, got %s (quote it: \"%s\")", path, orch_ynode_describe(v),
                     v->value);
        else
                verr(c, v, "%s: expected a string, got %s", path, orch_ynode_describe(v));
        return NULL;
}

static int set_string(struct vctx *c, char **dst, const char *value)
{
        char *d = strdup(value);

        if (!d)
                return -ENOMEM;
        free(*dst);
        *dst = d;
        return 0;
}

/* YAML 1.2 core integers: decimal with an optional sign, 0x hex, 0o octal. */
static int parse_int(const char *text, bool *ret_negative, uint64_t *ret)
{
        const char *p = text;
        int base = 10;
        bool neg = false;

        if (*p == '-' || *p == '+')
                neg = *p++ == '-';
        if (startswith(p, "0x")) {
                base = 16;
                p += 2;
        } else if (startswith(p, "0o")) {
                base = 8;
                p += 2;
        }
        if (base == 10) {
                int r = orch_parse_u64(p, ret);
                if (r < 0)
                        return r;
        } else {
                char *end;
                errno = 0;
                *ret = strtoull(p, &end, base);
                if (errno == ERANGE)
                        return -ERANGE;
                if (!*p || *end)
                        return -EINVAL;
        }
        *ret_negative = neg && *ret != 0;
        return 0;
}

static bool want_uint(struct vctx *c, const struct orch_ynode *v, const char *path, uint64_t min,
                      uint64_t max, uint64_t *ret)
{
        bool neg;
        uint64_t n;
        int r;

        if (!is_scalar(v, ORCH_YSCALAR_INT)) {
                if (is_scalar(v, ORCH_YSCALAR_STRING) && orch_parse_u64(v->value, &n) == 0)
                        verr(c, v, "%s: expected an integer, got a string (remove the quotes)", path);
                else
                        verr(c, v, "%s: expected an integer, got %s", path, orch_ynode_describe(v));
                return false;
        }
        r = parse_int(v->value, &neg, &n);
        if (r == 0 && neg) {
                verr(c, v, "%s: must not be negative (got %s)", path, v->value);
                return false;
        }
        if (r < 0 || n < min || n > max) {
                verr(c, v, "%s: %s is out of range (%" PRIu64 " to %" PRIu64 ")", path, v->value, min, max);
                return false;
        }
        *ret = n;
        return true;
}

/* -------------------------------------------------------------------------------------------- */
/* The field tables */

enum field_kind {
        F_U32,
        F_DURATION,
        F_SIZE,
        F_BOOL,
        F_ENUM,
        F_CUSTOM,
        F_BLOCK,
};

struct block;

typedef void (*custom_fn)(struct vctx *c, const struct orch_ynode *v, const char *path,
                          struct orch_service *s);

struct field {
        const char *key;
        enum field_kind kind;
        size_t offset; /* into struct orch_service */
        uint64_t min, max;
        const char *const *names; /* F_ENUM: the table; NULL entries and names[skip] are not accepted */
        size_t n_names;
        int skip; /* F_ENUM: an index that exists only as a default ("none", "default"), or -1 */
        custom_fn custom;
        const struct block *block;
        bool early; /* read before the other keys of its block, whatever the order in the file */
};

/* The value nodes of a block's fields, in table order (NULL: not given), and which of them were
 * rejected: a rule between two fields runs only when both are good, so one mistake gives one error. */
typedef const struct orch_ynode *seen_t[24];
typedef bool failed_t[24];

struct block {
        const struct field *fields;
        size_t n_fields;
        void (*post)(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                     const failed_t failed, struct orch_service *s);
};

#define FIELD_AT(s, f, type) ((type *)((char *)(s) + (f)->offset))

static void parse_block(struct vctx *c, const struct orch_ynode *map, const char *path,
                        const struct block *b, struct orch_service *s);

static void parse_enum(struct vctx *c, const struct field *f, const struct orch_ynode *v, const char *path,
                       struct orch_service *s)
{
        const char *candidates[8];
        struct orch_buf list = {0};
        const char *text, *hint;
        size_t n = 0;
        char q[ORCH_YTREE_SHORT];

        for (size_t i = 0; i < f->n_names; i++) {
                if ((int)i == f->skip || !f->names[i])
                        continue;
                candidates[n] = f->names[i];
                n++;
        }
        for (size_t i = 0; i < n; i++)
                orch_buf_printf(&list, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", candidates[i]);
        text = want_string(c, v, path);
        if (!text) {
                orch_buf_release(&list);
                return;
        }
        for (size_t i = 0; i < f->n_names; i++)
                if ((int)i != f->skip && f->names[i] && streq(text, f->names[i])) {
                        *FIELD_AT(s, f, int) = (int)i;
                        orch_buf_release(&list);
                        return;
                }
        hint = orch_suggest(text, candidates, n);
        if (hint)
                verr(c, v, "%s: unknown value '%s' (did you mean '%s'? expected %s)", path,
                     orch_ytree_shorten(text, q), hint, strempty(list.data));
        else
                verr(c, v, "%s: unknown value '%s' (expected %s)", path, orch_ytree_shorten(text, q),
                     strempty(list.data));
        orch_buf_release(&list);
}

static void parse_duration_field(struct vctx *c, const struct field *f, const struct orch_ynode *v,
                                 const char *path, struct orch_service *s)
{
        const char *text = stringish(v, true);
        char q[ORCH_YTREE_SHORT], lim[32];
        uint64_t ms;
        int r;

        if (!text) {
                verr(c, v, "%s: expected a duration such as \"2s\", got %s", path, orch_ynode_describe(v));
                return;
        }
        if (text[0] == '-') {
                verr(c, v, "%s: must not be negative (got %s)", path, orch_ytree_shorten(text, q));
                return;
        }
        r = orch_parse_duration(text, &ms);
        if (r == -ERANGE) {
                verr(c, v, "%s: \"%s\" is too long (at most 366 days)", path, orch_ytree_shorten(text, q));
                return;
        }
        if (r < 0) {
                if (v->kind != ORCH_YSCALAR_STRING)
                        verr(c, v,
                             "%s: bad duration %s (a number needs a unit: ms, s, m or h, e.g. \"%ss\")",
                             path, orch_ytree_shorten(text, q), q);
                else
                        verr(c, v,
                             "%s: bad duration \"%s\" (use a number with ms, s, m or h, e.g. \"2s\" or "
                             "\"1m30s\")",
                             path, orch_ytree_shorten(text, q));
                return;
        }
        if (ms < f->min || ms > f->max) {
                bool low = ms < f->min;
                orch_format_duration(low ? f->min : f->max, lim, sizeof lim);
                verr(c, v, "%s: must be at %s %s (got %s)", path, low ? "least" : "most", lim,
                     orch_ytree_shorten(text, q));
                return;
        }
        *FIELD_AT(s, f, uint64_t) = ms;
}

static bool parse_size_value(struct vctx *c, const struct orch_ynode *v, const char *path, uint64_t min,
                             uint64_t max, uint64_t *ret)
{
        char q[ORCH_YTREE_SHORT], lim[32];
        const char *text = stringish(v, true);
        uint64_t bytes;
        int r;

        if (!text) {
                verr(c, v, "%s: expected a size such as \"128Mi\", got %s", path, orch_ynode_describe(v));
                return false;
        }
        if (text[0] == '-') {
                verr(c, v, "%s: must not be negative (got %s)", path, orch_ytree_shorten(text, q));
                return false;
        }
        r = orch_parse_size(text, &bytes);
        if (r == -ERANGE || (r == 0 && bytes > max)) {
                orch_format_size(max, lim, sizeof lim);
                verr(c, v, "%s: \"%s\" is too large (at most %s)", path, orch_ytree_shorten(text, q), lim);
                return false;
        }
        if (r < 0) {
                verr(c, v, "%s: bad size \"%s\" (use a number with Ki, Mi, Gi, K, M or G, or plain bytes)",
                     path, orch_ytree_shorten(text, q));
                return false;
        }
        if (bytes < min) {
                orch_format_size(min, lim, sizeof lim);
                verr(c, v, "%s: must be at least %s (got %s)", path, lim, orch_ytree_shorten(text, q));
                return false;
        }
        *ret = bytes;
        return true;
}

static void parse_field(struct vctx *c, const struct field *f, const struct orch_ynode *v, const char *path,
                        struct orch_service *s)
{
        uint64_t n;

        switch (f->kind) {
        case F_U32:
                if (want_uint(c, v, path, f->min, f->max, &n))
                        *FIELD_AT(s, f, uint32_t) = (uint32_t)n;
                break;
        case F_DURATION:
                parse_duration_field(c, f, v, path, s);
                break;
        case F_SIZE:
                if (parse_size_value(c, v, path, f->min, f->max, &n))
                        *FIELD_AT(s, f, uint64_t) = n;
                break;
        case F_BOOL:
                if (is_scalar(v, ORCH_YSCALAR_BOOL))
                        *FIELD_AT(s, f, bool) = v->value[0] == 't' || v->value[0] == 'T';
                else
                        verr(c, v, "%s: expected true or false, got %s", path, orch_ynode_describe(v));
                break;
        case F_ENUM:
                parse_enum(c, f, v, path, s);
                break;
        case F_CUSTOM:
                if (f->custom)
                        f->custom(c, v, path, s);
                break;
        case F_BLOCK:
                parse_block(c, v, path, f->block, s);
                break;
        }
}

static void unknown_key(struct vctx *c, const struct orch_ynode *k, const char *path, const struct block *b)
{
        const char *names[ELEMENTSOF((seen_t){0})];
        char q[ORCH_YTREE_SHORT];
        const char *hint;

        if (c->diags->truncated) { /* nobody will read it: spare the suggestion on hostile input */
                c->errors++;
                return;
        }
        for (size_t i = 0; i < b->n_fields; i++)
                names[i] = b->fields[i].key;
        hint = orch_suggest(k->value, names, b->n_fields);
        if (streq(k->value, "<<"))
                verr(c, k, "%s%sYAML merge keys ('<<') are not supported", path, *path ? ": " : "");
        else if (hint)
                verr(c, k, "%s%sunknown key '%s' (did you mean '%s'?)", path, *path ? ": " : "",
                     orch_ytree_shorten(k->value, q), hint);
        else
                verr(c, k, "%s%sunknown key '%s'", path, *path ? ": " : "", orch_ytree_shorten(k->value, q));
}

static void parse_block(struct vctx *c, const struct orch_ynode *map, const char *path,
                        const struct block *b, struct orch_service *s)
{
        seen_t seen = {0};
        failed_t failed = {0};
        const struct orch_ynode *seen_key[ELEMENTSOF(seen)] = {0};

        if (map->type != ORCH_YNODE_MAPPING) {
                verr(c, map, "%s: expected a mapping, got %s", path, orch_ynode_describe(map));
                return;
        }
        /* Two passes: the early fields (ports, driver) are what the others are checked against. */
        for (int pass = 0; pass < 2; pass++)
                for (size_t i = 0; i + 1 < map->n_items; i += 2) {
                        const struct orch_ynode *k = map->items[i], *v = map->items[i + 1];
                        const struct field *f = NULL;
                        char sub[PATH_BUF], w[32];
                        size_t j;

                        for (j = 0; j < b->n_fields; j++)
                                if (streq(k->value, b->fields[j].key)) {
                                        f = &b->fields[j];
                                        break;
                                }
                        if (!f) {
                                if (pass == 1)
                                        unknown_key(c, k, path, b);
                                continue;
                        }
                        if (f->early != (pass == 0))
                                continue;
                        join(sub, path, k->value);
                        if (seen[j]) {
                                verr(c, k, "%s: duplicate key (first at %s)", sub, where(seen_key[j], w));
                                continue;
                        }
                        unsigned before = c->errors;
                        seen[j] = v;
                        seen_key[j] = k;
                        parse_field(c, f, v, sub, s);
                        failed[j] = c->errors != before;
                }
        if (b->post)
                b->post(c, map, path, seen, failed, s);
}

/* -------------------------------------------------------------------------------------------- */
/* Custom fields */

static bool is_blank(const char *s)
{
        for (; *s; s++)
                if (!strchr(" \t\r\n", *s))
                        return false;
        return true;
}

/* A command: a list (exec form) or a string (run by /bin/sh -c). */
static bool parse_argv(struct vctx *c, const struct orch_ynode *v, const char *path, char ***ret,
                       bool *ret_shell)
{
        _cleanup_(orch_strv_freep) char **argv = NULL;

        if (is_scalar(v, ORCH_YSCALAR_STRING)) {
                if (is_blank(v->value)) {
                        verr(c, v, "%s: must not be empty", path);
                        return false;
                }
                if (orch_strv_push(&argv, "/bin/sh") < 0 || orch_strv_push(&argv, "-c") < 0 ||
                    orch_strv_push(&argv, v->value) < 0) {
                        verr(c, v, "%s: out of memory", path);
                        return false;
                }
                *ret_shell = true;
        } else if (v->type == ORCH_YNODE_SEQUENCE) {
                bool ok = true;

                if (v->n_items == 0) {
                        verr(c, v, "%s: must not be empty (give the program and its arguments)", path);
                        return false;
                }
                for (size_t i = 0; i < v->n_items; i++) {
                        const char *arg = stringish(v->items[i], true);
                        char sub[PATH_BUF];

                        join_index(sub, path, i);
                        if (!arg) {
                                verr(c, v->items[i], "%s: expected a string, got %s", sub,
                                     orch_ynode_describe(v->items[i]));
                                ok = false;
                        } else if (i == 0 && is_blank(arg)) {
                                verr(c, v->items[i], "%s: the program must not be empty", sub);
                                ok = false;
                        } else if (ok && orch_strv_push(&argv, arg) < 0) {
                                verr(c, v, "%s: out of memory", path);
                                ok = false;
                        }
                }
                if (!ok)
                        return false;
                *ret_shell = false;
        } else {
                verr(c, v, "%s: expected a list of arguments or a shell command string, got %s", path,
                     orch_ynode_describe(v));
                return false;
        }
        *ret = TAKE_PTR(argv);
        return true;
}

/* ${PORT} and ${PORT_<NAME>} must name declared ports; other ${...} are left to the program. */
static void check_refs_in(struct vctx *c, const struct orch_ynode *v, const char *text, const char *path,
                          const struct orch_service *s)
{
        char declared[160];

        if (!c->ports_ok)
                return;
        /* A plain walk, not strstr() in a loop: each call may measure the rest of the text (ASan's
         * interceptor does), which makes a value of a million "${" quadratic. */
        for (const char *p = text; *p; p++) {
                const char *end, *suffix;
                char name[64], envs[40];
                bool found = false;
                size_t len;

                if (p[0] != '$' || p[1] != '{')
                        continue;
                if (p > text && p[-1] == '$') /* "$${" is a literal "${" */
                        continue;
                /* Look for the '}' within a name's length only: scanning to the end of the value for
                 * every "${" would make "${${${...}" quadratic. */
                end = memchr(p + 2, '}', strnlen(p + 2, sizeof name));
                if (!end)
                        continue;
                len = (size_t)(end - p - 2);
                memcpy(name, p + 2, len);
                name[len] = '\0';
                if (streq(name, "PORT")) {
                        if (s->n_ports == 0)
                                verr(c, v, "%s: ${PORT} is used but the service declares no ports", path);
                        continue;
                }
                suffix = startswith(name, "PORT_");
                if (!suffix)
                        continue;
                for (size_t i = 0; i < s->n_ports && !found; i++) {
                        port_env_suffix(s->ports[i].name, envs, sizeof envs);
                        found = streq(envs, suffix);
                }
                if (found)
                        continue;
                if (c->diags->truncated) { /* past the error cap: count, do not format */
                        c->errors++;
                        continue;
                }
                port_list(s, declared, sizeof declared);
                verr(c, v, "%s: ${%s} refers to an undeclared port%s%s%s", path, name,
                     s->n_ports ? " (declared: " : " (the service declares no ports)",
                     s->n_ports ? declared : "", s->n_ports ? ")" : "");
        }
}

static void check_argv_refs(struct vctx *c, const struct orch_ynode *v, const char *path,
                            const struct orch_service *s)
{
        char sub[PATH_BUF];

        if (v->type == ORCH_YNODE_SCALAR) {
                check_refs_in(c, v, v->value, path, s);
                return;
        }
        for (size_t i = 0; i < v->n_items; i++)
                if (v->items[i]->type == ORCH_YNODE_SCALAR)
                        check_refs_in(c, v->items[i], v->items[i]->value, join_index(sub, path, i), s);
}

static void parse_command(struct vctx *c, const struct orch_ynode *v, const char *path,
                          struct orch_service *s)
{
        char **argv;
        bool shell;

        if (!parse_argv(c, v, path, &argv, &shell))
                return;
        orch_strv_free(s->command);
        s->command = argv;
        s->command_is_shell = shell;
        check_argv_refs(c, v, path, s);
}

static void parse_name(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];

        if (!text)
                return;
        if (!orch_service_name_valid(text)) {
                verr(c, v,
                     "%s: invalid name \"%s\" (lower-case letters, digits and '-', starting with a letter, "
                     "at most 63 characters)",
                     path, orch_ytree_shorten(text, q));
                return;
        }
        if (set_string(c, &s->name, text) < 0)
                verr(c, v, "%s: out of memory", path);
}

struct env_entry {
        const struct orch_ynode *key;
        const char *value;
        size_t index;
};

static int env_entry_cmp(const void *a, const void *b)
{
        const struct env_entry *x = a, *y = b;
        int r = strcmp(x->key->value, y->key->value);

        return r ? r : (x->index > y->index) - (x->index < y->index);
}

static bool env_name_reserved(const char *name, const struct orch_service *s)
{
        const char *suffix = startswith(name, "PORT_");
        char envs[40];

        if (streq(name, "PORT") || startswith(name, "ORCH_"))
                return true;
        for (size_t i = 0; suffix && i < s->n_ports; i++) {
                port_env_suffix(s->ports[i].name, envs, sizeof envs);
                if (streq(envs, suffix))
                        return true;
        }
        return false;
}

static void parse_env(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        _cleanup_(freep) struct env_entry *e = NULL;
        struct orch_env_var *vars;
        size_t n = 0;
        bool ok = true;

        if (v->type != ORCH_YNODE_MAPPING) {
                verr(c, v, "%s: expected a mapping of NAME: value, got %s", path, orch_ynode_describe(v));
                return;
        }
        e = calloc(v->n_items / 2 + 1, sizeof *e);
        if (!e) {
                verr(c, v, "%s: out of memory", path);
                return;
        }
        for (size_t i = 0; i + 1 < v->n_items; i += 2) {
                const struct orch_ynode *k = v->items[i], *val = v->items[i + 1];
                char sub[PATH_BUF], q[ORCH_YTREE_SHORT];
                const char *text;

                join(sub, path, k->value);
                if (!env_name_valid(k->value)) {
                        verr(c, k,
                             "%s: invalid variable name '%s' (letters, digits and '_', not starting with a "
                             "digit)",
                             path, orch_ytree_shorten(k->value, q));
                        ok = false;
                        continue;
                }
                if (env_name_reserved(k->value, s)) {
                        verr(c, k,
                             "%s: reserved: orch sets %s for every instance (PORT, PORT_<NAME> and ORCH_*)",
                             sub, orch_ytree_shorten(k->value, q));
                        ok = false;
                        continue;
                }
                text = stringish(val, true);
                if (!text) {
                        if (is_scalar(val, ORCH_YSCALAR_BOOL))
                                verr(c, val, "%s: expected a string, got a boolean (quote it: \"%s\")", sub,
                                     val->value);
                        else
                                verr(c, val, "%s: expected a string, got %s", sub, orch_ynode_describe(val));
                        ok = false;
                } else
                        check_refs_in(c, val, text, sub, s);
                e[n++] = (struct env_entry){.key = k, .value = text, .index = i};
        }
        /* Sorted by name: the canonical order, and duplicates become neighbours. */
        qsort(e, n, sizeof *e, env_entry_cmp);
        for (size_t i = 1; i < n; i++)
                if (streq(e[i].key->value, e[i - 1].key->value)) {
                        char sub[PATH_BUF], w[32];
                        verr(c, e[i].key, "%s: duplicate key (first at %s)",
                             join(sub, path, e[i].key->value), where(e[i - 1].key, w));
                        ok = false;
                }
        if (!ok)
                return;
        vars = calloc(n + 1, sizeof *vars);
        if (!vars) {
                verr(c, v, "%s: out of memory", path);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                vars[i].name = strdup(e[i].key->value);
                vars[i].value = strdup(e[i].value);
                if (!vars[i].name || !vars[i].value) {
                        for (size_t k = 0; k <= i; k++) {
                                free(vars[k].name);
                                free(vars[k].value);
                        }
                        free(vars);
                        verr(c, v, "%s: out of memory", path);
                        return;
                }
        }
        s->env = vars;
        s->n_env = n;
}

static void parse_workdir(struct vctx *c, const struct orch_ynode *v, const char *path,
                          struct orch_service *s)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];

        if (!text)
                return;
        if (!abs_path_valid(text)) {
                verr(c, v, "%s: must be an absolute path without '..' (got \"%s\")", path,
                     orch_ytree_shorten(text, q));
                return;
        }
        if (set_string(c, &s->workdir, text) < 0)
                verr(c, v, "%s: out of memory", path);
}

static void parse_account(struct vctx *c, const struct orch_ynode *v, const char *path, char **dst,
                          const char *what)
{
        const char *text = is_scalar(v, ORCH_YSCALAR_INT) ? v->value : want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];

        if (!text)
                return;
        if (!account_name_valid(text)) {
                verr(c, v,
                     "%s: invalid %s name \"%s\" (letters, digits, '_', '-' and '.', starting with a letter "
                     "or '_', at most 32 characters; or a numeric id)",
                     path, what, orch_ytree_shorten(text, q));
                return;
        }
        if (set_string(c, dst, text) < 0)
                verr(c, v, "%s: out of memory", path);
}

static void parse_user(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        parse_account(c, v, path, &s->user, "user");
}

static void parse_group(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        parse_account(c, v, path, &s->group, "group");
}

static void parse_cpu(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        const char *text = stringish(v, true);
        char q[ORCH_YTREE_SHORT];
        uint32_t m;
        int r;

        if (!text) {
                verr(c, v, "%s: expected a number of cores such as 0.5 or \"500m\", got %s", path,
                     orch_ynode_describe(v));
                return;
        }
        if (text[0] == '-') {
                verr(c, v, "%s: must not be negative (got %s)", path, orch_ytree_shorten(text, q));
                return;
        }
        r = orch_parse_cpu(text, &m);
        if (r == -ERANGE) {
                verr(c, v, "%s: %s is too large (at most 1000 cores)", path, orch_ytree_shorten(text, q));
                return;
        }
        if (r < 0) {
                uint64_t zero;
                if (orch_parse_u64(text, &zero) == 0 && zero == 0)
                        verr(c, v, "%s: must be more than 0 (leave it out for no CPU limit)", path);
                else
                        verr(c, v,
                             "%s: bad CPU amount \"%s\" (use cores such as 0.5 or 2, or millicores such as "
                             "500m)",
                             path, orch_ytree_shorten(text, q));
                return;
        }
        s->resources.cpu_millis = m;
}

static void parse_port_name_ref(struct vctx *c, const struct orch_ynode *v, const char *path, char **dst)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];

        if (!text)
                return;
        if (!orch_port_name_valid(text)) {
                verr(c, v, "%s: invalid port name \"%s\"", path, orch_ytree_shorten(text, q));
                return;
        }
        if (set_string(c, dst, text) < 0)
                verr(c, v, "%s: out of memory", path);
}

static void parse_ports(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        static const char *const keys[] = {"name"};
        struct orch_port *ports;
        unsigned before = c->errors;

        if (v->type != ORCH_YNODE_SEQUENCE) {
                verr(c, v, "%s: expected a list of {name: NAME}, got %s", path, orch_ynode_describe(v));
                return;
        }
        if (v->n_items > MAX_PORTS) {
                verr(c, v, "%s: too many ports (%zu; at most %d)", path, v->n_items, MAX_PORTS);
                return;
        }
        ports = calloc(v->n_items + 1, sizeof *ports);
        if (!ports) {
                verr(c, v, "%s: out of memory", path);
                return;
        }
        s->ports = ports;
        for (size_t i = 0; i < v->n_items; i++) {
                const struct orch_ynode *item = v->items[i], *name = NULL, *name_key = NULL;
                char sub[PATH_BUF], key[PATH_BUF], q[ORCH_YTREE_SHORT], w[32];

                join_index(sub, path, i);
                if (item->type != ORCH_YNODE_MAPPING) {
                        verr(c, item, "%s: expected a mapping such as {name: http}, got %s", sub,
                             orch_ynode_describe(item));
                        continue;
                }
                for (size_t k = 0; k + 1 < item->n_items; k += 2) {
                        const struct orch_ynode *kn = item->items[k];
                        const char *hint;

                        if (!streq(kn->value, "name")) {
                                hint = orch_suggest(kn->value, keys, ELEMENTSOF(keys));
                                verr(c, kn, "%s: unknown key '%s'%s%s%s", sub,
                                     orch_ytree_shorten(kn->value, q), hint ? " (did you mean '" : "",
                                     hint ? hint : "", hint ? "'?)" : "");
                        } else if (name)
                                verr(c, kn, "%s.name: duplicate key (first at %s)", sub, where(name_key, w));
                        else {
                                name = item->items[k + 1];
                                name_key = kn;
                        }
                }
                if (!name) {
                        verr(c, item, "%s: missing required key 'name'", sub);
                        continue;
                }
                join(key, sub, "name");
                parse_port_name_ref(c, name, key, &ports[i].name);
                if (!ports[i].name)
                        continue;
                for (size_t k = 0; k < i; k++)
                        if (ports[k].name && streq(ports[k].name, ports[i].name)) {
                                verr(c, name, "%s: duplicate port name '%s' (first at %s)", key,
                                     ports[i].name, where(v->items[k], w));
                                break;
                        }
        }
        c->ports_ok = c->errors == before;
        if (!c->ports_ok) {
                /* a list with holes must not be looked at by the reference checks */
                for (size_t i = 0; i < v->n_items; i++)
                        free(ports[i].name);
                free(ports);
                s->ports = NULL;
                return;
        }
        s->n_ports = v->n_items;
}

static void parse_signal(struct vctx *c, const struct orch_ynode *v, const char *path,
                         struct orch_service *s)
{
        const char *text = stringish(v, true);
        char q[ORCH_YTREE_SHORT];
        int sig;

        if (!text) {
                verr(c, v, "%s: expected a signal name such as TERM, got %s", path, orch_ynode_describe(v));
                return;
        }
        if (orch_signal_from_string(text, &sig) < 0) {
                verr(c, v,
                     "%s: unknown signal '%s' (use TERM, INT, QUIT, HUP, USR1, USR2, WINCH, ALRM, ABRT, PWR "
                     "or KILL)",
                     path, orch_ytree_shorten(text, q));
                return;
        }
        s->stop.signal = sig;
}

static void parse_constraints(struct vctx *c, const struct orch_ynode *v, const char *path,
                              struct orch_service *s)
{
        _cleanup_(freep) const struct orch_ynode **nodes = NULL;
        struct orch_constraint *cs;
        size_t n = 0;

        if (v->type != ORCH_YNODE_SEQUENCE) {
                verr(c, v, "%s: expected a list of \"key=value\" or \"key!=value\", got %s", path,
                     orch_ynode_describe(v));
                return;
        }
        if (v->n_items > MAX_CONSTRAINTS) {
                verr(c, v, "%s: too many constraints (%zu; at most %d)", path, v->n_items, MAX_CONSTRAINTS);
                return;
        }
        cs = calloc(v->n_items + 1, sizeof *cs);
        nodes = calloc(v->n_items + 1, sizeof *nodes);
        if (!cs || !nodes) {
                free(cs);
                verr(c, v, "%s: out of memory", path);
                return;
        }
        s->placement.constraints = cs;
        for (size_t i = 0; i < v->n_items; i++) {
                const struct orch_ynode *item = v->items[i];
                char sub[PATH_BUF], q[ORCH_YTREE_SHORT], w[32];
                const char *text, *op;
                size_t klen;
                bool negate;

                join_index(sub, path, i);
                text = want_string(c, item, sub);
                if (!text)
                        continue;
                op = strchr(text, '=');
                negate = op && op > text && op[-1] == '!';
                klen = op ? (size_t)(op - text) - negate : 0;
                if (!op || klen == 0) {
                        verr(c, item, "%s: bad constraint \"%s\" (use \"key=value\" or \"key!=value\")", sub,
                             orch_ytree_shorten(text, q));
                        continue;
                }
                cs[n].key = strndup(text, klen);
                cs[n].value = strdup(op + 1);
                cs[n].negate = negate;
                if (!cs[n].key || !cs[n].value) {
                        free(cs[n].key);
                        free(cs[n].value);
                        cs[n] = (struct orch_constraint){0};
                        verr(c, item, "%s: out of memory", sub);
                        continue;
                }
                nodes[n] = item;
                n++;
                s->placement.n_constraints = n;
                if (!label_key_valid(cs[n - 1].key)) {
                        verr(c, item,
                             "%s: invalid label key \"%s\" (letters, digits, '.', '_', '/' and '-', "
                             "starting and ending with a letter or digit, at most 63 characters)",
                             sub, orch_ytree_shorten(cs[n - 1].key, q));
                        continue;
                }
                if (!label_value_valid(cs[n - 1].value)) {
                        verr(c, item,
                             "%s: invalid label value \"%s\" (letters, digits, '.', '_' and '-', at most "
                             "63 characters)",
                             sub, orch_ytree_shorten(cs[n - 1].value, q));
                        continue;
                }
                for (size_t k = 0; k + 1 < n; k++)
                        if (streq(cs[k].key, cs[n - 1].key) && streq(cs[k].value, cs[n - 1].value) &&
                            cs[k].negate == negate) {
                                verr(c, item, "%s: duplicate constraint \"%s\" (first at %s)", sub,
                                     orch_ytree_shorten(text, q), where(nodes[k], w));
                                break;
                        }
        }
}

static void parse_health_port(struct vctx *c, const struct orch_ynode *v, const char *path,
                              struct orch_service *s)
{
        parse_port_name_ref(c, v, path, &s->health.port);
}

static void parse_route_port(struct vctx *c, const struct orch_ynode *v, const char *path,
                             struct orch_service *s)
{
        parse_port_name_ref(c, v, path, &s->route.port);
}

static void parse_http_path(struct vctx *c, const struct orch_ynode *v, const char *path, char **dst)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];

        if (!text)
                return;
        if (!http_path_valid(text)) {
                verr(c, v,
                     "%s: invalid path \"%s\" (it starts with '/', without spaces, '?' or '#', at most "
                     "1024 characters)",
                     path, orch_ytree_shorten(text, q));
                return;
        }
        if (set_string(c, dst, text) < 0)
                verr(c, v, "%s: out of memory", path);
}

static void parse_health_path(struct vctx *c, const struct orch_ynode *v, const char *path,
                              struct orch_service *s)
{
        parse_http_path(c, v, path, &s->health.path);
}

static void parse_route_path(struct vctx *c, const struct orch_ynode *v, const char *path,
                             struct orch_service *s)
{
        parse_http_path(c, v, path, &s->route.path);
}

static void parse_health_command(struct vctx *c, const struct orch_ynode *v, const char *path,
                                 struct orch_service *s)
{
        char **argv;
        bool shell;

        if (!parse_argv(c, v, path, &argv, &shell))
                return;
        orch_strv_free(s->health.command);
        s->health.command = argv;
        check_argv_refs(c, v, path, s);
}

static void parse_route_host(struct vctx *c, const struct orch_ynode *v, const char *path,
                             struct orch_service *s)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];
        _cleanup_(freep) char *lower = NULL;

        if (!text)
                return;
        lower = strdup(text);
        if (!lower) {
                verr(c, v, "%s: out of memory", path);
                return;
        }
        /* Host names compare case-insensitively: keep one spelling. */
        for (char *p = lower; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p + 32);
        if (strchr(lower, ':')) {
                verr(c, v, "%s: \"%s\" must be a host name without a port", path,
                     orch_ytree_shorten(text, q));
                return;
        }
        if (!host_valid(lower)) {
                verr(c, v, "%s: invalid host name \"%s\"", path, orch_ytree_shorten(text, q));
                return;
        }
        free(s->route.host);
        s->route.host = TAKE_PTR(lower);
}

static void parse_rate(struct vctx *c, const struct orch_ynode *v, const char *path, struct orch_service *s)
{
        const char *text = want_string(c, v, path);
        char q[ORCH_YTREE_SHORT];
        uint32_t count;
        uint64_t period;
        int r;

        if (!text)
                return;
        r = orch_parse_rate(text, &count, &period);
        if (r == -ERANGE) {
                verr(c, v, "%s: \"%s\" is too large", path, orch_ytree_shorten(text, q));
                return;
        }
        if (r < 0) {
                verr(c, v,
                     "%s: bad rate \"%s\" (use COUNT/s, COUNT/m or COUNT/h with COUNT at least 1, e.g. "
                     "\"100/s\")",
                     path, orch_ytree_shorten(text, q));
                return;
        }
        s->route.rate_count = count;
        s->route.rate_period_ms = period;
}

/* -------------------------------------------------------------------------------------------- */
/* Blocks and their rules */

#define OFF(member)   offsetof(struct orch_service, member)
#define ENUM_NAMES(t) .names = (t), .n_names = ELEMENTSOF(t)
#define DAY_MS        (24ULL * 3600 * 1000)

static const struct field resources_fields[] = {
        {"cpu", F_CUSTOM, .custom = parse_cpu},
        {"memory", F_SIZE, OFF(resources.memory), 1ULL << 20, 1ULL << 44},
        {"pids", F_U32, OFF(resources.pids), 1, 4194304},
};
static const struct block resources_block = {resources_fields, ELEMENTSOF(resources_fields), NULL};

/* A port reference (health.port, route.port): declared, or the first port by default. */
static void resolve_port(struct vctx *c, const struct orch_ynode *map, const struct orch_ynode *given,
                         const char *path, const char *what, char **port, struct orch_service *s)
{
        char declared[160], q[ORCH_YTREE_SHORT];
        const char *names[MAX_PORTS];
        const char *hint;

        if (!c->ports_ok)
                return;
        if (!given) {
                if (s->n_ports == 0) {
                        verr(c, map,
                             "%s: %s needs a port, and the service declares none (add `ports: [{name: "
                             "http}]`)",
                             path, what);
                        return;
                }
                if (set_string(c, port, s->ports[0].name) < 0)
                        verr(c, map, "%s: out of memory", path);
                return;
        }
        if (!*port || orch_service_find_port(s, *port))
                return;
        for (size_t i = 0; i < s->n_ports; i++)
                names[i] = s->ports[i].name;
        hint = orch_suggest(*port, names, s->n_ports);
        port_list(s, declared, sizeof declared);
        if (s->n_ports == 0)
                verr(c, given, "%s.port: no port named '%s' (the service declares no ports)", path,
                     orch_ytree_shorten(*port, q));
        else if (hint)
                verr(c, given, "%s.port: no port named '%s' (did you mean '%s'? declared: %s)", path,
                     orch_ytree_shorten(*port, q), hint, declared);
        else
                verr(c, given, "%s.port: no port named '%s' (declared: %s)", path,
                     orch_ytree_shorten(*port, q), declared);
}

enum {
        H_TYPE,
        H_PORT,
        H_PATH,
        H_COMMAND,
        H_INTERVAL,
        H_TIMEOUT,
};

static void health_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                        const failed_t failed, struct orch_service *s)
{
        struct orch_health *h = &s->health;

        if (!seen[H_TYPE]) {
                verr(c, map, "%s: missing required key 'type' (http, tcp or exec)", path);
                return;
        }
        if (h->type == ORCH_HEALTH_NONE) /* the type itself was wrong: already reported */
                return;
        /* The keys of the other types are checked like any value, then dropped: SPEC §2's reference
         * block lists them all under one type (`type: http` with an exec `command`), so a block may
         * name them, and only the chosen type's keys reach the check, the canonical form and the
         * revision. */
        if (h->type != ORCH_HEALTH_HTTP) {
                free(h->path);
                h->path = NULL;
        }
        if (h->type != ORCH_HEALTH_EXEC)
                h->command = orch_strv_free(h->command);
        if (h->type == ORCH_HEALTH_EXEC) {
                free(h->port);
                h->port = NULL;
        }
        if (h->type == ORCH_HEALTH_EXEC && !seen[H_COMMAND])
                verr(c, map, "%s: type exec needs a 'command'", path);
        if (h->type == ORCH_HEALTH_HTTP && !h->path && set_string(c, &h->path, "/") < 0)
                verr(c, map, "%s: out of memory", path);
        if (h->type == ORCH_HEALTH_HTTP || h->type == ORCH_HEALTH_TCP)
                resolve_port(c, map, seen[H_PORT], path,
                             h->type == ORCH_HEALTH_HTTP ? "type http" : "type tcp", &h->port, s);
        if (!failed[H_TIMEOUT] && !failed[H_INTERVAL] && h->timeout_ms > h->interval_ms) {
                char t[32], i[32];
                orch_format_duration(h->timeout_ms, t, sizeof t);
                orch_format_duration(h->interval_ms, i, sizeof i);
                verr(c,
                     seen[H_TIMEOUT]    ? seen[H_TIMEOUT]
                     : seen[H_INTERVAL] ? seen[H_INTERVAL]
                                        : map,
                     "%s.timeout: %s is longer than the interval (%s)", path, t, i);
        }
}

static const struct field health_fields[] = {
        [H_TYPE] = {"type", F_ENUM, OFF(health.type), ENUM_NAMES(health_type_names),
                    .skip = ORCH_HEALTH_NONE},
        [H_PORT] = {"port", F_CUSTOM, .custom = parse_health_port},
        [H_PATH] = {"path", F_CUSTOM, .custom = parse_health_path},
        [H_COMMAND] = {"command", F_CUSTOM, .custom = parse_health_command},
        [H_INTERVAL] = {"interval", F_DURATION, OFF(health.interval_ms), 100, DAY_MS},
        [H_TIMEOUT] = {"timeout", F_DURATION, OFF(health.timeout_ms), 10, DAY_MS},
        {"grace", F_DURATION, OFF(health.grace_ms), 0, DAY_MS},
        {"unhealthy_threshold", F_U32, OFF(health.unhealthy_threshold), 1, 1000},
        {"healthy_threshold", F_U32, OFF(health.healthy_threshold), 1, 1000},
        {"on_unhealthy", F_ENUM, OFF(health.on_unhealthy), ENUM_NAMES(on_unhealthy_names), .skip = -1},
};
static const struct block health_block = {health_fields, ELEMENTSOF(health_fields), health_post};

enum { R_POLICY, R_BACKOFF, R_MAX_BACKOFF };

static void restart_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                         const failed_t failed, struct orch_service *s)
{
        if (!failed[R_BACKOFF] && !failed[R_MAX_BACKOFF] &&
            s->restart.max_backoff_ms < s->restart.backoff_ms) {
                char a[32], b[32];
                orch_format_duration(s->restart.max_backoff_ms, a, sizeof a);
                orch_format_duration(s->restart.backoff_ms, b, sizeof b);
                verr(c, seen[R_MAX_BACKOFF] ? seen[R_MAX_BACKOFF] : seen[R_BACKOFF],
                     "%s.max_backoff: %s is shorter than the backoff (%s)", path, a, b);
        }
}

static const struct field restart_fields[] = {
        [R_POLICY] = {"policy", F_ENUM, OFF(restart.policy), ENUM_NAMES(restart_policy_names), .skip = -1},
        /* 0s: restart at once (the fastest recovery, for instances that crash rarely) */
        [R_BACKOFF] = {"backoff", F_DURATION, OFF(restart.backoff_ms), 0, DAY_MS},
        [R_MAX_BACKOFF] = {"max_backoff", F_DURATION, OFF(restart.max_backoff_ms), 1, DAY_MS},
        {"reset_after", F_DURATION, OFF(restart.reset_after_ms), 0, ORCH_DURATION_MAX_MS},
};
static const struct block restart_block = {restart_fields, ELEMENTSOF(restart_fields), restart_post};

static const struct field stop_fields[] = {
        {"signal", F_CUSTOM, .custom = parse_signal},
        {"timeout", F_DURATION, OFF(stop.timeout_ms), 0, ORCH_STOP_TIMEOUT_MAX_MS},
};
static const struct block stop_block = {stop_fields, ELEMENTSOF(stop_fields), NULL};

static const struct field placement_fields[] = {
        {"constraints", F_CUSTOM, .custom = parse_constraints},
        {"strategy", F_ENUM, OFF(placement.strategy), ENUM_NAMES(strategy_names), .skip = -1},
};
static const struct block placement_block = {placement_fields, ELEMENTSOF(placement_fields), NULL};

enum { U_SURGE, U_UNAVAILABLE, U_MIN_HEALTHY, U_DEADLINE };

static void update_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                        const failed_t failed, struct orch_service *s)
{
        const struct orch_update *u = &s->update;

        if (!failed[U_SURGE] && !failed[U_UNAVAILABLE] && u->max_surge + (uint64_t)u->max_unavailable < 1)
                verr(c,
                     seen[U_SURGE]         ? seen[U_SURGE]
                     : seen[U_UNAVAILABLE] ? seen[U_UNAVAILABLE]
                                           : map,
                     "%s: max_surge and max_unavailable are both 0, so a rollout could never make progress",
                     path);
        if (!failed[U_DEADLINE] && !failed[U_MIN_HEALTHY] && u->progress_deadline_ms <= u->min_healthy_ms) {
                char a[32], b[32];
                orch_format_duration(u->progress_deadline_ms, a, sizeof a);
                orch_format_duration(u->min_healthy_ms, b, sizeof b);
                verr(c, seen[U_DEADLINE] ? seen[U_DEADLINE] : seen[U_MIN_HEALTHY],
                     "%s.progress_deadline: %s must be longer than min_healthy (%s)", path, a, b);
        }
}

static const struct field update_fields[] = {
        [U_SURGE] = {"max_surge", F_U32, OFF(update.max_surge), 0, MAX_REPLICAS},
        [U_UNAVAILABLE] = {"max_unavailable", F_U32, OFF(update.max_unavailable), 0, MAX_REPLICAS},
        [U_MIN_HEALTHY] = {"min_healthy", F_DURATION, OFF(update.min_healthy_ms), 0, DAY_MS},
        [U_DEADLINE] = {"progress_deadline", F_DURATION, OFF(update.progress_deadline_ms), 1000, DAY_MS},
        {"auto_revert", F_BOOL, OFF(update.auto_revert)},
};
static const struct block update_block = {update_fields, ELEMENTSOF(update_fields), update_post};

enum { RT_PATH, RT_HOST, RT_STRIP, RT_PORT, RT_RATE, RT_BURST };

static void route_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                       const failed_t failed, struct orch_service *s)
{
        struct orch_route *r = &s->route;

        r->enabled = true;
        if (!r->path && set_string(c, &r->path, "/") < 0)
                verr(c, map, "%s: out of memory", path);
        resolve_port(c, map, seen[RT_PORT], path, "a route", &r->port, s);
        if (seen[RT_BURST] && !seen[RT_RATE])
                verr(c, seen[RT_BURST], "%s.rate_burst: needs a rate_limit", path);
        else if (!seen[RT_BURST])
                r->rate_burst = r->rate_count;
}

static const struct field route_fields[] = {
        [RT_PATH] = {"path", F_CUSTOM, .custom = parse_route_path},
        [RT_HOST] = {"host", F_CUSTOM, .custom = parse_route_host},
        [RT_STRIP] = {"strip_prefix", F_BOOL, OFF(route.strip_prefix)},
        [RT_PORT] = {"port", F_CUSTOM, .custom = parse_route_port},
        [RT_RATE] = {"rate_limit", F_CUSTOM, .custom = parse_rate},
        [RT_BURST] = {"rate_burst", F_U32, OFF(route.rate_burst), 1, 1000000},
        {"auth", F_ENUM, OFF(route.auth), ENUM_NAMES(route_auth_names), .skip = -1},
        {"max_body", F_SIZE, OFF(route.max_body), 0, 1ULL << 40},
        {"timeout", F_DURATION, OFF(route.timeout_ms), 1, DAY_MS},
};
static const struct block route_block = {route_fields, ELEMENTSOF(route_fields), route_post};

static const struct field logs_fields[] = {
        {"max_size", F_SIZE, OFF(logs.max_size), 1ULL << 10, 1ULL << 40},
        {"max_files", F_U32, OFF(logs.max_files), 1, 1000},
};
static const struct block logs_block = {logs_fields, ELEMENTSOF(logs_fields), NULL};

enum { SB_NNP, SB_PRIVATE_TMP, SB_PROTECT_SYSTEM, SB_DYNAMIC_USER };

static void sandbox_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                         const failed_t failed, struct orch_service *s)
{
        static const struct {
                size_t field;
                size_t offset;
        } systemd_only[] = {
                {SB_PRIVATE_TMP, OFF(sandbox.private_tmp)},
                {SB_PROTECT_SYSTEM, OFF(sandbox.protect_system)},
                {SB_DYNAMIC_USER, OFF(sandbox.dynamic_user)},
        };
        static const char *const keys[] = {"no_new_privileges", "private_tmp", "protect_system",
                                           "dynamic_user"};

        if (s->driver != ORCH_DRIVER_EXEC)
                return;
        for (size_t i = 0; i < ELEMENTSOF(systemd_only); i++)
                if (seen[systemd_only[i].field] && *(bool *)((char *)s + systemd_only[i].offset))
                        verr(c, seen[systemd_only[i].field],
                             "%s.%s: needs driver systemd (this service sets driver: "
                             "exec)",
                             path, keys[systemd_only[i].field]);
}

static const struct field sandbox_fields[] = {
        [SB_NNP] = {"no_new_privileges", F_BOOL, OFF(sandbox.no_new_privileges)},
        [SB_PRIVATE_TMP] = {"private_tmp", F_BOOL, OFF(sandbox.private_tmp)},
        [SB_PROTECT_SYSTEM] = {"protect_system", F_BOOL, OFF(sandbox.protect_system)},
        [SB_DYNAMIC_USER] = {"dynamic_user", F_BOOL, OFF(sandbox.dynamic_user)},
};
static const struct block sandbox_block = {sandbox_fields, ELEMENTSOF(sandbox_fields), sandbox_post};

enum { T_KIND, T_NAME, T_REPLICAS, T_COMMAND };

static void service_post(struct vctx *c, const struct orch_ynode *map, const char *path, seen_t seen,
                         const failed_t failed, struct orch_service *s)
{
        if (!seen[T_NAME])
                verr(c, map, "missing required key 'name'");
        if (!seen[T_COMMAND])
                verr(c, map, "missing required key 'command'");
}

static const struct field service_fields[] = {
        [T_KIND] = {"kind", F_CUSTOM}, /* no parser: validate_document() checks it before the rest */
        [T_NAME] = {"name", F_CUSTOM, .custom = parse_name},
        [T_REPLICAS] = {"replicas", F_U32, OFF(replicas), 0, MAX_REPLICAS},
        [T_COMMAND] = {"command", F_CUSTOM, .custom = parse_command},
        {"env", F_CUSTOM, .custom = parse_env},
        {"workdir", F_CUSTOM, .custom = parse_workdir},
        {"user", F_CUSTOM, .custom = parse_user},
        {"group", F_CUSTOM, .custom = parse_group},
        {"resources", F_BLOCK, .block = &resources_block},
        {"ports", F_CUSTOM, .custom = parse_ports, .early = true},
        {"health", F_BLOCK, .block = &health_block},
        {"restart", F_BLOCK, .block = &restart_block},
        {"stop", F_BLOCK, .block = &stop_block},
        {"placement", F_BLOCK, .block = &placement_block},
        {"update", F_BLOCK, .block = &update_block},
        {"route", F_BLOCK, .block = &route_block},
        {"logs", F_BLOCK, .block = &logs_block},
        {"sandbox", F_BLOCK, .block = &sandbox_block},
        {"driver", F_ENUM, OFF(driver), ENUM_NAMES(driver_names), .skip = ORCH_DRIVER_DEFAULT,
         .early = true},
};
static const struct block service_block = {service_fields, ELEMENTSOF(service_fields), service_post};

/* -------------------------------------------------------------------------------------------- */
/* Services */

struct orch_service *orch_service_free(struct orch_service *s)
{
        if (!s)
                return NULL;
        free(s->name);
        orch_strv_free(s->command);
        for (size_t i = 0; i < s->n_env; i++) {
                free(s->env[i].name);
                free(s->env[i].value);
        }
        free(s->env);
        free(s->workdir);
        free(s->user);
        free(s->group);
        for (size_t i = 0; i < s->n_ports; i++)
                free(s->ports[i].name);
        free(s->ports);
        free(s->health.port);
        free(s->health.path);
        orch_strv_free(s->health.command);
        for (size_t i = 0; i < s->placement.n_constraints; i++) {
                free(s->placement.constraints[i].key);
                free(s->placement.constraints[i].value);
        }
        free(s->placement.constraints);
        free(s->route.path);
        free(s->route.host);
        free(s->route.port);
        free(s->source_file);
        free(s);
        return NULL;
}

int orch_service_new_default(struct orch_service **ret)
{
        _cleanup_(orch_service_freep) struct orch_service *s = calloc(1, sizeof *s);

        if (!s)
                return -ENOMEM;
        s->replicas = 1;
        s->user = strdup("nobody");
        if (!s->user)
                return -ENOMEM;
        s->health = (struct orch_health){
                .type = ORCH_HEALTH_NONE,
                .interval_ms = 2000,
                .timeout_ms = 1000,
                .grace_ms = 5000,
                .unhealthy_threshold = 3,
                .healthy_threshold = 1,
                .on_unhealthy = ORCH_ON_UNHEALTHY_RESTART,
        };
        s->restart = (struct orch_restart){
                .policy = ORCH_RESTART_ALWAYS,
                .backoff_ms = 100,
                .max_backoff_ms = 30000,
                .reset_after_ms = 60000,
        };
        s->stop = (struct orch_stop){.signal = SIGTERM, .timeout_ms = 10000};
        s->placement.strategy = ORCH_STRATEGY_SPREAD;
        s->update = (struct orch_update){
                .max_surge = 1,
                .max_unavailable = 0,
                .min_healthy_ms = 5000,
                .progress_deadline_ms = 120000,
                .auto_revert = true,
        };
        s->route = (struct orch_route){
                .auth = ORCH_ROUTE_AUTH_NONE,
                .max_body = 1ULL << 20,
                .timeout_ms = 60000,
        };
        s->logs = (struct orch_logs){.max_size = 10ULL << 20, .max_files = 5};
        s->sandbox = (struct orch_sandbox){.no_new_privileges = true};
        s->driver = ORCH_DRIVER_DEFAULT;
        *ret = TAKE_PTR(s);
        return 0;
}

static const struct orch_ynode *mapping_get(const struct orch_ynode *map, const char *key)
{
        for (size_t i = 0; i + 1 < map->n_items; i += 2)
                if (streq(map->items[i]->value, key))
                        return map->items[i + 1];
        return NULL;
}

/* One document: a mapping with kind: service. -EINVAL when invalid (reported), -ENOMEM. */
static int validate_document(struct vctx *c, const struct orch_ynode *root, unsigned doc_line,
                             unsigned doc_col, struct orch_service **ret)
{
        _cleanup_(orch_service_freep) struct orch_service *s = NULL;
        const struct orch_ynode *kind, *name;
        unsigned before = c->errors;
        char q[ORCH_YTREE_SHORT];
        int r;

        if (root->type != ORCH_YNODE_MAPPING) {
                verr(c, root, "a manifest document must be a mapping (kind: service, name: ...), got %s",
                     orch_ynode_describe(root));
                return -EINVAL;
        }
        kind = mapping_get(root, "kind");
        if (!kind)
                verr(c, root, "missing required key 'kind' (kind: service)");
        else if (!is_scalar(kind, ORCH_YSCALAR_STRING)) {
                verr(c, kind, "kind: expected a string, got %s", orch_ynode_describe(kind));
                return -EINVAL;
        } else if (!streq(kind->value, "service")) {
                /* The other keys mean nothing for an unknown kind: one error is enough. */
                verr(c, kind, "kind: unsupported kind '%s' (only 'service' exists)",
                     orch_ytree_shorten(kind->value, q));
                return -EINVAL;
        }
        r = orch_service_new_default(&s);
        if (r < 0)
                return r;
        c->ports_ok = true;
        parse_block(c, root, "", &service_block, s);
        if (c->errors != before)
                return -EINVAL;
        name = mapping_get(root, "name");
        s->source_file = strdup(c->file);
        if (!s->source_file)
                return -ENOMEM;
        s->source_line = name ? name->line : doc_line;
        s->source_column = name ? name->column : doc_col;
        *ret = TAKE_PTR(s);
        return 0;
}

int orch_service_from_json(const json_t *j, const char *name_for_diags, struct orch_service **ret,
                           struct orch_diags *diags)
{
        _cleanup_(orch_ytree_freep) struct orch_ytree *t = NULL;
        struct vctx c = {.file = name_for_diags ? name_for_diags : "<json>", .diags = diags};
        int r;

        r = orch_ytree_from_json(c.file, j, &t, diags);
        if (r < 0)
                return r;
        return validate_document(&c, t->docs[0].root, 0, 0, ret);
}

/* -------------------------------------------------------------------------------------------- */
/* Manifests */

struct orch_manifest *orch_manifest_free(struct orch_manifest *m)
{
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_services; i++)
                orch_service_free(m->services[i]);
        free(m->services);
        free(m);
        return NULL;
}

static void free_services(struct orch_service **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                orch_service_free(v[i]);
        free(v);
}

struct name_ref {
        const struct orch_service *s;
        size_t index;
};

static int name_ref_cmp(const void *a, const void *b)
{
        const struct name_ref *x = a, *y = b;
        int r = strcmp(x->s->name, y->s->name);

        return r ? r : (x->index > y->index) - (x->index < y->index);
}

/* Reports the second and later declarations of a name, in declaration order. */
static int check_duplicates(struct orch_service *const *v, size_t n, struct orch_diags *diags)
{
        _cleanup_(freep) struct name_ref *refs = calloc(n + 1, sizeof *refs);
        _cleanup_(freep) const struct orch_service **first = calloc(n + 1, sizeof *first);
        bool dup = false;

        if (!refs || !first)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                refs[i] = (struct name_ref){v[i], i};
        qsort(refs, n, sizeof *refs, name_ref_cmp);
        for (size_t i = 1; i < n; i++)
                if (streq(refs[i].s->name, refs[i - 1].s->name)) {
                        first[refs[i].index] =
                                first[refs[i - 1].index] ? first[refs[i - 1].index] : refs[i - 1].s;
                        dup = true;
                }
        for (size_t i = 0; i < n; i++) {
                const struct orch_service *f = first[i];
                if (!f)
                        continue;
                if (f->source_line)
                        orch_diags_add(diags, v[i]->source_file, v[i]->source_line, v[i]->source_column,
                                       "name: duplicate service name '%s' (first declared at %s:%u:%u)",
                                       v[i]->name, f->source_file, f->source_line, f->source_column);
                else
                        orch_diags_add(diags, v[i]->source_file, v[i]->source_line, v[i]->source_column,
                                       "name: duplicate service name '%s' (first declared in %s)",
                                       v[i]->name, strna(f->source_file));
        }
        return dup ? -EINVAL : 0;
}

int orch_manifest_check_duplicates(const struct orch_manifest *m, struct orch_diags *diags)
{
        return check_duplicates(m->services, m->n_services, diags);
}

/* Fields are checked in an order that suits their dependencies (ports first); the user reads
 * the file top to bottom. Insertion sort: stable, and the list is short (orch_diags caps it). */
static void sort_diags(struct orch_diags *d, size_t from)
{
        for (size_t i = from + 1; i < d->n; i++) {
                struct orch_diag x = d->items[i];
                size_t j = i;

                while (j > from && (d->items[j - 1].line > x.line ||
                                    (d->items[j - 1].line == x.line && d->items[j - 1].column > x.column))) {
                        d->items[j] = d->items[j - 1];
                        j--;
                }
                d->items[j] = x;
        }
}

int orch_manifest_parse_buffer(struct orch_manifest *m, const char *name, const char *buf, size_t len,
                               struct orch_diags *diags)
{
        size_t first_diag = diags->n;
        _cleanup_(orch_ytree_freep) struct orch_ytree *t = NULL;
        struct vctx c = {.file = name ? name : "<input>", .diags = diags};
        struct orch_service **parsed = NULL, **grown;
        size_t n = 0, cap = 0;
        int r;

        if (len > ORCH_MANIFEST_MAX_BYTES) {
                orch_diags_add(diags, c.file, 0, 0, "too large (%zu bytes; the limit is %u MiB)", len,
                               ORCH_MANIFEST_MAX_BYTES >> 20);
                return -EINVAL;
        }
        r = orch_ytree_parse(c.file, buf, len, &t, diags);
        if (r < 0)
                return r;
        /* A document that is a list holds services (the JSON form of several: [{...}, {...}]). */
        for (size_t i = 0; i < t->n_docs; i++)
                cap += t->docs[i].root && t->docs[i].root->type == ORCH_YNODE_SEQUENCE ? t->docs[i].root->n_items
                                                                                     : 1;
        parsed = calloc(cap + 1, sizeof *parsed);
        if (!parsed)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_docs; i++) {
                const struct orch_ydoc *d = &t->docs[i];
                bool list;

                /* An empty document (a stray "---", a file of comments) declares nothing. */
                if (!d->root || (is_scalar(d->root, ORCH_YSCALAR_NULL) && !*d->root->value))
                        continue;
                list = d->root->type == ORCH_YNODE_SEQUENCE;
                for (size_t k = 0; k < (list ? d->root->n_items : 1); k++) {
                        const struct orch_ynode *root = list ? d->root->items[k] : d->root;
                        struct orch_service *s;

                        r = validate_document(&c, root, list ? root->line : d->line, list ? root->column : d->column,
                                              &s);
                        if (r == -ENOMEM) {
                                free_services(parsed, n);
                                return r;
                        }
                        if (r == 0)
                                parsed[n++] = s;
                }
        }
        if (c.errors == 0 && check_duplicates(parsed, n, diags) < 0)
                c.errors++;
        sort_diags(diags, first_diag);
        if (c.errors > 0) {
                free_services(parsed, n);
                return -EINVAL;
        }
        grown = realloc(m->services, (m->n_services + n + 1) * sizeof *grown);
        if (!grown) {
                free_services(parsed, n);
                return -ENOMEM;
        }
        m->services = grown;
        memcpy(m->services + m->n_services, parsed, n * sizeof *parsed);
        m->n_services += n;
        free(parsed);
        return 0;
}

int orch_manifest_parse_file(struct orch_manifest *m, const char *path, struct orch_diags *diags)
{
        _cleanup_(freep) char *buf = NULL;
        bool is_stdin = streq(path, "-");
        const char *name = is_stdin ? "<stdin>" : path;
        size_t len;
        int r;

        r = orch_read_file(is_stdin ? "/dev/stdin" : path, ORCH_MANIFEST_MAX_BYTES, &buf, &len);
        if (r == -EFBIG) {
                orch_diags_add(diags, name, 0, 0, "too large (the limit is %u MiB)",
                               ORCH_MANIFEST_MAX_BYTES >> 20);
                return -EINVAL;
        }
        if (r < 0) {
                orch_diags_add(diags, name, 0, 0, "cannot read: %s", strerror(-r));
                return r;
        }
        return orch_manifest_parse_buffer(m, name, buf, len, diags);
}

static int strv_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The manifests of a directory: *.yaml and *.yml regular files, not hidden, in byte order. */
static int expand_dir(const char *dir, char ***files, struct orch_diags *diags)
{
        _cleanup_(orch_strv_freep) char **found = NULL;
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n;
        int r = 0;

        if (!d) {
                r = -errno;
                orch_diags_add(diags, dir, 0, 0, "cannot open directory: %s", strerror(-r));
                return r;
        }
        while ((errno = 0, de = readdir(d))) {
                _cleanup_(freep) char *p = NULL;
                struct stat st;

                if (de->d_name[0] == '.' ||
                    !(orch_endswith(de->d_name, ".yaml") || orch_endswith(de->d_name, ".yml")))
                        continue;
                p = orch_strdup_printf("%s%s%s", dir, orch_endswith(dir, "/") ? "" : "/", de->d_name);
                if (!p) {
                        r = -ENOMEM;
                        break;
                }
                if (stat(p, &st) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (orch_strv_push(&found, p) < 0) {
                        r = -ENOMEM;
                        break;
                }
        }
        if (r == 0 && errno != 0) {
                r = -errno;
                orch_diags_add(diags, dir, 0, 0, "cannot read directory: %s", strerror(-r));
        }
        closedir(d);
        if (r < 0)
                return r;
        n = orch_strv_length(found);
        if (n == 0) {
                orch_diags_add(diags, dir, 0, 0, "no *.yaml or *.yml files in this directory");
                return -EINVAL;
        }
        qsort(found, n, sizeof *found, strv_cmp);
        for (size_t i = 0; i < n; i++)
                if (orch_strv_push(files, found[i]) < 0)
                        return -ENOMEM;
        return 0;
}

int orch_manifest_expand_paths(char *const *paths, size_t n_paths, char ***ret_files,
                               struct orch_diags *diags)
{
        _cleanup_(orch_strv_freep) char **files = NULL;
        int first_error = 0;

        for (size_t i = 0; i < n_paths; i++) {
                struct stat st;
                int r = 0;

                if (streq(paths[i], "-"))
                        r = orch_strv_push(&files, paths[i]);
                else if (stat(paths[i], &st) < 0) {
                        r = -errno;
                        orch_diags_add(diags, paths[i], 0, 0, "cannot read: %s", strerror(-r));
                } else if (S_ISDIR(st.st_mode))
                        r = expand_dir(paths[i], &files, diags);
                else
                        r = orch_strv_push(&files, paths[i]);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && first_error == 0)
                        first_error = r;
        }
        if (first_error < 0)
                return first_error;
        if (!files) {
                files = calloc(1, sizeof *files);
                if (!files)
                        return -ENOMEM;
        }
        *ret_files = TAKE_PTR(files);
        return 0;
}

int orch_manifest_load(char *const *paths, size_t n_paths, struct orch_manifest **ret,
                       struct orch_diags *diags)
{
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = calloc(1, sizeof *m);
        _cleanup_(orch_strv_freep) char **files = NULL;
        int r, result = 0;

        if (!m)
                return -ENOMEM;
        r = orch_manifest_expand_paths(paths, n_paths, &files, diags);
        if (r < 0)
                return r;
        for (size_t i = 0; files[i]; i++) {
                r = orch_manifest_parse_file(m, files[i], diags);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && result == 0)
                        result = r;
        }
        if (result < 0)
                return result;
        r = orch_manifest_check_duplicates(m, diags);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}
