/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>
#include <time.h>

#include "cli.h"
#include "client.h"
#include "manifest.h"
#include "units.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_validate, orch_cmd_apply, orch_cmd_get, orch_cmd_describe,
        orch_cmd_scale, orch_cmd_delete, orch_cmd_logs, orch_cmd_events, orch_cmd_rollout, orch_cmd_drain,
        orch_cmd_uncordon, orch_cmd_apikey, orch_cmd_version, orch_cmd_help;

/* The order is the order of `orch --help`. */
const struct orch_cmd *const orch_commands[] = {
        &orch_cmd_validate, &orch_cmd_apply,
        &orch_cmd_get,      &orch_cmd_describe,
        &orch_cmd_scale,    &orch_cmd_delete,
        &orch_cmd_logs,     &orch_cmd_events,
        &orch_cmd_rollout,  &orch_cmd_drain,
        &orch_cmd_uncordon, &orch_cmd_apikey,
        &orch_cmd_version,  &orch_cmd_help,
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

int orch_cli_getopt(const struct orch_cmd *cmd, int argc, char **argv, const char *optstring,
                    const struct option *options)
{
        int c;

        for (;;) {
                c = getopt_long(argc, argv, optstring, options, NULL);
                switch (c) {
                case ORCH_CLI_OPT_ADDR:
                        orch_client_set_addr(optarg);
                        continue;
                case ':':
                        orch_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
                        return ORCH_CLI_GETOPT_USAGE;
                case '?':
                        /* "-1" reads as an option; the user meant a number */
                        if (optopt >= '0' && optopt <= '9')
                                orch_cli_usage_error(
                                        cmd, "unknown option '-%c': negative numbers are not accepted",
                                        optopt);
                        else if (optopt > 0 && optopt < 0x100)
                                orch_cli_usage_error(cmd, "unknown option '-%c'", optopt);
                        else
                                orch_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
                        return ORCH_CLI_GETOPT_USAGE;
                default:
                        return c;
                }
        }
}

int orch_cli_load_manifests(char *const *paths, struct orch_manifest **ret)
{
        struct orch_diags diags = {0};
        int r;

        r = orch_manifest_load(paths, orch_strv_length(paths), ret, &diags);
        if (r < 0 || diags.n > 0) {
                fflush(stdout);
                if (diags.n > 0)
                        orch_diags_print(&diags, stderr);
                else
                        fprintf(stderr, "orch: cannot load the manifests: %s\n", strerror(-r));
                orch_diags_release(&diags);
                return r < 0 ? r : -EINVAL;
        }
        return 0;
}

int orch_cli_client(struct orch_client **ret)
{
        int r = orch_client_new(ret);

        if (r == -EINVAL)
                return ORCH_EXIT_USAGE;
        return r < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
}

void orch_cli_sleep_msec(uint64_t msec)
{
        struct timespec ts = {.tv_sec = (time_t)(msec / 1000), .tv_nsec = (long)(msec % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

int orch_cli_parse_timeout(const struct orch_cmd *cmd, const char *s, uint64_t *ret_msec)
{
        if (orch_parse_duration(s, ret_msec) < 0) {
                orch_cli_usage_error(cmd, "--timeout: expected a duration like 90s or 5m, not '%s'", s);
                return -EINVAL;
        }
        return 0;
}

void orch_cli_print_help(const struct orch_cmd *cmd, FILE *f)
{
        fprintf(f, "usage: orch %s\n\n%s\n", cmd->usage, cmd->summary);
        if (cmd->help && *cmd->help)
                fprintf(f, "\n%s", cmd->help);
}

static void print_overview(FILE *f)
{
        fputs("usage: orch [--help] [--version] [--addr URL] VERB [ARGS...]\n\n"
              "orch is the command-line client of orchd, the orch control plane.\n\n"
              "Verbs:\n",
              f);
        for (size_t i = 0; orch_commands[i]; i++)
                fprintf(f, "  %-10s %s\n", orch_commands[i]->name, orch_commands[i]->summary);
        fputs("\nOptions (before or after the verb):\n"
              "  --addr URL  orchd's API, overriding ORCH_ADDR\n"
              "\nEnvironment:\n"
              "  ORCH_ADDR        orchd's API (default " ORCH_CLIENT_DEFAULT_ADDR ")\n"
              "  ORCH_TOKEN       the API token\n"
              "  ORCH_TOKEN_FILE  a file holding the token, when ORCH_TOKEN is unset\n"
              "                   (without either: " ORCH_CLIENT_DEFAULT_TOKEN_FILE " when readable)\n"
              "  NO_COLOR         set: no colour even on a terminal\n"
              "\nExit status: 0 done, 1 failed (the reason on stderr), 2 bad usage.\n"
              "'orch help VERB' shows the options and an example of a verb.\n",
              f);
}

/* `orch --addr URL VERB ...`: the global option before the verb. Returns how many arguments it
 * took, or -1 after a usage error. */
static int global_options(int argc, char **argv)
{
        int i = 1;

        while (i < argc) {
                const char *v;

                if (streq(argv[i], "--addr")) {
                        if (i + 1 >= argc) {
                                fputs("orch: option '--addr' needs a value\n", stderr);
                                return -1;
                        }
                        orch_client_set_addr(argv[i + 1]);
                        i += 2;
                } else if ((v = startswith(argv[i], "--addr="))) {
                        orch_client_set_addr(v);
                        i++;
                } else
                        break;
        }
        return i - 1;
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
        int skip = global_options(argc, argv);

        if (skip < 0)
                return ORCH_EXIT_USAGE;
        argc -= skip;
        argv += skip;
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
        /* Verbs see argv[0] == their own name, as getopt expects; each starts a fresh scan. */
        optind = 0;
        opterr = 0;
        return cmd->run(argc - 1, argv + 1);
}
