/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <uv.h>

#include "logs.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* A temporary data dir per test (check forks each test, so statics are per test). */
static char data_dir[64];
static char logs_dir[96];

static void make_data_dir(void)
{
        orch_strlcpy(data_dir, "/tmp/orch-test-logs-XXXXXX", sizeof data_dir);
        ck_assert_ptr_nonnull(mkdtemp(data_dir));
        ck_assert_int_ge(orch_snprintf(logs_dir, sizeof logs_dir, "%s/logs", data_dir), 0);
}

static void remove_data_dir(void)
{
        DIR *d = opendir(logs_dir);
        struct dirent *de;

        if (d) {
                while ((de = readdir(d)))
                        if (de->d_name[0] != '.')
                                unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
        rmdir(logs_dir);
        rmdir(data_dir);
}

static char *path_of(const char *name)
{
        char *p = orch_strdup_printf("%s/%s", logs_dir, name);
        ck_assert_ptr_nonnull(p);
        return p;
}

static char *read_log(const char *name)
{
        _cleanup_(freep) char *p = path_of(name);
        char *data = NULL;
        size_t len;
        int r = orch_read_file(p, 256u << 20, &data, &len);

        ck_assert_msg(r == 0, "reading %s: %s", p, strerror(-r));
        return data;
}

static bool log_exists(const char *name)
{
        _cleanup_(freep) char *p = path_of(name);
        return access(p, F_OK) == 0;
}

static uint64_t log_size(const char *name)
{
        _cleanup_(freep) char *p = path_of(name);
        struct stat st;

        return stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void write_all(int fd, const char *s)
{
        size_t n = strlen(s);
        ck_assert_int_eq(write(fd, s, n), (ssize_t)n);
}

static void write_file(const char *name, const char *content)
{
        _cleanup_(freep) char *p = path_of(name);
        _cleanup_(closep) int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);

        ck_assert_int_ge(fd, 0);
        write_all(fd, content);
}

/* Runs the loop until `*done` or the deadline; a short repeating timer keeps UV_RUN_ONCE from
 * sleeping forever when nothing else happens. */
static void on_tick(uv_timer_t *t)
{
}

static void run_until(uv_loop_t *loop, const bool *done, uint64_t ms)
{
        uv_timer_t tick;
        uint64_t end = orch_now_msec() + ms;

        ck_assert_int_eq(uv_timer_init(loop, &tick), 0);
        ck_assert_int_eq(uv_timer_start(&tick, on_tick, 5, 5), 0);
        while (!(done && *done) && orch_now_msec() < end)
                uv_run(loop, UV_RUN_ONCE);
        uv_close((uv_handle_t *)&tick, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
}

static void close_loop(uv_loop_t *loop)
{
        ck_assert_int_eq(uv_run(loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(loop), 0);
}

START_TEST(test_open)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f, *g = NULL;
        struct stat st;
        int flags;
        static const char *const bad[] = {"", "../x", ".hidden", "a/b", "a b", "-x", "a.b"};
        char long_name[ORCH_LOGS_NAME_MAX + 2];

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_str_eq(orch_logs_dir(l), logs_dir);
        ck_assert_int_eq(stat(logs_dir, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0750);

        ck_assert_int_eq(orch_logs_open(l, "web-1", 1024, 3, &f), 0);
        ck_assert_int_eq(stat(logs_dir, &st), 0);
        {
                _cleanup_(freep) char *p = path_of("web-1.log");
                ck_assert_int_eq(stat(p, &st), 0);
                ck_assert_uint_eq(st.st_mode & 0777, 0640);
        }
        flags = fcntl(orch_logs_file_fd(f), F_GETFL);
        ck_assert_int_eq(flags & O_ACCMODE, O_WRONLY);
        ck_assert(flags & O_APPEND);
        ck_assert(fcntl(orch_logs_file_fd(f), F_GETFD) & FD_CLOEXEC);

        ck_assert_int_eq(orch_logs_open(l, "web-1", 1024, 3, &g), -EBUSY);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(orch_logs_open(l, bad[i], 1024, 3, &g) == -EINVAL, "accepted \"%s\"", bad[i]);
        memset(long_name, 'a', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = '\0';
        ck_assert_int_eq(orch_logs_open(l, long_name, 1024, 3, &g), -EINVAL);
        long_name[ORCH_LOGS_NAME_MAX] = '\0';
        ck_assert_int_eq(orch_logs_open(l, long_name, 1024, 3, &g), 0);
        orch_logs_close(g);
        g = NULL;
        ck_assert_int_eq(orch_logs_open(l, "web-2", 0, 3, &g), -EINVAL);
        ck_assert_int_eq(orch_logs_open(l, "web-2", 1024, 0, &g), -EINVAL);
        ck_assert_int_eq(orch_logs_open(l, "web-2", 1024, ORCH_LOGS_MAX_FILES + 1, &g), -EINVAL);
        ck_assert_ptr_null(g);

        /* Appends, also after a reopen. */
        write_all(orch_logs_file_fd(f), "one\n");
        orch_logs_close(f);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 1024, 3, &f), 0);
        write_all(orch_logs_file_fd(f), "two\n");
        {
                _cleanup_(freep) char *c = read_log("web-1.log");
                ck_assert_str_eq(c, "one\ntwo\n");
        }
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

/* Thirty 8-byte lines "line-NN\n", a check after each: with max_size 100 the file rotates when it
 * reaches 13 lines (104 bytes). */
static void write_thirty(struct orch_log_file *f, int *n_rotations)
{
        char line[16];

        *n_rotations = 0;
        for (int i = 0; i < 30; i++) {
                int r;
                ck_assert_int_ge(orch_snprintf(line, sizeof line, "line-%02d\n", i), 0);
                write_all(orch_logs_file_fd(f), line);
                r = orch_logs_check(f);
                ck_assert_int_ge(r, 0);
                *n_rotations += r;
        }
}

static void expect_lines(const char *got, int first, int last)
{
        struct orch_buf b = {0};

        for (int i = first; i <= last; i++)
                ck_assert_int_eq(orch_buf_printf(&b, "line-%02d\n", i), 0);
        ck_assert_str_eq(got, b.data ? b.data : "");
        orch_buf_release(&b);
}

START_TEST(test_rotation_order)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        int n;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 100, 3, &f), 0);
        write_thirty(f, &n);
        ck_assert_int_eq(n, 2);
        {
                _cleanup_(freep) char *a = read_log("web-1.log.2");
                _cleanup_(freep) char *b = read_log("web-1.log.1");
                _cleanup_(freep) char *c = read_log("web-1.log");
                expect_lines(a, 0, 12);
                expect_lines(b, 13, 25);
                expect_lines(c, 26, 29);
        }
        /* Nine more lines make a third rotation: the oldest file goes, max_files counts the live. */
        for (int i = 30; i < 39; i++) {
                char line[16];
                ck_assert_int_ge(orch_snprintf(line, sizeof line, "line-%02d\n", i), 0);
                write_all(orch_logs_file_fd(f), line);
        }
        ck_assert_int_eq(orch_logs_check(f), 1);
        ck_assert(!log_exists("web-1.log.3"));
        {
                _cleanup_(freep) char *a = read_log("web-1.log.2");
                _cleanup_(freep) char *b = read_log("web-1.log.1");
                _cleanup_(freep) char *c = read_log("web-1.log");
                expect_lines(a, 13, 25);
                expect_lines(b, 26, 38);
                ck_assert_str_eq(c, "");
        }
        ck_assert_int_eq(orch_logs_check(f), 0);

        /* A copy that cannot be made (here: a directory where the temporary copy goes; in real
         * life a full disk) leaves the rotated files alone and the live file whole. */
        {
                _cleanup_(freep) char *tmp = path_of("web-1.log.tmp");
                char line[16];

                ck_assert_int_eq(mkdir(tmp, 0700), 0);
                for (int i = 39; i < 52; i++) {
                        ck_assert_int_ge(orch_snprintf(line, sizeof line, "line-%02d\n", i), 0);
                        write_all(orch_logs_file_fd(f), line);
                }
                ck_assert_int_eq(orch_logs_check(f), -EISDIR);
                ck_assert_int_eq(orch_logs_check(f), -EISDIR);
                {
                        _cleanup_(freep) char *a = read_log("web-1.log.2");
                        _cleanup_(freep) char *b = read_log("web-1.log.1");
                        _cleanup_(freep) char *c = read_log("web-1.log");
                        expect_lines(a, 13, 25);
                        expect_lines(b, 26, 38);
                        expect_lines(c, 39, 51);
                }
                ck_assert_int_eq(rmdir(tmp), 0);
                ck_assert_int_eq(orch_logs_check(f), 1);
                ck_assert(!log_exists("web-1.log.tmp"));
                {
                        _cleanup_(freep) char *a = read_log("web-1.log.2");
                        _cleanup_(freep) char *b = read_log("web-1.log.1");
                        expect_lines(a, 26, 38);
                        expect_lines(b, 39, 51);
                }
        }
        orch_logs_close(f);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

START_TEST(test_open_rotates_and_prunes)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        char big[201];

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        /* Left by an earlier run: a live file above the limit, and rotated files from a larger
         * max_files. */
        memset(big, 'x', 199);
        big[199] = '\n';
        big[200] = '\0';
        write_file("web-1.log", big);
        write_file("web-1.log.1", "old-1\n");
        write_file("web-1.log.2", "old-2\n");
        write_file("web-1.log.3", "old-3\n");
        write_file("web-1.log.4", "old-4\n");
        ck_assert_int_eq(orch_logs_open(l, "web-1", 100, 3, &f), 0);
        ck_assert_uint_eq(log_size("web-1.log"), 0);
        {
                _cleanup_(freep) char *a = read_log("web-1.log.1");
                _cleanup_(freep) char *b = read_log("web-1.log.2");
                ck_assert_str_eq(a, big);
                ck_assert_str_eq(b, "old-1\n");
        }
        ck_assert(!log_exists("web-1.log.3"));
        ck_assert(!log_exists("web-1.log.4"));
        orch_logs_close(f);

        /* max_files 1: no rotated file at all, the live file is cut. */
        ck_assert_int_eq(orch_logs_open(l, "web-2", 10, 1, &f), 0);
        write_all(orch_logs_file_fd(f), "0123456789abc\n");
        ck_assert_int_eq(orch_logs_check(f), 1);
        ck_assert_uint_eq(log_size("web-2.log"), 0);
        ck_assert(!log_exists("web-2.log.1"));
        orch_logs_close(f);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

START_TEST(test_tail)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        struct orch_buf b = {0};
        uint64_t end = 0;
        int n;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 10, 4096, &b, &end), -ENOENT);
        ck_assert_int_eq(orch_logs_tail(l, "../etc", 10, 4096, &b, &end), -EINVAL);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 100, 3, &f), 0);

        /* Empty log. */
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 10, 4096, &b, &end), 0);
        ck_assert_uint_eq(b.len, 0);
        ck_assert_uint_eq(end, 0);

        write_thirty(f, &n); /* .2: 0-12, .1: 13-25, live: 26-29 */
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 3, 4096, &b, &end), 0);
        expect_lines(b.data, 27, 29);
        ck_assert_uint_eq(end, 32);
        orch_buf_reset(&b);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 4, 4096, &b, NULL), 0);
        expect_lines(b.data, 26, 29);
        orch_buf_reset(&b);
        /* Across the rotated files. */
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 10, 4096, &b, NULL), 0);
        expect_lines(b.data, 20, 29);
        orch_buf_reset(&b);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 17, 4096, &b, NULL), 0);
        expect_lines(b.data, 13, 29);
        orch_buf_reset(&b);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 18, 4096, &b, NULL), 0);
        expect_lines(b.data, 12, 29);
        orch_buf_reset(&b);
        /* More than there is: everything kept. */
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 1000, 4096, &b, NULL), 0);
        expect_lines(b.data, 0, 29);
        orch_buf_reset(&b);
        /* The byte cap keeps whole lines: 20 bytes hold two 8-byte lines. */
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 10, 20, &b, NULL), 0);
        expect_lines(b.data, 28, 29);
        orch_buf_reset(&b);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 0, 4096, &b, &end), 0);
        ck_assert_uint_eq(b.len, 0);
        ck_assert_uint_eq(end, 32);

        /* A last line without its newline counts; a single line longer than the cap is cut. */
        write_all(orch_logs_file_fd(f), "partial");
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 2, 4096, &b, &end), 0);
        ck_assert_str_eq(b.data, "line-29\npartial");
        ck_assert_uint_eq(end, 39);
        orch_buf_reset(&b);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 1, 4, &b, NULL), 0);
        ck_assert_str_eq(b.data, "tial");
        orch_buf_reset(&b);
        /* Appends to what the buffer holds. */
        ck_assert_int_eq(orch_buf_puts(&b, ">"), 0);
        ck_assert_int_eq(orch_logs_tail(l, "web-1", 1, 4096, &b, NULL), 0);
        ck_assert_str_eq(b.data, ">partial");

        orch_buf_release(&b);
        orch_logs_close(f);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

/* Followers */

struct collect {
        struct orch_buf got;
        size_t want;
        bool done;
        bool ended;
        int end_r;
        unsigned calls;
};

static void on_follow(struct orch_log_follower *f, const char *data, size_t len, int r, void *userdata)
{
        struct collect *c = userdata;

        c->calls++;
        if (!data) {
                ck_assert(!c->ended);
                c->ended = true;
                c->end_r = r;
                c->done = true;
                return;
        }
        ck_assert_int_eq(r, 0);
        ck_assert_uint_gt(len, 0);
        ck_assert_uint_le(len, ORCH_LOGS_FOLLOW_CHUNK);
        ck_assert_int_eq(orch_buf_put(&c->got, data, len), 0);
        c->done = c->got.len >= c->want;
}

static void expect_follow(uv_loop_t *loop, struct collect *c, const char *want)
{
        c->want = strlen(want);
        c->done = c->got.len >= c->want;
        run_until(loop, &c->done, 2000);
        ck_assert_str_eq(c->got.data ? c->got.data : "", want);
        /* Nothing more arrives. */
        run_until(loop, NULL, 30);
        ck_assert_str_eq(c->got.data ? c->got.data : "", want);
}

START_TEST(test_follow)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        struct orch_log_follower *fw, *fw_end;
        struct collect c = {0}, c_end = {0};
        char big[80];
        int fd;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_int_eq(orch_logs_follow(l, "web-1", 0, on_follow, &c, &fw), -ENOENT);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 64, 3, &f), 0);
        fd = orch_logs_file_fd(f);
        write_all(fd, "before\n");

        /* From the start, and from the end. */
        ck_assert_int_eq(orch_logs_follow(l, "web-1", 0, on_follow, &c, &fw), 0);
        ck_assert_int_eq(orch_logs_follow(l, "web-1", ORCH_LOGS_FOLLOW_END, on_follow, &c_end, &fw_end), 0);
        expect_follow(&loop, &c, "before\n");
        write_all(fd, "one\n");
        expect_follow(&loop, &c, "before\none\n");
        ck_assert_str_eq(c_end.got.data, "one\n");

        /* Written and rotated away before the follower had a chance to read it: it reads the rest
         * from the rotated copy, then goes on with the live file. */
        memset(big, 'B', sizeof big - 2);
        big[sizeof big - 2] = '\n';
        big[sizeof big - 1] = '\0';
        write_all(fd, big);
        ck_assert_int_eq(orch_logs_check(f), 1);
        write_all(fd, "after\n");
        {
                _cleanup_(freep) char *want = orch_strdup_printf("before\none\n%safter\n", big);
                expect_follow(&loop, &c, want);
        }

        /* Paused across two rotations: nothing is delivered, nothing is lost. */
        orch_buf_reset(&c.got);
        orch_logs_follower_pause(fw);
        write_all(fd, "p1\n");
        write_all(fd, big);
        ck_assert_int_eq(orch_logs_check(f), 1);
        write_all(fd, "p2\n");
        write_all(fd, big);
        ck_assert_int_eq(orch_logs_check(f), 1);
        write_all(fd, "p3\n");
        run_until(&loop, NULL, 50);
        ck_assert_uint_eq(c.got.len, 0);
        orch_logs_follower_resume(fw);
        {
                _cleanup_(freep) char *want = orch_strdup_printf("p1\n%sp2\n%sp3\n", big, big);
                expect_follow(&loop, &c, want);
        }

        /* Truncated by hand, without a rotation: it starts over. */
        orch_buf_reset(&c.got);
        ck_assert_int_eq(ftruncate(fd, 0), 0);
        write_all(fd, "t\n");
        expect_follow(&loop, &c, "t\n");

        /* Removing the log ends the followers. */
        orch_logs_close(f);
        ck_assert(!c.ended);
        ck_assert_int_eq(orch_logs_remove(l, "web-1"), 3);
        ck_assert(c.ended);
        ck_assert_int_eq(c.end_r, 0);
        ck_assert(c_end.ended);
        ck_assert(!log_exists("web-1.log"));
        orch_logs_follower_cancel(fw);
        orch_logs_follower_cancel(fw_end);

        orch_buf_release(&c.got);
        orch_buf_release(&c_end.got);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

START_TEST(test_tail_then_follow)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        struct orch_log_follower *fw;
        struct collect c = {0};
        struct orch_buf b = {0};
        uint64_t end;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_int_eq(orch_logs_open(l, "api-7", 1 << 20, 2, &f), 0);
        write_all(orch_logs_file_fd(f), "a\nb\nc\n");
        ck_assert_int_eq(orch_logs_tail(l, "api-7", 2, 4096, &b, &end), 0);
        ck_assert_str_eq(b.data, "b\nc\n");
        ck_assert_int_eq(orch_logs_follow(l, "api-7", end, on_follow, &c, &fw), 0);
        write_all(orch_logs_file_fd(f), "d\n");
        /* `orch logs -f --tail 2`: no gap, no repeat. */
        expect_follow(&loop, &c, "d\n");

        /* Cancelling from the manager's side: freeing it cancels what is left. */
        orch_buf_release(&b);
        orch_buf_release(&c.got);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

START_TEST(test_remove)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 0, &l), 0);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 100, 3, &f), 0);
        write_file("web-1.log.1", "x\n");
        write_file("web-1.log.9", "stale\n");
        write_file("web-1.log.tmp", "a rotation that failed half-way\n");
        write_file("web-1.log.old", "not ours\n");
        write_file("web-10.log", "another instance\n");
        write_file("web-10.log.1", "another instance\n");

        ck_assert_int_eq(orch_logs_remove(l, "web-1"), -EBUSY);
        orch_logs_close(f);
        ck_assert_int_eq(orch_logs_remove(l, "web-1"), 4);
        ck_assert(!log_exists("web-1.log"));
        ck_assert(!log_exists("web-1.log.tmp"));
        ck_assert(!log_exists("web-1.log.1"));
        ck_assert(!log_exists("web-1.log.9"));
        ck_assert(log_exists("web-1.log.old"));
        ck_assert(log_exists("web-10.log"));
        ck_assert(log_exists("web-10.log.1"));
        ck_assert_int_eq(orch_logs_remove(l, "web-1"), 0);
        ck_assert_int_eq(orch_logs_remove(l, "../web-10"), -EINVAL);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

/* The child: writes lines "%08u\n" for 0..n-1 to its stdout, `burst` lines at a time with a
 * 1ms pause between bursts (0: no pause at all); exits 0 when every write succeeded. */
static pid_t start_writer(int fd, unsigned n, unsigned burst)
{
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char line[16];
                struct timespec ms = {0, 1000000};

                signal(SIGPIPE, SIG_DFL);
                if (dup2(fd, STDOUT_FILENO) < 0)
                        _exit(3);
                for (unsigned i = 0; i < n; i++) {
                        if (orch_snprintf(line, sizeof line, "%08u\n", i) != 9)
                                _exit(4);
                        if (write(STDOUT_FILENO, line, 9) != 9)
                                _exit(5);
                        if (burst && (i + 1) % burst == 0)
                                nanosleep(&ms, NULL);
                }
                _exit(0);
        }
        return pid;
}

/* A writer of big blocks, as fast as it can: `mib` MiB in 64 KiB writes. */
static pid_t start_flood(int fd, unsigned mib)
{
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                static char block[64 * 1024];

                signal(SIGPIPE, SIG_DFL);
                memset(block, 'f', sizeof block);
                block[sizeof block - 1] = '\n';
                for (unsigned i = 0; i < mib * 16; i++)
                        if (write(fd, block, sizeof block) != (ssize_t)sizeof block)
                                _exit(5);
                _exit(0);
        }
        return pid;
}

/* Waits (without running any loop) for the child; returns its wait status or -1 at the deadline. */
static int wait_child(pid_t pid, uint64_t ms)
{
        uint64_t end = orch_now_msec() + ms;
        int status;

        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                ck_assert_int_ge(r, 0);
                if (r == pid)
                        return status;
                if (orch_now_msec() > end)
                        return -1;
                usleep(2000);
        }
}

struct rotation_watch {
        uv_timer_t timer;
        pid_t pid;
        int status;
        bool exited;
        uint64_t max_size;
        uint64_t bound;
        unsigned max_files;
        unsigned max_seen_files;
        uint64_t max_seen_rotated;
};

static void on_watch(uv_timer_t *t)
{
        struct rotation_watch *w = container_of(t, struct rotation_watch, timer);
        DIR *d = opendir(logs_dir);
        struct dirent *de;
        unsigned n = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                if (!startswith(de->d_name, "web-1.log"))
                        continue;
                n++;
                if (!streq(de->d_name, "web-1.log"))
                        w->max_seen_rotated = MAX(w->max_seen_rotated, log_size(de->d_name));
        }
        closedir(d);
        w->max_seen_files = MAX(w->max_seen_files, n);
        if (!w->exited && waitpid(w->pid, &w->status, WNOHANG) == w->pid)
                w->exited = true;
}

START_TEST(test_rotation_with_writer)
{
        /* 4000 lines of 9 bytes, at most 20 lines per millisecond (180 bytes/ms): in a 50ms period
         * at most 9000 bytes, however the scheduler treats the writer. */
        const unsigned n_lines = 4000, burst = 20;
        const uint64_t period = 50, max_size = 4096, per_period = 180 * period;
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        struct rotation_watch w = {0};
        struct orch_buf all = {0};
        unsigned expect_next = UINT32_MAX, lost = 0, n_seen = 0;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, period, &l), 0);
        ck_assert_int_eq(orch_logs_open(l, "web-1", max_size, 4, &f), 0);
        w.max_size = max_size;
        w.max_files = 4;
        w.pid = start_writer(orch_logs_file_fd(f), n_lines, burst);
        ck_assert_int_eq(uv_timer_init(&loop, &w.timer), 0);
        ck_assert_int_eq(uv_timer_start(&w.timer, on_watch, 5, 5), 0);
        run_until(&loop, &w.exited, 3500);
        ck_assert_msg(w.exited, "the writer did not finish");
        ck_assert(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
        uv_close((uv_handle_t *)&w.timer, NULL);
        ck_assert_int_ge(orch_logs_check(f), 0);

        ck_assert_uint_le(w.max_seen_files, 4);
        ck_assert_msg(w.max_seen_rotated <= max_size + 2 * per_period,
                      "a rotated file of %" PRIu64 " bytes (max_size %" PRIu64 ", %" PRIu64 " per period)",
                      w.max_seen_rotated, max_size, per_period);
        ck_assert(!log_exists("web-1.log.4"));

        /* Oldest first, the kept files hold an increasing run of whole lines ending with the last
         * one written; the only gaps are whole lines lost in rotation windows. */
        for (int i = 3; i >= 0; i--) {
                char name[32];
                ck_assert_int_ge(orch_snprintf(name, sizeof name, i ? "web-1.log.%d" : "web-1.log", i), 0);
                if (!log_exists(name))
                        continue;
                {
                        _cleanup_(freep) char *c = read_log(name);
                        ck_assert_uint_le(log_size(name), max_size + 2 * per_period);
                        ck_assert_int_eq(orch_buf_puts(&all, c), 0);
                }
        }
        ck_assert_uint_gt(all.len, 0);
        ck_assert_uint_eq(all.len % 9, 0);
        for (size_t off = 0; off < all.len; off += 9) {
                uint32_t v;
                char num[9];
                ck_assert_int_eq(all.data[off + 8], '\n');
                memcpy(num, all.data + off, 8);
                num[8] = '\0';
                ck_assert_int_eq(orch_parse_u32(num, &v), 0);
                if (expect_next != UINT32_MAX) {
                        ck_assert_msg(v >= expect_next, "line %u after %u: out of order", v,
                                      expect_next - 1);
                        lost += v - expect_next;
                }
                expect_next = v + 1;
                n_seen++;
        }
        ck_assert_uint_eq(expect_next, n_lines);
        /* Copy-truncate loses what is written between the last copy and the truncation: a few
         * system calls' time, so at most a line or two per rotation here. */
        ck_assert_msg(lost <= 2 * (n_lines * 9 / max_size), "%u lines lost of %u seen", lost, n_seen);
        orch_buf_release(&all);
        orch_logs_close(f);
        orch_logs_free(l);
        close_loop(&loop);
        remove_data_dir();
}
END_TEST

START_TEST(test_writer_never_blocked)
{
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file *f;
        int fd, status;
        pid_t pid;

        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 20, &l), 0);
        ck_assert_int_eq(orch_logs_open(l, "web-1", 1 << 20, 3, &f), 0);

        /* The agent does not run its loop at all (busy elsewhere, or stopped): 32 MiB go through
         * anyway, nothing waits for a reader. */
        pid = start_flood(orch_logs_file_fd(f), 32);
        status = wait_child(pid, 3000);
        ck_assert_msg(status != -1, "the writer was blocked");
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ck_assert_uint_eq(log_size("web-1.log"), 32u << 20);

        /* The agent rotating all the time while the writer floods: it finishes, and the files stay
         * near their limit. */
        pid = start_flood(orch_logs_file_fd(f), 32);
        {
                struct rotation_watch w = {.pid = pid};
                ck_assert_int_eq(uv_timer_init(&loop, &w.timer), 0);
                ck_assert_int_eq(uv_timer_start(&w.timer, on_watch, 5, 5), 0);
                run_until(&loop, &w.exited, 3000);
                ck_assert_msg(w.exited, "the writer was blocked while the agent rotated");
                ck_assert(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0);
                ck_assert_uint_le(w.max_seen_files, 3);
                uv_close((uv_handle_t *)&w.timer, NULL);
        }

        /* The agent gone (its descriptor closed, its loop ended, as across an agent restart): the
         * instance writes on and is not killed by SIGPIPE. */
        fd = dup(orch_logs_file_fd(f));
        ck_assert_int_ge(fd, 0);
        orch_logs_close(f);
        orch_logs_free(l);
        close_loop(&loop);
        pid = start_flood(fd, 2);
        close(fd);
        status = wait_child(pid, 3000);
        ck_assert(status != -1);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer status %#x", (unsigned)status);
        remove_data_dir();
}
END_TEST

START_TEST(test_thousand_instances)
{
        enum { N = 1000 };
        uv_loop_t loop;
        struct orch_logs *l;
        struct orch_log_file **files = calloc(N, sizeof *files), *small;
        struct mallinfo2 before, after;
        size_t per_instance;

        ck_assert_ptr_nonnull(files);
        make_data_dir();
        ck_assert_int_eq(uv_loop_init(&loop), 0);
        ck_assert_int_eq(orch_logs_new(&loop, data_dir, 10, &l), 0);
        before = mallinfo2();
        for (int i = 0; i < N; i++) {
                char name[32];
                ck_assert_int_ge(orch_snprintf(name, sizeof name, "svc-%08x", (unsigned)i), 0);
                ck_assert_int_eq(orch_logs_open(l, name, 10u << 20, 5, &files[i]), 0);
        }
        after = mallinfo2();
        per_instance = (after.uordblks - before.uordblks) / N;
        /* One small struct and a slot in the name index: well under what 16 MiB for 1,000
         * instances allows the whole agent. (The allocator statistics are empty under ASan.) */
        ck_assert_msg(per_instance < 256, "%zu bytes per instance", per_instance);

        /* The timer walks all of them; one instance going over its limit is rotated. */
        write_all(orch_logs_file_fd(files[500]), "0123456789\n");
        ck_assert_int_eq(orch_logs_open(l, "small", 5, 2, &small), 0);
        write_all(orch_logs_file_fd(small), "0123456789\n");
        run_until(&loop, NULL, 60);
        ck_assert_uint_eq(log_size("small.log"), 0);
        ck_assert_uint_eq(log_size("small.log.1"), 11);
        ck_assert_uint_eq(log_size("svc-000001f4.log"), 11);

        orch_logs_free(l); /* closes the files still open */
        close_loop(&loop);
        free(files);
        remove_data_dir();
}
END_TEST

static Suite *logs_suite(void)
{
        Suite *s = suite_create("logs");
        TCase *files = tcase_create("files");
        TCase *readers = tcase_create("readers");
        TCase *writers = tcase_create("writers");

        tcase_add_test(files, test_open);
        tcase_add_test(files, test_rotation_order);
        tcase_add_test(files, test_open_rotates_and_prunes);
        tcase_add_test(files, test_remove);
        tcase_add_test(files, test_thousand_instances);
        tcase_add_test(readers, test_tail);
        tcase_add_test(readers, test_follow);
        tcase_add_test(readers, test_tail_then_follow);
        tcase_add_test(writers, test_rotation_with_writer);
        tcase_add_test(writers, test_writer_never_blocked);
        tcase_set_timeout(files, 10);
        tcase_set_timeout(writers, 15);
        suite_add_tcase(s, files);
        suite_add_tcase(s, readers);
        suite_add_tcase(s, writers);
        return s;
}

ORCH_TEST_MAIN(logs_suite)
