/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_drain;

#define POLL_MSEC 1000U

/* Instances that still occupy the node: placed there and not yet ended. Terminal ones (exited,
 * failed) stay where they ended and lost ones are gone already; neither keeps a drain waiting. */
static int count_remaining(struct orch_client *client, const char *target, size_t *ret)
{
        _cleanup_json_ json_t *list = NULL;
        json_t *inst;
        size_t i, n = 0;

        if (orch_client_json(client, "GET", target, NULL, &list, NULL) < 0)
                return -EIO;
        json_array_foreach (list, i, inst) {
                const char *state = strempty(orch_json_str(inst, "state"));
                if (streq(state, "pending") || streq(state, "starting") || streq(state, "running") ||
                    streq(state, "stopping"))
                        n++;
        }
        *ret = n;
        return 0;
}

static int wait_drained(struct orch_client *client, const char *node, uint64_t timeout_msec)
{
        _cleanup_(freep) char *escaped = orch_client_escape(node), *target = NULL;
        uint64_t deadline = timeout_msec ? orch_now_msec() + timeout_msec : 0;
        size_t last = SIZE_MAX;

        if (!escaped || !(target = orch_strdup_printf("/v1/instances?node=%s", escaped)))
                return orch_cli_fail("out of memory");
        for (;;) {
                size_t n;

                if (count_remaining(client, target, &n) < 0)
                        return ORCH_EXIT_FAILURE;
                if (n == 0) {
                        printf("%s drained\n", node);
                        return ORCH_EXIT_OK;
                }
                if (n != last) {
                        printf("waiting for %zu instance%s to move off %s\n", n, n == 1 ? "" : "s", node);
                        fflush(stdout);
                        last = n;
                }
                if (deadline && orch_now_msec() >= deadline)
                        return orch_cli_fail("timed out: %zu instance%s still on %s", n, n == 1 ? "" : "s",
                                             node);
                orch_cli_sleep_msec(POLL_MSEC);
        }
}

static int drain_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"wait", no_argument, NULL, 'w'},
                {"timeout", required_argument, NULL, 't'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_(freep) char *name = NULL, *target = NULL;
        uint64_t timeout_msec = 0;
        bool wait = false;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_drain, argc, argv, ":", options)) >= 0) {
                switch (c) {
                case 'w':
                        wait = true;
                        break;
                case 't':
                        if (orch_cli_parse_timeout(&orch_cmd_drain, optarg, &timeout_msec) < 0)
                                return ORCH_EXIT_USAGE;
                        wait = true;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_drain, "no node given");
        if (optind + 1 < argc)
                return orch_cli_usage_error(&orch_cmd_drain, "unexpected argument '%s'", argv[optind + 1]);

        name = orch_client_escape(argv[optind]);
        if (!name || !(target = orch_strdup_printf("/v1/nodes/%s/drain", name)))
                return orch_cli_fail("out of memory");
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (orch_client_json(client, "POST", target, NULL, NULL, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        printf("%s draining\n", argv[optind]);
        fflush(stdout);
        if (!wait)
                return ORCH_EXIT_OK;
        return wait_drained(client, argv[optind], timeout_msec);
}

const struct orch_cmd orch_cmd_drain = {
        .name = "drain",
        .usage = "drain NODE [--wait] [--timeout DURATION]",
        .summary = "Move the instances of a node elsewhere and keep new ones off it.",
        .help = "Options:\n"
                "      --wait              wait until no instance runs on the node any more\n"
                "      --timeout DURATION  with --wait: give up after this long (exit 1), e.g. 5m\n"
                "      --addr URL          orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "The node shows as 'draining' in `orch get nodes`. Its instances are replaced on other\n"
                "nodes under each service's update policy (max_unavailable), as in a rollout. The\n"
                "node stays unschedulable until `orch uncordon NODE`.\n"
                "\n"
                "Example:\n"
                "  orch drain node-2 --wait --timeout 10m\n",
        .run = drain_run,
};
