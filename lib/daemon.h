/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Being a good citizen of systemd (sd_notify): READY=1 once the daemon really
 * serves, STATUS= lines a person reads in `systemctl status`, WATCHDOG=1 from
 * the event loop (so a stuck loop is noticed, not just a dead process) and
 * STOPPING=1 on the way out. Outside systemd (no NOTIFY_SOCKET) every call is
 * a cheap no-op.
 */

#include <uv.h>

#include "macro.h"

struct orch_daemon_watchdog {
        uv_timer_t timer;
        bool active;
};

/* Raises the soft RLIMIT_NOFILE to the hard limit: a daemon holding thousands of connections or
 * instances (two descriptors each) must not stop at the common soft default of 1024. Returns the
 * new soft limit. */
long orch_daemon_raise_nofile(void);

/* Sends READY=1 and a STATUS= line. */
void orch_daemon_ready(const char *status);
_printf_(1, 2) void orch_daemon_status(const char *fmt, ...);
void orch_daemon_stopping(const char *status);
/* Starts WATCHDOG=1 pings at half the interval systemd asked for (WATCHDOG_USEC), if any. The
 * timer is unreferenced so it never keeps the loop alive by itself. */
int orch_daemon_watchdog_start(uv_loop_t *loop, struct orch_daemon_watchdog *w);
void orch_daemon_watchdog_stop(struct orch_daemon_watchdog *w);
