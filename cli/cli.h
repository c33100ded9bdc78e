/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The orch command line: one file per verb (cli/<verb>.c), each defining one
 * struct orch_cmd, listed once in the table in cli/orch.c (as tmux's cmd-*.c).
 * Exit status everywhere: 0 done, 1 failed (one line on stderr), 2 bad usage.
 */

#include <stdio.h>

#include "macro.h"

enum {
        ORCH_EXIT_OK = 0,
        ORCH_EXIT_FAILURE = 1,
        ORCH_EXIT_USAGE = 2,
};

struct orch_cmd {
        const char *name;
        const char *usage;   /* after "orch ": "validate -f PATH..." */
        const char *summary; /* one line for `orch --help` */
        const char *help;    /* the rest of `orch help VERB`: options and examples */
        int (*run)(int argc, char **argv);
};

/* The table, NULL-terminated. */
extern const struct orch_cmd *const orch_commands[];
const struct orch_cmd *orch_cmd_find(const char *name);

/* Prints "orch: MESSAGE" to stderr; returns ORCH_EXIT_FAILURE. */
_printf_(1, 2) int orch_cli_fail(const char *fmt, ...);
/* Prints "orch VERB: MESSAGE" and the verb's usage line to stderr; returns ORCH_EXIT_USAGE. */
_printf_(2, 3) int orch_cli_usage_error(const struct orch_cmd *cmd, const char *fmt, ...);
/* True when `arg` is -h or --help (each verb answers with its help, exit 0). */
bool orch_cli_wants_help(int argc, char **argv);
void orch_cli_print_help(const struct orch_cmd *cmd, FILE *f);
