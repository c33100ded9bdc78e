/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Daemon configuration: one table of options drives both the command line
 * (getopt_long) and the YAML config file, so a setting has one name, one
 * parser and one help line wherever it is given (SPEC §1).
 *
 * Precedence: built-in defaults < config file < command-line flags. The
 * command line is parsed first, to find --config; then the file is applied;
 * then the flags. A repeatable option given on the command line replaces the
 * file's values for it instead of adding to them, like every other flag.
 *
 * The config file is one YAML mapping whose keys are the long names:
 *
 *   api-listen: 127.0.0.1:7070      # a scalar, passed to the setter as written
 *   label: [zone=eu-1, disk=ssd]    # a repeatable option: a list (or one scalar)
 *   allow-root: true                # an option without a value: true or false
 *
 * The default file (e.g. /etc/orch/orchd.yaml) is read only if it exists;
 * an explicit --config FILE must exist. Errors name their place, as
 * "FILE:LINE:COLUMN: error: MESSAGE" for the file and
 * "PROGRAM: error: MESSAGE" for the command line, with a "did you mean" for
 * near-miss names.
 *
 * This file is lib/options.h, not lib/config.h: that name is autoconf's
 * generated header, which every .c file includes first.
 */

#include <stdint.h>

#include "macro.h"

/* Called once per value, in the order given; for a switch (no value) with "true" or "false".
 * On failure returns < 0 and may set *ret_error to a message (allocated) that says what is
 * wrong with the value; the caller adds where it came from. */
typedef int (*orch_option_set_fn)(void *userdata, const char *name, const char *value, char **ret_error);

struct orch_option {
        const char *name;    /* long name without "--"; also the config file key */
        const char *metavar; /* the value's name in --help ("ADDR"); NULL: a switch that takes no value */
        bool repeatable;     /* may be given several times (a list in the file) */
        const char *help;    /* one line, with the default where there is one */
        orch_option_set_fn set;
        char short_name; /* a one-letter alias on the command line ('f' for -f), or 0 */
};

struct orch_options {
        const char *program; /* for --help, --version and command-line errors */
        const char *summary; /* one line under the usage line */
        const struct orch_option *table;
        size_t n_table;
        const char *default_config; /* read only if it exists; NULL for none */
};

/* Parse results other than errors. */
enum {
        ORCH_OPTIONS_RUN = 0,  /* options applied: go on */
        ORCH_OPTIONS_EXIT = 1, /* --help or --version was printed to `out`: exit successfully */
};

/*
 * Applies the config file and the command line to `userdata` through the setters. Positional
 * arguments are refused. Returns ORCH_OPTIONS_RUN, ORCH_OPTIONS_EXIT, or < 0 with *ret_error
 * set to the one-line reason to print (-EINVAL for bad input, -ENOENT/-EACCES/... when the
 * config file cannot be read, -ENOMEM). Uses getopt_long, so it is not reentrant.
 */
int orch_options_parse(const struct orch_options *o, int argc, char *argv[], void *userdata, FILE *out,
                       char **ret_error);

/* Helpers for setters: store a copy of a string; parse true/false (also yes/no, 1/0); parse a
 * duration (500ms, 2s, 1m). The parsers set *ret_error to a message naming the bad value. */
int orch_option_string(char **dst, const char *value);
int orch_option_bool(bool *dst, const char *value, char **ret_error);
int orch_option_duration(uint64_t *dst_ms, const char *value, char **ret_error);

/* Applies one config file (it must exist). The same errors as above. */
int orch_options_load_file(const struct orch_options *o, const char *path, void *userdata, char **ret_error);

/* The usage, the summary and one line per option, including --config, --help and --version. */
void orch_options_print_help(const struct orch_options *o, FILE *out);
