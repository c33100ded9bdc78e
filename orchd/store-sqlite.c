/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "store.h"
#include "util.h"
#include "banned.h"

/*
 * The SQLite backend: one table per collection (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID,
 * so a record is one B-tree entry in key order, and an `events` table keyed by its index.
 *
 * Durability. The journal is a write-ahead log. A commit appends the transaction's pages and a
 * commit frame, checksummed, to state.db-wal; recovery at the next open replays the log up to the
 * last valid commit frame and ignores everything after it, so a transaction is all or nothing
 * whenever the process dies. With synchronous=FULL the log is fsynced before COMMIT returns, so
 * a returned commit also survives an OS crash or power loss. With synchronous=NORMAL commit
 * returns once write(2) has put the frames into the kernel's page cache: that memory belongs to
 * the file, not to the process, so kill -9 cannot lose it, only an OS crash or power loss can
 * (the log is fsynced at each checkpoint). FULL is the default; docs/operations.md has the
 * figures behind the choice.
 *
 * Exclusion. SQLite's own locking lets readers in (which `sqlite3 .backup` needs), so a second
 * orchd is kept out by flock(2) on DIR/orchd.lock, held for as long as the store is open. The
 * kernel drops the lock when the process dies, so there are no stale locks to break.
 */

#define SCHEMA_VERSION 1
/* "orch" in ASCII: marks the file as ours, so a foreign SQLite database is refused, not altered. */
#define APPLICATION_ID 0x6f726368
#define DB_NAME        "state.db"
#define LOCK_NAME      "orchd.lock"
/* Long enough to ride out an operator's sqlite3 shell holding the write lock briefly. */
#define BUSY_TIMEOUT_MS   5000
#define DEFAULT_CACHE_KIB (16U * 1024)
/* Truncate the log back to this size after a checkpoint, so one large transaction does not
 * leave a large file behind. */
#define JOURNAL_SIZE_LIMIT (64LL * 1024 * 1024)

enum coll_stmt {
        COLL_PUT,
        COLL_DEL,
        COLL_GET,
        COLL_LOAD_ALL,
        COLL_LOAD_RANGE,
        _COLL_STMT_MAX,
};

enum stmt {
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_ROLLBACK,
        STMT_EVENT_PUT,
        STMT_EVENTS_SINCE,
        STMT_EVENTS_TRIM,
        _STMT_MAX,
};

struct sqlite_store {
        sqlite3 *db;
        char *db_path;
        int lock_fd;
        sqlite3_stmt *coll[_ORCH_STORE_COLLECTION_MAX][_COLL_STMT_MAX];
        sqlite3_stmt *stmt[_STMT_MAX];
        char last_error[256];
};

static const char *const stmt_sql[_STMT_MAX] = {
        /* IMMEDIATE takes the write lock at once, so a transaction never fails half-way for a lock. */
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
        [STMT_EVENT_PUT] = "INSERT INTO events (idx, value) VALUES (?1, ?2)",
        [STMT_EVENTS_SINCE] = "SELECT idx, value FROM events WHERE idx > ?1 ORDER BY idx LIMIT ?2",
        /* The (keep+1)-th newest and everything older; no row when fewer are stored. */
        [STMT_EVENTS_TRIM] = "DELETE FROM events WHERE idx <= "
                             "(SELECT idx FROM events ORDER BY idx DESC LIMIT 1 OFFSET ?1)",
};

static const char schema_v1[] =
        "CREATE TABLE services (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE revisions (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE instances (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE nodes (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID;"
        "CREATE TABLE events (idx INTEGER PRIMARY KEY, value TEXT NOT NULL);";

static void sqlite_store_free(struct sqlite_store *st)
{
        if (!st)
                return;
        for (size_t c = 0; c < _ORCH_STORE_COLLECTION_MAX; c++)
                for (size_t i = 0; i < _COLL_STMT_MAX; i++)
                        sqlite3_finalize(st->coll[c][i]);
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(st->stmt[i]);
        /* Every statement is finalized, so close cannot fail with SQLITE_BUSY; as the last
         * connection it checkpoints and removes the log. */
        sqlite3_close(st->db);
        free(st->db_path);
        /* Closing the descriptor releases the flock; the file stays, so no one races on its name. */
        closep(&st->lock_fd);
        free(st);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct sqlite_store *, sqlite_store_free)

/* Maps an SQLite result code to -errno and remembers SQLite's message for orch_store_last_error(). */
static int map_error(struct sqlite_store *st, int rc)
{
        int sys = st->db ? sqlite3_system_errno(st->db) : 0;

        if (st->db && sys > 0 && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN))
                orch_snprintf(st->last_error, sizeof st->last_error, "%s (%s)", sqlite3_errmsg(st->db),
                              strerror(sys));
        else
                orch_strlcpy(st->last_error, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc),
                             sizeof st->last_error);

        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CANTOPEN:
                return sys > 0 ? -sys : -EIO;
        default:
                return -EIO;
        }
}

/* Runs a statement that returns no rows and leaves it ready for the next use. */
static int step_done(struct sqlite_store *st, sqlite3_stmt *stmt)
{
        int rc = sqlite3_step(stmt);
        int r = rc == SQLITE_DONE ? 0 : map_error(st, rc);

        sqlite3_reset(stmt);
        return r;
}

/* After some errors (a full disk, say) SQLite rolls the whole transaction back by itself. The
 * next write would then run in autocommit mode and be committed alone, breaking atomicity, so
 * every write first checks that the transaction it belongs to still exists. */
static int check_in_tx(struct sqlite_store *st)
{
        if (!sqlite3_get_autocommit(st->db))
                return 0;
        orch_strlcpy(st->last_error, "the transaction was aborted by an earlier error",
                     sizeof st->last_error);
        return -ECANCELED;
}

static int sqlite_begin(void *b)
{
        struct sqlite_store *st = b;

        return step_done(st, st->stmt[STMT_BEGIN]);
}

static void sqlite_rollback(void *b)
{
        struct sqlite_store *st = b;

        /* Nothing to undo when SQLite already rolled back after an error. */
        if (!sqlite3_get_autocommit(st->db))
                (void)step_done(st, st->stmt[STMT_ROLLBACK]);
}

static int sqlite_commit(void *b)
{
        struct sqlite_store *st = b;
        int r;

        r = check_in_tx(st);
        if (r < 0)
                return r;
        r = step_done(st, st->stmt[STMT_COMMIT]);
        if (r < 0) {
                /* A failed COMMIT may leave the transaction open: end it, so that the caller's
                 * "failed" means "none of it", and the next begin starts clean. */
                char saved[sizeof st->last_error];
                orch_strlcpy(saved, st->last_error, sizeof saved);
                sqlite_rollback(st);
                orch_strlcpy(st->last_error, saved, sizeof st->last_error);
        }
        return r;
}

static int sqlite_put(void *b, enum orch_store_collection c, const char *key, const char *value, size_t len)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->coll[c][COLL_PUT];
        int r;

        r = check_in_tx(st);
        if (r < 0)
                return r;
        /* SQLITE_STATIC: the caller's buffers outlive the step, so SQLite need not copy them. */
        if (sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(s, 2, value, (int)len, SQLITE_STATIC) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        return step_done(st, s);
}

static int sqlite_del(void *b, enum orch_store_collection c, const char *key)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->coll[c][COLL_DEL];
        int r;

        r = check_in_tx(st);
        if (r < 0)
                return r;
        if (sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        r = step_done(st, s);
        if (r < 0)
                return r;
        return sqlite3_changes(st->db) > 0 ? 0 : -ENOENT;
}

static int sqlite_append_event(void *b, uint64_t index, const char *value, size_t len)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->stmt[STMT_EVENT_PUT];
        int r;

        r = check_in_tx(st);
        if (r < 0)
                return r;
        if (sqlite3_bind_int64(s, 1, (sqlite3_int64)index) != SQLITE_OK ||
            sqlite3_bind_text(s, 2, value, (int)len, SQLITE_STATIC) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        return step_done(st, s);
}

static int sqlite_trim_events(void *b, uint64_t keep, uint64_t *ret_deleted)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->stmt[STMT_EVENTS_TRIM];
        int r;

        r = check_in_tx(st);
        if (r < 0)
                return r;
        if (sqlite3_bind_int64(s, 1, (sqlite3_int64)MIN(keep, (uint64_t)INT64_MAX)) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        r = step_done(st, s);
        if (r < 0)
                return r;
        *ret_deleted = (uint64_t)sqlite3_changes(st->db);
        return 0;
}

static int sqlite_get(void *b, enum orch_store_collection c, const char *key, char **ret_value,
                      size_t *ret_len)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->coll[c][COLL_GET];
        char *v;
        size_t len;
        int rc, r;

        if (sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
                sqlite3_reset(s);
                return -ENOENT;
        }
        if (rc != SQLITE_ROW) {
                r = map_error(st, rc);
                sqlite3_reset(s);
                return r;
        }
        len = (size_t)sqlite3_column_bytes(s, 0);
        v = malloc(len + 1);
        if (!v) {
                sqlite3_reset(s);
                return -ENOMEM;
        }
        memcpy(v, sqlite3_column_text(s, 0), len);
        v[len] = '\0';
        sqlite3_reset(s);
        *ret_value = v;
        if (ret_len)
                *ret_len = len;
        return 0;
}

/* Steps through rows of (key or index, value), calling the right callback; returns the row count. */
static int run_load(struct sqlite_store *st, sqlite3_stmt *s, orch_store_load_fn fn, orch_store_event_fn efn,
                    void *userdata)
{
        int n = 0, rc, r;

        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                const char *value = (const char *)sqlite3_column_text(s, 1);
                size_t len = (size_t)sqlite3_column_bytes(s, 1);

                if (!value) {
                        /* NULL here is an allocation failure: the schema says NOT NULL. */
                        sqlite3_reset(s);
                        return -ENOMEM;
                }
                if (fn) {
                        const char *key = (const char *)sqlite3_column_text(s, 0);
                        if (!key) {
                                sqlite3_reset(s);
                                return -ENOMEM;
                        }
                        r = fn(key, value, len, userdata);
                } else
                        r = efn((uint64_t)sqlite3_column_int64(s, 0), value, len, userdata);
                if (r < 0) {
                        sqlite3_reset(s);
                        return r;
                }
                if (n < INT_MAX)
                        n++;
        }
        r = rc == SQLITE_DONE ? n : map_error(st, rc);
        sqlite3_reset(s);
        return r;
}

static int sqlite_load(void *b, enum orch_store_collection c, const char *prefix, orch_store_load_fn fn,
                       void *userdata)
{
        struct sqlite_store *st = b;
        _cleanup_(freep) char *upper = NULL;
        sqlite3_stmt *s;
        size_t len;
        int r;

        if (!prefix)
                return run_load(st, st->coll[c][COLL_LOAD_ALL], fn, NULL, userdata);

        /* The keys starting with prefix are those in [prefix, prefix with its last byte + 1). The
         * prefix is valid UTF-8, which never holds 0xff, so the increment cannot overflow. */
        len = strlen(prefix);
        upper = strdup(prefix);
        if (!upper)
                return -ENOMEM;
        upper[len - 1] = (char)((unsigned char)upper[len - 1] + 1);

        s = st->coll[c][COLL_LOAD_RANGE];
        if (sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(s, 2, upper, -1, SQLITE_STATIC) != SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        return run_load(st, s, fn, NULL, userdata);
}

static int sqlite_events_since(void *b, uint64_t since, uint64_t limit, orch_store_event_fn fn,
                               void *userdata)
{
        struct sqlite_store *st = b;
        sqlite3_stmt *s = st->stmt[STMT_EVENTS_SINCE];
        int r;

        /* A negative LIMIT is "no limit" to SQLite. */
        if (sqlite3_bind_int64(s, 1, (sqlite3_int64)MIN(since, (uint64_t)INT64_MAX)) != SQLITE_OK ||
            sqlite3_bind_int64(s, 2, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit) !=
                    SQLITE_OK) {
                r = map_error(st, sqlite3_errcode(st->db));
                sqlite3_reset(s);
                return r;
        }
        return run_load(st, s, NULL, fn, userdata);
}

static const char *sqlite_last_error(void *b)
{
        struct sqlite_store *st = b;

        return st->last_error;
}

/* Reads the single integer a query such as "PRAGMA user_version" returns. */
static int query_int(struct sqlite_store *st, const char *sql, int64_t *ret)
{
        sqlite3_stmt *s = NULL;
        int rc, r;

        rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK)
                return map_error(st, rc);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                *ret = sqlite3_column_int64(s, 0);
                r = 0;
        } else
                r = map_error(st, rc == SQLITE_DONE ? SQLITE_ERROR : rc);
        sqlite3_finalize(s);
        return r;
}

static int exec_sql(struct sqlite_store *st, const char *sql)
{
        int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : map_error(st, rc);
}

static int lock_dir(struct sqlite_store *st, const char *dir, char **ret_error)
{
        _cleanup_(freep) char *path = orch_strdup_printf("%s/" LOCK_NAME, dir);
        char pid[32];
        int fd, n, r;

        if (!path)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0) {
                r = -errno;
                *ret_error = orch_strdup_printf("cannot open lock file %s: %s", path, strerror(-r));
                return r;
        }
        st->lock_fd = fd;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                ssize_t k;
                uint32_t holder;

                r = -errno;
                if (r != -EWOULDBLOCK) {
                        *ret_error = orch_strdup_printf("cannot lock %s: %s", path, strerror(-r));
                        return r;
                }
                /* The holder writes its pid right after locking; a reader can come in between. */
                k = pread(fd, pid, sizeof pid - 1, 0);
                pid[k > 0 ? k : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
                if (orch_parse_u32(pid, &holder) == 0)
                        *ret_error = orch_strdup_printf(
                                "data dir %s is in use by another orchd (pid %" PRIu32 ")", dir, holder);
                else
                        *ret_error = orch_strdup_printf(
                                "data dir %s is in use by another orchd (pid unknown)", dir);
                return -EBUSY;
        }
        n = orch_snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (n < 0)
                return n;
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
                r = errno > 0 ? -errno : -EIO;
                *ret_error = orch_strdup_printf("cannot write lock file %s: %s", path, strerror(-r));
                return r;
        }
        return 0;
}

/* The database holds every service spec and placement: owner-only, whatever the umask, and also
 * when an older file (or its log) was created looser. SQLite gives the files it creates next to
 * the database (-wal, -shm) the database's mode. */
static int prepare_db_file(const char *path, char **ret_error)
{
        static const char *const suffixes[] = {"-wal", "-shm"};
        _cleanup_(closep) int fd = -1;
        struct stat sb;
        int r;

        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0) {
                r = -errno;
                *ret_error = orch_strdup_printf("cannot open %s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &sb) < 0)
                return -errno;
        if (!S_ISREG(sb.st_mode)) {
                *ret_error = orch_strdup_printf("%s is not a regular file", path);
                return -EINVAL;
        }
        if ((sb.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0) {
                r = -errno;
                *ret_error =
                        orch_strdup_printf("cannot make %s private (mode 0600): %s", path, strerror(-r));
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_(freep) char *p = orch_strdup_printf("%s%s", path, suffixes[i]);
                if (!p)
                        return -ENOMEM;
                if (lstat(p, &sb) < 0) {
                        if (errno == ENOENT)
                                continue;
                        r = -errno;
                        *ret_error = orch_strdup_printf("cannot stat %s: %s", p, strerror(-r));
                        return r;
                }
                if (!S_ISREG(sb.st_mode)) {
                        *ret_error = orch_strdup_printf("%s is not a regular file", p);
                        return -EINVAL;
                }
                if ((sb.st_mode & 07777) != 0600 && chmod(p, 0600) < 0) {
                        r = -errno;
                        *ret_error = orch_strdup_printf("cannot make %s private (mode 0600): %s", p,
                                                        strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* Checks that the file is an orch state database this version understands, creating the schema
 * in a new (empty) file. */
static int check_schema(struct sqlite_store *st, char **ret_error)
{
        int64_t app_id, version, objects;
        int r;

        /* The first read of the file: this is where "not a database" shows. */
        r = query_int(st, "PRAGMA application_id", &app_id);
        if (r < 0)
                goto sql_fail;
        r = query_int(st, "PRAGMA user_version", &version);
        if (r < 0)
                goto sql_fail;
        r = query_int(st, "SELECT count(*) FROM sqlite_schema", &objects);
        if (r < 0)
                goto sql_fail;

        if (app_id == 0 && version == 0 && objects == 0)
                return 1; /* new */
        if (app_id != APPLICATION_ID) {
                *ret_error = orch_strdup_printf("%s is an SQLite database but not an orch state database "
                                                "(application id 0x%" PRIx64 "); refusing to change it",
                                                st->db_path, (uint64_t)app_id);
                return -EUCLEAN;
        }
        if (version > SCHEMA_VERSION) {
                *ret_error = orch_strdup_printf("%s has schema version %" PRId64 ", newer than this orchd "
                                                "understands (%d): run a newer orchd, or restore a backup "
                                                "made by this version",
                                                st->db_path, version, SCHEMA_VERSION);
                return -ENOTSUP;
        }
        if (version < 1) {
                *ret_error = orch_strdup_printf("%s has an invalid schema version %" PRId64, st->db_path,
                                                version);
                return -EUCLEAN;
        }
        /* Version 1 is the first: nothing to migrate yet. A later version adds its steps here, each in
         * one transaction that also raises user_version. */
        return 0;

sql_fail:
        *ret_error = orch_strdup_printf("cannot read %s: %s", st->db_path, st->last_error);
        return r;
}

static int create_schema(struct sqlite_store *st, char **ret_error)
{
        _cleanup_(freep) char *sql = orch_strdup_printf("BEGIN IMMEDIATE; %s PRAGMA application_id = %d; "
                                                        "PRAGMA user_version = %d; COMMIT;",
                                                        schema_v1, APPLICATION_ID, SCHEMA_VERSION);
        int r;

        if (!sql)
                return -ENOMEM;
        r = exec_sql(st, sql);
        if (r < 0) {
                if (!sqlite3_get_autocommit(st->db))
                        (void)exec_sql(st, "ROLLBACK");
                *ret_error = orch_strdup_printf("cannot create the schema in %s: %s", st->db_path,
                                                st->last_error);
        }
        return r;
}

static int configure(struct sqlite_store *st, const struct orch_store_options *opts, char **ret_error)
{
        _cleanup_(freep) char *pragmas = NULL;
        const unsigned char *mode;
        sqlite3_stmt *s = NULL;
        bool wal;
        int rc, r;

        /* WAL must be set outside a transaction; it is persistent, and reports the mode in effect. */
        rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
        if (rc != SQLITE_OK) {
                r = map_error(st, rc);
                goto fail;
        }
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW) {
                r = map_error(st, rc);
                sqlite3_finalize(s);
                goto fail;
        }
        mode = sqlite3_column_text(s, 0);
        wal = mode && streq((const char *)mode, "wal");
        if (!wal)
                orch_snprintf(st->last_error, sizeof st->last_error, "journal mode stayed '%s'",
                              mode ? (const char *)mode : "?");
        sqlite3_finalize(s);
        if (!wal) {
                r = -EIO;
                goto fail;
        }

        pragmas = orch_strdup_printf("PRAGMA synchronous = %s; PRAGMA cache_size = -%" PRIu32 "; "
                                     "PRAGMA journal_size_limit = %lld; PRAGMA foreign_keys = OFF;",
                                     opts->durability == ORCH_STORE_DURABLE_POWER_LOSS ? "FULL" : "NORMAL",
                                     opts->cache_kib ? opts->cache_kib : DEFAULT_CACHE_KIB,
                                     JOURNAL_SIZE_LIMIT);
        if (!pragmas)
                return -ENOMEM;
        r = exec_sql(st, pragmas);
        if (r < 0)
                goto fail;
        return 0;

fail:
        *ret_error = orch_strdup_printf("cannot configure %s: %s", st->db_path, st->last_error);
        return r;
}

static int prepare(struct sqlite_store *st, const char *sql, sqlite3_stmt **ret, char **ret_error)
{
        int rc, r;

        /* PERSISTENT: these live as long as the store, which tells SQLite not to use its short-lived
         * lookaside memory for them. */
        rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);
        if (rc == SQLITE_OK)
                return 0;
        r = map_error(st, rc);
        *ret_error = orch_strdup_printf("cannot prepare statements on %s: %s", st->db_path, st->last_error);
        return r;
}

/* The table of a collection has the collection's name. */
static char *coll_statement_sql(enum coll_stmt i, const char *table)
{
        switch (i) {
        case COLL_PUT:
                return orch_strdup_printf("INSERT INTO %s (key, value) VALUES (?1, ?2) "
                                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                          table);
        case COLL_DEL:
                return orch_strdup_printf("DELETE FROM %s WHERE key = ?1", table);
        case COLL_GET:
                return orch_strdup_printf("SELECT value FROM %s WHERE key = ?1", table);
        case COLL_LOAD_ALL:
                return orch_strdup_printf("SELECT key, value FROM %s ORDER BY key", table);
        case COLL_LOAD_RANGE:
                return orch_strdup_printf(
                        "SELECT key, value FROM %s WHERE key >= ?1 AND key < ?2 ORDER BY key", table);
        case _COLL_STMT_MAX:
                break;
        }
        return NULL;
}

static int prepare_statements(struct sqlite_store *st, char **ret_error)
{
        int r;

        for (size_t c = 0; c < _ORCH_STORE_COLLECTION_MAX; c++)
                for (size_t i = 0; i < _COLL_STMT_MAX; i++) {
                        _cleanup_(freep) char *sql =
                                coll_statement_sql((enum coll_stmt)i, orch_store_collection_to_string(c));
                        if (!sql)
                                return -ENOMEM;
                        r = prepare(st, sql, &st->coll[c][i], ret_error);
                        if (r < 0)
                                return r;
                }
        for (size_t i = 0; i < _STMT_MAX; i++) {
                r = prepare(st, stmt_sql[i], &st->stmt[i], ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int sqlite_open(const char *dir, const struct orch_store_options *opts, void **ret_b,
                       char **ret_error)
{
        _cleanup_(sqlite_store_freep) struct sqlite_store *st = NULL;
        struct stat sb;
        bool fresh;
        int rc, r;

        if (stat(dir, &sb) == 0) {
                if (!S_ISDIR(sb.st_mode)) {
                        *ret_error = orch_strdup_printf("data dir %s is not a directory", dir);
                        return -ENOTDIR;
                }
        } else if (errno != ENOENT) {
                r = -errno;
                *ret_error = orch_strdup_printf("cannot access data dir %s: %s", dir, strerror(-r));
                return r;
        } else {
                r = orch_mkdir_p(dir, 0700);
                if (r < 0) {
                        *ret_error = orch_strdup_printf("cannot create data dir %s: %s", dir, strerror(-r));
                        return r;
                }
        }

        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        st->lock_fd = -1;
        st->db_path = orch_strdup_printf("%s/" DB_NAME, dir);
        if (!st->db_path)
                return -ENOMEM;

        r = lock_dir(st, dir, ret_error);
        if (r < 0)
                return r;
        r = prepare_db_file(st->db_path, ret_error);
        if (r < 0)
                return r;

        /* The file exists (prepare_db_file made it), so no CREATE: a vanished file is an error, not
         * an empty store. NOMUTEX: orchd uses the store from its loop thread only. */
        rc = sqlite3_open_v2(st->db_path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
        if (rc != SQLITE_OK) {
                r = map_error(st, rc);
                *ret_error = orch_strdup_printf("cannot open %s: %s", st->db_path, st->last_error);
                return r;
        }
        sqlite3_extended_result_codes(st->db, 1);
        sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);

        r = check_schema(st, ret_error);
        if (r < 0)
                return r;
        fresh = r > 0;
        r = configure(st, opts, ret_error);
        if (r < 0)
                return r;
        if (fresh) {
                r = create_schema(st, ret_error);
                if (r < 0)
                        return r;
        }
        r = prepare_statements(st, ret_error);
        if (r < 0)
                return r;

        *ret_b = TAKE_PTR(st);
        return 0;
}

static void sqlite_close(void *b)
{
        sqlite_store_free(b);
}

const struct orch_store_ops orch_store_sqlite_ops = {
        .name = "sqlite",
        .open = sqlite_open,
        .close = sqlite_close,
        .begin = sqlite_begin,
        .commit = sqlite_commit,
        .rollback = sqlite_rollback,
        .put = sqlite_put,
        .del = sqlite_del,
        .append_event = sqlite_append_event,
        .trim_events = sqlite_trim_events,
        .get = sqlite_get,
        .load = sqlite_load,
        .events_since = sqlite_events_since,
        .last_error = sqlite_last_error,
};
