/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_scale;

/* orchd refuses more (orchd/api.c); saying so here spares a round trip. */
#define REPLICAS_MAX 100000U

static int scale_run(int argc, char **argv)
{
        static const struct option options[] = {
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        _cleanup_json_ json_t *body = NULL, *answer = NULL;
        _cleanup_(freep) char *name = NULL, *target = NULL;
        uint32_t replicas;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_scale, argc, argv, ":", options)) >= 0)
                ;
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (argc - optind < 2)
                return orch_cli_usage_error(&orch_cmd_scale, argc - optind == 0 ? "no service given"
                                                                                : "no replica count given");
        if (argc - optind > 2)
                return orch_cli_usage_error(&orch_cmd_scale, "unexpected argument '%s'", argv[optind + 2]);
        if (orch_parse_u32(argv[optind + 1], &replicas) < 0 || replicas > REPLICAS_MAX)
                return orch_cli_usage_error(&orch_cmd_scale,
                                            "REPLICAS: expected an integer from 0 to %u, not '%s'",
                                            REPLICAS_MAX, argv[optind + 1]);

        name = orch_client_escape(argv[optind]);
        if (!name || !(target = orch_strdup_printf("/v1/services/%s/scale", name)))
                return orch_cli_fail("out of memory");
        body = json_pack("{s:I}", "replicas", (json_int_t)replicas);
        if (!body)
                return orch_cli_fail("out of memory");
        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (orch_client_json(client, "POST", target, body, &answer, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        printf("%s scaled to %u replica%s\n", argv[optind], replicas, replicas == 1 ? "" : "s");
        return ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_scale = {
        .name = "scale",
        .usage = "scale SERVICE REPLICAS",
        .summary = "Set how many instances of a service run.",
        .help = "Options:\n"
                "  --addr URL  orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "REPLICAS is an integer from 0 to 100000. Scaling does not change the revision:\n"
                "instances are added or stopped (least healthy, then newest first), none replaced.\n"
                "The next `orch apply` of the manifest sets the manifest's count again.\n"
                "\n"
                "Example:\n"
                "  orch scale web 5\n",
        .run = scale_run,
};
