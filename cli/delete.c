/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "manifest.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_delete;

/* DELETE one service: "NAME deleted", or the server's reason. */
static int delete_one(struct orch_client *client, const char *name, bool ignore_not_found)
{
        _cleanup_(freep) char *escaped = orch_client_escape(name), *target = NULL;
        _cleanup_(orch_http_response_release) struct orch_http_response resp = {0};
        int r;

        if (!escaped || !(target = orch_strdup_printf("/v1/services/%s", escaped))) {
                orch_cli_fail("out of memory");
                return -ENOMEM;
        }
        r = orch_client_request(client, "DELETE", target, NULL, NULL, 0, &resp);
        if (r < 0)
                return r;
        if (resp.status == 404 && ignore_not_found)
                return 0;
        if (resp.status / 100 != 2)
                return orch_client_print_error(&resp);
        printf("%s deleted\n", name);
        fflush(stdout);
        return 0;
}

static int delete_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"filename", required_argument, NULL, 'f'},
                {"ignore-not-found", no_argument, NULL, 'i'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_strv_freep) char **paths = NULL, **names = NULL;
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = NULL;
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        bool ignore_not_found = false, failed = false;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_delete, argc, argv, ":f:", options)) >= 0) {
                switch (c) {
                case 'f':
                        if (orch_strv_push(&paths, optarg) < 0)
                                return orch_cli_fail("out of memory");
                        break;
                case 'i':
                        ignore_not_found = true;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        /* -f PATH... as apply takes it: with -f, every argument is a path (what is not a readable
         * manifest is reported by the loader, and nothing is deleted) */
        for (; paths && optind < argc; optind++)
                if (orch_strv_push(&paths, argv[optind]) < 0)
                        return orch_cli_fail("out of memory");
        if (!paths && optind >= argc)
                return orch_cli_usage_error(&orch_cmd_delete, "no service given (SERVICE... or -f PATH)");

        if (paths) {
                /* the names come from valid manifests only: a typo must not delete something else */
                if (orch_cli_load_manifests(paths, &m) < 0)
                        return ORCH_EXIT_FAILURE;
                if (m->n_services == 0)
                        return orch_cli_fail("the manifests hold no services: nothing to delete");
                for (size_t i = 0; i < m->n_services; i++)
                        if (orch_strv_push(&names, m->services[i]->name) < 0)
                                return orch_cli_fail("out of memory");
        } else
                for (; optind < argc; optind++)
                        if (!orch_strv_contains(names, argv[optind]) &&
                            orch_strv_push(&names, argv[optind]) < 0)
                                return orch_cli_fail("out of memory");

        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        /* every name is tried, like rm: one missing service does not keep the others */
        for (char **n = names; *n; n++) {
                r = delete_one(client, *n, ignore_not_found);
                if (r < 0)
                        failed = true;
                /* an unreachable server or a refused token will refuse the rest as well */
                if (r < 0 && r != -ENOENT && r != -EBUSY)
                        break;
        }
        return failed ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_delete = {
        .name = "delete",
        .usage = "delete SERVICE... | -f PATH... [--ignore-not-found]",
        .summary = "Delete services (their instances are stopped first).",
        .help = "Options:\n"
                "  -f, --filename PATH   delete the services named in these manifests (files or\n"
                "                        directories, '-' for standard input; repeatable)\n"
                "      --ignore-not-found  a service that does not exist is not an error\n"
                "      --addr URL        orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "Prints 'NAME deleted' per service. Every name is tried; the exit status is 1 when\n"
                "any of them failed (a missing service prints orchd's reason).\n"
                "\n"
                "Examples:\n"
                "  orch delete web api\n"
                "  orch delete -f manifests/\n",
        .run = delete_run,
};
