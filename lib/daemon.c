/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>
#include <sys/resource.h>

#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "util.h"
#include "banned.h"

long orch_daemon_raise_nofile(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -errno;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        return -errno;
        }
        return rl.rlim_cur == RLIM_INFINITY ? (long)INT32_MAX : (long)rl.rlim_cur;
}

static bool under_systemd(void)
{
        return getenv("NOTIFY_SOCKET") != NULL;
}

void orch_daemon_ready(const char *status)
{
        if (under_systemd())
                sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "ready");
}

void orch_daemon_status(const char *fmt, ...)
{
        struct orch_buf b = {0};
        va_list ap;

        if (!under_systemd())
                return;
        orch_buf_puts(&b, "STATUS=");
        va_start(ap, fmt);
        orch_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        if (!b.oom)
                sd_notify(0, b.data);
        orch_buf_release(&b);
}

void orch_daemon_stopping(const char *status)
{
        if (under_systemd())
                sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status ? status : "stopping");
}

static void watchdog_cb(uv_timer_t *t)
{
        sd_notify(0, "WATCHDOG=1");
}

int orch_daemon_watchdog_start(uv_loop_t *loop, struct orch_daemon_watchdog *w)
{
        uint64_t usec = 0;
        int r;

        w->active = false;
        r = sd_watchdog_enabled(0, &usec);
        if (r <= 0 || usec == 0)
                return r < 0 ? r : 0;
        r = uv_timer_init(loop, &w->timer);
        if (r < 0)
                return r;
        /* Half the interval, at least every millisecond of resolution uv timers have. */
        uv_timer_start(&w->timer, watchdog_cb, 0, MAX(usec / 2 / USEC_PER_MSEC, (uint64_t)1));
        uv_unref((uv_handle_t *)&w->timer);
        w->active = true;
        return 1;
}

void orch_daemon_watchdog_stop(struct orch_daemon_watchdog *w)
{
        if (!w->active)
                return;
        uv_timer_stop(&w->timer);
        uv_close((uv_handle_t *)&w->timer, NULL);
        w->active = false;
}
