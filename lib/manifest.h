/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The manifest language (SPEC §2): typed structs, the YAML parser with strict
 * validation, the canonical JSON form and the revision hash.
 *
 * Every value in a struct orch_service is resolved: defaults are filled in
 * and units are converted (durations in milliseconds, sizes in bytes, CPU in
 * millicores), so consumers never look at strings again. The canonical JSON
 * form (orch_service_to_json) writes every field, defaults included, in the
 * manifest's own shape with canonical unit spellings; orch_service_from_json
 * reads it (or any JSON that is a valid manifest) back, and
 * from_json(to_json(s)) equals s field for field.
 *
 * Parsing goes YAML (or JSON) -> a positioned node tree -> validation into
 * the structs. The same validator serves files, API bodies and protocol
 * frames, so every path rejects the same inputs with the same messages.
 */

#include <stdint.h>

#include <jansson.h>

#include "diag.h"
#include "macro.h"

#define ORCH_NAME_MAX      63 /* service names: ^[a-z][a-z0-9-]{0,62}$ */
#define ORCH_REVISION_LEN  16 /* hex characters of the revision hash */
#define ORCH_STOP_TIMEOUT_MAX_MS (24ULL * 3600 * 1000) /* the longest stop.timeout a manifest may give */
#define ORCH_MANIFEST_MAX_BYTES (4u * 1024 * 1024) /* one file or API body */

enum orch_restart_policy {
        ORCH_RESTART_ALWAYS,
        ORCH_RESTART_ON_FAILURE,
        ORCH_RESTART_NEVER,
        _ORCH_RESTART_POLICY_MAX,
};

enum orch_health_type {
        ORCH_HEALTH_NONE, /* no `health` block: an instance is healthy while it runs */
        ORCH_HEALTH_HTTP,
        ORCH_HEALTH_TCP,
        ORCH_HEALTH_EXEC,
        _ORCH_HEALTH_TYPE_MAX,
};

enum orch_on_unhealthy {
        ORCH_ON_UNHEALTHY_RESTART,
        ORCH_ON_UNHEALTHY_IGNORE,
        _ORCH_ON_UNHEALTHY_MAX,
};

enum orch_strategy {
        ORCH_STRATEGY_SPREAD,
        ORCH_STRATEGY_BINPACK,
        _ORCH_STRATEGY_MAX,
};

enum orch_driver {
        ORCH_DRIVER_DEFAULT, /* not set in the manifest: the agent's --driver decides */
        ORCH_DRIVER_EXEC,
        ORCH_DRIVER_SYSTEMD,
        _ORCH_DRIVER_MAX,
};

enum orch_route_auth {
        ORCH_ROUTE_AUTH_NONE,
        ORCH_ROUTE_AUTH_API_KEY,
        _ORCH_ROUTE_AUTH_MAX,
};

struct orch_env_var {
        char *name;  /* ^[A-Za-z_][A-Za-z0-9_]*$ */
        char *value; /* may reference ${PORT}, ${PORT_<NAME>}, ${ORCH_SERVICE}, ${ORCH_INSTANCE}, ${ORCH_NODE} */
};

struct orch_port {
        char *name; /* ^[a-z][a-z0-9-]{0,30}$; exported as PORT_<NAME> with '-' as '_', upper case */
};

struct orch_constraint {
        char *key;
        char *value;
        bool negate; /* "key!=value" */
};

struct orch_health {
        enum orch_health_type type;
        char *port;    /* http, tcp: a declared port name (default: the first port) */
        char *path;    /* http: default "/" */
        char **command; /* exec: argv, NULL-terminated */
        uint64_t interval_ms;        /* default 2s */
        uint64_t timeout_ms;         /* default 1s */
        uint64_t grace_ms;           /* default 5s */
        uint32_t unhealthy_threshold; /* default 3 */
        uint32_t healthy_threshold;   /* default 1 */
        enum orch_on_unhealthy on_unhealthy; /* default restart */
};

struct orch_restart {
        enum orch_restart_policy policy; /* default always */
        uint64_t backoff_ms;             /* default 100ms */
        uint64_t max_backoff_ms;         /* default 30s */
        uint64_t reset_after_ms;         /* default 60s */
};

struct orch_stop {
        int signal;          /* default SIGTERM; written as "TERM", "SIGTERM" or a number */
        uint64_t timeout_ms; /* default 10s */
};

struct orch_placement {
        struct orch_constraint *constraints;
        size_t n_constraints;
        enum orch_strategy strategy; /* default spread */
};

struct orch_update {
        uint32_t max_surge;       /* default 1 */
        uint32_t max_unavailable; /* default 0; max_surge + max_unavailable >= 1 */
        uint64_t min_healthy_ms;  /* default 5s */
        uint64_t progress_deadline_ms; /* default 2m: a rollout step that takes longer fails */
        bool auto_revert;         /* default true */
};

struct orch_route {
        bool enabled;     /* a `route` block is present */
        char *path;       /* prefix, starts with '/'; default "/" */
        char *host;       /* optional Host match (lower case, no port) */
        bool strip_prefix; /* default false */
        char *port;       /* a declared port name (default: the first port) */
        uint32_t rate_count;      /* 0: no rate limit */
        uint64_t rate_period_ms;  /* "100/s" -> 100 per 1000 ms */
        uint32_t rate_burst;      /* default: rate_count */
        enum orch_route_auth auth; /* default none */
        uint64_t max_body;        /* default 1Mi */
        uint64_t timeout_ms;      /* upstream response timeout, default 60s */
};

struct orch_logs {
        uint64_t max_size; /* default 10Mi */
        uint32_t max_files; /* default 5 */
};

struct orch_sandbox {
        bool no_new_privileges; /* default true */
        bool private_tmp;       /* default false (driver systemd only) */
        bool protect_system;    /* default false: ProtectSystem=strict (driver systemd only) */
        bool dynamic_user;      /* default false (driver systemd only) */
};

struct orch_service {
        char *name;
        uint32_t replicas; /* default 1 */
        /* argv, NULL-terminated. The string form is kept as {"/bin/sh", "-c", STRING} with
         * command_is_shell set, so the canonical form writes back what the user wrote. */
        char **command;
        bool command_is_shell;
        struct orch_env_var *env; /* sorted by name */
        size_t n_env;
        char *workdir; /* NULL: a per-instance directory under the agent's data dir */
        char *user;    /* default "nobody" */
        char *group;   /* NULL: the user's primary group */
        struct {
                uint32_t cpu_millis; /* 0: no CPU quota and no CPU request */
                uint64_t memory;     /* bytes; 0: no limit and no request */
                uint32_t pids;       /* 0: no limit */
        } resources;
        struct orch_port *ports;
        size_t n_ports;
        struct orch_health health;
        struct orch_restart restart;
        struct orch_stop stop;
        struct orch_placement placement;
        struct orch_update update;
        struct orch_route route;
        struct orch_logs logs;
        struct orch_sandbox sandbox;
        enum orch_driver driver;

        /* Where the service was declared (for "duplicate name" errors and `validate` summaries):
         * the position of its `name` value; line 0 for services that did not come from text. */
        char *source_file;
        unsigned source_line;
        unsigned source_column;
};

struct orch_manifest {
        struct orch_service **services;
        size_t n_services;
};

/* Parses one buffer holding one or more YAML documents (JSON is accepted as YAML). Appends the
 * valid services to `m` only when the whole buffer is valid; otherwise adds diagnostics and
 * returns -EINVAL leaving `m` unchanged. `name` is the file name used in diagnostics. */
int orch_manifest_parse_buffer(struct orch_manifest *m, const char *name, const char *buf, size_t len,
                               struct orch_diags *diags);

/* Loads files and directories (a directory means its *.yaml and *.yml files in lexical order).
 * Checks duplicate service names across all of them. On error, returns -EINVAL (or -errno for
 * an unreadable path, also reported as a diagnostic) and *ret is untouched. */
int orch_manifest_load(char *const *paths, size_t n_paths, struct orch_manifest **ret, struct orch_diags *diags);

/* The steps of orch_manifest_load, for callers that report per file (`orch validate`). */
int orch_manifest_expand_paths(char *const *paths, size_t n_paths, char ***ret_files, struct orch_diags *diags);
int orch_manifest_parse_file(struct orch_manifest *m, const char *path, struct orch_diags *diags);
/* Adds an error for every service whose name was already declared (pointing at the first). */
int orch_manifest_check_duplicates(const struct orch_manifest *m, struct orch_diags *diags);

struct orch_manifest *orch_manifest_free(struct orch_manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_manifest *, orch_manifest_free)

struct orch_service *orch_service_free(struct orch_service *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_service *, orch_service_free)
/* A service holding every default (no name, no command: not valid by itself), for code that
 * builds one field by field. */
int orch_service_new_default(struct orch_service **ret);

/* The canonical JSON form: every field, defaults included, keys in the manifest's names. */
int orch_service_to_json(const struct orch_service *s, json_t **ret);
/* Reads a JSON object (the canonical form or any JSON manifest document) with full validation. */
int orch_service_from_json(const json_t *j, const char *name_for_diags, struct orch_service **ret,
                           struct orch_diags *diags);
/* Deep copy (through the canonical form). */
int orch_service_dup(const struct orch_service *s, struct orch_service **ret);
/* True when the two services are semantically identical (same canonical form). */
bool orch_service_equal(const struct orch_service *a, const struct orch_service *b);

/*
 * The revision: the first ORCH_REVISION_LEN hex characters of the SHA-256 of the canonical JSON
 * of the instance template, i.e. the canonical form without `replicas`, `update` and `route`.
 * Those three say how many instances run, how they are replaced and how traffic reaches them;
 * they do not change what an instance runs, so changing them scales or re-routes without a
 * rolling update (as a Kubernetes pod-template-hash ignores replicas and strategy).
 */
int orch_service_revision(const struct orch_service *s, char ret[ORCH_REVISION_LEN + 1]);
/* SHA-256 hex of the whole canonical form (any change at all, replicas included). */
int orch_service_spec_hash(const struct orch_service *s, char ret[65]);

/* Name checks shared with the API and the CLI. */
bool orch_service_name_valid(const char *name);
bool orch_port_name_valid(const char *name);

/* Lookup helpers. */
const struct orch_port *orch_service_find_port(const struct orch_service *s, const char *name);
/* Index of the named port, or -1. */
int orch_service_port_index(const struct orch_service *s, const char *name);

/* String tables (enums carry _MAX and a string table). */
const char *orch_restart_policy_to_string(enum orch_restart_policy p);
const char *orch_health_type_to_string(enum orch_health_type t);
const char *orch_on_unhealthy_to_string(enum orch_on_unhealthy o);
const char *orch_strategy_to_string(enum orch_strategy s);
const char *orch_route_auth_to_string(enum orch_route_auth a);
const char *orch_driver_to_string(enum orch_driver d);
int orch_driver_from_string(const char *s, enum orch_driver *ret);
/* "TERM", "SIGTERM", "15" -> 15; -EINVAL otherwise. */
int orch_signal_from_string(const char *s, int *ret);
/* 15 -> "TERM" (NULL for unknown numbers). */
const char *orch_signal_to_string(int sig);
