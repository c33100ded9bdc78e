/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The orch command line: one file per verb (cli/<verb>.c), each defining one
 * struct orch_cmd, listed once in the table in cli/orch.c (as tmux's cmd-*.c).
 * Exit status everywhere: 0 done, 1 failed (one line on stderr), 2 bad usage.
 */

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

struct orch_client;
struct orch_manifest;

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

/*
 * Option parsing shared by the verbs. Every verb that talks to orchd lists ORCH_CLI_COMMON_OPTIONS
 * in its table (--addr URL, also accepted before the verb) and loops over orch_cli_getopt() with
 * an optstring that starts with ':'. Arguments are permuted, so flags may follow the names
 * (`orch get instances -o wide`). orch_cli_getopt() returns the verb's next option, -1 at the end,
 * or ORCH_CLI_GETOPT_USAGE after printing a usage error (the verb then returns ORCH_EXIT_USAGE).
 */
#define ORCH_CLI_OPT_ADDR 0x100
#define ORCH_CLI_COMMON_OPTIONS                                    \
        {                                                          \
                "addr", required_argument, NULL, ORCH_CLI_OPT_ADDR \
        }
#define ORCH_CLI_GETOPT_USAGE (-2)
int orch_cli_getopt(const struct orch_cmd *cmd, int argc, char **argv, const char *optstring,
                    const struct option *options);

/* Reads, validates and joins the manifests of `paths` (files, directories, "-" for stdin) as
 * `orch validate` does; on any error prints every diagnostic and returns -EINVAL (or -ENOMEM). */
int orch_cli_load_manifests(char *const *paths, struct orch_manifest **ret);

/* orch_client_new() for a verb: ORCH_EXIT_OK, or the status to exit with (the reason is printed;
 * ORCH_EXIT_USAGE for a malformed --addr or ORCH_ADDR). */
int orch_cli_client(struct orch_client **ret);

/* Polling verbs (rollout status, drain --wait): sleeps, restarting after signals that return. */
void orch_cli_sleep_msec(uint64_t msec);
/* A --timeout value: a duration like 90s or 5m (0: none); prints a usage error otherwise. */
int orch_cli_parse_timeout(const struct orch_cmd *cmd, const char *s, uint64_t *ret_msec);
