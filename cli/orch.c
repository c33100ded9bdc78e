/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>

#include "cli.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_validate, orch_cmd_version, orch_cmd_help;

/* The order is the order of `orch --help`. */
const struct orch_cmd *const orch_commands[] = {
        &orch_cmd_validate,
        &orch_cmd_version,
        &orch_cmd_help,
        NULL,
};

const struct orch_cmd *orch_cmd_find(const char *name)
{
        for (size_t i = 0; orch_commands[i]; i++)
                if (streq(orch_commands[i]->name, name))
                        return orch_commands[i];
        return NULL;
}

int orch_cli_fail(const char *fmt, ...)
{
        va_list ap;

        fputs("orch: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return ORCH_EXIT_FAILURE;
}

int orch_cli_usage_error(const struct orch_cmd *cmd, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "orch %s: ", cmd->name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nusage: orch %s\n", cmd->usage);
        return ORCH_EXIT_USAGE;
}

bool orch_cli_wants_help(int argc, char **argv)
{
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (streq(argv[i], "-h") || streq(argv[i], "--help"))
                        return true;
        }
        return false;
}

void orch_cli_print_help(const struct orch_cmd *cmd, FILE *f)
{
        fprintf(f, "usage: orch %s\n\n%s\n", cmd->usage, cmd->summary);
        if (cmd->help && *cmd->help)
                fprintf(f, "\n%s", cmd->help);
}

static void print_overview(FILE *f)
{
        fputs("usage: orch [--help] [--version] VERB [ARGS...]\n\n"
              "orch is the command-line client of orchd, the orch control plane.\n\n"
              "Verbs:\n",
              f);
        for (size_t i = 0; orch_commands[i]; i++)
                fprintf(f, "  %-10s %s\n", orch_commands[i]->name, orch_commands[i]->summary);
        fputs("\nEnvironment:\n"
              "  ORCH_ADDR   orchd API address (default http://127.0.0.1:7070)\n"
              "  ORCH_TOKEN  API token (default: read from the data dir's admin.token when readable)\n"
              "\n'orch help VERB' shows the options of a verb.\n",
              f);
}

static int help_run(int argc, char **argv)
{
        const struct orch_cmd *cmd;

        if (argc < 2) {
                print_overview(stdout);
                return ORCH_EXIT_OK;
        }
        if (argc > 2)
                return orch_cli_usage_error(&orch_cmd_help, "too many arguments");
        cmd = orch_cmd_find(argv[1]);
        if (!cmd) {
                fprintf(stderr, "orch help: unknown verb '%s'; 'orch --help' lists them\n", argv[1]);
                return ORCH_EXIT_USAGE;
        }
        orch_cli_print_help(cmd, stdout);
        return ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_help = {
        .name = "help",
        .usage = "help [VERB]",
        .summary = "Show the verbs, or the options of one verb.",
        .run = help_run,
};

int main(int argc, char **argv)
{
        const struct orch_cmd *cmd;

        if (argc < 2) {
                print_overview(stderr);
                return ORCH_EXIT_USAGE;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h")) {
                print_overview(stdout);
                return ORCH_EXIT_OK;
        }
        if (streq(argv[1], "--version"))
                return orch_cmd_version.run(1, argv + 1);
        cmd = orch_cmd_find(argv[1]);
        if (!cmd) {
                const char *names[64];
                size_t n = 0;
                const char *hint;

                for (size_t i = 0; orch_commands[i] && n < ELEMENTSOF(names); i++)
                        names[n++] = orch_commands[i]->name;
                hint = orch_suggest(argv[1], names, n);
                fprintf(stderr, "orch: unknown verb '%s'", argv[1]);
                if (hint)
                        fprintf(stderr, "; did you mean '%s'?", hint);
                fputs("\n'orch --help' lists the verbs\n", stderr);
                return ORCH_EXIT_USAGE;
        }
        if (cmd != &orch_cmd_help && orch_cli_wants_help(argc - 1, argv + 1)) {
                orch_cli_print_help(cmd, stdout);
                return ORCH_EXIT_OK;
        }
        /* Verbs see argv[0] == their own name, as getopt expects. */
        return cmd->run(argc - 1, argv + 1);
}
