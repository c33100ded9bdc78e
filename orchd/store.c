/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>

#include "json.h"
#include "store.h"
#include "util.h"
#include "banned.h"

struct orch_store_tx {
        struct orch_store *store;
        bool open;
};

struct orch_store {
        const struct orch_store_ops *ops;
        void *backend;
        /* One transaction at a time: the handle lives here, so begin allocates nothing. */
        struct orch_store_tx tx;
        /* Set while a load callback runs: the backend's cursor must not be reset under it. */
        bool iterating;
};

static const char *const collection_names[_ORCH_STORE_COLLECTION_MAX] = {
        [ORCH_STORE_SERVICES] = "services",   [ORCH_STORE_REVISIONS] = "revisions",
        [ORCH_STORE_INSTANCES] = "instances", [ORCH_STORE_NODES] = "nodes",
        [ORCH_STORE_META] = "meta",
};

const char *orch_store_collection_to_string(enum orch_store_collection c)
{
        return (unsigned)c < _ORCH_STORE_COLLECTION_MAX ? collection_names[c] : NULL;
}

/* "sqlite:" followed by the rest selects a backend; a bare path is SQLite. A string that starts with
 * something shaped like a URL scheme is another backend, which this build does not have. */
static bool has_url_scheme(const char *s)
{
        const char *p = s;

        if (!isalpha((unsigned char)*p))
                return false;
        while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
                p++;
        return *p == ':';
}

int orch_store_open(const char *location, const struct orch_store_options *opts, struct orch_store **ret,
                    char **ret_error)
{
        static const struct orch_store_options defaults = {.durability = ORCH_STORE_DURABLE_POWER_LOSS};
        _cleanup_(freep) char *error = NULL;
        _cleanup_(freep) struct orch_store *s = NULL;
        const char *path;
        int r;

        if (!opts)
                opts = &defaults;
        if ((unsigned)opts->durability >= _ORCH_STORE_DURABILITY_MAX)
                return -EINVAL;

        path = startswith(location, "sqlite:");
        if (!path) {
                if (has_url_scheme(location)) {
                        error = orch_strdup_printf("unsupported store '%s': this orchd stores its state "
                                                   "in SQLite only (a directory path or sqlite:DIR)",
                                                   location);
                        r = -EPROTONOSUPPORT;
                        goto fail;
                }
                path = location;
        }
        if (!*path) {
                error = orch_strdup_printf("store location '%s' names no directory", location);
                r = -EINVAL;
                goto fail;
        }

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->ops = &orch_store_sqlite_ops;
        r = s->ops->open(path, opts, &s->backend, &error);
        if (r < 0)
                goto fail;
        s->tx.store = s;
        *ret = TAKE_PTR(s);
        return 0;

fail:
        if (ret_error)
                *ret_error = TAKE_PTR(error);
        return r;
}

struct orch_store *orch_store_close(struct orch_store *s)
{
        if (!s)
                return NULL;
        orch_store_rollback(&s->tx);
        s->ops->close(s->backend);
        free(s);
        return NULL;
}

const char *orch_store_last_error(struct orch_store *s)
{
        return s->ops->last_error(s->backend);
}

int orch_store_begin(struct orch_store *s, struct orch_store_tx **ret)
{
        int r;

        if (s->tx.open || s->iterating)
                return -EBUSY;
        r = s->ops->begin(s->backend);
        if (r < 0)
                return r;
        s->tx.open = true;
        *ret = &s->tx;
        return 0;
}

int orch_store_commit(struct orch_store_tx *tx)
{
        struct orch_store *s;

        if (!tx || !tx->open)
                return -EINVAL;
        s = tx->store;
        if (s->iterating)
                return -EBUSY;
        tx->open = false;
        /* The backend rolls back itself when its commit fails, so "not 0" always means "none of it". */
        return s->ops->commit(s->backend);
}

void orch_store_rollback(struct orch_store_tx *tx)
{
        if (!tx || !tx->open)
                return;
        tx->open = false;
        tx->store->ops->rollback(tx->store->backend);
}

static int check_key(const char *key)
{
        size_t len;

        if (!key)
                return -EINVAL;
        len = strlen(key);
        if (len == 0 || len > ORCH_STORE_KEY_MAX || orch_utf8_invalid_offset(key, len) >= 0)
                return -EINVAL;
        return 0;
}

static int check_value(const char *value, size_t len)
{
        if (!value)
                return -EINVAL;
        if (len > ORCH_STORE_VALUE_MAX)
                return -E2BIG;
        /* Text only: a NUL or broken UTF-8 here is a bug upstream, and SQLite text and etcd JSON
         * consumers would both mangle it later. */
        if (len == 0 || orch_utf8_invalid_offset(value, len) >= 0)
                return -EINVAL;
        return 0;
}

static int check_write(struct orch_store_tx *tx, enum orch_store_collection c, const char *key)
{
        if (!tx || !tx->open)
                return -EINVAL;
        if (tx->store->iterating)
                return -EBUSY;
        if ((unsigned)c >= _ORCH_STORE_COLLECTION_MAX)
                return -EINVAL;
        return check_key(key);
}

int orch_store_put(struct orch_store_tx *tx, enum orch_store_collection c, const char *key,
                   const char *value, size_t len)
{
        int r;

        r = check_write(tx, c, key);
        if (r < 0)
                return r;
        r = check_value(value, len);
        if (r < 0)
                return r;
        return tx->store->ops->put(tx->store->backend, c, key, value, len);
}

int orch_store_put_json(struct orch_store_tx *tx, enum orch_store_collection c, const char *key,
                        const json_t *value)
{
        _cleanup_(freep) char *text = NULL;

        if (!value)
                return -EINVAL;
        text = orch_json_dumps_compact(value);
        if (!text)
                return -ENOMEM;
        return orch_store_put(tx, c, key, text, strlen(text));
}

int orch_store_delete(struct orch_store_tx *tx, enum orch_store_collection c, const char *key)
{
        int r;

        r = check_write(tx, c, key);
        if (r < 0)
                return r;
        return tx->store->ops->del(tx->store->backend, c, key);
}

int orch_store_append_event(struct orch_store_tx *tx, uint64_t index, const char *value, size_t len)
{
        int r;

        if (!tx || !tx->open)
                return -EINVAL;
        if (tx->store->iterating)
                return -EBUSY;
        /* Index 0 means "from the start" to readers (since=0); SQLite keys are signed 64-bit. */
        if (index == 0 || index > INT64_MAX)
                return -ERANGE;
        r = check_value(value, len);
        if (r < 0)
                return r;
        return tx->store->ops->append_event(tx->store->backend, index, value, len);
}

int orch_store_trim_events(struct orch_store_tx *tx, uint64_t keep, uint64_t *ret_deleted)
{
        uint64_t deleted = 0;
        int r;

        if (!tx || !tx->open)
                return -EINVAL;
        if (tx->store->iterating)
                return -EBUSY;
        r = tx->store->ops->trim_events(tx->store->backend, keep, &deleted);
        if (r < 0)
                return r;
        if (ret_deleted)
                *ret_deleted = deleted;
        return 0;
}

int orch_store_put_one(struct orch_store *s, enum orch_store_collection c, const char *key,
                       const char *value, size_t len)
{
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        int r;

        r = orch_store_begin(s, &tx);
        if (r < 0)
                return r;
        r = orch_store_put(tx, c, key, value, len);
        if (r < 0)
                return r;
        return orch_store_commit(tx);
}

int orch_store_get(struct orch_store *s, enum orch_store_collection c, const char *key, char **ret_value,
                   size_t *ret_len)
{
        int r;

        if ((unsigned)c >= _ORCH_STORE_COLLECTION_MAX)
                return -EINVAL;
        if (s->iterating)
                return -EBUSY;
        r = check_key(key);
        if (r < 0)
                return r;
        return s->ops->get(s->backend, c, key, ret_value, ret_len);
}

int orch_store_load(struct orch_store *s, enum orch_store_collection c, const char *prefix,
                    orch_store_load_fn fn, void *userdata)
{
        int r;

        if ((unsigned)c >= _ORCH_STORE_COLLECTION_MAX || !fn)
                return -EINVAL;
        if (prefix &&
            (strlen(prefix) > ORCH_STORE_KEY_MAX || orch_utf8_invalid_offset(prefix, strlen(prefix)) >= 0))
                return -EINVAL;
        if (s->iterating)
                return -EBUSY;
        s->iterating = true;
        r = s->ops->load(s->backend, c, prefix && *prefix ? prefix : NULL, fn, userdata);
        s->iterating = false;
        return r;
}

int orch_store_events_since(struct orch_store *s, uint64_t since, uint64_t limit, orch_store_event_fn fn,
                            void *userdata)
{
        int r;

        if (!fn)
                return -EINVAL;
        if (s->iterating)
                return -EBUSY;
        s->iterating = true;
        r = s->ops->events_since(s->backend, since, limit, fn, userdata);
        s->iterating = false;
        return r;
}
