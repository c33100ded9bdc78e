/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ctype.h>
#include <getopt.h>
#include <stdarg.h>

#include "diag.h"
#include "options.h"
#include "units.h"
#include "util.h"
#include "yaml-tree.h"
#include "banned.h"

/* A daemon's config file is a screenful; anything near this is a mistake (or an attack). */
#define CONFIG_FILE_MAX (1024 * 1024)

/* getopt_long return values of the built-in options; the table's options return OPT_TABLE + index. */
enum {
        OPT_HELP = 'h',
        OPT_CONFIG = 0x100,
        OPT_VERSION,
        OPT_TABLE,
};

static const char *const builtin_names[] = {"config", "help", "version"};

/* One option as given on the command line, applied after the config file. */
struct flag {
        size_t index;
        const char *value;
};

_printf_(3, 4) static int cmdline_error(const struct orch_options *o, char **ret_error, const char *fmt, ...)
{
        struct orch_buf b = {0};
        va_list ap;

        orch_buf_printf(&b, "%s: error: ", o->program);
        va_start(ap, fmt);
        orch_buf_vprintf(&b, fmt, ap);
        va_end(ap);
        *ret_error = orch_buf_steal(&b);
        return *ret_error ? -EINVAL : -ENOMEM;
}

/* FILE:LINE:COLUMN: error: MESSAGE, or FILE: error: MESSAGE without a position. */
_printf_(6, 7) static int file_error(char **ret_error, int r, const char *file, unsigned line,
                                     unsigned column, const char *fmt, ...)
{
        struct orch_buf msg = {0};
        struct orch_diag d;
        va_list ap;

        va_start(ap, fmt);
        orch_buf_vprintf(&msg, fmt, ap);
        va_end(ap);
        d = (struct orch_diag){.file = (char *)file, .line = line, .column = column, .message = msg.data};
        *ret_error = msg.oom ? NULL : orch_diag_format(&d);
        orch_buf_release(&msg);
        return *ret_error ? r : -ENOMEM;
}

static bool valid_name(const char *name)
{
        if (!name || !*name || *name == '-')
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return false;
        return true;
}

/* The table is the program's, not the user's: a mistake in it is reported once, plainly. */
static int check_table(const struct orch_options *o, char **ret_error)
{
        for (size_t i = 0; i < o->n_table; i++) {
                const struct orch_option *opt = &o->table[i];

                if (!valid_name(opt->name) || !opt->set || !opt->help)
                        return cmdline_error(o, ret_error,
                                             "option table: entry %zu is incomplete or misnamed", i);
                for (size_t k = 0; k < ELEMENTSOF(builtin_names); k++)
                        if (streq(opt->name, builtin_names[k]))
                                return cmdline_error(o, ret_error, "option table: '%s' is built in",
                                                     opt->name);
                for (size_t k = 0; k < i; k++)
                        if (streq(opt->name, o->table[k].name))
                                return cmdline_error(o, ret_error, "option table: '%s' appears twice",
                                                     opt->name);
                if (!opt->short_name)
                        continue;
                /* Anything else would be read as getopt syntax ('+', ':') or shadow -h. */
                if (!isalnum((unsigned char)opt->short_name) || opt->short_name == OPT_HELP)
                        return cmdline_error(o, ret_error, "option table: '%s' has an unusable alias",
                                             opt->name);
                for (size_t k = 0; k < i; k++)
                        if (o->table[k].short_name == opt->short_name)
                                return cmdline_error(o, ret_error, "option table: alias '-%c' appears twice",
                                                     opt->short_name);
        }
        return 0;
}

static const struct orch_option *find_option(const struct orch_options *o, const char *name,
                                             size_t *ret_index)
{
        for (size_t i = 0; i < o->n_table; i++)
                if (streq(o->table[i].name, name)) {
                        if (ret_index)
                                *ret_index = i;
                        return &o->table[i];
                }
        return NULL;
}

/* The closest known name, for "did you mean"; the built-ins only on the command line. */
static const char *suggest(const struct orch_options *o, const char *word, bool builtins)
{
        _cleanup_(freep) const char **names = calloc(o->n_table + ELEMENTSOF(builtin_names), sizeof *names);
        size_t n = 0;

        if (!names)
                return NULL;
        for (size_t i = 0; i < o->n_table; i++)
                names[n++] = o->table[i].name;
        if (builtins)
                for (size_t i = 0; i < ELEMENTSOF(builtin_names); i++)
                        names[n++] = builtin_names[i];
        return orch_suggest(word, names, n);
}

/* "--name METAVAR", or "--name[=BOOL]" for a switch. */
static void help_left(const struct orch_option *opt, char *buf, size_t size)
{
        if (opt->metavar)
                orch_snprintf(buf, size, "--%s %s", opt->name, opt->metavar);
        else
                orch_snprintf(buf, size, "--%s[=BOOL]", opt->name);
}

void orch_options_print_help(const struct orch_options *o, FILE *out)
{
        _cleanup_(freep) char *config_help =
                o->default_config ? orch_strdup_printf("read options from FILE (default: %s, if it exists)",
                                                       o->default_config)
                                  : NULL;
        char left[96];
        int width = 24;

        for (size_t i = 0; i < o->n_table; i++) {
                help_left(&o->table[i], left, sizeof left);
                width = MAX(width, (int)strlen(left) + 2);
        }

        fprintf(out, "Usage: %s [OPTIONS]\n", o->program);
        if (o->summary)
                fprintf(out, "%s\n", o->summary);
        fprintf(out, "\nOptions:\n");
        for (size_t i = 0; i < o->n_table; i++) {
                const struct orch_option *opt = &o->table[i];
                help_left(opt, left, sizeof left);
                if (opt->short_name)
                        fprintf(out, "  -%c, %-*s%s%s\n", opt->short_name, width, left, opt->help,
                                opt->repeatable ? " (repeatable)" : "");
                else
                        fprintf(out, "      %-*s%s%s\n", width, left, opt->help,
                                opt->repeatable ? " (repeatable)" : "");
        }
        fprintf(out, "      %-*s%s\n", width, "--config FILE",
                config_help ? config_help : "read options from FILE");
        fprintf(out, "  -h, %-*s%s\n", width, "--help", "show this help and exit");
        fprintf(out, "      %-*s%s\n", width, "--version", "show the version and exit");
        fprintf(out, "\nEvery option can also be set in the config file: a YAML mapping whose keys are the\n"
                     "option names without the dashes. Command-line flags override the file.\n");
}

/* Applies one value through its setter. The message names the option as the user wrote it: with
 * dashes on the command line, without in the file. Values go into one-line messages, so they are
 * shortened and stripped of control characters. */
static int apply_value(const struct orch_option *opt, const char *value, const char *dashes, void *userdata,
                       char **ret_message)
{
        _cleanup_(freep) char *reason = NULL;
        char s[ORCH_YTREE_SHORT];
        int r;

        r = opt->set(userdata, opt->name, value, &reason);
        if (r >= 0)
                return 0;
        if (r == -ENOMEM)
                return r;
        *ret_message = orch_strdup_printf("invalid value '%s' for '%s%s': %s", orch_ytree_shorten(value, s),
                                          dashes, opt->name, reason ? reason : strerror(-r));
        return *ret_message ? -EINVAL : -ENOMEM;
}

/* Switch values in the file: a YAML boolean, normalized for the setter. */
static const char *bool_value(const struct orch_ynode *n)
{
        if (n->type != ORCH_YNODE_SCALAR || n->kind != ORCH_YSCALAR_BOOL)
                return NULL;
        return n->value[0] == 't' || n->value[0] == 'T' ? "true" : "false";
}

static int apply_node(const struct orch_option *opt, const struct orch_ynode *n, const char *path,
                      void *userdata, bool apply, char **ret_error)
{
        _cleanup_(freep) char *message = NULL;
        const char *value;
        int r;

        if (!opt->metavar) {
                value = bool_value(n);
                if (!value)
                        return file_error(ret_error, -EINVAL, path, n->line, n->column,
                                          "'%s' takes true or false, got %s", opt->name,
                                          orch_ynode_describe(n));
        } else if (n->type != ORCH_YNODE_SCALAR)
                return file_error(ret_error, -EINVAL, path, n->line, n->column, "'%s' takes %s, got %s",
                                  opt->name,
                                  opt->repeatable ? "a value or a list of values" : "a single value",
                                  orch_ynode_describe(n));
        else if (n->kind == ORCH_YSCALAR_NULL)
                return file_error(ret_error, -EINVAL, path, n->line, n->column,
                                  "'%s' needs a value (write \"\" for an empty one)", opt->name);
        else
                value = n->value;

        if (!apply)
                return 0;
        r = apply_value(opt, value, "", userdata, &message);
        if (r == -EINVAL)
                return file_error(ret_error, r, path, n->line, n->column, "%s", message);
        return r;
}

/* skip[i]: the command line sets option i, so the file's values for it are checked, not applied. */
static int load_file(const struct orch_options *o, const char *path, bool missing_ok, const bool *skip,
                     void *userdata, char **ret_error)
{
        _cleanup_(orch_ytree_freep) struct orch_ytree *tree = NULL;
        _cleanup_(freep) unsigned *seen_line = NULL;
        _cleanup_(freep) char *buf = NULL;
        struct orch_diags diags = {.max = 1};
        const struct orch_ynode *root;
        size_t len;
        int r;

        r = orch_read_file(path, CONFIG_FILE_MAX, &buf, &len);
        if (r == -ENOENT && missing_ok)
                return 0;
        if (r == -EFBIG)
                return file_error(ret_error, r, path, 0, 0, "config file is larger than %d KiB",
                                  CONFIG_FILE_MAX / 1024);
        if (r < 0)
                return file_error(ret_error, r, path, 0, 0, "cannot read config file: %s", strerror(-r));

        r = orch_ytree_parse(path, buf, len, &tree, &diags);
        if (r < 0) {
                if (diags.n > 0) {
                        *ret_error = orch_diag_format(&diags.items[0]);
                        r = *ret_error ? -EINVAL : -ENOMEM;
                }
                orch_diags_release(&diags);
                return r;
        }
        orch_diags_release(&diags);

        if (tree->n_docs > 1)
                return file_error(ret_error, -EINVAL, path, tree->docs[1].line, tree->docs[1].column,
                                  "a config file holds one YAML document; a second one starts here");
        root = tree->n_docs == 1 ? tree->docs[0].root : NULL;
        /* An empty file, or one with only comments, sets nothing. */
        if (!root || (root->type == ORCH_YNODE_SCALAR && root->kind == ORCH_YSCALAR_NULL))
                return 0;
        if (root->type != ORCH_YNODE_MAPPING)
                return file_error(ret_error, -EINVAL, path, root->line, root->column,
                                  "the config file must be a mapping of option names to values, got %s",
                                  orch_ynode_describe(root));

        seen_line = calloc(o->n_table + 1, sizeof *seen_line);
        if (!seen_line)
                return -ENOMEM;
        for (size_t i = 0; i + 1 < root->n_items; i += 2) {
                const struct orch_ynode *key = root->items[i], *value = root->items[i + 1];
                const struct orch_option *opt;
                char s[ORCH_YTREE_SHORT];
                const char *hint;
                size_t index;

                if (streq(key->value, "config"))
                        return file_error(ret_error, -EINVAL, path, key->line, key->column,
                                          "'config' can only be given on the command line");
                opt = find_option(o, key->value, &index);
                if (!opt) {
                        hint = suggest(o, key->value, false);
                        return file_error(ret_error, -EINVAL, path, key->line, key->column,
                                          "unknown key '%s'%s%s%s", orch_ytree_shorten(key->value, s),
                                          hint ? " (did you mean '" : "", strempty(hint), hint ? "'?)" : "");
                }
                if (seen_line[index])
                        return file_error(ret_error, -EINVAL, path, key->line, key->column,
                                          "duplicate key '%s' (first given at line %u)", opt->name,
                                          seen_line[index]);
                /* Line 0 would read as "not seen": positions are 1-based, but be safe. */
                seen_line[index] = MAX(key->line, 1U);
                if (value->type == ORCH_YNODE_SEQUENCE && opt->metavar && opt->repeatable) {
                        for (size_t k = 0; k < value->n_items; k++) {
                                const struct orch_ynode *item = value->items[k];
                                if (item->type != ORCH_YNODE_SCALAR)
                                        return file_error(ret_error, -EINVAL, path, item->line, item->column,
                                                          "items of '%s' must be single values, got %s",
                                                          opt->name, orch_ynode_describe(item));
                                r = apply_node(opt, item, path, userdata, !skip || !skip[index], ret_error);
                                if (r < 0)
                                        return r;
                        }
                        continue;
                }
                r = apply_node(opt, value, path, userdata, !skip || !skip[index], ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

int orch_options_load_file(const struct orch_options *o, const char *path, void *userdata, char **ret_error)
{
        int r;

        r = check_table(o, ret_error);
        if (r < 0)
                return r;
        return load_file(o, path, false, NULL, userdata, ret_error);
}

/* "--name=value" or "--name" -> "name" (into buf), for messages and for refusing abbreviations. */
static const char *token_name(const char *token, char *buf, size_t size)
{
        const char *name = startswith(token, "--");

        if (!name)
                return NULL;
        orch_strlcpy(buf, name, MIN(size, strcspn(name, "=") + 1));
        return buf;
}

/* getopt's option string: '+' (stop at the first non-option instead of permuting, so argv[optind]
 * before a call is the token being parsed), ':' (report a missing value as ':' rather than print),
 * 'h', then each one-letter alias, followed by ':' when it takes a value. */
static char *short_options(const struct orch_options *o)
{
        char *s = calloc(4 + 2 * o->n_table, 1);
        size_t k = 0;

        if (!s)
                return NULL;
        s[k++] = '+';
        s[k++] = ':';
        s[k++] = 'h';
        for (size_t i = 0; i < o->n_table; i++)
                if (o->table[i].short_name) {
                        s[k++] = o->table[i].short_name;
                        if (o->table[i].metavar)
                                s[k++] = ':';
                }
        return s;
}

static const struct orch_option *find_short(const struct orch_options *o, int c, size_t *ret_index)
{
        for (size_t i = 0; c > 0 && i < o->n_table; i++)
                if (o->table[i].short_name == c) {
                        *ret_index = i;
                        return &o->table[i];
                }
        return NULL;
}

int orch_options_parse(const struct orch_options *o, int argc, char *argv[], void *userdata, FILE *out,
                       char **ret_error)
{
        _cleanup_(freep) struct option *longopts = NULL;
        _cleanup_(freep) char *shortopts = NULL;
        _cleanup_(freep) struct flag *flags = NULL;
        _cleanup_(freep) bool *given = NULL;
        const char *config = NULL;
        size_t n_flags = 0, n_long = 0;
        int r;

        r = check_table(o, ret_error);
        if (r < 0)
                return r;

        longopts = calloc(o->n_table + ELEMENTSOF(builtin_names) + 1, sizeof *longopts);
        flags = calloc((size_t)MAX(argc, 1), sizeof *flags);
        given = calloc(o->n_table + 1, sizeof *given);
        shortopts = short_options(o);
        if (!longopts || !flags || !given || !shortopts)
                return -ENOMEM;
        for (size_t i = 0; i < o->n_table; i++)
                longopts[n_long++] = (struct option){
                        .name = o->table[i].name,
                        /* A switch may be written --name=false, so a flag can turn off what the file set. */
                        .has_arg = o->table[i].metavar ? required_argument : optional_argument,
                        .val = OPT_TABLE + (int)i,
                };
        longopts[n_long++] =
                (struct option){.name = "config", .has_arg = required_argument, .val = OPT_CONFIG};
        longopts[n_long++] = (struct option){.name = "help", .has_arg = no_argument, .val = OPT_HELP};
        longopts[n_long++] = (struct option){.name = "version", .has_arg = no_argument, .val = OPT_VERSION};

        /* '+': stop at the first non-option instead of permuting, so argv[optind] before a call is the
         * token being parsed. ':': report a missing value as ':' rather than printing. optind = 0
         * reinitializes glibc's getopt, so the function can run more than once. */
        optind = 0;
        opterr = 0;
        for (;;) {
                int first = optind > 0 ? optind : 1, index = -1, c;
                const char *token, *name;
                char buf[128], s[ORCH_YTREE_SHORT];

                c = getopt_long(argc, argv, shortopts, longopts, &index);
                if (c == -1)
                        break;
                token = first < argc ? argv[first] : "";
                name = token_name(token, buf, sizeof buf);
                /* A one-letter alias stands for its table entry ('h', '?' and ':' are never aliases). */
                if (c > 0 && c < OPT_CONFIG && c != OPT_HELP) {
                        size_t i;
                        const struct orch_option *opt = find_short(o, c, &i);
                        if (opt) {
                                c = OPT_TABLE + (int)i;
                                name = opt->name;
                        }
                }

                if (c == ':' && !name)
                        return cmdline_error(o, ret_error, "option '-%c' needs a value", optopt);
                if (c == '?' || c == ':') {
                        const struct orch_option *opt = name ? find_option(o, name, NULL) : NULL;
                        bool builtin = name && (streq(name, "config") || streq(name, "help") ||
                                                streq(name, "version"));
                        const char *hint;

                        if (c == ':')
                                return cmdline_error(o, ret_error, "option '--%s' needs a value", name);
                        if (opt || builtin)
                                return cmdline_error(o, ret_error, "option '--%s' takes no value", name);
                        if (!name)
                                return cmdline_error(o, ret_error, "unknown option '-%c'",
                                                     optopt ? optopt : '?');
                        hint = suggest(o, name, true);
                        return cmdline_error(o, ret_error, "unknown option '--%s'%s%s%s",
                                             orch_ytree_shorten(name, s), hint ? " (did you mean '--" : "",
                                             strempty(hint), hint ? "'?)" : "");
                }

                /* glibc accepts unambiguous prefixes (--api for --api-listen). A prefix that works today
                 * breaks when an option is added, so only whole names are accepted. */
                if (name && index >= 0 && !streq(name, longopts[index].name))
                        return cmdline_error(o, ret_error, "unknown option '--%s' (did you mean '--%s'?)",
                                             orch_ytree_shorten(name, s), longopts[index].name);
                /* "--api-listen --data-dir x" would quietly take "--data-dir" as the address. */
                if (optarg && !strchr(token, '=') && startswith(optarg, "--"))
                        return cmdline_error(o, ret_error,
                                             "option '--%s' needs a value, got '%s' (write --%s=VALUE for a "
                                             "value that starts with --)",
                                             name, orch_ytree_shorten(optarg, s), name);

                switch (c) {
                case OPT_HELP:
                        orch_options_print_help(o, out);
                        return ORCH_OPTIONS_EXIT;
                case OPT_VERSION:
                        fprintf(out, "%s %s\n", o->program, ORCH_VERSION);
                        return ORCH_OPTIONS_EXIT;
                case OPT_CONFIG:
                        if (config)
                                return cmdline_error(o, ret_error, "option '--config' given twice");
                        if (!*optarg)
                                return cmdline_error(o, ret_error, "option '--config' needs a file name");
                        config = optarg;
                        break;
                default: {
                        size_t i = (size_t)(c - OPT_TABLE);
                        const struct orch_option *opt = &o->table[i];
                        const char *value = optarg;

                        if (given[i] && !opt->repeatable)
                                return cmdline_error(o, ret_error, "option '--%s' given twice", opt->name);
                        given[i] = true;
                        if (!opt->metavar) {
                                if (!value)
                                        value = "true";
                                else if (!streq(value, "true") && !streq(value, "false"))
                                        return cmdline_error(
                                                o, ret_error,
                                                "option '--%s' takes no value, or =true or =false",
                                                opt->name);
                        }
                        flags[n_flags++] = (struct flag){.index = i, .value = value};
                        break;
                }
                }
        }
        if (optind < argc) {
                char s[ORCH_YTREE_SHORT];
                return cmdline_error(o, ret_error, "unexpected argument '%s'",
                                     orch_ytree_shorten(argv[optind], s));
        }

        if (config)
                r = load_file(o, config, false, given, userdata, ret_error);
        else if (o->default_config)
                r = load_file(o, o->default_config, true, given, userdata, ret_error);
        if (r < 0)
                return r;

        for (size_t i = 0; i < n_flags; i++) {
                const struct orch_option *opt = &o->table[flags[i].index];
                _cleanup_(freep) char *message = NULL;

                r = apply_value(opt, flags[i].value, "--", userdata, &message);
                if (r == -EINVAL)
                        return cmdline_error(o, ret_error, "%s", message);
                if (r < 0)
                        return r;
        }
        return ORCH_OPTIONS_RUN;
}

int orch_option_string(char **dst, const char *value)
{
        char *v = strdup(value);

        if (!v)
                return -ENOMEM;
        free(*dst);
        *dst = v;
        return 0;
}

int orch_option_bool(bool *dst, const char *value, char **ret_error)
{
        if (streq(value, "true") || streq(value, "yes") || streq(value, "1"))
                *dst = true;
        else if (streq(value, "false") || streq(value, "no") || streq(value, "0"))
                *dst = false;
        else {
                *ret_error = orch_strdup_printf("expected true or false");
                return -EINVAL;
        }
        return 0;
}

int orch_option_duration(uint64_t *dst_ms, const char *value, char **ret_error)
{
        if (orch_parse_duration(value, dst_ms) < 0) {
                *ret_error = orch_strdup_printf("expected a duration like 500ms, 2s or 1m");
                return -EINVAL;
        }
        return 0;
}
