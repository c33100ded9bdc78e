/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <time.h>

#include "util.h"
#include "banned.h"

/*
 * The measuring side of bench/spawn.sh. It only watches and kills; nothing here starts an
 * instance. Files are followed with inotify, so waiting costs no CPU that the peer under test
 * could have used (two shared cores).
 *
 *   spawn-probe now
 *       CLOCK_MONOTONIC in nanoseconds: the clock bench/stamp writes.
 *   spawn-probe wait FILE N TIMEOUT_MS [SUBSTRING...]
 *       waits until N lines of FILE contain every SUBSTRING (every line counts without one);
 *       prints "NSEC COUNT", NSEC the moment the Nth line was seen. Exit 1 at the timeout,
 *       with the count reached.
 *   spawn-probe restart STAMPS NAME ROUNDS PAUSE_MS TIMEOUT_MS [--out FILE]
 *       ROUNDS times: wait PAUSE_MS (idle, as before a real crash), SIGKILL the process that
 *       STAMPS last recorded for NAME, and wait for the record of its replacement (another pid).
 *       The delta is the replacement's own clock reading at exec minus the moment of the
 *       kill() call. Prints "p50 P p99 P max M min M rounds N" in milliseconds; --out writes
 *       every delta, one per line.
 */

static uint64_t now_nsec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static _noreturn_ void die(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fputs("spawn-probe: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

/* A file read as it grows: complete lines only, a partial last line waits for its end. */
struct follower {
        int fd, ino;
        char buf[1 << 16];
        size_t len;
};

static void follow_open(struct follower *f, const char *path)
{
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0)
                die("%s: %s", path, strerror(errno));
        f->ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (f->ino < 0 || inotify_add_watch(f->ino, path, IN_MODIFY) < 0)
                die("inotify %s: %s", path, strerror(errno));
        f->len = 0;
}

/* Calls fn for every complete line appended since the last call; stops early when fn returns true. */
static bool follow_read(struct follower *f, bool (*fn)(char *line, void *ud), void *ud)
{
        for (;;) {
                char *start = f->buf, *nl;
                ssize_t n;

                /* lines left over from a call that stopped early come first */
                f->buf[f->len] = '\0';
                while ((nl = strchr(start, '\n'))) {
                        *nl = '\0';
                        if (fn(start, ud)) {
                                /* keep what follows for the next call */
                                f->len -= (size_t)(nl + 1 - f->buf);
                                memmove(f->buf, nl + 1, f->len);
                                return true;
                        }
                        start = nl + 1;
                }
                f->len -= (size_t)(start - f->buf);
                memmove(f->buf, start, f->len);
                if (f->len == sizeof f->buf - 1)
                        die("a line longer than %zu bytes", sizeof f->buf);
                n = read(f->fd, f->buf + f->len, sizeof f->buf - f->len - 1);
                if (n < 0)
                        die("read: %s", strerror(errno));
                if (n == 0)
                        return false;
                f->len += (size_t)n;
        }
}

/* Waits for the file to grow, at most until the deadline; false at the deadline. */
static bool follow_wait(struct follower *f, uint64_t deadline)
{
        struct pollfd p = {.fd = f->ino, .events = POLLIN};
        char ev[4096];
        uint64_t now = now_nsec();
        int r;

        if (now >= deadline)
                return false;
        r = poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
        if (r < 0 && errno != EINTR)
                die("poll: %s", strerror(errno));
        while (read(f->ino, ev, sizeof ev) > 0)
                ;
        return true;
}

static uint64_t parse_u64_arg(const char *s, const char *what)
{
        uint64_t v;

        if (orch_parse_u64(s, &v) < 0)
                die("%s: not a number: '%s'", what, s);
        return v;
}

/* --- wait ------------------------------------------------------------------------------------- */

struct wait_ctx {
        char **subs;
        int n_subs;
        uint64_t count, want;
};

static bool wait_line(char *line, void *ud)
{
        struct wait_ctx *w = ud;

        for (int i = 0; i < w->n_subs; i++)
                if (!strstr(line, w->subs[i]))
                        return false;
        return ++w->count >= w->want;
}

static int cmd_wait(int argc, char **argv)
{
        struct follower *f = calloc(1, sizeof *f);
        struct wait_ctx w = {.subs = argv + 4, .n_subs = argc - 4};
        uint64_t deadline;

        if (argc < 4 || !f)
                die("usage: spawn-probe wait FILE N TIMEOUT_MS [SUBSTRING...]");
        w.want = parse_u64_arg(argv[2], "N");
        deadline = now_nsec() + parse_u64_arg(argv[3], "TIMEOUT_MS") * 1000000ULL;
        follow_open(f, argv[1]);
        do {
                if (w.want == 0 || follow_read(f, wait_line, &w)) {
                        printf("%" PRIu64 " %" PRIu64 "\n", now_nsec(), w.count);
                        return 0;
                }
        } while (follow_wait(f, deadline));
        printf("timeout %" PRIu64 "\n", w.count);
        return 1;
}

/* --- restart ---------------------------------------------------------------------------------- */

struct stamp {
        char name[128];
        pid_t pid;
        uint64_t nsec;
};

static bool parse_stamp(char *line, struct stamp *s)
{
        char *save = NULL, *name = strtok_r(line, " ", &save), *pid = strtok_r(NULL, " ", &save),
             *ns = strtok_r(NULL, " ", &save);
        uint32_t p;

        if (!name || !pid || !ns || orch_parse_u32(pid, &p) < 0 || orch_parse_u64(ns, &s->nsec) < 0 ||
            orch_strlcpy(s->name, name, sizeof s->name) >= sizeof s->name)
                return false;
        s->pid = (pid_t)p;
        return true;
}

struct find_ctx {
        const char *name;
        pid_t not_pid;
        struct stamp found;
        bool any; /* the last record so far (the initial scan) rather than the first new one */
        bool have;
};

static bool find_line(char *line, void *ud)
{
        struct find_ctx *c = ud;
        struct stamp s;

        if (!parse_stamp(line, &s) || !streq(s.name, c->name) || s.pid == c->not_pid)
                return false;
        c->found = s;
        c->have = true;
        return !c->any;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least q of the values at or below it. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
        size_t k = (size_t)(q * (double)n + 0.999999);

        return (double)v[k > 0 ? k - 1 : 0] / 1e6;
}

static int cmd_restart(int argc, char **argv)
{
        struct follower *f = calloc(1, sizeof *f);
        struct find_ctx c = {.any = true};
        uint64_t rounds, pause_ms, timeout_ms, *d;
        FILE *out = NULL;

        if (argc == 8 && streq(argv[6], "--out")) {
                out = fopen(argv[7], "we");
                if (!out)
                        die("%s: %s", argv[7], strerror(errno));
        } else if (argc != 6)
                die("usage: spawn-probe restart STAMPS NAME ROUNDS PAUSE_MS TIMEOUT_MS [--out FILE]");
        if (!f)
                die("out of memory");
        c.name = argv[2];
        rounds = parse_u64_arg(argv[3], "ROUNDS");
        pause_ms = parse_u64_arg(argv[4], "PAUSE_MS");
        timeout_ms = parse_u64_arg(argv[5], "TIMEOUT_MS");
        d = calloc(rounds ? rounds : 1, sizeof *d);
        if (!d || rounds == 0)
                die("ROUNDS must be at least 1");
        follow_open(f, argv[1]);
        follow_read(f, find_line, &c);
        if (!c.have)
                die("%s has no record of %s", argv[1], c.name);
        c.any = false;
        for (uint64_t i = 0; i < rounds; i++) {
                pid_t victim = c.found.pid;
                uint64_t t_kill, deadline;

                usleep((useconds_t)(pause_ms * 1000));
                c.have = false;
                c.not_pid = victim;
                t_kill = now_nsec();
                if (kill(victim, SIGKILL) < 0)
                        die("round %" PRIu64 ": kill %d (%s): %s", i + 1, (int)victim, c.name,
                            strerror(errno));
                deadline = t_kill + timeout_ms * 1000000ULL;
                while (!follow_read(f, find_line, &c))
                        if (!follow_wait(f, deadline))
                                die("round %" PRIu64 ": no replacement of %s (pid %d) within %" PRIu64 " ms",
                                    i + 1, c.name, (int)victim, timeout_ms);
                d[i] = c.found.nsec > t_kill ? c.found.nsec - t_kill : 0;
                if (out)
                        fprintf(out, "%.3f\n", (double)d[i] / 1e6);
        }
        if (out)
                fclose(out);
        qsort(d, rounds, sizeof *d, cmp_u64);
        printf("p50 %.2f p99 %.2f max %.2f min %.2f rounds %" PRIu64 "\n", pct_ms(d, rounds, 0.50),
               pct_ms(d, rounds, 0.99), (double)d[rounds - 1] / 1e6, (double)d[0] / 1e6, rounds);
        return 0;
}

int main(int argc, char **argv)
{
        if (argc >= 2 && streq(argv[1], "now")) {
                printf("%" PRIu64 "\n", now_nsec());
                return 0;
        }
        if (argc >= 2 && streq(argv[1], "wait"))
                return cmd_wait(argc - 1, argv + 1);
        if (argc >= 2 && streq(argv[1], "restart"))
                return cmd_restart(argc - 1, argv + 1);
        fprintf(stderr, "usage: spawn-probe now | wait FILE N TIMEOUT_MS [SUBSTRING...] |\n"
                        "       restart STAMPS NAME ROUNDS PAUSE_MS TIMEOUT_MS [--out FILE]\n");
        return 2;
}
