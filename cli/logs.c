/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "cli.h"
#include "client.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_logs;

/* orchd reports a log stream that broke after the answer began (the agent went away) in the text
 * itself, as a line of its own (orchd/api.c, log_end). It goes to stderr and makes the exit 1. */
#define ENDED_MARKER     "orch: log stream ended: "
#define ENDED_MARKER_LEN (sizeof ENDED_MARKER - 1)
#define ENDED_REASON_MAX 1024

struct logs {
        bool at_line_start;
        size_t held;   /* bytes of the marker matched at a line start, not yet written */
        bool in_error; /* the marker matched: the rest of the line is the reason */
        struct orch_buf reason;
};

static int log_data(const char *data, size_t len, void *userdata)
{
        struct logs *l = userdata;
        size_t i = 0;

        while (i < len) {
                if (l->in_error) {
                        const char *nl = memchr(data + i, '\n', len - i);
                        size_t n = nl ? (size_t)(nl - (data + i)) : len - i;

                        if (l->reason.len + n <= ENDED_REASON_MAX)
                                orch_buf_put(&l->reason, data + i, n);
                        i += nl ? n + 1 : n;
                        continue;
                }
                if (l->at_line_start) {
                        size_t n = MIN(ENDED_MARKER_LEN - l->held, len - i);

                        if (memcmp(data + i, ENDED_MARKER + l->held, n) == 0) {
                                l->held += n;
                                i += n;
                                if (l->held == ENDED_MARKER_LEN)
                                        l->in_error = true;
                                continue;
                        }
                        /* not the marker after all: what was held back is ordinary output */
                        fwrite(ENDED_MARKER, 1, l->held, stdout);
                        l->held = 0;
                        l->at_line_start = false;
                        continue;
                }
                {
                        const char *nl = memchr(data + i, '\n', len - i);
                        size_t n = nl ? (size_t)(nl - (data + i)) + 1 : len - i;

                        fwrite(data + i, 1, n, stdout);
                        i += n;
                        l->at_line_start = nl != NULL;
                }
        }
        /* followers see each piece as it comes; Ctrl-C then loses nothing */
        fflush(stdout);
        return 0;
}

static int logs_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"follow", no_argument, NULL, 'f'},
                {"tail", required_argument, NULL, 'n'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_(freep) char *name = NULL, *target = NULL;
        struct logs l = {.at_line_start = true};
        struct orch_buf t = {0};
        bool follow = false, tail = false;
        uint64_t n_tail = 0;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_logs, argc, argv, ":fn:", options)) >= 0) {
                switch (c) {
                case 'f':
                        follow = true;
                        break;
                case 'n':
                        if (orch_parse_u64(optarg, &n_tail) < 0)
                                return orch_cli_usage_error(&orch_cmd_logs,
                                                            "--tail: expected a number of lines, not '%s'",
                                                            optarg);
                        tail = true;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_logs, "no service or instance given");
        if (optind + 1 < argc)
                return orch_cli_usage_error(&orch_cmd_logs, "unexpected argument '%s'", argv[optind + 1]);

        name = orch_client_escape(argv[optind]);
        if (!name)
                return orch_cli_fail("out of memory");
        orch_buf_printf(&t, "/v1/logs/%s", name);
        if (follow)
                orch_buf_puts(&t, "?follow=1");
        if (tail)
                orch_buf_printf(&t, "%stail=%" PRIu64, follow ? "&" : "?", n_tail);
        if (t.oom) {
                orch_buf_release(&t);
                return orch_cli_fail("out of memory");
        }
        target = orch_buf_steal(&t);
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (follow) {
                orch_client_no_read_timeout(client);
                orch_client_exit_on_interrupt();
        }
        r = orch_client_stream(client, target, 0, log_data, &l);
        if (l.held > 0 && !l.in_error) {
                fwrite(ENDED_MARKER, 1, l.held, stdout);
                fflush(stdout);
        }
        if (l.in_error) {
                fprintf(stderr, "orch: log stream ended: %s\n", l.reason.data ? l.reason.data : "");
                r = -EPIPE;
        }
        orch_buf_release(&l.reason);
        return r < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_logs = {
        .name = "logs",
        .usage = "logs SERVICE|INSTANCE [-f] [--tail N]",
        .summary = "Print the output of an instance (or of a service's first instance).",
        .help = "Options:\n"
                "  -f, --follow      keep printing new output until interrupted (Ctrl-C ends it,\n"
                "                    exit status 0)\n"
                "  -n, --tail N      start with the last N lines only\n"
                "      --addr URL    orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "orchd fetches the log from the agent of the instance's node; stdout and stderr of the\n"
                "instance are interleaved as the agent captured them. A service name shows its first\n"
                "live, placed instance; `orch get instances --service NAME` lists the others.\n"
                "\n"
                "Examples:\n"
                "  orch logs web --tail 20\n"
                "  orch logs web-3f9a1c2e -f\n",
        .run = logs_run,
};
