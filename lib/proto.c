/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>

#include "diag.h"
#include "json.h"
#include "proto.h"
#include "banned.h"

/* ------------------------------------------------------------------------------------------------ */
/* Message types */

static const char *const type_names[_ORCH_PROTO_TYPE_MAX] = {
        [ORCH_PROTO_HELLO] = "hello",
        [ORCH_PROTO_WELCOME] = "welcome",
        [ORCH_PROTO_ERROR] = "error",
        [ORCH_PROTO_HEARTBEAT] = "heartbeat",
        [ORCH_PROTO_SPEC] = "spec",
        [ORCH_PROTO_START] = "start",
        [ORCH_PROTO_STOP] = "stop",
        [ORCH_PROTO_LOGS] = "logs",
        [ORCH_PROTO_LOGS_CANCEL] = "logs_cancel",
        [ORCH_PROTO_LOG] = "log",
        [ORCH_PROTO_ACK] = "ack",
        [ORCH_PROTO_EVENT] = "event",
        [ORCH_PROTO_USAGE] = "usage",
};

#define FROM_AGENT  1u
#define FROM_SERVER 2u
#define COMMAND     4u
static const uint8_t type_traits[_ORCH_PROTO_TYPE_MAX] = {
        [ORCH_PROTO_HELLO] = FROM_AGENT,
        [ORCH_PROTO_WELCOME] = FROM_SERVER,
        [ORCH_PROTO_ERROR] = FROM_AGENT | FROM_SERVER,
        [ORCH_PROTO_HEARTBEAT] = FROM_AGENT | FROM_SERVER,
        [ORCH_PROTO_SPEC] = FROM_SERVER | COMMAND,
        [ORCH_PROTO_START] = FROM_SERVER | COMMAND,
        [ORCH_PROTO_STOP] = FROM_SERVER | COMMAND,
        [ORCH_PROTO_LOGS] = FROM_SERVER | COMMAND,
        [ORCH_PROTO_LOGS_CANCEL] = FROM_SERVER,
        [ORCH_PROTO_LOG] = FROM_AGENT,
        [ORCH_PROTO_ACK] = FROM_AGENT,
        [ORCH_PROTO_EVENT] = FROM_AGENT,
        [ORCH_PROTO_USAGE] = FROM_AGENT,
};

static enum orch_proto_type type_lookup(const char *s, size_t len)
{
        for (size_t i = 0; i < _ORCH_PROTO_TYPE_MAX; i++)
                if (strlen(type_names[i]) == len && memcmp(type_names[i], s, len) == 0)
                        return (enum orch_proto_type)i;
        return _ORCH_PROTO_TYPE_INVALID;
}

const char *orch_proto_type_to_string(enum orch_proto_type t)
{
        return (unsigned)t < _ORCH_PROTO_TYPE_MAX ? type_names[t] : NULL;
}

enum orch_proto_type orch_proto_type_from_string(const char *s)
{
        return s ? type_lookup(s, strlen(s)) : _ORCH_PROTO_TYPE_INVALID;
}

bool orch_proto_type_sent_by_agent(enum orch_proto_type t)
{
        return (unsigned)t < _ORCH_PROTO_TYPE_MAX && (type_traits[t] & FROM_AGENT);
}

bool orch_proto_type_sent_by_server(enum orch_proto_type t)
{
        return (unsigned)t < _ORCH_PROTO_TYPE_MAX && (type_traits[t] & FROM_SERVER);
}

bool orch_proto_type_is_command(enum orch_proto_type t)
{
        return (unsigned)t < _ORCH_PROTO_TYPE_MAX && (type_traits[t] & COMMAND);
}

/* ------------------------------------------------------------------------------------------------ */
/* Value checks */

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
        return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex_lower(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* ^[a-z][a-z0-9-]{0,max-1}$ (driver names) */
static bool simple_name_valid(const char *s, size_t len, size_t max)
{
        if (len == 0 || len > max || !(s[0] >= 'a' && s[0] <= 'z'))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_lower_alnum(s[i]) && s[i] != '-')
                        return false;
        return true;
}

/* Dot-separated labels of [A-Za-z0-9_-], each 1-63 long, not starting or ending with '-'. Underscores
 * are not DNS, but they occur in host names that people use as node names. */
static bool node_name_valid(const char *s, size_t len)
{
        size_t label = 0;

        if (len == 0 || len > ORCH_PROTO_NODE_NAME_MAX)
                return false;
        for (size_t i = 0; i <= len; i++) {
                char c = i < len ? s[i] : '.';
                if (c == '.') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                } else if (is_alnum(c) || c == '_' || (c == '-' && label > 0))
                        label++;
                else
                        return false;
        }
        return true;
}

bool orch_proto_node_name_valid(const char *name)
{
        return name && node_name_valid(name, strlen(name));
}

static bool instance_suffix_valid(const char *s, size_t len)
{
        if (len == 0 || len > ORCH_PROTO_INSTANCE_SUFFIX_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_lower_alnum(s[i]))
                        return false;
        return true;
}

/* The suffix has no '-', so the service is everything before the last one. */
static bool instance_id_valid(const char *id, size_t len)
{
        char service[ORCH_NAME_MAX + 1];
        const char *dash = len ? memrchr(id, '-', len) : NULL;
        size_t n;

        if (!dash)
                return false;
        n = (size_t)(dash - id);
        if (n == 0 || n > ORCH_NAME_MAX || !instance_suffix_valid(dash + 1, len - n - 1))
                return false;
        memcpy(service, id, n);
        service[n] = '\0';
        return orch_service_name_valid(service);
}

bool orch_proto_instance_id_valid(const char *id)
{
        return id && instance_id_valid(id, strlen(id));
}

bool orch_proto_instance_of(const char *id, const char *service)
{
        size_t l;

        if (!id || !service || !orch_service_name_valid(service))
                return false;
        l = strlen(service);
        return strncmp(id, service, l) == 0 && id[l] == '-' &&
               instance_suffix_valid(id + l + 1, strlen(id + l + 1));
}

static bool revision_valid(const char *s, size_t len)
{
        if (len != ORCH_REVISION_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_hex_lower(s[i]))
                        return false;
        return true;
}

bool orch_proto_revision_valid(const char *revision)
{
        return revision && revision_valid(revision, strlen(revision));
}

static bool label_key_valid(const char *s, size_t len)
{
        if (len == 0 || len > ORCH_PROTO_LABEL_KEY_MAX || !is_alnum(s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_alnum(s[i]) && !strchr("._/-", s[i]))
                        return false;
        return true;
}

static bool label_value_valid(const char *s, size_t len)
{
        if (len > ORCH_PROTO_LABEL_VALUE_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_alnum(s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

bool orch_proto_label_key_valid(const char *key)
{
        return key && label_key_valid(key, strlen(key));
}

bool orch_proto_label_value_valid(const char *value)
{
        return value && label_value_valid(value, strlen(value));
}

static bool printable_ascii(const char *s, size_t len, char lowest)
{
        for (size_t i = 0; i < len; i++)
                if (s[i] < lowest || s[i] > '~')
                        return false;
        return true;
}

static bool address_valid(const char *s, size_t len)
{
        unsigned char a[sizeof(struct in6_addr)];

        return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1 || node_name_valid(s, len);
}

static bool cgroup_valid(const char *s, size_t len)
{
        if (len == 0 || len > ORCH_PROTO_CGROUP_MAX || s[0] != '/' || orch_utf8_invalid_offset(s, len) >= 0)
                return false;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* The schema: one table per object, read by the encoder, the decoder and the destructor alike. */

enum field_kind {
        FK_STRING,  /* const char *, checked by `check` */
        FK_TEXT,    /* const char *, free text of min..ORCH_PROTO_TEXT_MAX bytes */
        FK_DATA,    /* const char * with a size_t length at aux */
        FK_U32,     /* uint32_t in min..max; optional ones equal to def are not written */
        FK_U64,     /* uint64_t, likewise */
        FK_BOOL,    /* optional ones are written when true */
        FK_STATE,   /* enum orch_instance_state but LOST */
        FK_HEALTH,  /* enum orch_health_state */
        FK_OBJECT,  /* an embedded struct of `sub`; optional ones have a bool at aux saying it is set */
        FK_ARRAY,   /* pointer to min..max structs of `sub`, the count (size_t) at aux */
        FK_STRINGS, /* const char **, min..max entries, count at aux, each checked by `check` */
        FK_LABELS,  /* struct orch_proto_label *, count at aux */
        FK_PORTS,   /* struct orch_proto_port *, count at aux */
        FK_SPEC,    /* json_t * (a service), the parsed struct orch_service * at aux */
};

enum string_check {
        SC_INSTANCE,
        SC_SERVICE,
        SC_REVISION,
        SC_NODE,
        SC_ADDRESS,
        SC_TOKEN,
        SC_SOFTWARE,
        SC_DRIVER,
        SC_CGROUP,
};

#define REQUIRED 1u

struct ctx;
struct schema;

struct field {
        const char *key;
        const char *jkey; /* "key": as written */
        uint8_t key_len;
        uint8_t jkey_len;
        uint8_t kind;
        uint8_t flags;
        uint8_t check;
        uint32_t offset;
        uint32_t aux;
        uint64_t min, max, def;
        const struct schema *sub;
};

struct schema {
        const struct field *fields;
        size_t n_fields;
        size_t size; /* of the struct, for arrays */
        /* Rules across fields, run once the fields are read or written. */
        int (*check)(struct ctx *c, const void *obj);
};

/* One field per line reads as the table it is. */
/* clang-format off */
#define FIELD(k, kd, fl, T, m)                                                                              \
        .key = k, .jkey = "\"" k "\":", .key_len = sizeof(k) - 1, .jkey_len = sizeof(k) + 2, .kind = kd,    \
        .flags = fl, .offset = offsetof(T, m)
#define F_STR(k, T, m, fl, sc)        {FIELD(k, FK_STRING, fl, T, m), .check = sc}
#define F_TEXT(k, T, m, fl, lo)       {FIELD(k, FK_TEXT, fl, T, m), .min = lo}
#define F_DATA(k, T, m, lm)           {FIELD(k, FK_DATA, REQUIRED, T, m), .aux = offsetof(T, lm)}
#define F_U32(k, T, m, fl, lo, hi)    {FIELD(k, FK_U32, fl, T, m), .min = lo, .max = hi}
#define F_U64(k, T, m, fl, lo, hi)    {FIELD(k, FK_U64, fl, T, m), .min = lo, .max = hi}
#define F_U64_DEF(k, T, m, lo, hi, d) {FIELD(k, FK_U64, 0, T, m), .min = lo, .max = hi, .def = d}
#define F_BOOL(k, T, m, fl)           {FIELD(k, FK_BOOL, fl, T, m)}
#define F_STATE(k, T, m)              {FIELD(k, FK_STATE, REQUIRED, T, m)}
#define F_HEALTH(k, T, m)             {FIELD(k, FK_HEALTH, REQUIRED, T, m)}
#define F_OBJ(k, T, m, s)             {FIELD(k, FK_OBJECT, REQUIRED, T, m), .sub = &s}
#define F_OBJ_OPT(k, T, m, has, s)    {FIELD(k, FK_OBJECT, 0, T, m), .aux = offsetof(T, has), .sub = &s}
#define F_ARRAY(k, T, m, n, fl, lo, s)                                                                      \
        {FIELD(k, FK_ARRAY, fl, T, m), .aux = offsetof(T, n), .min = lo, .max = ORCH_PROTO_MAX_INSTANCES,   \
         .sub = &s}
#define F_STRINGS(k, T, m, n, lo, hi, sc)                                                                   \
        {FIELD(k, FK_STRINGS, REQUIRED, T, m), .aux = offsetof(T, n), .min = lo, .max = hi, .check = sc}
#define F_LABELS(k, T, m, n)                                                                                \
        {FIELD(k, FK_LABELS, 0, T, m), .aux = offsetof(T, n), .max = ORCH_PROTO_MAX_LABELS}
#define F_PORTS(k, T, m, n) {FIELD(k, FK_PORTS, 0, T, m), .aux = offsetof(T, n), .max = ORCH_PROTO_MAX_PORTS}
#define F_SPEC(k, T, m, p) {FIELD(k, FK_SPEC, REQUIRED, T, m), .aux = offsetof(T, p)}
/* clang-format on */

/* Generations, ids, sequence numbers and times fit a signed 64-bit integer, so that SQLite and
 * jansson (json_int_t) carry them unchanged. */
#define I64 ((uint64_t)INT64_MAX)

static int check_report(struct ctx *c, const void *obj);
static int check_event(struct ctx *c, const void *obj);
static int check_welcome(struct ctx *c, const void *obj);
static int check_heartbeat(struct ctx *c, const void *obj);
static int check_spec(struct ctx *c, const void *obj);
static int check_start_item(struct ctx *c, const void *obj);
static int check_ack(struct ctx *c, const void *obj);
static int check_ack_result(struct ctx *c, const void *obj);

#define SCHEMA(name, T, chk)                                                                           \
        _Static_assert(ELEMENTSOF(name##_fields) <= 32, "the decoder tracks fields in a 32-bit mask"); \
        static const struct schema name = {name##_fields, ELEMENTSOF(name##_fields), sizeof(T), chk}

static const struct field exit_schema_fields[] = {
        F_U32("code", struct orch_proto_exit, code, REQUIRED, 0, 255),
        F_U32("signal", struct orch_proto_exit, signal, REQUIRED, 0, 64),
        F_BOOL("oom", struct orch_proto_exit, oom, REQUIRED),
};
SCHEMA(exit_schema, struct orch_proto_exit, NULL);

/* An instance report, written in its own object (hello) or flat beside seq (event): P is the path
 * of the report inside T. */
/* clang-format off */
#define REPORT_FIELDS(T, P)                                                                                 \
        F_STR("instance", T, P instance, REQUIRED, SC_INSTANCE),                                            \
        F_STR("service", T, P service, REQUIRED, SC_SERVICE),                                               \
        F_STR("revision", T, P revision, REQUIRED, SC_REVISION),                                            \
        F_U64("generation", T, P generation, REQUIRED, 1, I64),                                             \
        F_STATE("state", T, P state),                                                                       \
        F_HEALTH("health", T, P health),                                                                    \
        F_U32("pid", T, P pid, 0, 1, ORCH_PROTO_PID_MAX),                                                   \
        F_PORTS("ports", T, P ports, P n_ports),                                                            \
        F_U32("restarts", T, P restarts, 0, 0, UINT32_MAX),                                                 \
        F_U64("started_at", T, P started_at, 0, 0, I64),                                                    \
        F_OBJ_OPT("exit", T, P exit, P has_exit, exit_schema),                                              \
        F_TEXT("reason", T, P reason, 0, 0),                                                                \
        F_STR("cgroup", T, P cgroup, 0, SC_CGROUP)
/* clang-format on */

static const struct field report_schema_fields[] = {REPORT_FIELDS(struct orch_proto_report, )};
SCHEMA(report_schema, struct orch_proto_report, check_report);

static const struct field capacity_schema_fields[] = {
        F_U32("cpu_millis", struct orch_proto_capacity, cpu_millis, REQUIRED, 1, UINT32_MAX),
        F_U64("memory", struct orch_proto_capacity, memory, REQUIRED, 1, I64),
};
SCHEMA(capacity_schema, struct orch_proto_capacity, NULL);

/* instances and more come last: the encoder splits a long hello there (encode_hello). */
static const struct field hello_schema_fields[] = {
        F_U32("proto", struct orch_proto_hello, proto, REQUIRED, 1, 65535),
        F_STR("node", struct orch_proto_hello, node, REQUIRED, SC_NODE),
        F_STR("token", struct orch_proto_hello, token, REQUIRED, SC_TOKEN),
        F_STR("address", struct orch_proto_hello, address, REQUIRED, SC_ADDRESS),
        F_STR("version", struct orch_proto_hello, version, REQUIRED, SC_SOFTWARE),
        F_LABELS("labels", struct orch_proto_hello, labels, n_labels),
        F_OBJ("capacity", struct orch_proto_hello, capacity, capacity_schema),
        F_STRINGS("drivers", struct orch_proto_hello, drivers, n_drivers, 1, ORCH_PROTO_MAX_DRIVERS,
                  SC_DRIVER),
        F_ARRAY("instances", struct orch_proto_hello, instances, n_instances, 0, 0, report_schema),
        F_BOOL("more", struct orch_proto_hello, more, 0),
};
SCHEMA(hello_schema, struct orch_proto_hello, NULL);
#define HELLO_SPLIT_AT (ELEMENTSOF(hello_schema_fields) - 2)

static const struct field welcome_schema_fields[] = {
        F_STR("node", struct orch_proto_welcome, node, REQUIRED, SC_NODE),
        F_U64("heartbeat_ms", struct orch_proto_welcome, heartbeat_ms, REQUIRED, 1,
              ORCH_PROTO_INTERVAL_MAX_MS),
        F_U64("ttl_ms", struct orch_proto_welcome, ttl_ms, REQUIRED, 1, ORCH_PROTO_INTERVAL_MAX_MS),
        F_U64("server_time", struct orch_proto_welcome, server_time, REQUIRED, 0, I64),
};
SCHEMA(welcome_schema, struct orch_proto_welcome, check_welcome);

static const struct field error_schema_fields[] = {
        F_TEXT("error", struct orch_proto_error_msg, error, REQUIRED, 1),
};
SCHEMA(error_schema, struct orch_proto_error_msg, NULL);

static const struct field heartbeat_schema_fields[] = {
        F_U64("seq", struct orch_proto_heartbeat, seq, REQUIRED, 0, I64),
        F_U64("heartbeat_ms", struct orch_proto_heartbeat, heartbeat_ms, 0, 1, ORCH_PROTO_INTERVAL_MAX_MS),
        F_U64("ttl_ms", struct orch_proto_heartbeat, ttl_ms, 0, 1, ORCH_PROTO_INTERVAL_MAX_MS),
};
SCHEMA(heartbeat_schema, struct orch_proto_heartbeat, check_heartbeat);

static const struct field spec_schema_fields[] = {
        F_U64("id", struct orch_proto_spec, id, REQUIRED, 1, I64),
        F_STR("service", struct orch_proto_spec, service, REQUIRED, SC_SERVICE),
        F_STR("revision", struct orch_proto_spec, revision, REQUIRED, SC_REVISION),
        F_SPEC("spec", struct orch_proto_spec, spec, parsed),
};
SCHEMA(spec_schema, struct orch_proto_spec, check_spec);

static const struct field start_item_schema_fields[] = {
        F_STR("instance", struct orch_proto_start_item, instance, REQUIRED, SC_INSTANCE),
        F_STR("service", struct orch_proto_start_item, service, REQUIRED, SC_SERVICE),
        F_STR("revision", struct orch_proto_start_item, revision, REQUIRED, SC_REVISION),
        F_U64("generation", struct orch_proto_start_item, generation, REQUIRED, 1, I64),
};
SCHEMA(start_item_schema, struct orch_proto_start_item, check_start_item);

static const struct field start_schema_fields[] = {
        F_U64("id", struct orch_proto_start, id, REQUIRED, 1, I64),
        F_ARRAY("instances", struct orch_proto_start, instances, n_instances, REQUIRED, 1,
                start_item_schema),
};
SCHEMA(start_schema, struct orch_proto_start, NULL);

static const struct field stop_item_schema_fields[] = {
        F_STR("instance", struct orch_proto_stop_item, instance, REQUIRED, SC_INSTANCE),
        F_U64("generation", struct orch_proto_stop_item, generation, REQUIRED, 1, I64),
};
SCHEMA(stop_item_schema, struct orch_proto_stop_item, NULL);

static const struct field stop_schema_fields[] = {
        F_U64("id", struct orch_proto_stop, id, REQUIRED, 1, I64),
        F_ARRAY("instances", struct orch_proto_stop, instances, n_instances, REQUIRED, 1, stop_item_schema),
        F_TEXT("reason", struct orch_proto_stop, reason, 0, 0),
};
SCHEMA(stop_schema, struct orch_proto_stop, NULL);

static const struct field logs_schema_fields[] = {
        F_U64("id", struct orch_proto_logs, id, REQUIRED, 1, I64),
        F_STR("instance", struct orch_proto_logs, instance, REQUIRED, SC_INSTANCE),
        F_U64_DEF("tail", struct orch_proto_logs, tail, 0, I64, ORCH_PROTO_TAIL_ALL),
        F_BOOL("follow", struct orch_proto_logs, follow, 0),
};
SCHEMA(logs_schema, struct orch_proto_logs, NULL);

static const struct field logs_cancel_schema_fields[] = {
        F_U64("id", struct orch_proto_logs_cancel, id, REQUIRED, 1, I64),
};
SCHEMA(logs_cancel_schema, struct orch_proto_logs_cancel, NULL);

static const struct field log_schema_fields[] = {
        F_U64("id", struct orch_proto_log, id, REQUIRED, 1, I64),
        F_DATA("data", struct orch_proto_log, data, data_len),
        F_BOOL("eof", struct orch_proto_log, eof, 0),
};
SCHEMA(log_schema, struct orch_proto_log, NULL);

static const struct field ack_result_schema_fields[] = {
        F_STR("instance", struct orch_proto_ack_result, instance, REQUIRED, SC_INSTANCE),
        F_BOOL("ok", struct orch_proto_ack_result, ok, REQUIRED),
        F_TEXT("error", struct orch_proto_ack_result, error, 0, 0),
};
SCHEMA(ack_result_schema, struct orch_proto_ack_result, check_ack_result);

static const struct field ack_schema_fields[] = {
        F_U64("id", struct orch_proto_ack, id, REQUIRED, 1, I64),
        F_BOOL("ok", struct orch_proto_ack, ok, REQUIRED),
        F_TEXT("error", struct orch_proto_ack, error, 0, 0),
        F_ARRAY("results", struct orch_proto_ack, results, n_results, 0, 0, ack_result_schema),
};
SCHEMA(ack_schema, struct orch_proto_ack, check_ack);

static const struct field event_schema_fields[] = {
        F_U64("seq", struct orch_proto_event, seq, REQUIRED, 0, I64),
        REPORT_FIELDS(struct orch_proto_event, report.),
};
SCHEMA(event_schema, struct orch_proto_event, check_event);

static const struct field usage_item_schema_fields[] = {
        F_STR("instance", struct orch_proto_usage_item, instance, REQUIRED, SC_INSTANCE),
        F_U64("cpu_usec", struct orch_proto_usage_item, cpu_usec, REQUIRED, 0, I64),
        F_U64("memory", struct orch_proto_usage_item, memory, REQUIRED, 0, I64),
        F_U32("pids", struct orch_proto_usage_item, pids, REQUIRED, 0, UINT32_MAX),
};
SCHEMA(usage_item_schema, struct orch_proto_usage_item, NULL);

static const struct field usage_schema_fields[] = {
        F_ARRAY("instances", struct orch_proto_usage, instances, n_instances, REQUIRED, 0,
                usage_item_schema),
};
SCHEMA(usage_schema, struct orch_proto_usage, NULL);

static const struct schema *const message_schemas[_ORCH_PROTO_TYPE_MAX] = {
        [ORCH_PROTO_HELLO] = &hello_schema,
        [ORCH_PROTO_WELCOME] = &welcome_schema,
        [ORCH_PROTO_ERROR] = &error_schema,
        [ORCH_PROTO_HEARTBEAT] = &heartbeat_schema,
        [ORCH_PROTO_SPEC] = &spec_schema,
        [ORCH_PROTO_START] = &start_schema,
        [ORCH_PROTO_STOP] = &stop_schema,
        [ORCH_PROTO_LOGS] = &logs_schema,
        [ORCH_PROTO_LOGS_CANCEL] = &logs_cancel_schema,
        [ORCH_PROTO_LOG] = &log_schema,
        [ORCH_PROTO_ACK] = &ack_schema,
        [ORCH_PROTO_EVENT] = &event_schema,
        [ORCH_PROTO_USAGE] = &usage_schema,
};

/* Every member of the union starts where the message body starts. */
static void *msg_body(const struct orch_proto_msg *m)
{
        return (char *)m + offsetof(struct orch_proto_msg, hello);
}

#define AT(obj, off, T) ((T *)((char *)(obj) + (off)))

/* ------------------------------------------------------------------------------------------------ */
/* Errors: "<type>.<path>: <problem>" */

#define PATH_DEPTH 8
#define QUOTE_MAX  96 /* a rendered value in a message */

struct seg {
        const char *key; /* NULL: an array index */
        size_t index;
};

struct ctx {
        struct orch_proto_error *error;
        const char *root; /* "frame" until the type is known, then the type */
        struct seg path[PATH_DEPTH];
        unsigned depth;

        /* decoding: the frame copy, NUL-terminated at end */
        char *start, *p, *end;
        unsigned nesting;

        /* encoding */
        struct orch_buf *out;
};

static void path_key(struct ctx *c, const char *key)
{
        if (c->depth < PATH_DEPTH)
                c->path[c->depth] = (struct seg){.key = key};
        c->depth++;
}

static void path_index(struct ctx *c, size_t index)
{
        if (c->depth < PATH_DEPTH)
                c->path[c->depth] = (struct seg){.index = index};
        c->depth++;
}

static void path_pop(struct ctx *c)
{
        c->depth--;
}

_printf_(4, 5) static void append(char *buf, size_t size, size_t *n, const char *fmt, ...)
{
        va_list ap;
        int k;

        if (*n >= size - 1)
                return;
        va_start(ap, fmt);
        k = vsnprintf(buf + *n, size - *n, fmt, ap);
        va_end(ap);
        if (k > 0)
                *n = MIN(*n + (size_t)k, size - 1);
}

_printf_(3, 0) static int vfail(struct ctx *c, const char *key, const char *fmt, va_list ap)
{
        char *m;
        size_t n = 0;

        if (!c->error)
                return -EINVAL;
        m = c->error->message;
        append(m, sizeof c->error->message, &n, "%s", c->root);
        for (unsigned i = 0; i < MIN(c->depth, (unsigned)PATH_DEPTH); i++) {
                if (c->path[i].key)
                        append(m, sizeof c->error->message, &n, ".%s", c->path[i].key);
                else
                        append(m, sizeof c->error->message, &n, "[%zu]", c->path[i].index);
        }
        if (key)
                append(m, sizeof c->error->message, &n, ".%s", key);
        append(m, sizeof c->error->message, &n, ": ");
        if (n < sizeof c->error->message - 1)
                vsnprintf(m + n, sizeof c->error->message - n, fmt, ap);
        return -EINVAL;
}

/* Fails at the current path. */
_printf_(2, 3) static int fail(struct ctx *c, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vfail(c, NULL, fmt, ap);
        va_end(ap);
        return r;
}

/* Fails at a field of the current object. */
_printf_(3, 4) static int fail_at(struct ctx *c, const char *key, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vfail(c, key, fmt, ap);
        va_end(ap);
        return r;
}

/* A peer's value rendered for a message: quoted, printable ASCII, bounded. */
static const char *quote(char buf[static QUOTE_MAX], const char *s, size_t len)
{
        size_t n = 0, max = QUOTE_MAX - 8;

        buf[n++] = '"';
        for (size_t i = 0; i < len && n < max; i++) {
                unsigned char ch = (unsigned char)s[i];
                if (ch == '"' || ch == '\\') {
                        buf[n++] = '\\';
                        buf[n++] = (char)ch;
                } else if (ch >= 0x20 && ch < 0x7f)
                        buf[n++] = (char)ch;
                else {
                        static const char hex[] = "0123456789abcdef";
                        buf[n++] = '\\';
                        buf[n++] = 'x';
                        buf[n++] = hex[ch >> 4];
                        buf[n++] = hex[ch & 15];
                }
                if (n >= max && i + 1 < len) {
                        memcpy(buf + n, "...", 3);
                        n += 3;
                }
        }
        buf[n++] = '"';
        buf[n] = '\0';
        return buf;
}

static const char *range_text(const struct field *f, char *buf, size_t size)
{
        if (f->min == 1 && f->max == I64)
                return "a positive integer";
        if (f->min == 0 && f->max == I64)
                return "a non-negative integer";
        (void)orch_snprintf(buf, size, "an integer from %" PRIu64 " to %" PRIu64, f->min, f->max);
        return buf;
}

static const char *expected_text(const struct field *f, char *buf, size_t size)
{
        switch (f->kind) {
        case FK_U32:
        case FK_U64:
                return range_text(f, buf, size);
        case FK_BOOL:
                return "true or false";
        case FK_OBJECT:
        case FK_LABELS:
        case FK_PORTS:
        case FK_SPEC:
                return "an object";
        case FK_ARRAY:
        case FK_STRINGS:
                return "an array";
        default:
                return "a string";
        }
}

/* ------------------------------------------------------------------------------------------------ */
/* Checks shared by both directions */

static int check_uint(struct ctx *c, const struct field *f, uint64_t v)
{
        char b[64];

        if (v < f->min || v > f->max)
                return fail(c, "expected %s, got %" PRIu64, range_text(f, b, sizeof b), v);
        return 0;
}

static int check_string(struct ctx *c, const struct field *f, const char *s, size_t len)
{
        const char *what, *expect;
        char q[QUOTE_MAX];
        bool ok;

        switch (f->check) {
        case SC_INSTANCE:
                ok = instance_id_valid(s, len);
                what = "instance id";
                expect = "<service>-<suffix>, the suffix 1 to 16 lower-case letters or digits";
                break;
        case SC_SERVICE:
                ok = len <= ORCH_NAME_MAX && orch_service_name_valid(s);
                what = "service name";
                expect = "^[a-z][a-z0-9-]{0,62}$";
                break;
        case SC_REVISION:
                ok = revision_valid(s, len);
                what = "revision";
                expect = "16 lower-case hex digits";
                break;
        case SC_NODE:
                ok = node_name_valid(s, len);
                what = "node name";
                expect = "at most 253 characters: dot-separated labels of letters, digits, '-' and '_'";
                break;
        case SC_ADDRESS:
                ok = len <= ORCH_PROTO_NODE_NAME_MAX && address_valid(s, len);
                what = "address";
                expect = "an IP address or a host name";
                break;
        case SC_TOKEN:
                /* Never echo a secret, not even a wrong one. */
                if (len == 0 || len > ORCH_PROTO_TOKEN_MAX || !printable_ascii(s, len, '!'))
                        return fail(c, "invalid token: expected 1 to %u printable ASCII characters",
                                    ORCH_PROTO_TOKEN_MAX);
                return 0;
        case SC_SOFTWARE:
                ok = len > 0 && len <= ORCH_PROTO_SOFTWARE_MAX && printable_ascii(s, len, ' ');
                what = "version";
                expect = "1 to 64 printable ASCII characters";
                break;
        case SC_DRIVER:
                ok = simple_name_valid(s, len, 31);
                what = "driver name";
                expect = "^[a-z][a-z0-9-]{0,30}$";
                break;
        case SC_CGROUP:
                ok = cgroup_valid(s, len);
                what = "cgroup path";
                expect = "an absolute path without control characters";
                break;
        default:
                return fail(c, "no check for this string");
        }
        if (!ok)
                return fail(c, "invalid %s %s: expected %s", what, quote(q, s, len), expect);
        return 0;
}

static int check_text(struct ctx *c, const struct field *f, size_t len)
{
        if (len < f->min)
                return fail(c, "must not be empty");
        if (len > ORCH_PROTO_TEXT_MAX)
                return fail(c, "longer than %u bytes", ORCH_PROTO_TEXT_MAX);
        return 0;
}

/* The codec reads and writes the states through an int. */
_Static_assert(sizeof(enum orch_instance_state) == sizeof(int) &&
                       sizeof(enum orch_health_state) == sizeof(int),
               "instance and health states are int-sized");

#define STATE_CHOICES  "pending, starting, running, stopping, exited, failed"
#define HEALTH_CHOICES "passing, failing, unknown"

static int check_state(struct ctx *c, int state)
{
        if (state == ORCH_INSTANCE_LOST)
                return fail(c, "\"lost\" is decided by orchd, not reported by agents");
        if (state < 0 || state >= _ORCH_INSTANCE_STATE_MAX)
                return fail(c, "expected one of " STATE_CHOICES ", got %d", state);
        return 0;
}

static int check_health(struct ctx *c, int health)
{
        if (health < 0 || health >= _ORCH_HEALTH_STATE_MAX)
                return fail(c, "expected one of " HEALTH_CHOICES ", got %d", health);
        return 0;
}

static int check_count(struct ctx *c, const struct field *f, size_t n)
{
        if (n > f->max)
                return fail(c, "more than %" PRIu64 " entries", f->max);
        if (n < f->min)
                return fail(c, "at least %" PRIu64 " %s required", f->min,
                            f->min == 1 ? "entry is" : "entries are");
        return 0;
}

/* Map keys are checked before they become part of an error path. */
static int check_label_key(struct ctx *c, const struct orch_proto_label *labels, size_t i)
{
        const char *key = strempty(labels[i].key);
        char q[QUOTE_MAX];

        if (!label_key_valid(key, strlen(key)))
                return fail(c,
                            "invalid label key %s: expected 1 to 63 of letters, digits, '.', '_', '/', '-', "
                            "starting with a letter or digit",
                            quote(q, key, strlen(key)));
        for (size_t k = 0; k < i; k++)
                if (streq(labels[k].key, key))
                        return fail(c, "duplicate label %s", quote(q, key, strlen(key)));
        return 0;
}

static int check_label_value(struct ctx *c, const char *value)
{
        char q[QUOTE_MAX];

        if (!value || !label_value_valid(value, strlen(value)))
                return fail(c,
                            "invalid label value %s: expected at most 63 of letters, digits, '.', '_', '-'",
                            quote(q, strempty(value), strlen(strempty(value))));
        return 0;
}

static int check_port_name(struct ctx *c, const struct orch_proto_port *ports, size_t i)
{
        const char *name = strempty(ports[i].name);
        char q[QUOTE_MAX];

        if (!orch_port_name_valid(name))
                return fail(c, "invalid port name %s: expected ^[a-z][a-z0-9-]{0,30}$",
                            quote(q, name, strlen(name)));
        for (size_t k = 0; k < i; k++)
                if (streq(ports[k].name, name))
                        return fail(c, "duplicate port %s", quote(q, name, strlen(name)));
        return 0;
}

/* For an instance id and a service name that passed their checks: the id's service part is
 * everything before its last '-', so it belongs when that '-' comes right after the name. */
static int check_belongs(struct ctx *c, const char *instance, const char *service)
{
        size_t l = strlen(service);
        char q1[QUOTE_MAX], q2[QUOTE_MAX];

        if (strncmp(instance, service, l) != 0 || instance[l] != '-' || strchr(instance + l + 1, '-'))
                return fail_at(c, "instance", "%s does not belong to service %s",
                               quote(q1, instance, strlen(instance)), quote(q2, service, l));
        return 0;
}

static int check_report(struct ctx *c, const void *obj)
{
        const struct orch_proto_report *r = obj;
        return check_belongs(c, r->instance, r->service);
}

static int check_event(struct ctx *c, const void *obj)
{
        return check_report(c, &((const struct orch_proto_event *)obj)->report);
}

static int check_start_item(struct ctx *c, const void *obj)
{
        const struct orch_proto_start_item *it = obj;
        return check_belongs(c, it->instance, it->service);
}

/* An interval that is not shorter than the TTL would have the node declared down between two
 * heartbeats. */
static int check_intervals(struct ctx *c, uint64_t heartbeat_ms, uint64_t ttl_ms)
{
        if (ttl_ms <= heartbeat_ms)
                return fail_at(c, "ttl_ms", "must be greater than heartbeat_ms (%" PRIu64 "), got %" PRIu64,
                               heartbeat_ms, ttl_ms);
        return 0;
}

static int check_welcome(struct ctx *c, const void *obj)
{
        const struct orch_proto_welcome *w = obj;
        return check_intervals(c, w->heartbeat_ms, w->ttl_ms);
}

static int check_heartbeat(struct ctx *c, const void *obj)
{
        const struct orch_proto_heartbeat *h = obj;

        if ((h->heartbeat_ms == 0) != (h->ttl_ms == 0))
                return fail_at(c, h->ttl_ms ? "heartbeat_ms" : "ttl_ms", "required with %s",
                               h->ttl_ms ? "ttl_ms" : "heartbeat_ms");
        return h->heartbeat_ms ? check_intervals(c, h->heartbeat_ms, h->ttl_ms) : 0;
}

/* The agent caches a spec under (service, revision): a spec filed under another service's name
 * would run the wrong thing. The revision is orchd's to compute, so it is not recomputed here:
 * agents of another version could hash the canonical form differently. */
static int check_spec(struct ctx *c, const void *obj)
{
        const struct orch_proto_spec *s = obj;
        const char *name = json_string_value(json_object_get(s->spec, "name"));
        char q1[QUOTE_MAX], q2[QUOTE_MAX];

        if (!name || !streq(name, s->service))
                return fail_at(c, "spec", "the spec's name %s does not match service %s",
                               name ? quote(q1, name, strlen(name)) : "(none)",
                               quote(q2, s->service, strlen(s->service)));
        return 0;
}

static int check_ack_result(struct ctx *c, const void *obj)
{
        const struct orch_proto_ack_result *a = obj;

        if (!a->ok && (!a->error || !*a->error))
                return fail_at(c, "error", "required when ok is false");
        return 0;
}

static int check_ack(struct ctx *c, const void *obj)
{
        const struct orch_proto_ack *a = obj;

        if (!a->ok && (!a->error || !*a->error))
                return fail_at(c, "error", "required when ok is false");
        if (a->ok)
                for (size_t i = 0; i < a->n_results; i++)
                        if (!a->results[i].ok) {
                                path_key(c, "results");
                                path_index(c, i);
                                return fail_at(c, "ok", "false, but the ack says ok");
                        }
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* UTF-8 */

/* Length of the valid UTF-8 sequence of a non-ASCII lead byte at s (2-4), or 0 when it is invalid,
 * overlong, a surrogate, above U+10FFFF or truncated. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
        unsigned char c = s[0];

        if (c >= 0xc2 && c <= 0xdf)
                return avail >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
        if (c >= 0xe0 && c <= 0xef) {
                if (avail < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
                        return 0;
                if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
                        return 0;
                return 3;
        }
        if (c >= 0xf0 && c <= 0xf4) {
                if (avail < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
                        return 0;
                if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
                        return 0;
                return 4;
        }
        return 0;
}

static size_t utf8_put(char *d, uint32_t cp)
{
        if (cp < 0x80) {
                d[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                d[0] = (char)(0xc0 | (cp >> 6));
                d[1] = (char)(0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                d[0] = (char)(0xe0 | (cp >> 12));
                d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                d[2] = (char)(0x80 | (cp & 0x3f));
                return 3;
        }
        d[0] = (char)(0xf0 | (cp >> 18));
        d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[3] = (char)(0x80 | (cp & 0x3f));
        return 4;
}

/* Bytes that a JSON string cannot hold as they are (controls, quote, backslash) or that must be
 * checked as UTF-8. */
static const uint8_t string_special[256] = {
        [0x00 ... 0x1f] = 1,
        ['"'] = 1,
        ['\\'] = 1,
        [0x80 ... 0xff] = 1,
};

/* ------------------------------------------------------------------------------------------------ */
/* Encoding */

/* orch_buf_put() with the common case inline: a frame is written in many small pieces. The buffer
 * stays NUL-terminated, and after a failed allocation `oom` makes every later piece a no-op. */
static inline void put(struct orch_buf *b, const char *s, size_t n)
{
        if (_likely_(n < b->cap - b->len && !b->oom)) {
                memcpy(b->data + b->len, s, n);
                b->len += n;
                b->data[b->len] = '\0';
                return;
        }
        (void)orch_buf_put(b, s, n);
}

static void put_u64(struct orch_buf *b, uint64_t v)
{
        char d[20];
        size_t n = sizeof d;

        do {
                d[--n] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        put(b, d + n, sizeof d - n);
}

/*
 * Appends s as a JSON string of at most `max` bytes of content, cut at a character boundary.
 * Invalid UTF-8 and NUL bytes become U+FFFD: only free text and log data can hold them (every
 * other string passed its check), and a frame must stay valid whatever a process printed.
 */
static void put_string(struct orch_buf *b, const char *str, size_t len, size_t max)
{
        static const char hex[] = "0123456789abcdef";
        static const char replacement[] = "\xef\xbf\xbd";
        const unsigned char *p = (const unsigned char *)str, *e = p + len;
        size_t used = 0;

        put(b, "\"", 1);
        while (p < e) {
                const unsigned char *run = p;
                size_t n;

                while (p < e && !string_special[*p])
                        p++;
                n = MIN((size_t)(p - run), max - used);
                put(b, (const char *)run, n);
                used += n;
                if (p == e || used == max)
                        break;
                if (*p >= 0x80) {
                        size_t k = utf8_sequence(p, (size_t)(e - p));
                        if (used + (k ? k : 3) > max)
                                break;
                        if (k)
                                put(b, (const char *)p, k);
                        else
                                put(b, replacement, 3);
                        used += k ? k : 3;
                        p += k ? k : 1;
                } else if (*p == 0) {
                        if (used + 3 > max)
                                break;
                        put(b, replacement, 3);
                        used += 3;
                        p++;
                } else {
                        char esc[6] = {'\\', 0};
                        size_t k = 2;
                        switch (*p) {
                        case '"':
                        case '\\':
                                esc[1] = (char)*p;
                                break;
                        case '\n':
                                esc[1] = 'n';
                                break;
                        case '\r':
                                esc[1] = 'r';
                                break;
                        case '\t':
                                esc[1] = 't';
                                break;
                        case '\b':
                                esc[1] = 'b';
                                break;
                        case '\f':
                                esc[1] = 'f';
                                break;
                        default:
                                memcpy(esc + 1, "u00", 3);
                                esc[4] = hex[*p >> 4];
                                esc[5] = hex[*p & 15];
                                k = 6;
                        }
                        put(b, esc, k);
                        used++;
                        p++;
                }
        }
        put(b, "\"", 1);
}

static void put_key(struct orch_buf *b, const struct field *f, bool *first)
{
        if (!*first)
                put(b, ",", 1);
        *first = false;
        put(b, f->jkey, f->jkey_len);
}

static int encode_object(struct ctx *c, const struct schema *s, const void *obj);

static int encode_field(struct ctx *c, const struct field *f, const void *obj, bool *first)
{
        struct orch_buf *b = c->out;
        const void *v = (const char *)obj + f->offset;
        int r = 0;

        path_key(c, f->key);
        switch (f->kind) {
        case FK_STRING:
        case FK_TEXT: {
                const char *s = *(const char *const *)v;
                size_t len;
                if (!s) {
                        if (f->flags & REQUIRED)
                                return fail(c, "required field missing");
                        break;
                }
                len = strlen(s);
                if (f->kind == FK_STRING) {
                        r = check_string(c, f, s, len);
                        if (r < 0)
                                return r;
                } else if (len < f->min)
                        return fail(c, "must not be empty");
                put_key(b, f, first);
                put_string(b, s, len, f->kind == FK_TEXT ? ORCH_PROTO_TEXT_MAX : SIZE_MAX);
                break;
        }
        case FK_DATA: {
                const char *s = *(const char *const *)v;
                size_t len = *AT(obj, f->aux, const size_t);
                if (!s && len > 0)
                        return fail(c, "required field missing");
                put_key(b, f, first);
                put_string(b, strempty(s), len, SIZE_MAX);
                break;
        }
        case FK_U32:
        case FK_U64: {
                uint64_t x = f->kind == FK_U32 ? *(const uint32_t *)v : *(const uint64_t *)v;
                if (!(f->flags & REQUIRED) && x == f->def)
                        break;
                r = check_uint(c, f, x);
                if (r < 0)
                        return r;
                put_key(b, f, first);
                put_u64(b, x);
                break;
        }
        case FK_BOOL: {
                bool x = *(const bool *)v;
                if (!(f->flags & REQUIRED) && !x)
                        break;
                put_key(b, f, first);
                put(b, x ? "true" : "false", x ? 4 : 5);
                break;
        }
        case FK_STATE:
        case FK_HEALTH: {
                int x = *(const int *)v;
                const char *s;
                r = f->kind == FK_STATE ? check_state(c, x) : check_health(c, x);
                if (r < 0)
                        return r;
                s = f->kind == FK_STATE ? orch_instance_state_to_string(x) : orch_health_state_to_string(x);
                put_key(b, f, first);
                put(b, "\"", 1);
                put(b, s, strlen(s));
                put(b, "\"", 1);
                break;
        }
        case FK_OBJECT:
                if (!(f->flags & REQUIRED) && !*AT(obj, f->aux, const bool))
                        break;
                put_key(b, f, first);
                r = encode_object(c, f->sub, v);
                if (r < 0)
                        return r;
                break;
        case FK_ARRAY: {
                const char *items = *(const char *const *)v;
                size_t n = *AT(obj, f->aux, const size_t);
                if (!(f->flags & REQUIRED) && n == 0)
                        break;
                r = check_count(c, f, n);
                if (r < 0)
                        return r;
                if (n > 0 && !items)
                        return fail(c, "required field missing");
                put_key(b, f, first);
                put(b, "[", 1);
                for (size_t i = 0; i < n; i++) {
                        if (i > 0)
                                put(b, ",", 1);
                        path_index(c, i);
                        r = encode_object(c, f->sub, items + i * f->sub->size);
                        if (r < 0)
                                return r;
                        path_pop(c);
                }
                put(b, "]", 1);
                break;
        }
        case FK_STRINGS: {
                const char *const *items = *(const char *const *const *)v;
                size_t n = *AT(obj, f->aux, const size_t);
                r = check_count(c, f, n);
                if (r < 0)
                        return r;
                if (n > 0 && !items)
                        return fail(c, "required field missing");
                put_key(b, f, first);
                put(b, "[", 1);
                for (size_t i = 0; i < n; i++) {
                        path_index(c, i);
                        if (!items[i])
                                return fail(c, "expected a string");
                        r = check_string(c, f, items[i], strlen(items[i]));
                        if (r < 0)
                                return r;
                        path_pop(c);
                        if (i > 0)
                                put(b, ",", 1);
                        put_string(b, items[i], strlen(items[i]), SIZE_MAX);
                }
                put(b, "]", 1);
                break;
        }
        case FK_LABELS: {
                const struct orch_proto_label *l = *(const struct orch_proto_label *const *)v;
                size_t n = *AT(obj, f->aux, const size_t);
                if (n == 0)
                        break;
                r = check_count(c, f, n);
                if (r < 0)
                        return r;
                if (n > 0 && !l)
                        return fail(c, "required field missing");
                put_key(b, f, first);
                put(b, "{", 1);
                for (size_t i = 0; i < n; i++) {
                        r = check_label_key(c, l, i);
                        if (r < 0)
                                return r;
                        path_key(c, l[i].key);
                        r = check_label_value(c, l[i].value);
                        if (r < 0)
                                return r;
                        path_pop(c);
                        if (i > 0)
                                put(b, ",", 1);
                        put_string(b, l[i].key, strlen(l[i].key), SIZE_MAX);
                        put(b, ":", 1);
                        put_string(b, l[i].value, strlen(l[i].value), SIZE_MAX);
                }
                put(b, "}", 1);
                break;
        }
        case FK_PORTS: {
                const struct orch_proto_port *p = *(const struct orch_proto_port *const *)v;
                size_t n = *AT(obj, f->aux, const size_t);
                if (n == 0)
                        break;
                r = check_count(c, f, n);
                if (r < 0)
                        return r;
                if (n > 0 && !p)
                        return fail(c, "required field missing");
                put_key(b, f, first);
                put(b, "{", 1);
                for (size_t i = 0; i < n; i++) {
                        r = check_port_name(c, p, i);
                        if (r < 0)
                                return r;
                        if (p[i].port == 0)
                                return fail_at(c, p[i].name, "expected an integer from 1 to 65535, got 0");
                        if (i > 0)
                                put(b, ",", 1);
                        put_string(b, p[i].name, strlen(p[i].name), SIZE_MAX);
                        put(b, ":", 1);
                        put_u64(b, p[i].port);
                }
                put(b, "}", 1);
                break;
        }
        case FK_SPEC: {
                const json_t *j = *(const json_t *const *)v;
                _cleanup_(freep) char *text = NULL;
                /* The sender built it from a validated struct orch_service (orch_service_to_json);
                 * the full validation is the receiver's. */
                if (!j)
                        return fail(c, "required field missing");
                if (!json_is_object(j))
                        return fail(c, "expected an object");
                put_key(b, f, first);
                /* FK_SPEC is the spec message's: its dump may come with it */
                if (((const struct orch_proto_spec *)obj)->spec_text) {
                        const char *t = ((const struct orch_proto_spec *)obj)->spec_text;
                        put(b, t, strlen(t));
                        break;
                }
                text = orch_json_dumps_canonical(j);
                if (!text)
                        return -ENOMEM;
                put(b, text, strlen(text));
                break;
        }
        }
        path_pop(c);
        return 0;
}

static int encode_fields(struct ctx *c, const struct schema *s, const void *obj, size_t from, size_t to,
                         bool *first)
{
        for (size_t i = from; i < to; i++) {
                int r = encode_field(c, &s->fields[i], obj, first);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int encode_object(struct ctx *c, const struct schema *s, const void *obj)
{
        bool first = true;
        int r;

        put(c->out, "{", 1);
        r = encode_fields(c, s, obj, 0, s->n_fields, &first);
        if (r < 0)
                return r;
        if (s->check) {
                r = s->check(c, obj);
                if (r < 0)
                        return r;
        }
        put(c->out, "}", 1);
        return 0;
}

static void put_type(struct orch_buf *b, enum orch_proto_type t)
{
        put(b, "{\"type\":\"", 9);
        put(b, type_names[t], strlen(type_names[t]));
        put(b, "\"", 1);
}

static int frame_too_long(struct ctx *c, size_t len)
{
        fail(c, "the frame would be %zu bytes, the limit is %u", len, ORCH_PROTO_MAX_FRAME);
        return -EMSGSIZE;
}

/*
 * A hello carries every instance of the node, which may not fit one frame. Each part repeats the
 * registration fields, so that every frame is a complete, valid hello, and all but the last say
 * "more": true (docs/protocol.md, "A node with many instances").
 */
static int encode_hello(struct ctx *c, const struct orch_proto_hello *h)
{
        static const char more_close[] = "],\"more\":true}\n";
        static const char instances_open[] = ",\"instances\":[";
        const struct field *fi = &hello_schema.fields[HELLO_SPLIT_AT];
        struct orch_buf *b = c->out;
        size_t head_start = b->len, head_len, frame_start = head_start, in_frame = 0;
        bool first = false;
        int r;

        put_type(b, ORCH_PROTO_HELLO);
        r = encode_fields(c, &hello_schema, h, 0, HELLO_SPLIT_AT, &first);
        if (r < 0)
                return r;
        head_len = b->len - head_start;
        if (h->n_instances == 0) {
                put(b, "}", 1);
                if (b->len - frame_start > ORCH_PROTO_MAX_FRAME)
                        return frame_too_long(c, b->len - frame_start);
                put(b, "\n", 1);
                return 0;
        }
        if (!h->instances)
                return fail_at(c, "instances", "required field missing");

        put(b, instances_open, sizeof instances_open - 1);
        path_key(c, fi->key);
        for (size_t i = 0; i < h->n_instances; i++) {
                size_t mark = b->len;

                if (in_frame < ORCH_PROTO_MAX_INSTANCES) {
                        if (in_frame > 0)
                                put(b, ",", 1);
                        path_index(c, i);
                        r = encode_object(c, &report_schema, &h->instances[i]);
                        if (r < 0)
                                return r;
                        path_pop(c);
                        if (b->oom)
                                return -ENOMEM;
                        if (b->len - frame_start + sizeof more_close - 2 <= ORCH_PROTO_MAX_FRAME) {
                                in_frame++;
                                continue;
                        }
                        if (in_frame == 0)
                                return frame_too_long(c, b->len - frame_start);
                }
                /* Close this part before instance i and repeat the registration in the next. */
                b->len = mark;
                put(b, more_close, sizeof more_close - 1);
                frame_start = b->len;
                if (orch_buf_reserve(b, head_len) < 0)
                        return -ENOMEM;
                memcpy(b->data + b->len, b->data + head_start, head_len);
                b->len += head_len;
                put(b, instances_open, sizeof instances_open - 1);
                in_frame = 0;
                i--;
        }
        path_pop(c);
        put(b, "]}\n", 3);
        return 0;
}

int orch_proto_encode(struct orch_buf *out, const struct orch_proto_msg *m, struct orch_proto_error *error)
{
        struct ctx c = {.error = error, .root = "frame", .out = out};
        size_t start = out->len;
        bool was_oom = out->oom;
        int r;

        if (was_oom)
                return -ENOMEM;
        if ((unsigned)m->type >= _ORCH_PROTO_TYPE_MAX) {
                fail(&c, "unknown message type %d", (int)m->type);
                return -EINVAL;
        }
        c.root = type_names[m->type];
        if (m->type == ORCH_PROTO_HELLO)
                r = encode_hello(&c, &m->hello);
        else {
                const struct schema *s = message_schemas[m->type];
                const void *body = msg_body(m);
                bool first = false;

                put_type(out, m->type);
                r = encode_fields(&c, s, body, 0, s->n_fields, &first);
                if (r >= 0 && s->check)
                        r = s->check(&c, body);
                if (r >= 0) {
                        put(out, "}", 1);
                        if (out->len - start > ORCH_PROTO_MAX_FRAME)
                                r = frame_too_long(&c, out->len - start);
                        put(out, "\n", 1);
                }
        }
        if (r >= 0 && out->oom)
                r = -ENOMEM;
        if (r < 0) {
                /* A failed realloc leaves the data in place: the buffer is exactly as it was. */
                out->len = start;
                out->oom = false;
                if (out->data)
                        out->data[start] = '\0';
                if (r == -ENOMEM && error)
                        (void)orch_snprintf(error->message, sizeof error->message, "%s: out of memory",
                                            c.root);
                return r;
        }
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Decoding: a strict JSON parser (RFC 8259) over the message's copy of the frame. Keys are compared
 * without copying; string values of known fields are unescaped in place and NUL-terminated where
 * their closing quote was. Values of unknown fields are checked for syntax and skipped. */

/* Our messages nest four levels deep; unknown fields may nest a little deeper. The bound keeps the
 * recursion of skip_value() short whatever a peer sends. */
#define MAX_NESTING 64

static const char *describe_byte(const struct ctx *c, const char *p, char *buf, size_t size)
{
        unsigned char ch = (unsigned char)*p;

        if (p >= c->end)
                return "the end of the frame";
        if (ch == 0)
                return "a NUL byte";
        if (ch > 0x20 && ch < 0x7f)
                (void)orch_snprintf(buf, size, "'%c'", ch);
        else
                (void)orch_snprintf(buf, size, "byte 0x%02x", ch);
        return buf;
}

static int syntax_at(struct ctx *c, const char *p, const char *what)
{
        char b[16];

        return fail(c, "invalid JSON at byte %zu: %s, found %s", (size_t)(p - c->start), what,
                    describe_byte(c, p, b, sizeof b));
}

static int syntax_msg(struct ctx *c, const char *p, const char *what)
{
        return fail(c, "invalid JSON at byte %zu: %s", (size_t)(p - c->start), what);
}

static void skip_ws(struct ctx *c)
{
        while (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n')
                c->p++;
}

static int hex4(const char *p, uint32_t *ret)
{
        uint32_t v = 0;

        for (int i = 0; i < 4; i++) {
                char h = p[i];
                v <<= 4;
                if (h >= '0' && h <= '9')
                        v |= (uint32_t)(h - '0');
                else if (h >= 'a' && h <= 'f')
                        v |= (uint32_t)(h - 'a' + 10);
                else if (h >= 'A' && h <= 'F')
                        v |= (uint32_t)(h - 'A' + 10);
                else
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

/* Validates the string at c->p (its opening quote); *ret_end is its closing quote. */
static int scan_string(struct ctx *c, char **ret_end, bool *ret_escaped)
{
        unsigned char *p = (unsigned char *)c->p + 1, *end = (unsigned char *)c->end;
        bool escaped = false;

        for (;;) {
                while (!string_special[*p])
                        p++;
                if (*p == '"')
                        break;
                if (*p == '\\') {
                        uint32_t cp, lo;
                        escaped = true;
                        if (strchr("\"\\/bfnrt", p[1]) && p[1]) {
                                p += 2;
                                continue;
                        }
                        if (p[1] != 'u')
                                return syntax_at(c, (char *)p + 1, "invalid escape");
                        if (hex4((char *)p + 2, &cp) < 0)
                                return syntax_at(c, (char *)p, "invalid \\u escape");
                        if (cp == 0)
                                return syntax_msg(c, (char *)p, "\\u0000 is not allowed in a string");
                        if (cp >= 0xdc00 && cp <= 0xdfff)
                                return syntax_msg(c, (char *)p, "lone low surrogate");
                        if (cp >= 0xd800 && cp <= 0xdbff) {
                                if (p[6] != '\\' || p[7] != 'u' || hex4((char *)p + 8, &lo) < 0 ||
                                    lo < 0xdc00 || lo > 0xdfff)
                                        return syntax_msg(c, (char *)p, "high surrogate without a low one");
                                p += 12;
                        } else
                                p += 6;
                        continue;
                }
                if (*p >= 0x80) {
                        size_t k = utf8_sequence(p, (size_t)(end - p));
                        if (k == 0)
                                return syntax_msg(c, (char *)p, "invalid UTF-8");
                        p += k;
                        continue;
                }
                if (p >= end)
                        return syntax_msg(c, (char *)p, "unterminated string");
                if (*p == 0)
                        return syntax_msg(c, (char *)p, "NUL byte in a string");
                return syntax_at(c, (char *)p, "control character in a string");
        }
        *ret_end = (char *)p;
        *ret_escaped = escaped;
        return 0;
}

/* Unescapes a scanned string's content [s, e) into d (which may be s itself) and returns the length.
 * Writes at most `cap` bytes but counts them all. */
static size_t unescape(const char *s, const char *e, char *d, size_t cap)
{
        size_t n = 0;

        while (s < e) {
                char tmp[4];
                size_t k;
                if (*s != '\\') {
                        if (n < cap)
                                d[n] = *s;
                        n++;
                        s++;
                        continue;
                }
                switch (s[1]) {
                case 'b':
                        tmp[0] = '\b';
                        break;
                case 'f':
                        tmp[0] = '\f';
                        break;
                case 'n':
                        tmp[0] = '\n';
                        break;
                case 'r':
                        tmp[0] = '\r';
                        break;
                case 't':
                        tmp[0] = '\t';
                        break;
                case 'u':
                        break;
                default:
                        tmp[0] = s[1];
                }
                if (s[1] == 'u') {
                        uint32_t cp, lo;
                        (void)hex4(s + 2, &cp);
                        s += 6;
                        if (cp >= 0xd800 && cp <= 0xdbff) {
                                (void)hex4(s + 2, &lo);
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                s += 6;
                        }
                        k = utf8_put(tmp, cp);
                } else {
                        k = 1;
                        s += 2;
                }
                for (size_t i = 0; i < k; i++, n++)
                        if (n < cap)
                                d[n] = tmp[i];
        }
        return n;
}

/* Parses the string value at c->p in place: *ret points at its NUL-terminated content. */
static int parse_string(struct ctx *c, char **ret, size_t *ret_len)
{
        char *s = c->p + 1, *e;
        bool escaped;
        size_t n;
        int r;

        r = scan_string(c, &e, &escaped);
        if (r < 0)
                return r;
        n = escaped ? unescape(s, e, s, SIZE_MAX) : (size_t)(e - s);
        s[n] = '\0';
        c->p = e + 1;
        *ret = s;
        *ret_len = n;
        return 0;
}

/* Scans a number; *ret_integer when it has neither fraction nor exponent. Numbers of unknown fields
 * are only checked for syntax, not range. */
static int scan_number(struct ctx *c, char **ret_end, bool *ret_integer)
{
        char *p = c->p;
        bool integer = true;

        if (*p == '-')
                p++;
        if (*p == '0')
                p++;
        else if (*p >= '1' && *p <= '9')
                while (*p >= '0' && *p <= '9')
                        p++;
        else
                return syntax_at(c, p, "expected a digit");
        if (*p == '.') {
                integer = false;
                p++;
                if (!(*p >= '0' && *p <= '9'))
                        return syntax_at(c, p, "expected a digit after '.'");
                while (*p >= '0' && *p <= '9')
                        p++;
        }
        if (*p == 'e' || *p == 'E') {
                integer = false;
                p++;
                if (*p == '+' || *p == '-')
                        p++;
                if (!(*p >= '0' && *p <= '9'))
                        return syntax_at(c, p, "expected a digit in the exponent");
                while (*p >= '0' && *p <= '9')
                        p++;
        }
        *ret_end = p;
        *ret_integer = integer;
        return 0;
}

static int literal_length(const char *p)
{
        /* strncmp stops at the NUL after the frame: no read past it. */
        if (strncmp(p, "true", 4) == 0 || strncmp(p, "null", 4) == 0)
                return 4;
        if (strncmp(p, "false", 5) == 0)
                return 5;
        return 0;
}

static int enter(struct ctx *c)
{
        if (++c->nesting > MAX_NESTING)
                return syntax_msg(c, c->p, "nested deeper than 64 levels");
        c->p++;
        return 0;
}

/* Objects: call obj_open() at '{', then obj_key() until it returns 0 (the closing brace). */
static int obj_key(struct ctx *c, bool *first, char **ret_key, char **ret_key_end, bool *ret_escaped)
{
        int r;

        skip_ws(c);
        if (*c->p == '}') {
                c->p++;
                c->nesting--;
                return 0;
        }
        if (!*first) {
                if (*c->p != ',')
                        return syntax_at(c, c->p, "expected ',' or '}'");
                c->p++;
                skip_ws(c);
        }
        *first = false;
        if (*c->p != '"')
                return syntax_at(c, c->p, "expected a string key");
        r = scan_string(c, ret_key_end, ret_escaped);
        if (r < 0)
                return r;
        *ret_key = c->p + 1;
        c->p = *ret_key_end + 1;
        skip_ws(c);
        if (*c->p != ':')
                return syntax_at(c, c->p, "expected ':'");
        c->p++;
        skip_ws(c);
        return 1;
}

/* Arrays: enter() at '[', then arr_next() until it returns 0 (the closing bracket). */
static int arr_next(struct ctx *c, bool *first)
{
        skip_ws(c);
        if (*c->p == ']') {
                c->p++;
                c->nesting--;
                return 0;
        }
        if (!*first) {
                if (*c->p != ',')
                        return syntax_at(c, c->p, "expected ',' or ']'");
                c->p++;
                skip_ws(c);
        }
        *first = false;
        return 1;
}

static int skip_value(struct ctx *c)
{
        char *key, *key_end, *end;
        bool first = true, escaped, integer;
        int r, k;

        switch (*c->p) {
        case '"':
                r = scan_string(c, &end, &escaped);
                if (r < 0)
                        return r;
                c->p = end + 1;
                return 0;
        case '{':
                r = enter(c);
                while (r >= 0 && (r = obj_key(c, &first, &key, &key_end, &escaped)) > 0)
                        r = skip_value(c);
                return r;
        case '[':
                r = enter(c);
                while (r >= 0 && (r = arr_next(c, &first)) > 0)
                        r = skip_value(c);
                return r;
        case 't':
        case 'f':
        case 'n':
                k = literal_length(c->p);
                if (k == 0)
                        return syntax_at(c, c->p, "expected a value");
                c->p += k;
                return 0;
        default:
                if (*c->p != '-' && !(*c->p >= '0' && *c->p <= '9'))
                        return syntax_at(c, c->p, "expected a value");
                r = scan_number(c, &end, &integer);
                if (r < 0)
                        return r;
                c->p = end;
                return 0;
        }
}

/* What the value at c->p is, for "expected X, got Y". */
static const char *describe_value(struct ctx *c, char buf[static QUOTE_MAX])
{
        const char *p = c->p;
        char *end;
        bool integer;

        switch (*p) {
        case '{':
                return "an object";
        case '[':
                return "an array";
        case '"': {
                size_t n = 0;
                while (p + 1 + n < c->end && p[1 + n] != '"' && n < QUOTE_MAX)
                        n += p[1 + n] == '\\' && p + 2 + n < c->end ? 2 : 1;
                return quote(buf, p + 1, MIN(n, (size_t)(c->end - p - 1)));
        }
        case 't':
        case 'f':
        case 'n':
                if (literal_length(p) == 0)
                        break;
                return *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        default:
                if (scan_number(c, &end, &integer) < 0)
                        break;
                if (end - p > 40)
                        (void)orch_snprintf(buf, QUOTE_MAX, "%.40s...", p);
                else
                        (void)orch_snprintf(buf, QUOTE_MAX, "%.*s", (int)(end - p), p);
                return buf;
        }
        return "invalid JSON";
}

static int type_error(struct ctx *c, const struct field *f)
{
        char b[64], q[QUOTE_MAX];
        const char *expected = expected_text(f, b, sizeof b);

        return fail(c, "expected %s, got %s", expected, describe_value(c, q));
}

static int decode_uint(struct ctx *c, const struct field *f, uint64_t *ret)
{
        char *p = c->p, *end;
        bool integer;
        uint64_t v = 0;
        int r;

        if (!(*p >= '0' && *p <= '9') && *p != '-')
                return type_error(c, f);
        r = scan_number(c, &end, &integer);
        if (r < 0)
                return r;
        if (*p == '-' || !integer)
                return type_error(c, f);
        for (; p < end; p++) {
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return type_error(c, f);
                v = v * 10 + (uint64_t)(*p - '0');
        }
        r = check_uint(c, f, v);
        if (r < 0)
                return r;
        c->p = end;
        *ret = v;
        return 0;
}

static int decode_bool(struct ctx *c, const struct field *f, bool *ret)
{
        if (strncmp(c->p, "true", 4) == 0) {
                c->p += 4;
                *ret = true;
        } else if (strncmp(c->p, "false", 5) == 0) {
                c->p += 5;
                *ret = false;
        } else
                return type_error(c, f);
        return 0;
}

/* Makes room for element n of a growing array, zeroed, so that a partly decoded array can be
 * freed by the schema walk at any point. */
static int grow(void **array, size_t *cap, size_t n, size_t size)
{
        if (n >= *cap) {
                size_t ncap = *cap ? *cap * 2 : 8;
                void *p = reallocarray(*array, ncap, size);
                if (!p)
                        return -ENOMEM;
                memset((char *)p + *cap * size, 0, (ncap - *cap) * size);
                *array = p;
                *cap = ncap;
        }
        return 0;
}

static int decode_object(struct ctx *c, const struct schema *s, void *obj, bool top);

static int decode_array(struct ctx *c, const struct field *f, void *obj)
{
        void **items = AT(obj, f->offset, void *);
        size_t *n = AT(obj, f->aux, size_t), cap = 0;
        bool first = true;
        char q[QUOTE_MAX];
        int r;

        if (*c->p != '[')
                return type_error(c, f);
        r = enter(c);
        while (r >= 0 && (r = arr_next(c, &first)) > 0) {
                if (*n >= f->max)
                        return check_count(c, f, *n + 1);
                r = grow(items, &cap, *n, f->kind == FK_ARRAY ? f->sub->size : sizeof(char *));
                if (r < 0)
                        return r;
                path_index(c, (*n)++);
                if (f->kind == FK_ARRAY) {
                        if (*c->p != '{')
                                return fail(c, "expected an object, got %s", describe_value(c, q));
                        r = decode_object(c, f->sub, (char *)*items + (*n - 1) * f->sub->size, false);
                } else {
                        char *s;
                        size_t len;
                        if (*c->p != '"')
                                return fail(c, "expected a string, got %s", describe_value(c, q));
                        r = parse_string(c, &s, &len);
                        if (r >= 0)
                                r = check_string(c, f, s, len);
                        ((const char **)*items)[*n - 1] = s;
                }
                if (r >= 0)
                        path_pop(c);
        }
        if (r < 0)
                return r;
        return check_count(c, f, *n);
}

/* Labels and ports: JSON objects used as maps, into arrays of pairs (keys unescaped in place). */
static int decode_map(struct ctx *c, const struct field *f, void *obj)
{
        static const struct field port_field = {.kind = FK_U32, .min = 1, .max = 65535};
        void **items = AT(obj, f->offset, void *);
        size_t *n = AT(obj, f->aux, size_t), cap = 0;
        bool first = true, escaped;
        char *key, *key_end, q[QUOTE_MAX];
        int r;

        if (*c->p != '{')
                return type_error(c, f);
        r = enter(c);
        while (r >= 0 && (r = obj_key(c, &first, &key, &key_end, &escaped)) > 0) {
                size_t klen = escaped ? unescape(key, key_end, key, SIZE_MAX) : (size_t)(key_end - key);

                key[klen] = '\0';
                if (*n >= f->max)
                        return check_count(c, f, *n + 1);
                if (f->kind == FK_LABELS) {
                        struct orch_proto_label *l;
                        char *value;
                        size_t vlen;

                        r = grow(items, &cap, *n, sizeof *l);
                        if (r < 0)
                                return r;
                        l = (struct orch_proto_label *)*items + (*n)++;
                        l->key = key;
                        r = check_label_key(c, *items, *n - 1);
                        if (r < 0)
                                return r;
                        path_key(c, key);
                        if (*c->p != '"')
                                return fail(c, "expected a string, got %s", describe_value(c, q));
                        r = parse_string(c, &value, &vlen);
                        if (r < 0)
                                return r;
                        l->value = value;
                        r = check_label_value(c, value);
                } else {
                        struct orch_proto_port *p;
                        uint64_t v;

                        r = grow(items, &cap, *n, sizeof *p);
                        if (r < 0)
                                return r;
                        p = (struct orch_proto_port *)*items + (*n)++;
                        p->name = key;
                        r = check_port_name(c, *items, *n - 1);
                        if (r < 0)
                                return r;
                        path_key(c, key);
                        r = decode_uint(c, &port_field, &v);
                        p->port = (uint16_t)v;
                }
                if (r < 0)
                        return r;
                path_pop(c);
        }
        return r;
}

static int decode_spec(struct ctx *c, const struct field *f, void *obj)
{
        _cleanup_(orch_diags_release) struct orch_diags diags = {.max = 1};
        json_t **spec = AT(obj, f->offset, json_t *);
        struct orch_service **parsed = AT(obj, f->aux, struct orch_service *);
        char *start = c->p;
        json_error_t jerr;
        int r;

        if (*c->p != '{')
                return type_error(c, f);
        r = skip_value(c);
        if (r < 0)
                return r;
        /* skip_value() wrote nothing: the span is the peer's text as it came. */
        *spec = json_loadb(start, (size_t)(c->p - start), JSON_REJECT_DUPLICATES, &jerr);
        if (!*spec)
                return fail(c, "invalid JSON: %s", jerr.text);
        r = orch_service_from_json(*spec, "spec", parsed, &diags);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(c, "%s", diags.n > 0 ? diags.items[0].message : "invalid service");
        return 0;
}

static int decode_field(struct ctx *c, const struct field *f, void *obj)
{
        void *v = (char *)obj + f->offset;
        char *s;
        size_t len;
        uint64_t x;
        int r;

        switch (f->kind) {
        case FK_STRING:
        case FK_TEXT:
        case FK_DATA:
        case FK_STATE:
        case FK_HEALTH:
                if (*c->p != '"')
                        return type_error(c, f);
                r = parse_string(c, &s, &len);
                if (r < 0)
                        return r;
                if (f->kind == FK_STRING)
                        r = check_string(c, f, s, len);
                else if (f->kind == FK_TEXT)
                        r = check_text(c, f, len);
                else if (f->kind == FK_DATA)
                        *AT(obj, f->aux, size_t) = len;
                else {
                        char q[QUOTE_MAX];
                        int e = f->kind == FK_STATE ? (int)orch_instance_state_from_string(s)
                                                    : (int)orch_health_state_from_string(s);
                        if (e < 0)
                                return fail(c, "expected one of %s, got %s",
                                            f->kind == FK_STATE ? STATE_CHOICES : HEALTH_CHOICES,
                                            quote(q, s, len));
                        r = f->kind == FK_STATE ? check_state(c, e) : 0;
                        if (r < 0)
                                return r;
                        *(int *)v = e;
                        return 0;
                }
                if (r < 0)
                        return r;
                *(const char **)v = s;
                return 0;
        case FK_U32:
        case FK_U64:
                r = decode_uint(c, f, &x);
                if (r < 0)
                        return r;
                if (f->kind == FK_U32)
                        *(uint32_t *)v = (uint32_t)x;
                else
                        *(uint64_t *)v = x;
                return 0;
        case FK_BOOL:
                return decode_bool(c, f, v);
        case FK_OBJECT:
                if (*c->p != '{')
                        return type_error(c, f);
                r = decode_object(c, f->sub, v, false);
                if (r >= 0 && !(f->flags & REQUIRED))
                        *AT(obj, f->aux, bool) = true;
                return r;
        case FK_ARRAY:
        case FK_STRINGS:
                return decode_array(c, f, obj);
        case FK_LABELS:
        case FK_PORTS:
                return decode_map(c, f, obj);
        case FK_SPEC:
                return decode_spec(c, f, obj);
        }
        return -EINVAL;
}

/* Keys are compared as they are in the frame; one with escapes is unescaped into a small buffer
 * first (longer than any of our keys: it is not one of them). */
static int find_field(const struct schema *s, const char *key, const char *key_end, bool escaped)
{
        char tmp[32];
        size_t len = (size_t)(key_end - key);

        if (escaped) {
                len = unescape(key, key_end, tmp, sizeof tmp);
                if (len > sizeof tmp)
                        return -1;
                key = tmp;
        }
        for (size_t i = 0; i < s->n_fields; i++)
                if (s->fields[i].key_len == len && memcmp(s->fields[i].key, key, len) == 0)
                        return (int)i;
        return len == 4 && memcmp(key, "type", 4) == 0 ? -2 : -1;
}

static int decode_object(struct ctx *c, const struct schema *s, void *obj, bool top)
{
        uint32_t seen = 0, present = 0;
        bool first = true, escaped, type_seen = false;
        char *key, *key_end;
        int r;

        r = enter(c);
        while (r >= 0 && (r = obj_key(c, &first, &key, &key_end, &escaped)) > 0) {
                int i = find_field(s, key, key_end, escaped);
                const struct field *f;

                if (i == -2 && top) {
                        /* Read (and checked) before: only a second one is news. */
                        if (type_seen)
                                return fail_at(c, "type", "duplicate field");
                        type_seen = true;
                        r = skip_value(c);
                        continue;
                }
                if (i < 0) {
                        r = skip_value(c);
                        continue;
                }
                f = &s->fields[i];
                if (seen & (1u << i))
                        return fail_at(c, f->key, "duplicate field");
                seen |= 1u << i;
                if (*c->p == 'n' && literal_length(c->p) == 4) {
                        /* null is absent, as with lib/json.h's getters */
                        c->p += 4;
                        continue;
                }
                present |= 1u << i;
                path_key(c, f->key);
                r = decode_field(c, f, obj);
                if (r < 0)
                        return r;
                path_pop(c);
        }
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_fields; i++) {
                const struct field *f = &s->fields[i];
                if (present & (1u << i))
                        continue;
                if (f->flags & REQUIRED)
                        return fail_at(c, f->key, "required field missing");
                if (f->kind == FK_U64 && f->def)
                        *AT(obj, f->offset, uint64_t) = f->def;
        }
        return s->check ? s->check(c, obj) : 0;
}

/* The type comes first in what we send; a peer may put it anywhere, so look for it without
 * touching the frame, and decode the object once the schema is known. */
static int find_type(struct ctx *c, enum orch_proto_type *ret)
{
        char q[QUOTE_MAX], tmp[32];
        bool first = true, escaped;
        char *key, *key_end;
        int r;

        skip_ws(c);
        if (c->p == c->end)
                return fail(c, "empty frame");
        if (*c->p != '{') {
                const char *what = describe_value(c, q);
                if (streq(what, "invalid JSON"))
                        return syntax_at(c, c->p, "expected a JSON object");
                return fail(c, "expected a JSON object, got %s", what);
        }
        r = enter(c);
        while (r >= 0 && (r = obj_key(c, &first, &key, &key_end, &escaped)) > 0) {
                char *s, *e;
                size_t len;
                enum orch_proto_type t;

                len = escaped ? unescape(key, key_end, tmp, sizeof tmp) : (size_t)(key_end - key);
                if (len != 4 || memcmp(escaped ? tmp : key, "type", 4) != 0) {
                        r = skip_value(c);
                        continue;
                }
                if (*c->p != '"')
                        return fail_at(c, "type", "expected a string, got %s", describe_value(c, q));
                s = c->p + 1;
                r = scan_string(c, &e, &escaped);
                if (r < 0)
                        return r;
                len = escaped ? unescape(s, e, tmp, sizeof tmp) : (size_t)(e - s);
                t = len <= sizeof tmp ? type_lookup(escaped ? tmp : s, len) : _ORCH_PROTO_TYPE_INVALID;
                if (t < 0)
                        return fail_at(c, "type", "unknown message type %s",
                                       quote(q, escaped ? tmp : s, MIN(len, sizeof tmp)));
                *ret = t;
                return 0;
        }
        if (r < 0)
                return r;
        return fail(c, "missing \"type\"");
}

static void free_object(const struct schema *s, void *obj)
{
        for (size_t i = 0; i < s->n_fields; i++) {
                const struct field *f = &s->fields[i];
                void *v = (char *)obj + f->offset;

                switch (f->kind) {
                case FK_OBJECT:
                        free_object(f->sub, v);
                        break;
                case FK_ARRAY: {
                        char *items = *(char **)v;
                        size_t n = *AT(obj, f->aux, size_t);
                        for (size_t k = 0; items && k < n; k++)
                                free_object(f->sub, items + k * f->sub->size);
                        free(items);
                        break;
                }
                case FK_STRINGS:
                case FK_LABELS:
                case FK_PORTS:
                        free(*(void **)v);
                        break;
                case FK_SPEC:
                        json_decref(*(json_t **)v);
                        orch_service_free(*AT(obj, f->aux, struct orch_service *));
                        break;
                default:
                        break;
                }
        }
}

struct orch_proto_msg *orch_proto_msg_free(struct orch_proto_msg *m)
{
        if (!m)
                return NULL;
        if ((unsigned)m->type < _ORCH_PROTO_TYPE_MAX)
                free_object(message_schemas[m->type], msg_body(m));
        free(m);
        return NULL;
}

int orch_proto_decode(const char *frame, size_t len, struct orch_proto_msg **ret,
                      struct orch_proto_error *error)
{
        _cleanup_(orch_proto_msg_freep) struct orch_proto_msg *m = NULL;
        struct ctx c = {.error = error, .root = "frame"};
        enum orch_proto_type type = _ORCH_PROTO_TYPE_INVALID;
        int r;

        if (len > ORCH_PROTO_MAX_FRAME) {
                fail(&c, "%zu bytes, the limit is %u", len, ORCH_PROTO_MAX_FRAME);
                return -EMSGSIZE;
        }
        /* One allocation for the message and its copy of the frame, whose strings it points at. */
        m = malloc(sizeof *m + len + 1);
        if (!m)
                return -ENOMEM;
        *m = (struct orch_proto_msg){.type = _ORCH_PROTO_TYPE_INVALID, .storage = (char *)(m + 1)};
        memcpy(m->storage, frame, len);
        m->storage[len] = '\0';
        c.start = c.p = m->storage;
        c.end = m->storage + len;

        r = find_type(&c, &type);
        if (r < 0)
                return r;
        m->type = type;
        c.root = type_names[type];
        c.p = c.start;
        c.nesting = 0;
        skip_ws(&c);
        r = decode_object(&c, message_schemas[type], msg_body(m), true);
        if (r < 0)
                return r;
        skip_ws(&c);
        if (c.p != c.end)
                return syntax_at(&c, c.p, "expected the end of the frame");
        *ret = TAKE_PTR(m);
        return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Framing */

/* A reader that once held a huge frame gives the memory back when it is empty, so that a burst
 * does not pin 16 MiB per connection for good. */
#define READER_RETAIN (256u * 1024)
#define READER_CHUNK  (64u * 1024)

void orch_proto_reader_init(struct orch_proto_reader *r, size_t max_frame)
{
        *r = (struct orch_proto_reader){.max = max_frame ? max_frame : ORCH_PROTO_MAX_FRAME};
}

void orch_proto_reader_release(struct orch_proto_reader *r)
{
        orch_buf_release(&r->buf);
        r->head = r->tail = 0;
}

static void reader_compact(struct orch_proto_reader *r)
{
        if (r->head == 0)
                return;
        if (r->head == r->buf.len && r->buf.cap > READER_RETAIN) {
                orch_buf_release(&r->buf);
                r->head = r->tail = 0;
                return;
        }
        memmove(r->buf.data, r->buf.data + r->head, r->buf.len - r->head);
        r->buf.len -= r->head;
        r->tail -= r->head;
        r->head = 0;
        r->buf.data[r->buf.len] = '\0';
}

int orch_proto_reader_space(struct orch_proto_reader *r, size_t want, char **ret, size_t *ret_size)
{
        if (r->overflow)
                return -EMSGSIZE;
        reader_compact(r);
        if (orch_buf_reserve(&r->buf, MAX(want, (size_t)1)) < 0) {
                r->buf.oom = false;
                return -ENOMEM;
        }
        *ret = r->buf.data + r->buf.len;
        *ret_size = r->buf.cap - r->buf.len - 1;
        return 0;
}

/* Finds the frames that the bytes from `from` on complete. At the first frame past the limit it
 * drops that frame's bytes and everything after, keeping the complete frames before it. */
static int reader_scan(struct orch_proto_reader *r, size_t from)
{
        char *d = r->buf.data;
        size_t pos = from;

        for (;;) {
                char *nl = pos < r->buf.len ? memchr(d + pos, '\n', r->buf.len - pos) : NULL;
                size_t end = nl ? (size_t)(nl - d) : r->buf.len;

                if (end - r->tail > r->max) {
                        r->buf.len = r->tail;
                        d[r->buf.len] = '\0';
                        r->overflow = true;
                        return -EMSGSIZE;
                }
                if (!nl)
                        break;
                r->tail = pos = end + 1;
        }
        d[r->buf.len] = '\0';
        return 0;
}

int orch_proto_reader_commit(struct orch_proto_reader *r, size_t n)
{
        size_t from = r->buf.len;

        if (r->overflow)
                return -EMSGSIZE;
        if (n == 0)
                return 0;
        if (!r->buf.data || n > r->buf.cap - r->buf.len - 1)
                return -EINVAL;
        r->buf.len += n;
        return reader_scan(r, from);
}

int orch_proto_reader_feed(struct orch_proto_reader *r, const void *data, size_t len)
{
        const char *p = data;

        /* In chunks, so that a huge write without a newline is refused after at most one chunk past
         * the limit instead of being copied whole first. */
        while (len > 0) {
                size_t n = MIN(len, (size_t)READER_CHUNK), room;
                char *dst;
                int k = orch_proto_reader_space(r, n, &dst, &room);
                if (k < 0)
                        return k;
                memcpy(dst, p, n);
                k = orch_proto_reader_commit(r, n);
                if (k < 0)
                        return k;
                p += n;
                len -= n;
        }
        return r->overflow ? -EMSGSIZE : 0;
}

int orch_proto_reader_next(struct orch_proto_reader *r, char **ret_frame, size_t *ret_len)
{
        char *d, *nl;

        if (r->head >= r->tail)
                return r->overflow ? -EMSGSIZE : 0;
        d = r->buf.data + r->head;
        nl = memchr(d, '\n', r->tail - r->head);
        *nl = '\0';
        r->head = (size_t)(nl - r->buf.data) + 1;
        *ret_frame = d;
        *ret_len = (size_t)(nl - d);
        return 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* Fencing */

static const char *const start_verdicts[_ORCH_PROTO_START_VERDICT_MAX] = {
        [ORCH_PROTO_START_NEW] = "new",
        [ORCH_PROTO_START_SAME] = "same",
        [ORCH_PROTO_START_SUPERSEDE] = "supersede",
        [ORCH_PROTO_START_STALE] = "stale",
};

static const char *const stop_verdicts[_ORCH_PROTO_STOP_VERDICT_MAX] = {
        [ORCH_PROTO_STOP_UNKNOWN] = "unknown",
        [ORCH_PROTO_STOP_STALE] = "stale",
        [ORCH_PROTO_STOP_STOP] = "stop",
};

static const char *const fence_actions[_ORCH_PROTO_FENCE_ACTION_MAX] = {
        [ORCH_PROTO_FENCE_NONE] = "none",   [ORCH_PROTO_FENCE_ADOPT] = "adopt",
        [ORCH_PROTO_FENCE_STOP] = "stop",   [ORCH_PROTO_FENCE_RESTART] = "restart",
        [ORCH_PROTO_FENCE_START] = "start",
};

/* A lower generation is an older placement: orchd has since placed the id again, so obeying the
 * command would resurrect a copy that another node (or a later start here) replaced. */
enum orch_proto_start_verdict orch_proto_fence_start(uint64_t held, uint64_t generation)
{
        if (held == 0)
                return ORCH_PROTO_START_NEW;
        if (generation == held)
                return ORCH_PROTO_START_SAME;
        return generation > held ? ORCH_PROTO_START_SUPERSEDE : ORCH_PROTO_START_STALE;
}

/* A stop at a higher generation than held is obeyed: orchd placed the id again and then gave it
 * up before that start arrived; the copy held is older still. */
enum orch_proto_stop_verdict orch_proto_fence_stop(uint64_t held, uint64_t generation)
{
        if (held == 0)
                return ORCH_PROTO_STOP_UNKNOWN;
        return generation < held ? ORCH_PROTO_STOP_STALE : ORCH_PROTO_STOP_STOP;
}

/* Only an exact (id, generation) match is adopted: any other copy may run next to the one that
 * replaced it, so it is stopped before the node gets work again. */
enum orch_proto_fence_action orch_proto_fence_hello(enum orch_proto_record record,
                                                    uint64_t record_generation, uint64_t reported)
{
        bool wanted = record == ORCH_PROTO_RECORD_WANTED;

        if (reported == 0)
                return wanted ? ORCH_PROTO_FENCE_START : ORCH_PROTO_FENCE_NONE;
        if (!wanted)
                return ORCH_PROTO_FENCE_STOP;
        return reported == record_generation ? ORCH_PROTO_FENCE_ADOPT : ORCH_PROTO_FENCE_RESTART;
}

bool orch_proto_fence_current(enum orch_proto_record record, uint64_t record_generation, uint64_t reported)
{
        return record == ORCH_PROTO_RECORD_WANTED && reported != 0 && reported == record_generation;
}

const char *orch_proto_start_verdict_to_string(enum orch_proto_start_verdict v)
{
        return (unsigned)v < _ORCH_PROTO_START_VERDICT_MAX ? start_verdicts[v] : NULL;
}

const char *orch_proto_stop_verdict_to_string(enum orch_proto_stop_verdict v)
{
        return (unsigned)v < _ORCH_PROTO_STOP_VERDICT_MAX ? stop_verdicts[v] : NULL;
}

const char *orch_proto_fence_action_to_string(enum orch_proto_fence_action a)
{
        return (unsigned)a < _ORCH_PROTO_FENCE_ACTION_MAX ? fence_actions[a] : NULL;
}
