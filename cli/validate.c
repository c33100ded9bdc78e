/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <getopt.h>

#include "cli.h"
#include "manifest.h"
#include "util.h"
#include "banned.h"

static int validate_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"filename", required_argument, NULL, 'f'},
                {},
        };
        _cleanup_(orch_strv_freep) char **paths = NULL;
        _cleanup_(orch_strv_freep) char **files = NULL;
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = NULL;
        struct orch_diags diags = {0};
        bool failed = false;
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+f:", options, NULL)) >= 0) {
                switch (c) {
                case 'f':
                        if (orch_strv_push(&paths, optarg) < 0)
                                return orch_cli_fail("out of memory");
                        break;
                case '?':
                        if (optopt)
                                return orch_cli_usage_error(&orch_cmd_validate, "option -%c needs a value",
                                                            optopt);
                        return orch_cli_usage_error(&orch_cmd_validate, "unknown option '%s'",
                                                    argv[optind - 1]);
                }
        }
        /* `orch validate PATH` is accepted as well as `-f PATH`. */
        for (; optind < argc; optind++)
                if (orch_strv_push(&paths, argv[optind]) < 0)
                        return orch_cli_fail("out of memory");
        if (!paths)
                return orch_cli_usage_error(&orch_cmd_validate, "no manifest given");

        m = calloc(1, sizeof *m);
        if (!m)
                return orch_cli_fail("out of memory");
        if (orch_manifest_expand_paths(paths, orch_strv_length(paths), &files, &diags) < 0) {
                orch_diags_print(&diags, stderr);
                orch_diags_release(&diags);
                return ORCH_EXIT_FAILURE;
        }
        for (size_t i = 0; files[i]; i++) {
                size_t before = m->n_services;
                struct orch_diags fd = {0};

                if (orch_manifest_parse_file(m, files[i], &fd) < 0 || fd.n > 0) {
                        orch_diags_print(&fd, stderr);
                        failed = true;
                } else {
                        size_t n = m->n_services - before;
                        printf("%s: %zu service%s OK\n", files[i], n, n == 1 ? "" : "s");
                }
                orch_diags_release(&fd);
        }
        if (orch_manifest_check_duplicates(m, &diags) < 0 || diags.n > 0) {
                orch_diags_print(&diags, stderr);
                failed = true;
        }
        orch_diags_release(&diags);
        return failed ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_validate = {
        .name = "validate",
        .usage = "validate -f PATH...",
        .summary = "Check manifests locally, without a server.",
        .help = "Options:\n"
                "  -f, --filename PATH  a manifest file, or a directory of *.yaml/*.yml files\n"
                "                       (repeatable; bare PATH arguments work too)\n"
                "\n"
                "Prints 'FILE: N services OK' per file, or every error as\n"
                "FILE:LINE:COLUMN: error: MESSAGE. Exit 0 when all are valid, 1 otherwise.\n",
        .run = validate_run,
};
