/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The agent protocol (docs/protocol.md), shared by orch-agent and orchd: the
 * message structs, the codec, the line framing and the fencing rules.
 *
 * Ownership. Strings in a message are borrowed. In a decoded message they
 * point into the message's own copy of the frame and live until
 * orch_proto_msg_free(), which also frees the arrays the decoder allocated.
 * In a message built for encoding, strings and arrays belong to the caller
 * (build it on the stack; never pass it to orch_proto_msg_free()).
 *
 * Validation. Both directions apply the same rules, from one table per
 * message: the decoder is the gate for what a peer sends, and the encoder
 * refuses to put on the wire what the peer would reject, so a bug shows up
 * at the sender with the field named instead of as a dropped connection.
 * Errors name the field by its path, e.g.
 *   start.instances[3].generation: expected a positive integer, got 0
 * Unknown fields are ignored (forward compatibility); unknown types are errors.
 *
 * Speed. A start batch and its ack are on the scheduler's hot path, so the
 * codec does not build jansson trees: the encoder writes JSON straight into
 * an orch_buf, and the decoder parses the frame in place (one allocation for
 * the message and its copy of the frame, one per array). Only the `spec`
 * payload goes through jansson, because orch_service_from_json() takes a
 * json_t.
 */

#include <stdint.h>

#include <jansson.h>

#include "macro.h"
#include "manifest.h"
#include "types.h"
#include "util.h"

#define ORCH_PROTO_VERSION 1

/* Bytes of one frame, its newline excluded. A bound on what one peer can make us buffer. */
#define ORCH_PROTO_MAX_FRAME (16u * 1024 * 1024)
/* Entries of one instances[] or results[] array: 100,000 instances on one node is far above what
 * a node runs, and keeps a decoded frame's arrays bounded. */
#define ORCH_PROTO_MAX_INSTANCES 100000u
#define ORCH_PROTO_MAX_LABELS    64u
#define ORCH_PROTO_MAX_PORTS     64u
#define ORCH_PROTO_MAX_DRIVERS   16u
/* Free text (error, reason): longer texts are cut at a character boundary by the encoder and
 * rejected by the decoder. An error message is for a human; 4 KiB is plenty. */
#define ORCH_PROTO_TEXT_MAX        4096u

#define ORCH_PROTO_NODE_NAME_MAX   253u /* an FQDN; each dot-separated label at most 63 */
#define ORCH_PROTO_LABEL_KEY_MAX   63u
#define ORCH_PROTO_LABEL_VALUE_MAX 63u
#define ORCH_PROTO_TOKEN_MAX       1024u
#define ORCH_PROTO_SOFTWARE_MAX    64u   /* hello.version */
#define ORCH_PROTO_CGROUP_MAX      4096u /* PATH_MAX */
/* Instance ids are <service>-<suffix>: 8 hex digits from orchd, the index for standalone agents. */
#define ORCH_PROTO_INSTANCE_SUFFIX_MAX 16u
#define ORCH_PROTO_INSTANCE_ID_MAX     (ORCH_NAME_MAX + 1 + ORCH_PROTO_INSTANCE_SUFFIX_MAX)
#define ORCH_PROTO_PID_MAX             4194304u /* the kernel's PID_MAX_LIMIT */
/* heartbeat_ms and ttl_ms: at most a day, so that a typo cannot make a node immortal. */
#define ORCH_PROTO_INTERVAL_MAX_MS (24ull * 3600 * 1000)
/* logs.tail when absent: the whole retained log. */
#define ORCH_PROTO_TAIL_ALL UINT64_MAX

enum orch_proto_type {
        ORCH_PROTO_HELLO,
        ORCH_PROTO_WELCOME,
        ORCH_PROTO_ERROR,
        ORCH_PROTO_HEARTBEAT,
        ORCH_PROTO_SPEC,
        ORCH_PROTO_START,
        ORCH_PROTO_STOP,
        ORCH_PROTO_LOGS,
        ORCH_PROTO_LOGS_CANCEL,
        ORCH_PROTO_LOG,
        ORCH_PROTO_ACK,
        ORCH_PROTO_EVENT,
        ORCH_PROTO_USAGE,
        _ORCH_PROTO_TYPE_MAX,
        _ORCH_PROTO_TYPE_INVALID = -1,
};

struct orch_proto_label {
        const char *key;   /* 1-63 of [A-Za-z0-9._/-], starting with a letter or digit */
        const char *value; /* 0-63 of [A-Za-z0-9._-] */
};

struct orch_proto_port {
        const char *name; /* a port name of the service (orch_port_name_valid) */
        uint16_t port;    /* 1-65535 */
};

struct orch_proto_exit {
        uint32_t code;   /* 0-255 */
        uint32_t signal; /* 0 (none) - 64 */
        bool oom;        /* the kernel's OOM killer ended it */
};

/* An instance report: the agent's view of one instance (hello, event). */
struct orch_proto_report {
        const char *instance; /* belongs to `service`: "<service>-<suffix>" */
        const char *service;
        const char *revision;
        uint64_t generation;            /* >= 1 */
        enum orch_instance_state state; /* never LOST: only orchd decides that */
        enum orch_health_state health;
        uint32_t pid; /* 0: none (not written) */
        struct orch_proto_port *ports;
        size_t n_ports;
        uint32_t restarts;
        uint64_t started_at; /* ms since the epoch; 0: never started */
        bool has_exit;       /* the last exit, if there was one */
        struct orch_proto_exit exit;
        const char *reason; /* optional free text: why it is in this state */
        const char *cgroup; /* optional absolute path */
};

struct orch_proto_capacity {
        uint32_t cpu_millis; /* >= 1 */
        uint64_t memory;     /* bytes, >= 1 */
};

struct orch_proto_hello {
        uint32_t proto; /* ORCH_PROTO_VERSION of the agent; orchd decides what it accepts */
        const char *node;
        const char *token; /* never echoed in error messages */
        const char *address;
        const char *version; /* the agent's software version */
        struct orch_proto_label *labels;
        size_t n_labels;
        struct orch_proto_capacity capacity;
        const char **drivers; /* 1-16 driver names */
        size_t n_drivers;
        struct orch_proto_report *instances;
        size_t n_instances;
        /* More hello frames with the rest of the instance list follow (docs/protocol.md, "A node
         * with many instances"). Set by the encoder, which splits a hello that does not fit one
         * frame; ignored in a message passed to orch_proto_encode(). */
        bool more;
};

struct orch_proto_welcome {
        const char *node;
        uint64_t heartbeat_ms; /* 1 - ORCH_PROTO_INTERVAL_MAX_MS */
        uint64_t ttl_ms;       /* greater than heartbeat_ms */
        uint64_t server_time;  /* ms since the epoch */
};

struct orch_proto_error_msg {
        const char *error; /* non-empty free text */
};

struct orch_proto_heartbeat {
        uint64_t seq;
        /* orchd -> agent only, both or neither: 0 means absent. */
        uint64_t heartbeat_ms;
        uint64_t ttl_ms;
};

struct orch_proto_spec {
        uint64_t id; /* command ids are >= 1 */
        const char *service;
        const char *revision;
        /* The canonical JSON of the service (orch_service_to_json); its "name" must be `service`.
         * Encoding writes it with sorted keys; a decoded message owns it. */
        json_t *spec;
        /* Decoded messages only: the spec validated by orch_service_from_json(), owned. */
        struct orch_service *parsed;
        /* Encoding only, optional: `spec` already dumped canonically (orch_json_dumps_canonical),
         * written as is. A sender that sends one revision to thousands of nodes keeps it. */
        const char *spec_text;
};

struct orch_proto_start_item {
        const char *instance;
        const char *service;
        const char *revision;
        uint64_t generation;
};

struct orch_proto_start {
        uint64_t id;
        struct orch_proto_start_item *instances; /* 1 - ORCH_PROTO_MAX_INSTANCES */
        size_t n_instances;
};

struct orch_proto_stop_item {
        const char *instance;
        uint64_t generation;
};

struct orch_proto_stop {
        uint64_t id;
        struct orch_proto_stop_item *instances; /* 1 - ORCH_PROTO_MAX_INSTANCES */
        size_t n_instances;
        const char *reason; /* optional free text */
};

struct orch_proto_logs {
        uint64_t id;
        const char *instance;
        uint64_t tail; /* lines; ORCH_PROTO_TAIL_ALL (not written) for the whole retained log */
        bool follow;
};

struct orch_proto_logs_cancel {
        uint64_t id; /* of the logs request */
};

struct orch_proto_log {
        uint64_t id;
        /* Log text, not NUL-terminated for encoding (data_len counts). Process output is arbitrary
         * bytes: the encoder replaces invalid UTF-8 and NUL bytes with U+FFFD so that the frame
         * stays valid JSON. Decoded data is NUL-terminated as well. */
        const char *data;
        size_t data_len;
        bool eof;
};

struct orch_proto_ack_result {
        const char *instance;
        bool ok;
        const char *error; /* required when !ok */
};

struct orch_proto_ack {
        uint64_t id;
        bool ok; /* the command succeeded for every instance; when false, error says why */
        const char *error;
        struct orch_proto_ack_result *results; /* optional: per-instance outcomes */
        size_t n_results;
};

struct orch_proto_event {
        uint64_t seq;
        struct orch_proto_report report; /* written flat, next to seq */
};

struct orch_proto_usage_item {
        const char *instance;
        uint64_t cpu_usec;
        uint64_t memory; /* bytes */
        uint32_t pids;
};

struct orch_proto_usage {
        struct orch_proto_usage_item *instances; /* 0 - ORCH_PROTO_MAX_INSTANCES */
        size_t n_instances;
};

struct orch_proto_msg {
        enum orch_proto_type type;
        union {
                struct orch_proto_hello hello;
                struct orch_proto_welcome welcome;
                struct orch_proto_error_msg error;
                struct orch_proto_heartbeat heartbeat;
                struct orch_proto_spec spec;
                struct orch_proto_start start;
                struct orch_proto_stop stop;
                struct orch_proto_logs logs;
                struct orch_proto_logs_cancel logs_cancel;
                struct orch_proto_log log;
                struct orch_proto_ack ack;
                struct orch_proto_event event;
                struct orch_proto_usage usage;
        };
        char *storage; /* decoded messages: the unescaped copy of the frame */
};

/* What went wrong, for the error frame and the log: "<path>: <problem>". */
#define ORCH_PROTO_ERROR_MAX 512
struct orch_proto_error {
        char message[ORCH_PROTO_ERROR_MAX];
};

const char *orch_proto_type_to_string(enum orch_proto_type t);
enum orch_proto_type orch_proto_type_from_string(const char *s);
/* Which end may send a type: each end rejects frames the other may not send. */
bool orch_proto_type_sent_by_agent(enum orch_proto_type t);
bool orch_proto_type_sent_by_server(enum orch_proto_type t);
/* spec, start, stop and logs carry an id and are answered by exactly one ack. */
bool orch_proto_type_is_command(enum orch_proto_type t);

/*
 * Appends m as one JSON line ("\n"-terminated, compact, "type" first). A hello whose instances
 * do not fit one frame becomes several hello lines, all but the last with "more": true.
 * Returns 0, or -EINVAL (invalid message), -EMSGSIZE (a frame would exceed ORCH_PROTO_MAX_FRAME),
 * -ENOMEM; on error `out` is as it was and `error` (optional) says why.
 */
int orch_proto_encode(struct orch_buf *out, const struct orch_proto_msg *m, struct orch_proto_error *error);

/*
 * Decodes and validates one frame (without its newline; a trailing newline is tolerated as
 * whitespace). The frame is copied; *ret is independent of it. Returns 0, or -EINVAL
 * (invalid frame), -EMSGSIZE (longer than ORCH_PROTO_MAX_FRAME), -ENOMEM, with `error`
 * (optional) naming the problem.
 */
int orch_proto_decode(const char *frame, size_t len, struct orch_proto_msg **ret,
                      struct orch_proto_error *error);

/* Frees a decoded message. */
struct orch_proto_msg *orch_proto_msg_free(struct orch_proto_msg *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_proto_msg *, orch_proto_msg_free)

/* The value checks of the codec, for flags and configuration that end up in frames. */
bool orch_proto_node_name_valid(const char *name);
bool orch_proto_instance_id_valid(const char *id);
/* True when id is "<service>-<suffix>" for this service. */
bool orch_proto_instance_of(const char *id, const char *service);
bool orch_proto_revision_valid(const char *revision);
bool orch_proto_label_key_valid(const char *key);
bool orch_proto_label_value_valid(const char *value);

/*
 * Framing: an incremental line reader. Feed bytes as they arrive, then pull complete frames
 * until none is left. It never holds more than the complete frames of the last feed plus one
 * partial frame of at most max_frame bytes: as soon as a frame passes the limit the reader
 * stops storing, returns the frames before it, then -EMSGSIZE for good.
 *
 * With libuv, read straight into it: alloc_cb takes orch_proto_reader_space(), read_cb calls
 * orch_proto_reader_commit() with nread.
 */
struct orch_proto_reader {
        struct orch_buf buf;
        size_t head;   /* the next frame to return starts here */
        size_t tail;   /* start of the incomplete frame: [head, tail) holds complete frames */
        size_t max;    /* bytes of one frame, newline excluded */
        bool overflow; /* a frame passed the limit: nothing after it is stored */
};

/* max_frame 0 means ORCH_PROTO_MAX_FRAME. */
void orch_proto_reader_init(struct orch_proto_reader *r, size_t max_frame);
void orch_proto_reader_release(struct orch_proto_reader *r);
/* Copies len bytes in. 0, -EMSGSIZE once the limit was passed (the data is dropped), -ENOMEM. */
int orch_proto_reader_feed(struct orch_proto_reader *r, const void *data, size_t len);
/* Room for up to `want` bytes at the end of the buffer (want >= 1). */
int orch_proto_reader_space(struct orch_proto_reader *r, size_t want, char **ret, size_t *ret_size);
/* Takes n bytes written into the space. 0 or -EMSGSIZE, as orch_proto_reader_feed(). */
int orch_proto_reader_commit(struct orch_proto_reader *r, size_t n);
/*
 * The next complete frame, without its newline and NUL-terminated in place (it may contain
 * other NUL bytes: use the length). Valid until the next feed, space or release. Returns 1 with
 * a frame, 0 when more bytes are needed, -EMSGSIZE when the next frame is too long.
 */
int orch_proto_reader_next(struct orch_proto_reader *r, char **ret_frame, size_t *ret_len);

/*
 * Fencing (docs/protocol.md, "Generations and fencing"). Pure functions of generations, so that
 * the agent, orchd's reconciler and the tests apply the same rules. A generation of 0 means
 * "none held" or "not reported".
 */

/* The agent, on a start for an instance id it holds at `held`. */
enum orch_proto_start_verdict {
        ORCH_PROTO_START_NEW,       /* not held: start it */
        ORCH_PROTO_START_SAME,      /* held at this generation: already done, ack ok */
        ORCH_PROTO_START_SUPERSEDE, /* held at a lower one: that copy is replaced, run this one */
        ORCH_PROTO_START_STALE,     /* held at a higher one: refuse (ack an error) */
        _ORCH_PROTO_START_VERDICT_MAX,
};
enum orch_proto_start_verdict orch_proto_fence_start(uint64_t held, uint64_t generation);
const char *orch_proto_start_verdict_to_string(enum orch_proto_start_verdict v);

/* The agent, on a stop for an instance id it holds at `held`. Every verdict acks ok. */
enum orch_proto_stop_verdict {
        ORCH_PROTO_STOP_UNKNOWN, /* not held: nothing to do */
        ORCH_PROTO_STOP_STALE,   /* held at a higher generation: a newer placement, ignore */
        ORCH_PROTO_STOP_STOP,    /* stop it and forget it */
        _ORCH_PROTO_STOP_VERDICT_MAX,
};
enum orch_proto_stop_verdict orch_proto_fence_stop(uint64_t held, uint64_t generation);
const char *orch_proto_stop_verdict_to_string(enum orch_proto_stop_verdict v);

/* orchd's record of an instance id, as far as one node is concerned. */
enum orch_proto_record {
        ORCH_PROTO_RECORD_NONE,     /* no record: never placed, or long forgotten */
        ORCH_PROTO_RECORD_WANTED,   /* placed on this node and still desired */
        ORCH_PROTO_RECORD_REPLACED, /* lost, reassigned to another node, or deleted */
        _ORCH_PROTO_RECORD_MAX,
};

/* What orchd does, on a hello, with one instance id of the node. */
enum orch_proto_fence_action {
        ORCH_PROTO_FENCE_NONE,    /* not reported and not wanted here */
        ORCH_PROTO_FENCE_ADOPT,   /* reported as placed: keep it, no restart */
        ORCH_PROTO_FENCE_STOP,    /* stop the reported copy (stop at the reported generation) */
        ORCH_PROTO_FENCE_RESTART, /* stop the reported copy, then start with a new generation */
        ORCH_PROTO_FENCE_START,   /* wanted but not reported: start with a new generation */
        _ORCH_PROTO_FENCE_ACTION_MAX,
};
/* `reported` is the generation in the hello (0: the hello lacks the id), `record_generation`
 * the one orchd placed it with. */
enum orch_proto_fence_action orch_proto_fence_hello(enum orch_proto_record record,
                                                    uint64_t record_generation, uint64_t reported);
const char *orch_proto_fence_action_to_string(enum orch_proto_fence_action a);

/* orchd, on an event or ack result: does it describe the placement orchd holds (same generation),
 * or a copy that was already replaced (to be ignored)? */
bool orch_proto_fence_current(enum orch_proto_record record, uint64_t record_generation, uint64_t reported);
