/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_uncordon;

static int uncordon_run(int argc, char **argv)
{
        static const struct option options[] = {
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_(freep) char *name = NULL, *target = NULL;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_uncordon, argc, argv, ":", options)) >= 0)
                ;
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_uncordon, "no node given");
        if (optind + 1 < argc)
                return orch_cli_usage_error(&orch_cmd_uncordon, "unexpected argument '%s'",
                                            argv[optind + 1]);

        name = orch_client_escape(argv[optind]);
        if (!name || !(target = orch_strdup_printf("/v1/nodes/%s/uncordon", name)))
                return orch_cli_fail("out of memory");
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (orch_client_json(client, "POST", target, NULL, NULL, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        printf("%s uncordoned\n", argv[optind]);
        return ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_uncordon = {
        .name = "uncordon",
        .usage = "uncordon NODE",
        .summary = "Make a drained node schedulable again.",
        .help = "Options:\n"
                "  --addr URL  orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "Instances that moved away stay where they are now; new placements may use the node.\n"
                "\n"
                "Example:\n"
                "  orch uncordon node-2\n",
        .run = uncordon_run,
};
