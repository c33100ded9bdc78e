/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <jansson.h>
#include <uv.h>
#include <yaml.h>

#include "cli.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_version;

static int version_run(int argc, char **argv)
{
        if (argc > 1)
                return orch_cli_usage_error(&orch_cmd_version, "unexpected argument '%s'", argv[1]);
        printf("orch %s\n", ORCH_VERSION);
        printf("  libuv %s, libyaml %s, jansson %s\n", uv_version_string(), yaml_get_version_string(),
               JANSSON_VERSION);
        return ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_version = {
        .name = "version",
        .usage = "version",
        .summary = "Print the version of orch and of the libraries it was built with.",
        .run = version_run,
};
