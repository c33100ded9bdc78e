/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * orchd's cluster model: services, instances and nodes in memory, indexed by
 * name, linked to each other, and written through the store. It is the one
 * place that changes them, so the invariants live here:
 *   - an instance is on its service's list, and on its node's list when placed;
 *   - a node's `allocated` is the sum of the requests of its instances that
 *     hold resources (placed, desired run or not yet confirmed stopped, not lost);
 *   - every change is queued for the store and flushed in one transaction
 *     before any command that depends on it is sent (orch_state_flush).
 * See docs/control-plane.md.
 */

#include <stdint.h>

#include <jansson.h>

#include "hashmap.h"
#include "list.h"
#include "manifest.h"
#include "types.h"

struct orch_store;
struct orch_sched;
struct orch_agent_conn;

#define ORCH_INSTANCE_ID_MAX  (ORCH_NAME_MAX + 1 + 16)
#define ORCH_REVISIONS_KEPT   10

struct orch_label {
        char *key;
        char *value;
};

/* One revision of a service, kept for rollbacks and for agents that still run it. */
struct orch_svc_rev {
        char revision[ORCH_REVISION_LEN + 1];
        struct orch_service *spec;
        char *spec_json; /* canonical, as sent to agents and stored */
        uint64_t created_at;
};

enum orch_rollout_state {
        ORCH_ROLLOUT_NONE,
        ORCH_ROLLOUT_PROGRESSING,
        ORCH_ROLLOUT_COMPLETE,
        ORCH_ROLLOUT_FAILED,
        _ORCH_ROLLOUT_STATE_MAX,
};

struct orch_rollout {
        enum orch_rollout_state state;
        char from_revision[ORCH_REVISION_LEN + 1];
        char to_revision[ORCH_REVISION_LEN + 1];
        uint64_t started_at;     /* realtime ms */
        uint64_t last_progress;  /* realtime ms: the deadline counts from here */
        bool reverting;          /* this rollout is an automatic rollback */
        char *message;           /* why it failed, or what it waits for */
        /* The last failed rollout, kept across the rollback it caused. */
        char failed_revision[ORCH_REVISION_LEN + 1];
        char *failed_reason;
};

struct orch_svc {
        struct orch_hmap_node hnode;
        char *name;
        struct orch_service *spec; /* desired; owned by the current entry of revs */
        char revision[ORCH_REVISION_LEN + 1];
        char spec_hash[65];
        uint64_t created_at, updated_at;
        bool deleting;
        struct orch_svc_rev revs[ORCH_REVISIONS_KEPT + 1]; /* newest first; revs[0] is current */
        size_t n_revs;
        struct orch_rollout rollout;
        struct orch_list instances;
        struct orch_list dirty_link; /* on state->dirty_services */
        struct orch_list store_link; /* on state->store_services */
        struct orch_list unplaced;   /* instances without a node, oldest first */
        size_t n_pending;            /* how many are on `unplaced` */
};

struct orch_inst_port {
        char *name;
        uint16_t port;
};

struct orch_inst {
        struct orch_hmap_node hnode;
        char id[ORCH_INSTANCE_ID_MAX + 1];
        struct orch_svc *svc;
        char revision[ORCH_REVISION_LEN + 1];
        struct orch_node *node; /* NULL: pending placement */
        uint64_t generation;
        bool desired_run;       /* false: orchd wants it stopped */
        bool holds_resources;   /* accounted in node->allocated */
        bool confirmed;         /* the agent acknowledged or reported it */
        enum orch_instance_state state;
        enum orch_health_state health;
        int pid;
        struct orch_inst_port *ports;
        size_t n_ports;
        uint32_t restarts;
        uint32_t cpu_millis; /* the request accounted on the node */
        uint64_t memory;
        uint64_t created_at;    /* realtime ms of the placement */
        uint64_t started_at;    /* realtime ms, 0 when never started */
        uint64_t healthy_since; /* realtime ms, 0 when not available */
        int exit_code;          /* -1 when not exited */
        int exit_signal;
        bool oom;
        char *reason;
        char *cgroup;
        struct orch_list svc_link;
        struct orch_list node_link;
        struct orch_list unplaced_link; /* on svc->unplaced while it has no node */
        struct orch_list store_link; /* on state->store_instances when it must be written */
        struct orch_list report_link; /* on state->store_reports: only its reported state changed */
        bool store_delete;           /* the write is a delete */
};

struct orch_node {
        struct orch_hmap_node hnode;
        char *name;
        char *address;
        struct orch_label *labels;
        size_t n_labels;
        char **drivers;
        char *version;
        uint32_t cpu_millis; /* capacity */
        uint64_t memory;
        uint32_t alloc_cpu_millis;
        uint64_t alloc_memory;
        enum orch_node_state state;
        bool cordoned;              /* drain: unschedulable */
        bool instances_lost;        /* down, and its instances were declared lost */
        uint64_t last_seen;         /* realtime ms */
        uint64_t last_heard_usec;   /* monotonic, for the TTL */
        struct orch_agent_conn *conn;
        struct orch_list instances;
        struct orch_list store_link;
        size_t n_instances;
        int sched_slot;
};

enum orch_event_type {
        ORCH_EVENT_SERVICE_APPLIED,
        ORCH_EVENT_SERVICE_DELETED,
        ORCH_EVENT_SERVICE_SCALED,
        ORCH_EVENT_INSTANCE_PLACED,
        ORCH_EVENT_INSTANCE_PENDING,
        ORCH_EVENT_INSTANCE_STARTED,
        ORCH_EVENT_INSTANCE_EXITED,
        ORCH_EVENT_INSTANCE_RESTARTED,
        ORCH_EVENT_INSTANCE_HEALTH,
        ORCH_EVENT_INSTANCE_STOPPING,
        ORCH_EVENT_INSTANCE_STOPPED,
        ORCH_EVENT_INSTANCE_LOST,
        ORCH_EVENT_INSTANCE_REPLACED,
        ORCH_EVENT_INSTANCE_FAILED,
        ORCH_EVENT_NODE_JOINED,
        ORCH_EVENT_NODE_DOWN,
        ORCH_EVENT_NODE_DRAINING,
        ORCH_EVENT_NODE_READY,
        ORCH_EVENT_ROLLOUT,
        _ORCH_EVENT_TYPE_MAX,
};

const char *orch_event_type_to_string(enum orch_event_type t);
const char *orch_rollout_state_to_string(enum orch_rollout_state s);

typedef void (*orch_state_event_fn)(void *userdata, uint64_t index, json_t *event);

struct orch_state {
        struct orch_store *store;
        struct orch_sched *sched;
        struct orch_hmap services;
        struct orch_hmap instances;
        struct orch_hmap nodes;
        size_t n_services, n_instances, n_nodes;
        uint64_t generation;  /* the last generation handed out */
        uint64_t event_index; /* the last event index */
        struct orch_list dirty_services;
        struct orch_list store_services;
        struct orch_list store_instances;
        /* Instances whose only change is what their agent reported. Nobody was promised these
         * writes and the agent's next hello reports the truth again, so they are coalesced and
         * written at most once per ORCH_STATE_REPORT_FLUSH_MS. */
        struct orch_list store_reports;
        uint64_t reports_flushed_usec;
        struct orch_list store_nodes;
        json_t *store_events; /* events not yet written: array of [index, json] */
        /* Events leave through this callback once written (followers, the registry). */
        orch_state_event_fn on_event;
        void *on_event_userdata;
        json_t *pending_events; /* published after the flush that persisted them */
        bool loading;           /* orch_state_load: restore without queueing writes or events */
};

int orch_state_new(struct orch_store *store, struct orch_state **ret);
struct orch_state *orch_state_free(struct orch_state *st);
/* Reads services, revisions, instances, nodes and counters from the store. */
int orch_state_load(struct orch_state *st);
/* Writes every queued change in one store transaction, then publishes the queued events. */
int orch_state_flush(struct orch_state *st);

/* Lookups. */
struct orch_svc *orch_state_service(struct orch_state *st, const char *name);
struct orch_inst *orch_state_instance(struct orch_state *st, const char *id);
struct orch_node *orch_state_node(struct orch_state *st, const char *name);

/* Services. `spec` is taken over on success. ret_change: "created", "updated" or "unchanged". */
int orch_state_apply_service(struct orch_state *st, struct orch_service *spec, const char **ret_change);
int orch_state_scale_service(struct orch_state *st, struct orch_svc *svc, uint32_t replicas);
int orch_state_delete_service(struct orch_state *st, struct orch_svc *svc);
/* Drops a deleted service whose instances are all gone. */
void orch_state_remove_service(struct orch_state *st, struct orch_svc *svc);
const struct orch_svc_rev *orch_state_service_revision(const struct orch_svc *svc, const char *revision);
void orch_state_mark_dirty(struct orch_state *st, struct orch_svc *svc);
/* Queues the service record for the next flush (rollout state, ...). */
void orch_state_service_changed(struct orch_state *st, struct orch_svc *svc);

/* Instances. */
int orch_state_new_instance(struct orch_state *st, struct orch_svc *svc, struct orch_inst **ret);
/* The same at a given revision of the service (NULL: the current one); -ENOENT when it is not kept. */
int orch_state_new_instance_at(struct orch_state *st, struct orch_svc *svc, const char *revision,
                               struct orch_inst **ret);
void orch_state_place_instance(struct orch_state *st, struct orch_inst *inst, struct orch_node *node);
void orch_state_unplace_instance(struct orch_state *st, struct orch_inst *inst, const char *reason);
/* A new placement of the instance on the node it is on: a new generation, unconfirmed, pending.
 * Unlike orch_state_place_instance() it does not move the instance on its node's list, so callers
 * may use it while walking that list. */
void orch_state_replace_instance(struct orch_state *st, struct orch_inst *inst);
void orch_state_set_reason(struct orch_state *st, struct orch_inst *inst, const char *reason);
void orch_state_remove_instance(struct orch_state *st, struct orch_inst *inst);
void orch_state_instance_changed(struct orch_state *st, struct orch_inst *inst);
/* The instance's reported state changed (state, health, pid, ports...): written lazily. */
void orch_state_instance_reported(struct orch_state *st, struct orch_inst *inst);
#define ORCH_STATE_REPORT_FLUSH_MS 1000
/* Releases the instance's resources on its node (stopped, lost). */
void orch_state_release_resources(struct orch_state *st, struct orch_inst *inst);
/* Live: desired to run and neither terminal nor lost. */
bool orch_inst_is_live(const struct orch_inst *inst);
/* Available: running, and health passing (or no health check). */
bool orch_inst_is_available(const struct orch_inst *inst);

/* Nodes. */
int orch_state_upsert_node(struct orch_state *st, const char *name, struct orch_node **ret);
void orch_state_node_changed(struct orch_state *st, struct orch_node *node);
void orch_state_set_node_state(struct orch_state *st, struct orch_node *node, enum orch_node_state s);

/* Events: `fields` is taken over; type, index and time are added. */
uint64_t orch_state_event(struct orch_state *st, enum orch_event_type type, json_t *fields, const char *fmt, ...)
        _printf_(4, 5);

/* JSON views for the API (SPEC §3 keys). */
json_t *orch_inst_to_json(const struct orch_inst *inst);
json_t *orch_svc_to_json(const struct orch_svc *svc, bool with_spec);
json_t *orch_node_to_json(const struct orch_node *node);
size_t orch_svc_ready_count(const struct orch_svc *svc);
