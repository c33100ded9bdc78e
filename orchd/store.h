/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * orchd's state store: JSON documents by key in a few collections, changed
 * only in atomic, durable transactions. orchd keeps the whole cluster in
 * memory and writes every change through here before acting on it; the store
 * keeps no copy of what it stores, and it knows nothing of orchd's structs, so
 * a key-value store such as etcd can replace SQLite behind `struct
 * orch_store_ops` without touching the scheduler.
 *
 *   services   key: service name            value: the service record
 *   revisions  key: "<service>/<revision>"  value: canonical spec + created time
 *   instances  key: instance id              value: the instance record
 *   nodes      key: node name                value: the node record
 *   meta       key: counter name             value: e.g. the generation (never secrets)
 *   events     key: a rising uint64 index    value: the event
 *
 * Keys are non-empty UTF-8 without NUL, at most ORCH_STORE_KEY_MAX bytes;
 * values are UTF-8 JSON text of at most ORCH_STORE_VALUE_MAX bytes.
 *
 * Typical use:
 *
 *   _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
 *   r = orch_store_begin(store, &tx);
 *   ... r = orch_store_put(tx, ORCH_STORE_INSTANCES, id, json, len); if (r < 0) return r; ...
 *   r = orch_store_commit(tx);    // durable when it returns 0
 *
 * Leaving the scope without a commit rolls back, so an error path cannot half
 * apply anything. The store is single-threaded: one transaction at a time.
 */

#include <stdint.h>

#include <jansson.h>

#include "macro.h"

#define ORCH_STORE_KEY_MAX   1024
#define ORCH_STORE_VALUE_MAX (16U * 1024 * 1024)

enum orch_store_collection {
        ORCH_STORE_SERVICES,
        ORCH_STORE_REVISIONS,
        ORCH_STORE_INSTANCES,
        ORCH_STORE_NODES,
        ORCH_STORE_META,
        _ORCH_STORE_COLLECTION_MAX,
};

const char *orch_store_collection_to_string(enum orch_store_collection c);

/* What a returned commit survives. Both survive kill -9 of orchd at any moment (see docs/operations.md). */
enum orch_store_durability {
        /* fsync at every commit: also survives an OS crash or a power loss. The default. */
        ORCH_STORE_DURABLE_POWER_LOSS,
        /* No fsync at commit (the data is in the kernel's page cache when commit returns): survives
         * the process being killed, may lose the newest commits on an OS crash or a power loss. */
        ORCH_STORE_DURABLE_PROCESS_CRASH,
        _ORCH_STORE_DURABILITY_MAX,
};

struct orch_store_options {
        enum orch_store_durability durability;
        /* Upper bound of the backend's page cache in KiB; 0 picks the default (16 MiB). */
        uint32_t cache_kib;
};

struct orch_store;
struct orch_store_tx;

/* The interface of a backend. `b` is the backend's own state, made by open. The generic layer
 * (store.c) validates every argument and the transaction state before it calls in, so backends
 * only store. Loads hand out borrowed pointers valid during the callback only. */
typedef int (*orch_store_load_fn)(const char *key, const char *value, size_t len, void *userdata);
typedef int (*orch_store_event_fn)(uint64_t index, const char *value, size_t len, void *userdata);

struct orch_store_ops {
        const char *name;
        int (*open)(const char *location, const struct orch_store_options *opts, void **ret_b,
                    char **ret_error);
        void (*close)(void *b);
        int (*begin)(void *b);
        int (*commit)(void *b);
        void (*rollback)(void *b);
        int (*put)(void *b, enum orch_store_collection c, const char *key, const char *value, size_t len);
        /* -ENOENT when the key does not exist. */
        int (*del)(void *b, enum orch_store_collection c, const char *key);
        /* -EEXIST when the index is taken. */
        int (*append_event)(void *b, uint64_t index, const char *value, size_t len);
        int (*trim_events)(void *b, uint64_t keep, uint64_t *ret_deleted);
        int (*get)(void *b, enum orch_store_collection c, const char *key, char **ret_value,
                   size_t *ret_len);
        /* In key order (bytewise); prefix NULL means every key. */
        int (*load)(void *b, enum orch_store_collection c, const char *prefix, orch_store_load_fn fn,
                    void *userdata);
        /* limit 0 means no limit. */
        int (*events_since)(void *b, uint64_t since, uint64_t limit, orch_store_event_fn fn, void *userdata);
        /* The backend's message about its last failure ("database or disk is full"), for logs. */
        const char *(*last_error)(void *b);
};

extern const struct orch_store_ops orch_store_sqlite_ops;

/*
 * Opens the store at `location`: "sqlite:DIR" or a plain path DIR (orchd's data dir). The
 * directory is created (0700) when missing and locked for this process; the database is
 * DIR/state.db (0600). opts may be NULL for the defaults. On failure *ret_error (when
 * given) receives a one-line reason for the operator, e.g.
 *   data dir /var/lib/orch is in use by another orchd (pid 4242)                  -EBUSY
 *   unsupported store 'etcd://10.0.0.1:2379': this orchd stores its state ...     -EPROTONOSUPPORT
 *   /var/lib/orch/state.db has schema version 7, newer than this orchd ...        -ENOTSUP
 *   /var/lib/orch/state.db is an SQLite database but not an orch state database  -EUCLEAN
 */
int orch_store_open(const char *location, const struct orch_store_options *opts, struct orch_store **ret,
                    char **ret_error);
/* Rolls back an open transaction, closes and releases the lock. Accepts NULL; returns NULL. */
struct orch_store *orch_store_close(struct orch_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct orch_store *, orch_store_close)

/* The backend's message about the last failure, for logging next to the error code. */
const char *orch_store_last_error(struct orch_store *s);

/* Starts the transaction; -EBUSY when one is already open. */
int orch_store_begin(struct orch_store *s, struct orch_store_tx **ret);
/* Commits: on 0 the whole transaction is durable (see enum orch_store_durability); on failure
 * nothing of it is applied. Either way the transaction is over. */
int orch_store_commit(struct orch_store_tx *tx);
/* Discards everything the transaction did; a no-op on a finished transaction or NULL. */
void orch_store_rollback(struct orch_store_tx *tx);
static inline void orch_store_tx_rollbackp(struct orch_store_tx **tx)
{
        orch_store_rollback(*tx);
}

/* Inserts or replaces. */
int orch_store_put(struct orch_store_tx *tx, enum orch_store_collection c, const char *key,
                   const char *value, size_t len);
/* The same with a JSON value, serialized compactly. */
int orch_store_put_json(struct orch_store_tx *tx, enum orch_store_collection c, const char *key,
                        const json_t *value);
/* -ENOENT when the key does not exist (the transaction stays usable). */
int orch_store_delete(struct orch_store_tx *tx, enum orch_store_collection c, const char *key);
/* Appends an event under `index` (1 .. INT64_MAX); -EEXIST when that index is already stored. */
int orch_store_append_event(struct orch_store_tx *tx, uint64_t index, const char *value, size_t len);
/* Deletes all but the newest `keep` events; ret_deleted (optional) receives how many went. */
int orch_store_trim_events(struct orch_store_tx *tx, uint64_t keep, uint64_t *ret_deleted);

/* A single put in its own transaction, durable when it returns 0. */
int orch_store_put_one(struct orch_store *s, enum orch_store_collection c, const char *key,
                       const char *value, size_t len);

/* Reads one value (the caller frees it); -ENOENT when missing. Sees the open transaction's writes. */
int orch_store_get(struct orch_store *s, enum orch_store_collection c, const char *key, char **ret_value,
                   size_t *ret_len);
/* Calls fn for every (key, value) of the collection whose key starts with prefix (NULL: all), in
 * bytewise key order. A negative return from fn stops the load and is returned. fn must not call
 * the store (-EBUSY). Returns the number of records visited. */
int orch_store_load(struct orch_store *s, enum orch_store_collection c, const char *prefix,
                    orch_store_load_fn fn, void *userdata);
/* Calls fn for the events with an index above `since`, oldest first, at most `limit` of them
 * (0: all). Same callback rules as orch_store_load; returns the number visited. */
int orch_store_events_since(struct orch_store *s, uint64_t since, uint64_t limit, orch_store_event_fn fn,
                            void *userdata);
