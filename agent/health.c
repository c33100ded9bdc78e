/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "health.h"
#include "log.h"
#include "spawn.h"
#include "units.h"
#include "util.h"
#include "banned.h"

/* A request target is printable ASCII without spaces; the cap keeps the request one small write. */
#define PATH_MAX_LEN 2048

struct orch_health_check {
        uv_loop_t *loop;
        /* Waits for the next attempt, or for the timeout of the running one. */
        uv_timer_t timer;
        /* The attempt's handle: the connection (http, tcp) or a poll on the command's pidfd (exec).
         * Only one attempt exists at a time, and the next starts only after this handle's close
         * callback ran, so the two never need to coexist. */
        union {
                uv_tcp_t tcp;
                uv_poll_t poll;
        } probe;
        uv_connect_t connect_req;

        enum orch_health_type type;
        uint64_t interval_ms;
        uint64_t timeout_ms;
        uint64_t grace_end_ms; /* CLOCK_MONOTONIC: failures before this do not count */
        uint32_t unhealthy_threshold;
        uint32_t healthy_threshold;

        /* http, tcp */
        uint16_t port;
        char *path;
        char *request;
        size_t request_len;

        /* exec */
        char **argv;
        char **envp;
        char *workdir;
        gid_t *groups;
        size_t n_groups;
        uid_t uid;
        gid_t gid;
        bool set_ids;
        bool no_new_privs;
        const struct orch_cgroup *cgroup;
        int output_fd;

        char *instance;
        orch_health_cb cb;
        void *userdata;

        /* The running attempt. */
        bool attempt_running; /* started and without a result yet */
        bool probe_open;      /* `probe` is initialised and its close callback has not run */
        pid_t pid;            /* exec: the command, until it is reaped; 0 otherwise */
        int pidfd;            /* exec: closed in the probe's close callback */
        char status[ORCH_HEALTH_STATUS_LINE_MAX];
        size_t status_len;

        enum orch_health_state state;
        uint32_t n_pass; /* consecutive */
        uint32_t n_fail; /* consecutive, counted ones only (outside the grace) */
        char last_result[ORCH_HEALTH_REASON_MAX];

        bool stopping;
        unsigned n_handles; /* initialised handles whose close callback has not run */
};

static void begin_attempt(struct orch_health_check *c);

static void format_into(char *buf, size_t size, const char *fmt, ...) _printf_(3, 4);
static void format_into(char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        /* Results are short; a long path is cut, which still names the check. */
        (void)vsnprintf(buf, size, fmt, ap);
        va_end(ap);
}

static void log_ctx(const struct orch_health_check *c, struct orch_log_ctx *ctx)
{
        *ctx = (struct orch_log_ctx){.instance = c->instance};
}

static void free_check(struct orch_health_check *c)
{
        free(c->path);
        free(c->request);
        orch_strv_free(c->argv);
        orch_strv_free(c->envp);
        free(c->workdir);
        free(c->groups);
        free(c->instance);
        free(c);
}

static void maybe_free(struct orch_health_check *c)
{
        if (c->stopping && c->n_handles == 0)
                free_check(c);
}

static void on_timer_close(uv_handle_t *h)
{
        struct orch_health_check *c = container_of((uv_timer_t *)h, struct orch_health_check, timer);

        c->n_handles--;
        maybe_free(c);
}

static void on_timer(uv_timer_t *t);

static void schedule_next(struct orch_health_check *c)
{
        uv_timer_start(&c->timer, on_timer, c->interval_ms, 0);
}

static void on_probe_close(uv_handle_t *h)
{
        struct orch_health_check *c = container_of(h, struct orch_health_check, probe);

        if (c->pidfd >= 0) {
                close(c->pidfd);
                c->pidfd = -1;
        }
        c->probe_open = false;
        c->n_handles--;
        if (c->stopping) {
                maybe_free(c);
                return;
        }
        /* The attempt's result was applied when it came; its handle is gone now, so the next
         * attempt can reuse it: `interval` from here. */
        if (!c->attempt_running)
                schedule_next(c);
}

static void close_probe(struct orch_health_check *c)
{
        if (c->probe_open && !uv_is_closing((uv_handle_t *)&c->probe))
                uv_close((uv_handle_t *)&c->probe, on_probe_close);
}

/* SIGKILL to the command's process group (when it made one: the group id is the command's pid,
 * which cannot be reused while we have not reaped it) and to the command itself. */
static void kill_command(struct orch_health_check *c)
{
        if (c->pid <= 1)
                return;
        if (kill(-c->pid, SIGKILL) < 0 && errno != ESRCH) {
                struct orch_log_ctx ctx;
                log_ctx(c, &ctx);
                orch_log_errno(ORCH_LOG_WARN, &ctx, -errno, "health check: kill process group %d",
                               (int)c->pid);
        }
        if (pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH) {
                struct orch_log_ctx ctx;
                log_ctx(c, &ctx);
                orch_log_errno(ORCH_LOG_WARN, &ctx, -errno, "health check: kill pid %d", (int)c->pid);
        }
}

/* Ends the attempt's handle: a connection is closed at once; a command still running is killed
 * and its handle closes when it has been reaped (on_pidfd). */
static void release_probe(struct orch_health_check *c)
{
        if (!c->probe_open)
                return;
        if (c->type == ORCH_HEALTH_EXEC && c->pid > 0) {
                kill_command(c);
                return;
        }
        close_probe(c);
}

static void apply_result(struct orch_health_check *c, bool pass, const char *result)
{
        enum orch_health_state old = c->state;
        struct orch_log_ctx ctx;

        log_ctx(c, &ctx);
        if (pass) {
                c->n_fail = 0;
                if (c->n_pass < UINT32_MAX)
                        c->n_pass++;
                if (c->n_pass >= c->healthy_threshold)
                        c->state = ORCH_HEALTH_PASSING;
        } else {
                c->n_pass = 0;
                if (orch_now_msec() < c->grace_end_ms) {
                        if (orch_log_get_level() >= ORCH_LOG_DEBUG)
                                orch_log(ORCH_LOG_DEBUG, &ctx,
                                         "health check failed within the grace period: %s", result);
                        return;
                }
                if (c->n_fail < UINT32_MAX)
                        c->n_fail++;
                if (c->n_fail >= c->unhealthy_threshold)
                        c->state = ORCH_HEALTH_FAILING;
        }
        if (orch_log_get_level() >= ORCH_LOG_DEBUG)
                orch_log(ORCH_LOG_DEBUG, &ctx, "health check %s: %s (%u passed, %u failed in a row)",
                         pass ? "passed" : "failed", result, c->n_pass, c->n_fail);
        if (c->state != old && c->cb)
                c->cb(c, old, c->state, result, c->userdata);
}

/* The attempt has its result. */
static void finish(struct orch_health_check *c, bool pass, const char *result)
{
        c->attempt_running = false;
        uv_timer_stop(&c->timer);
        release_probe(c);
        orch_strlcpy(c->last_result, result, sizeof c->last_result);
        apply_result(c, pass, c->last_result);
        /* The callback may have stopped the check. Without a handle to wait for, the next attempt
         * is due `interval` from now; otherwise on_probe_close schedules it. */
        if (!c->stopping && !c->probe_open)
                schedule_next(c);
}

static void finish_errno(struct orch_health_check *c, int r, const char *fmt, ...) _printf_(3, 4);
static void finish_errno(struct orch_health_check *c, int r, const char *fmt, ...)
{
        char what[ORCH_HEALTH_REASON_MAX], result[ORCH_HEALTH_REASON_MAX];
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        format_into(result, sizeof result, "%s: %s", what, strerror(-r));
        finish(c, false, result);
}

/* http */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
        struct orch_health_check *c = container_of(h, struct orch_health_check, probe);

        /* Never more than the status line buffer: whatever the server sends, this is all the
         * memory the answer gets. on_read fails the attempt before the buffer is full. */
        *buf = uv_buf_init(c->status + c->status_len, (unsigned)(sizeof c->status - c->status_len));
}

/* Parses "HTTP/d.d SSS[ reason]" strictly; returns the status or -EINVAL. */
static int parse_status_line(const char *line, size_t len)
{
        int status;

        if (len > 0 && line[len - 1] == '\r')
                len--;
        if (len < 12 || memcmp(line, "HTTP/", 5) != 0 || !isdigit((unsigned char)line[5]) ||
            line[6] != '.' || !isdigit((unsigned char)line[7]) || line[8] != ' ')
                return -EINVAL;
        for (size_t i = 9; i < 12; i++)
                if (!isdigit((unsigned char)line[i]))
                        return -EINVAL;
        if (len > 12 && line[12] != ' ')
                return -EINVAL;
        status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        if (status < 100 || status > 599)
                return -EINVAL;
        return status;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
        struct orch_health_check *c = container_of((uv_tcp_t *)s, struct orch_health_check, probe.tcp);
        char result[ORCH_HEALTH_REASON_MAX];
        const char *nl;
        int status;

        if (!c->attempt_running || nread == 0)
                return;
        if (nread == UV_EOF) {
                format_into(result, sizeof result, "GET %s: connection closed %s", c->path,
                            c->status_len > 0 ? "in the middle of the status line" : "without an answer");
                finish(c, false, result);
                return;
        }
        if (nread < 0) {
                finish_errno(c, (int)nread, "GET %s: read", c->path);
                return;
        }
        c->status_len += (size_t)nread;

        /* Reject a non-HTTP answer as soon as its first bytes show it, rather than waiting for a
         * newline that a binary protocol may never send. */
        if (memcmp(c->status, "HTTP/", MIN(c->status_len, (size_t)5)) != 0) {
                format_into(result, sizeof result, "GET %s: not an HTTP answer", c->path);
                finish(c, false, result);
                return;
        }
        nl = memchr(c->status, '\n', c->status_len);
        if (!nl) {
                if (c->status_len == sizeof c->status) {
                        format_into(result, sizeof result, "GET %s: status line longer than %zu bytes",
                                    c->path, sizeof c->status);
                        finish(c, false, result);
                }
                return;
        }
        status = parse_status_line(c->status, (size_t)(nl - c->status));
        if (status < 0) {
                format_into(result, sizeof result, "GET %s: not an HTTP answer", c->path);
                finish(c, false, result);
                return;
        }
        format_into(result, sizeof result, "GET %s: %d", c->path, status);
        finish(c, status >= 200 && status < 400, result);
}

static void on_connect(uv_connect_t *req, int status)
{
        struct orch_health_check *c = container_of(req, struct orch_health_check, connect_req);
        uv_os_fd_t fd;
        ssize_t n;
        int r;

        if (!c->attempt_running)
                return;
        if (status < 0) {
                finish_errno(c, status, "connect 127.0.0.1:%u", (unsigned)c->port);
                return;
        }
        if (c->type == ORCH_HEALTH_TCP) {
                char result[ORCH_HEALTH_REASON_MAX];
                format_into(result, sizeof result, "connect 127.0.0.1:%u: ok", (unsigned)c->port);
                finish(c, true, result);
                return;
        }
        /* One send() of our own rather than uv_write(): MSG_NOSIGNAL keeps a connection the
         * server already shut from raising SIGPIPE, whatever the agent's signal setup. The request
         * (at most a few KiB) always fits the empty send buffer of a new connection. A failure
         * is not the end: a server may answer (a 503 from an overloaded one, say) and close
         * before it read the request, so the answer decides, and without one the read ends in
         * EOF or the timeout does. */
        r = uv_fileno((uv_handle_t *)&c->probe.tcp, &fd);
        if (r < 0) {
                finish_errno(c, r, "GET %s: write", c->path);
                return;
        }
        n = send(fd, c->request, c->request_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0 && (size_t)n < c->request_len) {
                char result[ORCH_HEALTH_REASON_MAX];
                format_into(result, sizeof result, "GET %s: request cut short after %zd bytes", c->path, n);
                finish(c, false, result);
                return;
        }
        r = uv_read_start((uv_stream_t *)&c->probe.tcp, on_alloc, on_read);
        if (r < 0)
                finish_errno(c, r, "GET %s: read", c->path);
}

static void begin_connect(struct orch_health_check *c)
{
        struct sockaddr_in sa;
        int r;

        r = uv_tcp_init(c->loop, &c->probe.tcp);
        if (r < 0) {
                finish_errno(c, r, "connect 127.0.0.1:%u", (unsigned)c->port);
                return;
        }
        c->probe_open = true;
        c->n_handles++;
        uv_ip4_addr("127.0.0.1", c->port, &sa);
        r = uv_tcp_connect(&c->connect_req, &c->probe.tcp, (const struct sockaddr *)&sa, on_connect);
        if (r < 0)
                finish_errno(c, r, "connect 127.0.0.1:%u", (unsigned)c->port);
}

/* exec */

static void on_pidfd(uv_poll_t *p, int status, int events)
{
        struct orch_health_check *c = container_of(p, struct orch_health_check, probe.poll);
        char result[ORCH_HEALTH_REASON_MAX];
        siginfo_t si = {0};

        if (waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) < 0) {
                int r = -errno;
                struct orch_log_ctx ctx;
                log_ctx(c, &ctx);
                /* Not ours to reap any more (someone called waitpid(-1)): the process is gone. */
                orch_log_errno(ORCH_LOG_WARN, &ctx, r, "health check: waitid pid %d", (int)c->pid);
                c->pid = 0;
                uv_poll_stop(p);
                close_probe(c);
                if (c->attempt_running)
                        finish_errno(c, r, "%s: waitid", c->argv[0]);
                return;
        }
        if (si.si_pid == 0)
                return;
        c->pid = 0;
        uv_poll_stop(p);
        close_probe(c);
        if (!c->attempt_running)
                return; /* timed out or stopped: the result is already decided */
        if (si.si_code == CLD_EXITED) {
                format_into(result, sizeof result, "%s: exit status %d", c->argv[0], si.si_status);
                finish(c, si.si_status == 0, result);
        } else {
                const char *sig = orch_signal_to_string(si.si_status);
                if (sig)
                        format_into(result, sizeof result, "%s: killed by SIG%s", c->argv[0], sig);
                else
                        format_into(result, sizeof result, "%s: killed by signal %d", c->argv[0],
                                    si.si_status);
                finish(c, false, result);
        }
}

/* Without a way to learn of the exit on the loop, the command (which has only just started) is
 * killed and reaped right here; SIGKILL makes the wait short. */
static void reap_now(struct orch_health_check *c)
{
        siginfo_t si;

        kill_command(c);
        (void)waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED);
        c->pid = 0;
}

static void begin_exec(struct orch_health_check *c)
{
        static char *const empty_env[] = {NULL};
        struct orch_spawn_params sp = {
                .argv = c->argv,
                .envp = c->envp ? c->envp : empty_env,
                .workdir = c->workdir,
                .uid = c->uid,
                .gid = c->gid,
                .groups = c->groups,
                .n_groups = c->n_groups,
                .set_ids = c->set_ids,
                .no_new_privs = c->no_new_privs,
                .stdin_fd = -1,
                .stdout_fd = c->output_fd,
                .stderr_fd = c->output_fd,
                .cgroup = c->cgroup,
        };
        struct orch_spawn_result res;
        char reason[ORCH_HEALTH_REASON_MAX];
        int r;

        r = orch_spawn(&sp, &res, reason, sizeof reason);
        if (r < 0) {
                finish(c, false, reason);
                return;
        }
        c->pid = res.pid;
        c->pidfd = res.pidfd;
        r = uv_poll_init(c->loop, &c->probe.poll, c->pidfd);
        if (r < 0) {
                reap_now(c);
                close(c->pidfd);
                c->pidfd = -1;
                finish_errno(c, r, "%s: watching the process", c->argv[0]);
                return;
        }
        c->probe_open = true;
        c->n_handles++;
        r = uv_poll_start(&c->probe.poll, UV_READABLE, on_pidfd);
        if (r < 0) {
                reap_now(c);
                finish_errno(c, r, "%s: watching the process", c->argv[0]);
        }
}

static void begin_attempt(struct orch_health_check *c)
{
        c->attempt_running = true;
        c->status_len = 0;
        uv_timer_start(&c->timer, on_timer, c->timeout_ms, 0);
        if (c->type == ORCH_HEALTH_EXEC)
                begin_exec(c);
        else
                begin_connect(c);
}

static void on_timer(uv_timer_t *t)
{
        struct orch_health_check *c = container_of(t, struct orch_health_check, timer);
        char d[32], result[ORCH_HEALTH_REASON_MAX];

        if (!c->attempt_running) {
                begin_attempt(c);
                return;
        }
        if (orch_format_duration(c->timeout_ms, d, sizeof d) < 0)
                orch_strlcpy(d, "?", sizeof d);
        format_into(result, sizeof result, "timeout after %s", d);
        finish(c, false, result);
}

static bool path_valid(const char *p)
{
        size_t n = strlen(p);

        if (n == 0 || n > PATH_MAX_LEN || p[0] != '/')
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
                        return false;
        return true;
}

static int copy_params(struct orch_health_check *c, const struct orch_health_params *p)
{
        const struct orch_health *h = p->spec;

        if (p->instance && !(c->instance = strdup(p->instance)))
                return -ENOMEM;
        if (h->type == ORCH_HEALTH_EXEC) {
                if (!(c->argv = orch_strv_copy(h->command)))
                        return -ENOMEM;
                if (p->envp && !(c->envp = orch_strv_copy(p->envp)))
                        return -ENOMEM;
                if (p->workdir && !(c->workdir = strdup(p->workdir)))
                        return -ENOMEM;
                if (p->n_groups > 0) {
                        c->groups = calloc(p->n_groups, sizeof(gid_t));
                        if (!c->groups)
                                return -ENOMEM;
                        memcpy(c->groups, p->groups, p->n_groups * sizeof(gid_t));
                        c->n_groups = p->n_groups;
                }
                return 0;
        }
        c->path = strdup(h->type == ORCH_HEALTH_HTTP && h->path ? h->path : "/");
        if (!c->path)
                return -ENOMEM;
        if (h->type == ORCH_HEALTH_HTTP) {
                /* Connection: close, so the server ends the exchange and nothing lingers; only the
                 * status line is read, the rest is discarded with the connection. */
                c->request = orch_strdup_printf("GET %s HTTP/1.1\r\n"
                                                "Host: 127.0.0.1:%u\r\n"
                                                "User-Agent: orch-health\r\n"
                                                "Accept: */*\r\n"
                                                "Connection: close\r\n"
                                                "\r\n",
                                                c->path, (unsigned)c->port);
                if (!c->request)
                        return -ENOMEM;
                c->request_len = strlen(c->request);
        }
        return 0;
}

static int validate(const struct orch_health_params *p, const struct orch_log_ctx *ctx)
{
        const struct orch_health *h = p->spec;

        if (!h || h->type <= ORCH_HEALTH_NONE || h->type >= _ORCH_HEALTH_TYPE_MAX)
                return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL,
                                      "health check: type %d is not one of http, tcp, exec",
                                      h ? (int)h->type : -1);
        if (h->interval_ms == 0 || h->interval_ms > ORCH_DURATION_MAX_MS)
                return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL,
                                      "health check: bad interval %" PRIu64 "ms", h->interval_ms);
        if (h->timeout_ms == 0 || h->timeout_ms > ORCH_DURATION_MAX_MS)
                return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL,
                                      "health check: bad timeout %" PRIu64 "ms", h->timeout_ms);
        if (h->grace_ms > ORCH_DURATION_MAX_MS)
                return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL, "health check: bad grace %" PRIu64 "ms",
                                      h->grace_ms);
        if (h->type == ORCH_HEALTH_EXEC) {
                if (!h->command || !h->command[0])
                        return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL,
                                              "health check: exec without a command");
                return 0;
        }
        if (p->port == 0)
                return orch_log_errno(ORCH_LOG_ERROR, ctx, -EINVAL, "health check: %s check without a port",
                                      orch_health_type_to_string(h->type));
        if (h->type == ORCH_HEALTH_HTTP && h->path && !path_valid(h->path))
                return orch_log_errno(
                        ORCH_LOG_ERROR, ctx, -EINVAL,
                        "health check: path \"%.64s\" is not a request target (\"/...\", printable, "
                        "no spaces, at most %d bytes)",
                        h->path, PATH_MAX_LEN);
        return 0;
}

int orch_health_start(uv_loop_t *loop, const struct orch_health_params *p, struct orch_health_check **ret)
{
        struct orch_log_ctx ctx = {.instance = p->instance};
        const struct orch_health *h = p->spec;
        struct orch_health_check *c;
        uint64_t now_real, grace_left = 0;
        int r;

        r = validate(p, &ctx);
        if (r < 0)
                return r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->loop = loop;
        c->type = h->type;
        c->interval_ms = h->interval_ms;
        c->timeout_ms = h->timeout_ms;
        c->unhealthy_threshold = MAX(h->unhealthy_threshold, 1u);
        c->healthy_threshold = MAX(h->healthy_threshold, 1u);
        c->port = p->port;
        c->uid = p->uid;
        c->gid = p->gid;
        c->set_ids = p->set_ids;
        c->no_new_privs = p->no_new_privs;
        c->cgroup = p->cgroup;
        c->output_fd = p->output_fd;
        c->pidfd = -1;
        c->cb = p->cb;
        c->userdata = p->userdata;
        c->state = ORCH_HEALTH_UNKNOWN;

        r = copy_params(c, p);
        if (r < 0) {
                free_check(c);
                return r;
        }

        /* The grace is measured from the instance's start in wall-clock time (what a re-adopted
         * instance has on record), converted once to the monotonic clock so that a clock step
         * later on neither stretches nor cuts it. */
        now_real = orch_realtime_msec();
        if (p->started_at_ms == 0)
                grace_left = h->grace_ms;
        else if (p->started_at_ms + h->grace_ms > now_real)
                grace_left = p->started_at_ms + h->grace_ms - now_real;
        c->grace_end_ms = orch_now_msec() + MIN(grace_left, h->grace_ms);

        r = uv_timer_init(loop, &c->timer);
        if (r < 0) {
                free_check(c);
                return r;
        }
        c->n_handles = 1;
        uv_timer_start(&c->timer, on_timer, 0, 0);
        *ret = c;
        return 0;
}

void orch_health_stop(struct orch_health_check *c)
{
        if (!c || c->stopping)
                return;
        c->stopping = true;
        c->attempt_running = false;
        uv_close((uv_handle_t *)&c->timer, on_timer_close);
        release_probe(c);
}

enum orch_health_state orch_health_get_state(const struct orch_health_check *c)
{
        return c->state;
}

const char *orch_health_get_last_result(const struct orch_health_check *c)
{
        return c->last_result;
}
