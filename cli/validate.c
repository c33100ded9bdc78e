/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <getopt.h>

#include "cli.h"
#include "manifest.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_validate;

static void print_diag(const struct orch_diag *d)
{
        _cleanup_(freep) char *line = orch_diag_format(d);

        if (line)
                fprintf(stderr, "%s\n", line);
}

static int validate_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"filename", required_argument, NULL, 'f'},
                {},
        };
        _cleanup_(orch_strv_freep) char **paths = NULL;
        _cleanup_(orch_strv_freep) char **files = NULL;
        _cleanup_(orch_manifest_freep) struct orch_manifest *m = NULL;
        _cleanup_(freep) struct orch_diags *per_file = NULL;
        _cleanup_(freep) size_t *counts = NULL;
        _cleanup_(freep) bool *printed = NULL;
        struct orch_diags diags = {0};
        bool failed = false;
        size_t n_files;
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
        n_files = orch_strv_length(files);
        per_file = calloc(n_files + 1, sizeof *per_file);
        counts = calloc(n_files + 1, sizeof *counts);
        if (!per_file || !counts)
                return orch_cli_fail("out of memory");
        for (size_t i = 0; i < n_files; i++) {
                size_t before = m->n_services;

                if (orch_manifest_parse_file(m, files[i], &per_file[i]) < 0 || per_file[i].n > 0)
                        failed = true;
                counts[i] = m->n_services - before;
        }
        /* Duplicates across files are reported with the file that repeats the name, so a file is
         * either "OK" or followed by its errors, never both. */
        if (orch_manifest_check_duplicates(m, &diags) < 0 || diags.n > 0)
                failed = true;
        printed = calloc(diags.n + 1, sizeof *printed);
        if (!printed)
                return orch_cli_fail("out of memory");
        for (size_t i = 0; i < n_files; i++) {
                const char *name = streq(files[i], "-") ? "<stdin>" : files[i];
                bool bad = per_file[i].n > 0 || per_file[i].truncated;

                fflush(stdout);
                orch_diags_print(&per_file[i], stderr);
                for (size_t k = 0; k < diags.n; k++)
                        if (streq(diags.items[k].file, name)) {
                                /* a file given twice repeats its names: report that once */
                                if (!printed[k])
                                        print_diag(&diags.items[k]);
                                printed[k] = true;
                                bad = true;
                        }
                if (!bad)
                        printf("%s: %zu service%s OK\n", name, counts[i], counts[i] == 1 ? "" : "s");
                orch_diags_release(&per_file[i]);
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
                "A PATH of '-' reads standard input. Prints 'FILE: N services OK' per file, or\n"
                "every error as FILE:LINE:COLUMN: error: MESSAGE. Exit 0 when all are valid,\n"
                "1 otherwise, 2 on bad usage. See orch-manifest(5).\n",
        .run = validate_run,
};
