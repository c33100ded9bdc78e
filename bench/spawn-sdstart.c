/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include <systemd/sd-bus.h>

#include "util.h"
#include "banned.h"

/*
 * systemd's best case for bench/spawn.sh: N transient units started with StartTransientUnit over
 * one direct connection to a manager's private socket, INFLIGHT calls outstanding at a time (what
 * `systemd-run` does one process per unit, without the process).
 *
 *   spawn-sdstart ADDRESS N INFLIGHT PREFIX [--default-restart-sec] [--accounting] CMD [ARG...]
 *
 * Units are PREFIX-<i>.service, Type=exec (the start job is done once the command was exec'd),
 * Restart=always, RestartSec=0 (--default-restart-sec leaves the manager's default),
 * StartLimitIntervalSec=0 (otherwise the start rate limit ends a restart benchmark).
 * --accounting adds CPU, memory and tasks accounting, as orch's systemd driver asks for: the
 * manager then makes the unit's cgroup in those controllers' hierarchies too (v1). "{}" in an
 * ARG becomes the unit's name without ".service". Returns once every start job has been removed,
 * and prints "started N done D failed F in MS ms at NSEC": from the first call to the last
 * JobRemoved, and that last moment on CLOCK_MONOTONIC (bench/stamp's clock).
 */

struct run {
        sd_bus *bus;
        const char *prefix;
        uint32_t n, next, answered, done, failed, inflight;
        bool default_restart, accounting;
        char **cmd;
        int n_cmd;
        uint64_t t0;
        int error;
};

static int start_one(struct run *run);

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct run *run = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        run->inflight--;
        run->answered++;
        if (e) {
                fprintf(stderr, "spawn-sdstart: StartTransientUnit: %s\n", e->message);
                run->failed++;
        }
        return run->next < run->n ? start_one(run) : 0;
}

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        struct run *run = userdata;
        const char *job, *unit, *result;
        size_t plen = strlen(run->prefix);
        uint32_t id;
        int r = sd_bus_message_read(m, "uoss", &id, &job, &unit, &result);

        if (r < 0 || strncmp(unit, run->prefix, plen) != 0 || unit[plen] != '-')
                return 0;
        if (streq(result, "done"))
                run->done++;
        else {
                fprintf(stderr, "spawn-sdstart: %s: start job %s\n", unit, result);
                run->failed++;
        }
        return 0;
}

static int start_one(struct run *run)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        char name[256], unit[264], desc[64];
        uint32_t i = run->next++;
        int r;

        orch_snprintf(name, sizeof name, "%s-%" PRIu32, run->prefix, i);
        orch_snprintf(unit, sizeof unit, "%s.service", name);
        orch_snprintf(desc, sizeof desc, "bench/spawn %" PRIu32, i);
        r = sd_bus_message_new_method_call(run->bus, &m, "org.freedesktop.systemd1",
                                           "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                           "StartTransientUnit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", unit, "fail");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r >= 0)
                r = sd_bus_message_append(m, "(sv)(sv)(sv)(sv)", "Description", "s", desc, "Type", "s",
                                          "exec", "Restart", "s", "always", "StartLimitIntervalUSec", "t",
                                          (uint64_t)0);
        if (r >= 0 && !run->default_restart)
                r = sd_bus_message_append(m, "(sv)", "RestartUSec", "t", (uint64_t)0);
        if (r >= 0 && run->accounting)
                r = sd_bus_message_append(m, "(sv)(sv)(sv)", "CPUAccounting", "b", 1, "MemoryAccounting",
                                          "b", 1, "TasksAccounting", "b", 1);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'r', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", "ExecStart");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "a(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sasb)");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'r', "sasb");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", run->cmd[0]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "s");
        for (int k = 0; r >= 0 && k < run->n_cmd; k++)
                r = sd_bus_message_append(m, "s", streq(run->cmd[k], "{}") ? name : run->cmd[k]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "b", 0);
        for (int k = 0; r >= 0 && k < 5; k++)
                r = sd_bus_message_close_container(m); /* r, a, v, r, a */
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r >= 0)
                r = sd_bus_call_async(run->bus, NULL, m, on_reply, run, 0);
        if (r < 0) {
                fprintf(stderr, "spawn-sdstart: cannot start %s: %s\n", name, strerror(-r));
                run->error = r;
                return r;
        }
        run->inflight++;
        return 0;
}

int main(int argc, char **argv)
{
        struct run run = {0};
        uint32_t inflight;
        uint64_t t1;
        int argi = 5, r;

        if (argc < 6 || orch_parse_u32(argv[2], &run.n) < 0 || orch_parse_u32(argv[3], &inflight) < 0 ||
            inflight == 0) {
                fprintf(stderr, "usage: spawn-sdstart ADDRESS N INFLIGHT PREFIX [--default-restart-sec] "
                                "[--accounting] CMD [ARG...]\n");
                return 2;
        }
        run.prefix = argv[4];
        for (; argi < argc && argv[argi][0] == '-'; argi++)
                if (streq(argv[argi], "--default-restart-sec"))
                        run.default_restart = true;
                else if (streq(argv[argi], "--accounting"))
                        run.accounting = true;
                else {
                        fprintf(stderr, "spawn-sdstart: unknown option %s\n", argv[argi]);
                        return 2;
                }
        if (argi >= argc) {
                fprintf(stderr, "spawn-sdstart: no command\n");
                return 2;
        }
        run.cmd = argv + argi;
        run.n_cmd = argc - argi;

        r = sd_bus_new(&run.bus);
        if (r >= 0)
                r = sd_bus_set_address(run.bus, argv[1]);
        if (r >= 0)
                r = sd_bus_start(run.bus);
        if (r >= 0)
                r = sd_bus_match_signal(run.bus, NULL, NULL, "/org/freedesktop/systemd1",
                                        "org.freedesktop.systemd1.Manager", "JobRemoved", on_job_removed,
                                        &run);
        if (r >= 0)
                r = sd_bus_call_method(run.bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                       "org.freedesktop.systemd1.Manager", "Subscribe", NULL, NULL, "");
        if (r < 0) {
                fprintf(stderr, "spawn-sdstart: %s: %s\n", argv[1], strerror(-r));
                return 1;
        }

        run.t0 = orch_now_usec();
        while (run.next < run.n && run.inflight < inflight && start_one(&run) >= 0)
                ;
        while (run.error == 0 && run.done + run.failed < run.n) {
                r = sd_bus_process(run.bus, NULL);
                if (r < 0) {
                        fprintf(stderr, "spawn-sdstart: %s\n", strerror(-r));
                        return 1;
                }
                if (r == 0 && sd_bus_wait(run.bus, UINT64_MAX) < 0)
                        break;
        }
        t1 = orch_now_usec();
        printf("started %" PRIu32 " done %" PRIu32 " failed %" PRIu32 " in %.1f ms at %" PRIu64 "\n", run.n,
               run.done, run.failed, (double)(t1 - run.t0) / 1000.0, t1 * 1000);
        sd_bus_flush_close_unref(run.bus);
        return run.failed || run.error ? 1 : 0;
}
