/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <sqlite3.h>

#include "json.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* A data dir of its own per test; check forks each test, so one static is enough. */
static char test_dir[64];

static char *mfree(char *p)
{
        free(p);
        return NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        return remove(path);
}

static void setup(void)
{
        orch_strlcpy(test_dir, "/tmp/orch-test-store.XXXXXX", sizeof test_dir);
        ck_assert_ptr_nonnull(mkdtemp(test_dir));
}

static void teardown(void)
{
        nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct orch_store *open_store(const struct orch_store_options *opts)
{
        _cleanup_(freep) char *error = NULL;
        struct orch_store *s = NULL;
        int r;

        r = orch_store_open(test_dir, opts, &s, &error);
        ck_assert_msg(r == 0, "open %s: %d %s", test_dir, r, strna(error));
        return s;
}

/* A record shaped and sized like orchd's instance JSON (about 300 bytes). */
static size_t instance_json(char *buf, size_t size, const char *id, uint64_t generation)
{
        int n = orch_snprintf(buf, size,
                              "{\"id\":\"%s\",\"service\":\"web\",\"revision\":\"3f2a9c1d0b7e\",\"node\":"
                              "\"node-0042\",\"generation\":%" PRIu64 ",\"desired\":\"run\",\"state\":"
                              "\"running\",\"health\":\"passing\",\"pid\":123456,\"ports\":{\"http\":20001},"
                              "\"restarts\":0,\"started_at\":1795688062123,\"cgroup\":\"/orch/web/%s\","
                              "\"reason\":\"\",\"exit\":null,\"created_at\":1795688062000}",
                              id, generation, id);
        ck_assert_int_gt(n, 0);
        return (size_t)n;
}

static void assert_value(struct orch_store *s, enum orch_store_collection c, const char *key,
                         const char *expected)
{
        _cleanup_(freep) char *v = NULL;
        size_t len = 0;
        int r;

        r = orch_store_get(s, c, key, &v, &len);
        ck_assert_msg(r == 0, "get %s/%s: %d", orch_store_collection_to_string(c), key, r);
        ck_assert_str_eq(v, expected);
        ck_assert_uint_eq(len, strlen(expected));
}

static void assert_missing(struct orch_store *s, enum orch_store_collection c, const char *key)
{
        char *v = NULL;

        ck_assert_int_eq(orch_store_get(s, c, key, &v, NULL), -ENOENT);
        ck_assert_ptr_null(v);
}

struct collected {
        struct orch_buf keys;
        size_t n;
};

static int collect_key(const char *key, const char *value, size_t len, void *userdata)
{
        struct collected *c = userdata;

        ck_assert_uint_eq(strlen(value), len);
        orch_buf_printf(&c->keys, "%s%s=%s", c->n ? " " : "", key, value);
        c->n++;
        return 0;
}

static int collect_event(uint64_t index, const char *value, size_t len, void *userdata)
{
        struct collected *c = userdata;

        ck_assert_uint_eq(strlen(value), len);
        orch_buf_printf(&c->keys, "%s%" PRIu64, c->n ? " " : "", index);
        c->n++;
        return 0;
}

START_TEST(test_put_get_delete_load)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        _cleanup_json_ json_t *j = json_pack("{s:s, s:i}", "name", "web", "replicas", 3);
        struct collected c = {0};

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "web", "{\"a\":1}", 7), 0);
        ck_assert_int_eq(orch_store_put_json(tx, ORCH_STORE_SERVICES, "api", j), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_REVISIONS, "web/b2", "2", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_REVISIONS, "web/a1", "1", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_REVISIONS, "web2/c3", "3", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_REVISIONS, "we/d4", "4", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "n1", "{}", 2), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_META, "generation", "41", 2), 0);
        /* The same key in another collection is another record. */
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_INSTANCES, "web", "\"i\"", 3), 0);
        /* Reads see the open transaction's writes. */
        assert_value(s, ORCH_STORE_META, "generation", "41");
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_META, "generation", "42", 2), 0);
        ck_assert_int_eq(orch_store_commit(tx), 0);

        assert_value(s, ORCH_STORE_SERVICES, "web", "{\"a\":1}");
        assert_value(s, ORCH_STORE_SERVICES, "api", "{\"name\":\"web\",\"replicas\":3}");
        assert_value(s, ORCH_STORE_META, "generation", "42");
        assert_value(s, ORCH_STORE_INSTANCES, "web", "\"i\"");
        assert_missing(s, ORCH_STORE_NODES, "n2");

        /* Whole collection in key order, then by prefix: "web/" must not match "web2/" or "we/". */
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_REVISIONS, NULL, collect_key, &c), 4);
        ck_assert_str_eq(c.keys.data, "we/d4=4 web/a1=1 web/b2=2 web2/c3=3");
        orch_buf_release(&c.keys);
        c.n = 0;
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_REVISIONS, "web/", collect_key, &c), 2);
        ck_assert_str_eq(c.keys.data, "web/a1=1 web/b2=2");
        orch_buf_release(&c.keys);
        c.n = 0;
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_SERVICES, "zzz", collect_key, &c), 0);
        ck_assert_uint_eq(c.n, 0);

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_delete(tx, ORCH_STORE_SERVICES, "web"), 0);
        ck_assert_int_eq(orch_store_delete(tx, ORCH_STORE_SERVICES, "web"), -ENOENT);
        ck_assert_int_eq(orch_store_delete(tx, ORCH_STORE_NODES, "nope"), -ENOENT);
        /* -ENOENT leaves the transaction usable. */
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "n2", "{}", 2), 0);
        ck_assert_int_eq(orch_store_commit(tx), 0);
        assert_missing(s, ORCH_STORE_SERVICES, "web");
        assert_value(s, ORCH_STORE_NODES, "n2", "{}");

        ck_assert_int_eq(orch_store_put_one(s, ORCH_STORE_META, "event_index", "7", 1), 0);
        assert_value(s, ORCH_STORE_META, "event_index", "7");
}
END_TEST

static int stop_at_second(const char *key, const char *value, size_t len, void *userdata)
{
        int *n = userdata;
        return ++*n == 2 ? -ECANCELED : 0;
}

static int reenter(const char *key, const char *value, size_t len, void *userdata)
{
        struct orch_store *s = userdata;
        struct orch_store_tx *tx = NULL;
        char *v = NULL;

        /* The load's cursor is live: the store must refuse, not reset it under the caller. */
        ck_assert_int_eq(orch_store_begin(s, &tx), -EBUSY);
        ck_assert_int_eq(orch_store_get(s, ORCH_STORE_NODES, "a", &v, NULL), -EBUSY);
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_NODES, NULL, reenter, s), -EBUSY);
        return 0;
}

START_TEST(test_invalid_arguments)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        struct orch_store_tx *tx2 = NULL, *done;
        char long_key[ORCH_STORE_KEY_MAX + 2];
        int n = 0;

        memset(long_key, 'k', sizeof long_key - 1);
        long_key[sizeof long_key - 1] = '\0';

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_begin(s, &tx2), -EBUSY);
        ck_assert_ptr_null(tx2);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "", "1", 1), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, NULL, "1", 1), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, long_key, "1", 1), -EINVAL);
        long_key[ORCH_STORE_KEY_MAX] = '\0';
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, long_key, "1", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "bad\xff", "1", 1), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", "", 0), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", NULL, 1), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", "1\0002", 3), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", "\"\xc3\x28\"", 4), -EINVAL);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", "1", ORCH_STORE_VALUE_MAX + 1), -E2BIG);
        ck_assert_int_eq(orch_store_put(tx, _ORCH_STORE_COLLECTION_MAX, "a", "1", 1), -EINVAL);
        ck_assert_int_eq(orch_store_put_json(tx, ORCH_STORE_NODES, "a", NULL), -EINVAL);
        ck_assert_int_eq(orch_store_append_event(tx, 0, "{}", 2), -ERANGE);
        ck_assert_int_eq(orch_store_append_event(tx, (uint64_t)INT64_MAX + 1, "{}", 2), -ERANGE);
        ck_assert_int_eq(orch_store_append_event(tx, (uint64_t)INT64_MAX, "{}", 2), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "a", "1", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "b", "\"h\xc3\xa9\"", 5), 0);

        /* A callback's error stops the load and is returned; a callback cannot re-enter. */
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_NODES, NULL, stop_at_second, &n), -ECANCELED);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_NODES, NULL, reenter, s), 3);
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_NODES, "\xff", reenter, s), -EINVAL);
        ck_assert_int_eq(orch_store_commit(tx), 0);

        /* A finished transaction takes nothing more. */
        done = tx;
        ck_assert_int_eq(orch_store_put(done, ORCH_STORE_NODES, "c", "1", 1), -EINVAL);
        ck_assert_int_eq(orch_store_commit(done), -EINVAL);
        orch_store_rollback(done);
        orch_store_rollback(NULL);
        assert_value(s, ORCH_STORE_NODES, "a", "1");
        assert_value(s, ORCH_STORE_NODES, "b", "\"h\xc3\xa9\"");
        assert_missing(s, ORCH_STORE_NODES, "c");
        ck_assert_ptr_null(orch_store_close(NULL));
}
END_TEST

static void put_in_scope_then_fail(struct orch_store *s)
{
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "scoped", "1", 1), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 5, "{}", 2), 0);
        /* An error path returns here without commit: the cleanup must roll back. */
}

START_TEST(test_rollback_leaves_nothing)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        struct collected c = {0};

        ck_assert_int_eq(orch_store_put_one(s, ORCH_STORE_SERVICES, "kept", "\"v1\"", 4), 0);

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "new", "1", 1), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "kept", "\"v2\"", 4), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_INSTANCES, "web-1", "1", 1), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 1, "{}", 2), 0);
        ck_assert_int_eq(orch_store_delete(tx, ORCH_STORE_SERVICES, "kept"), 0);
        assert_missing(s, ORCH_STORE_SERVICES, "kept");
        orch_store_rollback(tx);

        assert_value(s, ORCH_STORE_SERVICES, "kept", "\"v1\"");
        assert_missing(s, ORCH_STORE_SERVICES, "new");
        assert_missing(s, ORCH_STORE_INSTANCES, "web-1");
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 0);

        put_in_scope_then_fail(s);
        assert_missing(s, ORCH_STORE_SERVICES, "scoped");
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 0);

        /* A failed statement (a taken event index) fails alone; the transaction goes on and commits. */
        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 1, "{\"n\":1}", 7), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 1, "{\"n\":2}", 7), -EEXIST);
        ck_assert_str_ne(orch_store_last_error(s), "");
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "after", "1", 1), 0);
        ck_assert_int_eq(orch_store_commit(tx), 0);
        assert_value(s, ORCH_STORE_SERVICES, "after", "1");
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 1);
        orch_buf_release(&c.keys);
}
END_TEST

START_TEST(test_events)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        struct collected c = {0};
        uint64_t deleted = 1;
        char v[64];

        ck_assert_int_eq(orch_store_events_since(s, 0, 10, collect_event, &c), 0);
        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_trim_events(tx, 0, &deleted), 0);
        ck_assert_uint_eq(deleted, 0);
        for (uint64_t i = 1; i <= 100; i++) {
                int n = orch_snprintf(v, sizeof v, "{\"index\":%" PRIu64 ",\"type\":\"x\"}", i);
                ck_assert_int_eq(orch_store_append_event(tx, i, v, (size_t)n), 0);
        }
        ck_assert_int_eq(orch_store_commit(tx), 0);

        ck_assert_int_eq(orch_store_events_since(s, 0, 5, collect_event, &c), 5);
        ck_assert_str_eq(c.keys.data, "1 2 3 4 5");
        orch_buf_release(&c.keys);
        c.n = 0;
        ck_assert_int_eq(orch_store_events_since(s, 96, 10, collect_event, &c), 4);
        ck_assert_str_eq(c.keys.data, "97 98 99 100");
        orch_buf_release(&c.keys);
        c.n = 0;
        ck_assert_int_eq(orch_store_events_since(s, 100, 0, collect_event, &c), 0);
        ck_assert_int_eq(orch_store_events_since(s, UINT64_MAX, 0, collect_event, &c), 0);
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 100);
        orch_buf_release(&c.keys);
        c.n = 0;

        /* Keeping more than there are deletes nothing; then keep the newest 3. */
        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_trim_events(tx, 1000, &deleted), 0);
        ck_assert_uint_eq(deleted, 0);
        ck_assert_int_eq(orch_store_trim_events(tx, 100, &deleted), 0);
        ck_assert_uint_eq(deleted, 0);
        ck_assert_int_eq(orch_store_trim_events(tx, 3, &deleted), 0);
        ck_assert_uint_eq(deleted, 97);
        ck_assert_int_eq(orch_store_commit(tx), 0);
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 3);
        ck_assert_str_eq(c.keys.data, "98 99 100");
        orch_buf_release(&c.keys);
        c.n = 0;

        /* Indexes keep rising after a trim; trim to nothing. */
        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 101, "{}", 2), 0);
        ck_assert_int_eq(orch_store_trim_events(tx, 0, NULL), 0);
        ck_assert_int_eq(orch_store_commit(tx), 0);
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 0);
}
END_TEST

static int count_cb(const char *key, const char *value, size_t len, void *userdata)
{
        (*(size_t *)userdata)++;
        return 0;
}

START_TEST(test_reopen_persists)
{
        struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        struct collected c = {0};
        char id[32], v[512];
        size_t n = 0;

        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        for (unsigned i = 0; i < 1000; i++) {
                orch_snprintf(id, sizeof id, "web-%08x", i * 2654435761U);
                size_t len = instance_json(v, sizeof v, id, i);
                ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_INSTANCES, id, v, len), 0);
        }
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_SERVICES, "web", "{\"replicas\":1000}", 17), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_REVISIONS, "web/3f2a9c1d0b7e", "{}", 2), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_NODES, "node-0042", "{}", 2), 0);
        ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_META, "generation", "999", 3), 0);
        ck_assert_int_eq(orch_store_append_event(tx, 1, "{\"index\":1}", 11), 0);
        ck_assert_int_eq(orch_store_commit(tx), 0);
        tx = NULL;
        orch_store_close(s);

        s = open_store(NULL);
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_INSTANCES, NULL, count_cb, &n), 1000);
        ck_assert_uint_eq(n, 1000);
        orch_snprintf(id, sizeof id, "web-%08x", 7 * 2654435761U);
        instance_json(v, sizeof v, id, 7);
        assert_value(s, ORCH_STORE_INSTANCES, id, v);
        assert_value(s, ORCH_STORE_SERVICES, "web", "{\"replicas\":1000}");
        assert_value(s, ORCH_STORE_REVISIONS, "web/3f2a9c1d0b7e", "{}");
        assert_value(s, ORCH_STORE_NODES, "node-0042", "{}");
        assert_value(s, ORCH_STORE_META, "generation", "999");
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 1);
        orch_buf_release(&c.keys);
        orch_store_close(s);
}
END_TEST

/* Full write loop for the kill tests: every write failure is fatal to the child. */
static void child_fail(const char *what, int r)
{
        fprintf(stderr, "child: %s: %s\n", what, strerror(-r));
        _exit(3);
}

static void write_all(int fd, const void *p, size_t n)
{
        if (write(fd, p, n) != (ssize_t)n)
                _exit(4);
}

/*
 * The child commits A, then starts B — big enough (with a small page cache) that SQLite spills
 * its pages into the log before commit — and is killed before B commits. The child reports the
 * log size after A and during B, which shows the recovery path really had uncommitted frames
 * to discard.
 */
static void kill_mid_transaction(enum orch_store_durability durability)
{
        const struct orch_store_options opts = {.durability = durability, .cache_kib = 256};
        _cleanup_(freep) char *wal = orch_strdup_printf("%s/state.db-wal", test_dir);
        _cleanup_(orch_store_closep) struct orch_store *s = NULL;
        int pipefd[2], status;
        int64_t sizes[2];
        char id[32], v[512];
        pid_t pid;

        ck_assert_int_eq(pipe(pipefd), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                struct orch_store *cs = NULL;
                struct orch_store_tx *tx = NULL;
                struct stat sb;
                int r;

                close(pipefd[0]);
                r = orch_store_open(test_dir, &opts, &cs, NULL);
                if (r < 0)
                        child_fail("open", r);
                if ((r = orch_store_begin(cs, &tx)) < 0)
                        child_fail("begin A", r);
                for (unsigned i = 0; i < 100; i++) {
                        orch_snprintf(id, sizeof id, "a-%u", i);
                        size_t len = instance_json(v, sizeof v, id, 1);
                        if ((r = orch_store_put(tx, ORCH_STORE_INSTANCES, id, v, len)) < 0)
                                child_fail("put A", r);
                }
                if ((r = orch_store_put(tx, ORCH_STORE_META, "generation", "1", 1)) < 0 ||
                    (r = orch_store_commit(tx)) < 0)
                        child_fail("commit A", r);
                sizes[0] = stat(wal, &sb) == 0 ? (int64_t)sb.st_size : -1;

                if ((r = orch_store_begin(cs, &tx)) < 0)
                        child_fail("begin B", r);
                for (unsigned i = 0; i < 20000; i++) {
                        orch_snprintf(id, sizeof id, "b-%u", i);
                        size_t len = instance_json(v, sizeof v, id, 2);
                        if ((r = orch_store_put(tx, ORCH_STORE_INSTANCES, id, v, len)) < 0)
                                child_fail("put B", r);
                }
                if ((r = orch_store_put(tx, ORCH_STORE_INSTANCES, "a-1", "\"overwritten\"", 13)) < 0 ||
                    (r = orch_store_delete(tx, ORCH_STORE_INSTANCES, "a-2")) < 0 ||
                    (r = orch_store_put(tx, ORCH_STORE_META, "generation", "2", 1)) < 0 ||
                    (r = orch_store_append_event(tx, 1, "{}", 2)) < 0)
                        child_fail("write B", r);
                sizes[1] = stat(wal, &sb) == 0 ? (int64_t)sb.st_size : -1;
                write_all(pipefd[1], sizes, sizeof sizes);
                raise(SIGKILL);
                _exit(5);
        }
        close(pipefd[1]);
        ck_assert_int_eq(read(pipefd[0], sizes, sizeof sizes), (ssize_t)sizeof sizes);
        close(pipefd[0]);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
        ck_assert_msg(sizes[1] > sizes[0] + 1024 * 1024,
                      "B did not spill into the log (%" PRId64 " -> %" PRId64 ")", sizes[0], sizes[1]);

        s = open_store(NULL);
        for (unsigned i = 0; i < 100; i++) {
                orch_snprintf(id, sizeof id, "a-%u", i);
                instance_json(v, sizeof v, id, 1);
                assert_value(s, ORCH_STORE_INSTANCES, id, v);
        }
        assert_missing(s, ORCH_STORE_INSTANCES, "b-0");
        assert_missing(s, ORCH_STORE_INSTANCES, "b-19999");
        assert_value(s, ORCH_STORE_META, "generation", "1");
        size_t n = 0;
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_INSTANCES, NULL, count_cb, &n), 100);
        struct collected c = {0};
        ck_assert_int_eq(orch_store_events_since(s, 0, 0, collect_event, &c), 0);
}

START_TEST(test_kill_mid_transaction)
{
        kill_mid_transaction(ORCH_STORE_DURABLE_POWER_LOSS);
}
END_TEST

START_TEST(test_kill_mid_transaction_process_durability)
{
        kill_mid_transaction(ORCH_STORE_DURABLE_PROCESS_CRASH);
}
END_TEST

#define KEYS_PER_TX 50

/*
 * A child commits transaction after transaction (tx k writes KEYS_PER_TX keys "k/i" and
 * meta last=k) and reports each k on a pipe once its commit has returned; the parent kills it at
 * a random moment. Whatever the moment: every reported commit is there, and every transaction
 * is there whole or not at all.
 */
static void kill_at_random(enum orch_store_durability durability, unsigned round)
{
        const struct orch_store_options opts = {.durability = durability};
        _cleanup_(orch_store_closep) struct orch_store *s = NULL;
        _cleanup_(freep) char *v = NULL;
        uint64_t acked = 0, k, last = 0, delay_us;
        int pipefd[2], status, r;
        unsigned char rnd[2];
        char key[48];
        pid_t pid;

        ck_assert_int_eq(pipe(pipefd), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                struct orch_store *cs = NULL;
                char value[512];

                close(pipefd[0]);
                r = orch_store_open(test_dir, &opts, &cs, NULL);
                if (r < 0)
                        child_fail("open", r);
                for (k = 1;; k++) {
                        struct orch_store_tx *tx = NULL;
                        char kv[24];
                        int n = orch_snprintf(kv, sizeof kv, "%" PRIu64, k);

                        if ((r = orch_store_begin(cs, &tx)) < 0)
                                child_fail("begin", r);
                        for (unsigned i = 0; i < KEYS_PER_TX; i++) {
                                orch_snprintf(key, sizeof key, "%" PRIu64 "/%u", k, i);
                                size_t len = instance_json(value, sizeof value, key, k);
                                if ((r = orch_store_put(tx, ORCH_STORE_INSTANCES, key, value, len)) < 0)
                                        child_fail("put", r);
                        }
                        if ((r = orch_store_put(tx, ORCH_STORE_META, "last", kv, (size_t)n)) < 0 ||
                            (r = orch_store_commit(tx)) < 0)
                                child_fail("commit", r);
                        write_all(pipefd[1], &k, sizeof k);
                }
        }
        close(pipefd[1]);
        /* Wait for the first commit, so that a slow start (a loaded machine, sanitizers) cannot make
         * the kill land before the loop runs. */
        ck_assert_int_eq(read(pipefd[0], &k, sizeof k), (ssize_t)sizeof k);
        acked = k;
        ck_assert_int_eq(orch_random_bytes(rnd, sizeof rnd), 0);
        delay_us = 50000 + ((uint64_t)rnd[0] << 8 | rnd[1]) * 250000 / 65536 + round * 1000;
        usleep((useconds_t)delay_us);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        while (read(pipefd[0], &k, sizeof k) == (ssize_t)sizeof k)
                acked = k;
        close(pipefd[0]);

        s = open_store(&opts);
        r = orch_store_get(s, ORCH_STORE_META, "last", &v, NULL);
        if (r == 0)
                ck_assert_int_eq(orch_parse_u64(v, &last), 0);
        else
                ck_assert_int_eq(r, -ENOENT);
        /* Committed but not yet reported is fine (killed between commit and write); the reverse
         * would be a lost acknowledged commit. */
        ck_assert_msg(last >= acked, "acknowledged %" PRIu64 " but only %" PRIu64 " survived", acked, last);
        ck_assert_msg(last <= acked + 1, "last %" PRIu64 " acked %" PRIu64, last, acked);
        for (k = 1; k <= last + 1; k++)
                for (unsigned i = 0; i < KEYS_PER_TX; i++) {
                        _cleanup_(freep) char *got = NULL;

                        orch_snprintf(key, sizeof key, "%" PRIu64 "/%u", k, i);
                        r = orch_store_get(s, ORCH_STORE_INSTANCES, key, &got, NULL);
                        ck_assert_msg(k <= last ? r == 0 : r == -ENOENT,
                                      "tx %" PRIu64 " key %s: %d (last %" PRIu64 ")", k, key, r, last);
                }
        printf("store: killed %" PRIu64 " ms after its first commit (%s): %" PRIu64
               " commits acknowledged, %" PRIu64 " found\n",
               delay_us / 1000, durability == ORCH_STORE_DURABLE_POWER_LOSS ? "fsync" : "no fsync", acked,
               last);
}

START_TEST(test_kill_at_random_moments)
{
        for (unsigned round = 0; round < 4; round++) {
                /* Each round from an empty data dir: a longer earlier run would leave keys behind. */
                if (round > 0) {
                        teardown();
                        setup();
                }
                kill_at_random(round % 2 ? ORCH_STORE_DURABLE_PROCESS_CRASH : ORCH_STORE_DURABLE_POWER_LOSS,
                               round);
        }
}
END_TEST

START_TEST(test_second_opener_refused)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(freep) char *error = NULL, *expected = NULL;
        struct orch_store *s2 = NULL;
        int pipefd[2], status;
        char buf[256] = "";
        pid_t pid;

        expected = orch_strdup_printf("data dir %s is in use by another orchd (pid %d)", test_dir,
                                      (int)getpid());
        ck_assert_int_eq(orch_store_open(test_dir, NULL, &s2, &error), -EBUSY);
        ck_assert_ptr_null(s2);
        ck_assert_str_eq(error, expected);

        /* From another process, with the sqlite: form of the location. */
        ck_assert_int_eq(pipe(pipefd), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_(freep) char *loc = orch_strdup_printf("sqlite:%s", test_dir);
                char *e = NULL;
                int r = orch_store_open(loc, NULL, &s2, &e);
                write_all(pipefd[1], e ? e : "", e ? strlen(e) : 0);
                _exit(r == -EBUSY ? 0 : 1);
        }
        close(pipefd[1]);
        ck_assert_int_gt(read(pipefd[0], buf, sizeof buf - 1), 0);
        close(pipefd[0]);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ck_assert_str_eq(buf, expected);

        /* Closing releases the lock. */
        s = orch_store_close(s);
        s = open_store(NULL);
}
END_TEST

static void set_user_version(const char *db_path, int version)
{
        _cleanup_(freep) char *sql = orch_strdup_printf("PRAGMA user_version = %d", version);
        sqlite3 *db = NULL;

        ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
}

START_TEST(test_schema_version_refused)
{
        _cleanup_(freep) char *db_path = orch_strdup_printf("%s/state.db", test_dir);
        _cleanup_(freep) char *error = NULL, *expected = NULL;
        struct orch_store *s = open_store(NULL);

        ck_assert_int_eq(orch_store_put_one(s, ORCH_STORE_META, "generation", "5", 1), 0);
        orch_store_close(s);
        s = NULL;

        set_user_version(db_path, 2);
        expected =
                orch_strdup_printf("%s has schema version 2, newer than this orchd understands (1): run a "
                                   "newer orchd, or restore a backup made by this version",
                                   db_path);
        ck_assert_int_eq(orch_store_open(test_dir, NULL, &s, &error), -ENOTSUP);
        ck_assert_ptr_null(s);
        ck_assert_str_eq(error, expected);

        /* The refusal changed nothing: back at version 1 everything is there. */
        set_user_version(db_path, 1);
        s = open_store(NULL);
        assert_value(s, ORCH_STORE_META, "generation", "5");
        orch_store_close(s);
}
END_TEST

START_TEST(test_foreign_files_refused)
{
        _cleanup_(freep) char *db_path = orch_strdup_printf("%s/state.db", test_dir);
        _cleanup_(freep) char *sub = orch_strdup_printf("%s/sub", test_dir);
        struct orch_store *s = NULL;
        sqlite3 *db = NULL;
        char *error = NULL;
        int fd;

        ck_assert_int_eq(orch_store_open("etcd://127.0.0.1:2379", NULL, &s, &error), -EPROTONOSUPPORT);
        ck_assert_ptr_nonnull(strstr(error, "unsupported store 'etcd://127.0.0.1:2379'"));
        error = mfree(error);
        ck_assert_int_eq(orch_store_open("sqlite:", NULL, &s, &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error, "names no directory"));
        error = mfree(error);

        /* Another application's SQLite database is left alone. */
        ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
        ck_assert_int_eq(orch_store_open(test_dir, NULL, &s, &error), -EUCLEAN);
        ck_assert_ptr_nonnull(strstr(error, "is an SQLite database but not an orch state database"));
        error = mfree(error);

        /* Not a database at all. */
        fd = open(db_path, O_WRONLY | O_TRUNC);
        ck_assert_int_ge(fd, 0);
        write_all(fd, "this is not sqlite, just some text long enough to be a header ...........", 74);
        close(fd);
        ck_assert_int_eq(orch_store_open(test_dir, NULL, &s, &error), -EUCLEAN);
        ck_assert_ptr_nonnull(strstr(error, "cannot read"));
        ck_assert_ptr_nonnull(strstr(error, "not a database"));
        error = mfree(error);

        /* A file where the data dir should be. */
        fd = open(sub, O_WRONLY | O_CREAT, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_int_eq(orch_store_open(sub, NULL, &s, &error), -ENOTDIR);
        ck_assert_ptr_nonnull(strstr(error, "is not a directory"));
        error = mfree(error);
        ck_assert_ptr_null(s);
}
END_TEST

static unsigned file_mode(const char *dir, const char *name)
{
        _cleanup_(freep) char *p = orch_strdup_printf("%s%s%s", dir, name ? "/" : "", strempty(name));
        struct stat sb;

        ck_assert_int_eq(stat(p, &sb), 0);
        return sb.st_mode & 07777;
}

START_TEST(test_file_modes)
{
        _cleanup_(freep) char *dir = orch_strdup_printf("%s/a/b", test_dir);
        _cleanup_(freep) char *db = orch_strdup_printf("%s/a/b/state.db", test_dir);
        _cleanup_(freep) char *error = NULL;
        struct orch_store *s = NULL;

        umask(0);
        ck_assert_int_eq(orch_store_open(dir, NULL, &s, &error), 0);
        ck_assert_int_eq(orch_store_put_one(s, ORCH_STORE_META, "generation", "1", 1), 0);
        ck_assert_uint_eq(file_mode(dir, NULL), 0700);
        ck_assert_uint_eq(file_mode(dir, "state.db"), 0600);
        ck_assert_uint_eq(file_mode(dir, "state.db-wal"), 0600);
        ck_assert_uint_eq(file_mode(dir, "state.db-shm"), 0600);
        ck_assert_uint_eq(file_mode(dir, "orchd.lock"), 0600);
        orch_store_close(s);

        /* A database left readable by others is made private again. */
        ck_assert_int_eq(chmod(db, 0644), 0);
        ck_assert_int_eq(orch_store_open(dir, NULL, &s, &error), 0);
        ck_assert_uint_eq(file_mode(dir, "state.db"), 0600);
        orch_store_close(s);
}
END_TEST

START_TEST(test_batch_throughput)
{
        _cleanup_(orch_store_closep) struct orch_store *s = open_store(NULL);
        _cleanup_(orch_store_tx_rollbackp) struct orch_store_tx *tx = NULL;
        char id[32], v[512];
        uint64_t t0, t;
        size_t n = 0;

        t0 = orch_now_usec();
        ck_assert_int_eq(orch_store_begin(s, &tx), 0);
        for (unsigned i = 0; i < 10000; i++) {
                orch_snprintf(id, sizeof id, "web-%08x", i * 2654435761U);
                size_t len = instance_json(v, sizeof v, id, i);
                ck_assert_int_eq(orch_store_put(tx, ORCH_STORE_INSTANCES, id, v, len), 0);
        }
        ck_assert_int_eq(orch_store_commit(tx), 0);
        t = orch_now_usec() - t0;
        printf("store: 10000 instance puts in one transaction: %" PRIu64 " ms\n", t / 1000);
        /* bench/store-bench measures; this only catches a store that lost its batching (an fsync per
         * put would take tens of seconds), with room for a loaded CI machine and sanitizers. */
        ck_assert_msg(t < 3 * USEC_PER_SEC, "10000 puts took %" PRIu64 " ms", t / 1000);
        ck_assert_int_eq(orch_store_load(s, ORCH_STORE_INSTANCES, NULL, count_cb, &n), 10000);
}
END_TEST

static Suite *store_suite(void)
{
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("store");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_put_get_delete_load);
        tcase_add_test(tc, test_invalid_arguments);
        tcase_add_test(tc, test_rollback_leaves_nothing);
        tcase_add_test(tc, test_events);
        tcase_add_test(tc, test_reopen_persists);
        tcase_add_test(tc, test_kill_mid_transaction);
        tcase_add_test(tc, test_kill_mid_transaction_process_durability);
        tcase_add_test(tc, test_kill_at_random_moments);
        tcase_add_test(tc, test_second_opener_refused);
        tcase_add_test(tc, test_schema_version_refused);
        tcase_add_test(tc, test_foreign_files_refused);
        tcase_add_test(tc, test_file_modes);
        tcase_add_test(tc, test_batch_throughput);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(store_suite)
