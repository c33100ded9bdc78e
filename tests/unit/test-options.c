/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <ftw.h>
#include <sys/stat.h>

#include "options.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/* What a daemon's setters fill in; `log` records every setter call in order. */
struct settings {
        char *api_listen;
        char *data_dir;
        char **labels;
        bool allow_root;
        unsigned port;
        struct orch_buf log;
};

static void settings_release(struct settings *s)
{
        free(s->api_listen);
        free(s->data_dir);
        orch_strv_free(s->labels);
        orch_buf_release(&s->log);
}

static int set_string(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct settings *s = userdata;
        char **field = streq(name, "api-listen") ? &s->api_listen : &s->data_dir;
        char *copy = strdup(value);

        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        orch_buf_printf(&s->log, "%s=%s;", name, value);
        return 0;
}

static int set_label(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct settings *s = userdata;
        const char *eq = strchr(value, '=');

        if (!eq || eq == value) {
                *ret_error = strdup("expected KEY=VALUE");
                return -EINVAL;
        }
        orch_buf_printf(&s->log, "%s=%s;", name, value);
        return orch_strv_push(&s->labels, value);
}

static int set_bool(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct settings *s = userdata;

        /* The mechanism promises exactly these two spellings to a switch's setter. */
        ck_assert(streq(value, "true") || streq(value, "false"));
        s->allow_root = streq(value, "true");
        orch_buf_printf(&s->log, "%s=%s;", name, value);
        return 0;
}

static int set_port(void *userdata, const char *name, const char *value, char **ret_error)
{
        struct settings *s = userdata;
        uint32_t port;

        if (orch_parse_u32(value, &port) < 0 || port == 0 || port > 65535) {
                *ret_error = strdup("not a port number (1-65535)");
                return -EINVAL;
        }
        s->port = port;
        orch_buf_printf(&s->log, "%s=%s;", name, value);
        return 0;
}

/* A setter that says nothing about why: the mechanism falls back to the errno text. */
static int set_refuse(void *userdata, const char *name, const char *value, char **ret_error)
{
        return -EPERM;
}

static const struct orch_option table[] = {
        {"api-listen", "ADDR", false, "HTTP API address (default 127.0.0.1:7070)", set_string},
        {"data-dir", "DIR", false, "state directory (default /var/lib/orch)", set_string, 'd'},
        {"label", "K=V", true, "a node label", set_label},
        {"allow-root", NULL, false, "run instances as root when asked to", set_bool, 'r'},
        {"port", "PORT", false, "a port", set_port},
        {"locked", "X", false, "refuses everything", set_refuse},
};

static char test_dir[64];
static char *default_config;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        return remove(path);
}

static void setup(void)
{
        orch_strlcpy(test_dir, "/tmp/orch-test-options.XXXXXX", sizeof test_dir);
        ck_assert_ptr_nonnull(mkdtemp(test_dir));
        default_config = orch_strdup_printf("%s/orchd.yaml", test_dir);
}

static void teardown(void)
{
        nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(default_config);
}

static const struct orch_options *opts(void)
{
        static struct orch_options o;

        o = (struct orch_options){
                .program = "orchd",
                .summary = "the orch control plane",
                .table = table,
                .n_table = ELEMENTSOF(table),
                .default_config = default_config,
        };
        return &o;
}

/* Writes a file under the test dir and returns its path (static, overwritten by the next call). */
static const char *write_config(const char *name, const char *content)
{
        static char path[128];

        ck_assert_int_ge(orch_snprintf(path, sizeof path, "%s/%s", test_dir, name), 0);
        ck_assert_int_eq(orch_write_file_atomic(path, content, strlen(content), 0600), 0);
        return path;
}

/* Runs the parser on a NULL-terminated list of arguments after the program name. */
static int parse(struct settings *s, char **ret_error, char **ret_out, ...)
{
        char *argv[32] = {(char *)"orchd"};
        char *out = NULL;
        size_t out_len = 0;
        FILE *f = open_memstream(&out, &out_len);
        int argc = 1, r;
        va_list ap;

        ck_assert_ptr_nonnull(f);
        va_start(ap, ret_out);
        for (const char *a; (a = va_arg(ap, const char *));)
                argv[argc++] = (char *)a;
        va_end(ap);
        *ret_error = NULL;
        r = orch_options_parse(opts(), argc, argv, s, f, ret_error);
        fclose(f);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        if (r < 0)
                ck_assert_ptr_nonnull(*ret_error);
        return r;
}

static void assert_cmdline_error(const char *expected, ...)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL;
        char *argv[32] = {(char *)"orchd"};
        int argc = 1, r;
        va_list ap;

        va_start(ap, expected);
        for (const char *a; (a = va_arg(ap, const char *));)
                argv[argc++] = (char *)a;
        va_end(ap);
        r = orch_options_parse(opts(), argc, argv, &s, stdout, &error);
        ck_assert_int_eq(r, -EINVAL);
        ck_assert_str_eq(error, expected);
}

START_TEST(test_flags)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL;

        ck_assert_int_eq(parse(&s, &error, NULL, "--api-listen", "10.0.0.1:7070", "--data-dir=/srv/orch",
                               "--label", "zone=eu-1", "--label=disk=ssd", "--allow-root", "--port", "8080",
                               NULL),
                         ORCH_OPTIONS_RUN);
        ck_assert_str_eq(s.api_listen, "10.0.0.1:7070");
        ck_assert_str_eq(s.data_dir, "/srv/orch");
        ck_assert_uint_eq(orch_strv_length(s.labels), 2);
        ck_assert_str_eq(s.labels[0], "zone=eu-1");
        ck_assert_str_eq(s.labels[1], "disk=ssd");
        ck_assert(s.allow_root);
        ck_assert_uint_eq(s.port, 8080);
        /* In the order given. */
        ck_assert_str_eq(s.log.data,
                         "api-listen=10.0.0.1:7070;data-dir=/srv/orch;label=zone=eu-1;label=disk=ssd;"
                         "allow-root=true;port=8080;");

        /* An empty value is a value ("--gateway-listen=" turns the gateway off). */
        settings_release(&s);
        s = (struct settings){0};
        ck_assert_int_eq(parse(&s, &error, NULL, "--api-listen=", "--allow-root=false", NULL),
                         ORCH_OPTIONS_RUN);
        ck_assert_str_eq(s.api_listen, "");
        ck_assert(!s.allow_root);

        /* One-letter aliases stand for their long options. */
        settings_release(&s);
        s = (struct settings){0};
        ck_assert_int_eq(parse(&s, &error, NULL, "-d", "/short", "-r", NULL), ORCH_OPTIONS_RUN);
        ck_assert_str_eq(s.data_dir, "/short");
        ck_assert(s.allow_root);
        ck_assert_str_eq(s.log.data, "data-dir=/short;allow-root=true;");

        /* "--" ends the options; nothing may follow for a daemon. */
        settings_release(&s);
        s = (struct settings){0};
        ck_assert_int_eq(parse(&s, &error, NULL, "--port", "1", "--", NULL), ORCH_OPTIONS_RUN);
        ck_assert_uint_eq(s.port, 1);
}
END_TEST

START_TEST(test_defaults_stay)
{
        _cleanup_(settings_release) struct settings s = {.port = 7070};
        _cleanup_(freep) char *error = NULL;

        /* No flags and no default file (it does not exist): nothing is set, nothing fails. */
        ck_assert_int_eq(parse(&s, &error, NULL, NULL), ORCH_OPTIONS_RUN);
        ck_assert_uint_eq(s.port, 7070);
        ck_assert_ptr_null(s.log.data);
}
END_TEST

START_TEST(test_config_file)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL;
        const char *path = write_config("a.yaml", "# orchd settings\n"
                                                  "api-listen: 127.0.0.1:9090\n"
                                                  "data-dir: \"/var/lib/orch test\"\n"
                                                  "label:\n"
                                                  "  - zone=eu-1\n"
                                                  "  - disk=ssd\n"
                                                  "allow-root: True\n"
                                                  "port: 8443\n");

        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), ORCH_OPTIONS_RUN);
        ck_assert_str_eq(s.api_listen, "127.0.0.1:9090");
        ck_assert_str_eq(s.data_dir, "/var/lib/orch test");
        ck_assert_uint_eq(orch_strv_length(s.labels), 2);
        ck_assert_str_eq(s.labels[1], "disk=ssd");
        ck_assert(s.allow_root);
        ck_assert_uint_eq(s.port, 8443);

        /* One label may be written as a scalar, an empty value as "", a switch turned off. */
        settings_release(&s);
        s = (struct settings){.allow_root = true};
        path = write_config("b.yaml", "label: zone=eu-2\napi-listen: \"\"\nallow-root: false\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config=", NULL), -EINVAL);
        ck_assert_str_eq(error, "orchd: error: option '--config' needs a file name");
        error = (free(error), NULL);
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), ORCH_OPTIONS_RUN);
        ck_assert_uint_eq(orch_strv_length(s.labels), 1);
        ck_assert_str_eq(s.labels[0], "zone=eu-2");
        ck_assert_str_eq(s.api_listen, "");
        ck_assert(!s.allow_root);

        /* Empty files and comment-only files set nothing. */
        settings_release(&s);
        s = (struct settings){0};
        path = write_config("c.yaml", "");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), ORCH_OPTIONS_RUN);
        path = write_config("c.yaml", "# nothing here yet\n---\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), ORCH_OPTIONS_RUN);
        ck_assert_ptr_null(s.log.data);

        /* The public single-file entry point. */
        path = write_config("d.yaml", "port: 7\n");
        ck_assert_int_eq(orch_options_load_file(opts(), path, &s, &error), 0);
        ck_assert_uint_eq(s.port, 7);
}
END_TEST

START_TEST(test_precedence)
{
        _cleanup_(settings_release) struct settings s = {.port = 1, .data_dir = strdup("/default")};
        _cleanup_(freep) char *error = NULL;
        const char *path;

        /* The default file is used when it exists... */
        write_config("orchd.yaml", "data-dir: /from-default-file\n");
        ck_assert_int_eq(parse(&s, &error, NULL, NULL), ORCH_OPTIONS_RUN);
        ck_assert_str_eq(s.data_dir, "/from-default-file");

        /* ...and not when --config names another; flags beat the file; a repeatable flag replaces
         * the file's list (the file's labels never reach the setter), a switch flag turns off what
         * the file turned on. */
        settings_release(&s);
        s = (struct settings){.port = 1};
        path = write_config("explicit.yaml", "api-listen: 127.0.0.1:1\n"
                                             "label: [from=file, other=file]\n"
                                             "allow-root: true\n"
                                             "port: 2\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--label", "from=flag", "--api-listen", "127.0.0.1:3",
                               "--config", path, "--allow-root=false", NULL),
                         ORCH_OPTIONS_RUN);
        ck_assert_ptr_null(s.data_dir);
        ck_assert_str_eq(s.api_listen, "127.0.0.1:3");
        ck_assert_uint_eq(orch_strv_length(s.labels), 1);
        ck_assert_str_eq(s.labels[0], "from=flag");
        ck_assert(!s.allow_root);
        ck_assert_uint_eq(s.port, 2);
        /* File first (only what the flags leave alone), then the flags in their order. */
        ck_assert_str_eq(s.log.data, "port=2;label=from=flag;api-listen=127.0.0.1:3;allow-root=false;");

        /* An overridden key in the file is still checked for its type. */
        settings_release(&s);
        s = (struct settings){0};
        path = write_config("typed.yaml", "label: {a: b}\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, "--label", "x=y", NULL), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error,
                                     "typed.yaml:1:8: error: 'label' takes a value or a list of values, "
                                     "got a mapping"));
}
END_TEST

START_TEST(test_cmdline_errors)
{
        assert_cmdline_error("orchd: error: unknown option '--datadir' (did you mean '--data-dir'?)",
                             "--datadir", "/x", NULL);
        assert_cmdline_error("orchd: error: unknown option '--confg' (did you mean '--config'?)",
                             "--confg=x", NULL);
        assert_cmdline_error("orchd: error: unknown option '--bogus'", "--bogus", NULL);
        assert_cmdline_error("orchd: error: unknown option '-x'", "-x", NULL);
        /* glibc would accept the prefix; a prefix breaks when an option is added, so it is refused. */
        assert_cmdline_error("orchd: error: unknown option '--api' (did you mean '--api-listen'?)", "--api",
                             "x", NULL);
        assert_cmdline_error("orchd: error: option '--api-listen' needs a value", "--api-listen", NULL);
        assert_cmdline_error("orchd: error: option '--config' needs a value", "--config", NULL);
        assert_cmdline_error("orchd: error: option '--api-listen' needs a value, got '--data-dir' (write "
                             "--api-listen=VALUE for a value that starts with --)",
                             "--api-listen", "--data-dir", "/x", NULL);
        assert_cmdline_error("orchd: error: option '--data-dir' given twice", "--data-dir", "/a",
                             "--data-dir=/b", NULL);
        assert_cmdline_error("orchd: error: option '--config' given twice", "--config", "/a", "--config",
                             "/b", NULL);
        assert_cmdline_error("orchd: error: option '--allow-root' takes no value, or =true or =false",
                             "--allow-root=yes", NULL);
        assert_cmdline_error("orchd: error: option '--help' takes no value", "--help=please", NULL);
        assert_cmdline_error("orchd: error: option '-d' needs a value", "-d", NULL);
        assert_cmdline_error("orchd: error: option '--data-dir' given twice", "-d", "/a", "--data-dir", "/b",
                             NULL);
        assert_cmdline_error("orchd: error: option '--data-dir' needs a value, got '--port' (write "
                             "--data-dir=VALUE for a value that starts with --)",
                             "-d", "--port", "1", NULL);
        assert_cmdline_error("orchd: error: unexpected argument 'serve'", "serve", NULL);
        assert_cmdline_error("orchd: error: unexpected argument 'serve'", "--port", "1", "--", "serve",
                             NULL);
        assert_cmdline_error("orchd: error: invalid value '99999' for '--port': not a port number (1-65535)",
                             "--port", "99999", NULL);
        assert_cmdline_error("orchd: error: invalid value 'novalue' for '--label': expected KEY=VALUE",
                             "--label", "a=1", "--label", "novalue", NULL);
        assert_cmdline_error("orchd: error: invalid value 'x' for '--locked': Operation not permitted",
                             "--locked", "x", NULL);
        /* Hostile values are cut and cleaned so the reason stays one line. */
        assert_cmdline_error("orchd: error: invalid value 'a?b' for '--port': not a port number (1-65535)",
                             "--port", "a\nb", NULL);
}
END_TEST

static void assert_file_error(const char *content, int expected_r, const char *expected_tail, ...)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL, *expected = NULL;
        const char *path = write_config("bad.yaml", content);
        char *argv[32] = {(char *)"orchd", (char *)"--config", (char *)path};
        int argc = 3;
        va_list ap;

        va_start(ap, expected_tail);
        for (const char *a; (a = va_arg(ap, const char *));)
                argv[argc++] = (char *)a;
        va_end(ap);
        expected = orch_strdup_printf("%s%s", path, expected_tail);
        ck_assert_int_eq(orch_options_parse(opts(), argc, argv, &s, stdout, &error), expected_r);
        ck_assert_str_eq(error, expected);
}

START_TEST(test_file_errors)
{
        assert_file_error("api-listen: 1.2.3.4:5\ndatadir: /x\n", -EINVAL,
                          ":2:1: error: unknown key 'datadir' (did you mean 'data-dir'?)", NULL);
        assert_file_error("whatever: 1\n", -EINVAL, ":1:1: error: unknown key 'whatever'", NULL);
        /* Only long names are keys: the built-ins are not settings. */
        assert_file_error("help: true\n", -EINVAL, ":1:1: error: unknown key 'help'", NULL);
        assert_file_error("port: 1\nconfig: /etc/other.yaml\n", -EINVAL,
                          ":2:1: error: 'config' can only be given on the command line", NULL);
        assert_file_error("api-listen: [a, b]\n", -EINVAL,
                          ":1:13: error: 'api-listen' takes a single value, got a list", NULL);
        assert_file_error("port:\n  x: 1\n", -EINVAL,
                          ":2:3: error: 'port' takes a single value, got a mapping", NULL);
        assert_file_error("allow-root: \"true\"\n", -EINVAL,
                          ":1:13: error: 'allow-root' takes true or false, got a string", NULL);
        assert_file_error("allow-root: yes\n", -EINVAL,
                          ":1:13: error: 'allow-root' takes true or false, got a string", NULL);
        assert_file_error("allow-root: 1\n", -EINVAL,
                          ":1:13: error: 'allow-root' takes true or false, got an integer", NULL);
        assert_file_error("label:\n  - a=1\n  - [b, c]\n", -EINVAL,
                          ":3:5: error: items of 'label' must be single values, got a list", NULL);
        assert_file_error("data-dir: ~\n", -EINVAL,
                          ":1:11: error: 'data-dir' needs a value (write \"\" for an empty one)", NULL);
        assert_file_error("port: 99999\n", -EINVAL,
                          ":1:7: error: invalid value '99999' for 'port': not a port number (1-65535)",
                          NULL);
        assert_file_error("label:\n  - a=1\n  - nokey\n", -EINVAL,
                          ":3:5: error: invalid value 'nokey' for 'label': expected KEY=VALUE", NULL);
        assert_file_error("port: 1\nlabel: a=1\nport: 2\n", -EINVAL,
                          ":3:1: error: duplicate key 'port' (first given at line 1)", NULL);
        assert_file_error(
                "- api-listen\n- port\n", -EINVAL,
                ":1:1: error: the config file must be a mapping of option names to values, got a list",
                NULL);
        assert_file_error(
                "just words\n", -EINVAL,
                ":1:1: error: the config file must be a mapping of option names to values, got a string",
                NULL);
        assert_file_error("port: 1\n---\nport: 2\n", -EINVAL,
                          ":2:1: error: a config file holds one YAML document; a second one starts here",
                          NULL);
        /* The positions point at the value that the flag overrides, too. */
        assert_file_error("port: [1]\n", -EINVAL, ":1:7: error: 'port' takes a single value, got a list",
                          "--port", "3", NULL);
}
END_TEST

START_TEST(test_file_unreadable)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL, *expected = NULL, *big = NULL, *missing = NULL;
        const char *path;

        /* An explicit --config must exist; the default one may be missing. */
        missing = orch_strdup_printf("%s/nope.yaml", test_dir);
        expected =
                orch_strdup_printf("%s: error: cannot read config file: No such file or directory", missing);
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", missing, NULL), -ENOENT);
        ck_assert_str_eq(error, expected);
        error = (free(error), NULL);
        expected = (free(expected), NULL);

        /* A default file that exists but cannot be read is an error, not silently skipped. */
        ck_assert_int_eq(mkdir(default_config, 0700), 0);
        expected = orch_strdup_printf("%s: error: cannot read config file: Is a directory", default_config);
        ck_assert_int_eq(parse(&s, &error, NULL, NULL), -EISDIR);
        ck_assert_str_eq(error, expected);
        error = (free(error), NULL);
        expected = (free(expected), NULL);

        big = calloc(1024 * 1024 + 2, 1);
        ck_assert_ptr_nonnull(big);
        memset(big, '#', 1024 * 1024 + 1);
        path = write_config("big.yaml", big);
        expected = orch_strdup_printf("%s: error: config file is larger than 1024 KiB", path);
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), -EFBIG);
        ck_assert_str_eq(error, expected);
        error = (free(error), NULL);
        expected = (free(expected), NULL);

        /* Broken YAML and broken UTF-8: the parser's message, at its position. */
        path = write_config("syntax.yaml", "port: 1\nlabel: [a=1, b=2\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), -EINVAL);
        expected = orch_strdup_printf("%s:3:1: error: ", path);
        ck_assert_msg(startswith(error, expected), "%s", error);
        error = (free(error), NULL);
        expected = (free(expected), NULL);
        path = write_config("utf8.yaml", "port: 1\nlabel: \"a=\xff\"\n");
        ck_assert_int_eq(parse(&s, &error, NULL, "--config", path, NULL), -EINVAL);
        expected = orch_strdup_printf("%s:2:11: error: invalid UTF-8 (byte 0xff)", path);
        ck_assert_str_eq(error, expected);
}
END_TEST

START_TEST(test_help_and_version)
{
        _cleanup_(settings_release) struct settings s = {0};
        _cleanup_(freep) char *error = NULL, *out = NULL, *version = NULL;

        ck_assert_int_eq(parse(&s, &error, &out, "--port", "1", "--help", "--bogus", NULL),
                         ORCH_OPTIONS_EXIT);
        ck_assert_ptr_nonnull(strstr(out, "Usage: orchd [OPTIONS]\nthe orch control plane\n"));
        ck_assert_ptr_nonnull(
                strstr(out, "      --api-listen ADDR       HTTP API address (default 127.0.0.1:7070)\n"));
        ck_assert_ptr_nonnull(strstr(out, "      --label K=V             a node label (repeatable)\n"));
        ck_assert_ptr_nonnull(
                strstr(out, "  -r, --allow-root[=BOOL]     run instances as root when asked to\n"));
        ck_assert_ptr_nonnull(strstr(out, "  -h, --help                  show this help and exit\n"));
        ck_assert_ptr_nonnull(
                strstr(out, "  -d, --data-dir DIR          state directory (default /var/lib/orch)\n"));
        ck_assert_msg(strstr(out, default_config), "%s", out);
        /* --help stops before the setters run. */
        ck_assert_ptr_null(s.log.data);
        out = (free(out), NULL);

        ck_assert_int_eq(parse(&s, &error, &out, "-h", NULL), ORCH_OPTIONS_EXIT);
        ck_assert_ptr_nonnull(strstr(out, "Usage: orchd"));
        out = (free(out), NULL);

        version = orch_strdup_printf("orchd %s\n", ORCH_VERSION);
        ck_assert_int_eq(parse(&s, &error, &out, "--version", NULL), ORCH_OPTIONS_EXIT);
        ck_assert_str_eq(out, version);
}
END_TEST

START_TEST(test_bad_table)
{
        static const struct orch_option dup[] = {
                {"port", "PORT", false, "a port", set_port},
                {"port", "PORT", false, "again", set_port},
        };
        static const struct orch_option builtin[] = {{"config", "FILE", false, "mine", set_string}};
        static const struct orch_option misnamed[] = {{"Port", "PORT", false, "a port", set_port}};
        static const struct orch_option alias_h[] = {{"host", "HOST", false, "a host", set_string, 'h'}};
        static const struct orch_option alias_colon[] = {{"port", "PORT", false, "a port", set_port, ':'}};
        static const struct orch_option alias_dup[] = {
                {"port", "PORT", false, "a port", set_port, 'p'},
                {"path", "PATH", false, "a path", set_string, 'p'},
        };
        _cleanup_(freep) char *e4 = NULL, *e5 = NULL, *e6 = NULL;
        struct orch_options o = {.program = "orchd", .table = dup, .n_table = ELEMENTSOF(dup)};
        char *argv[] = {(char *)"orchd", NULL};
        _cleanup_(freep) char *e1 = NULL, *e2 = NULL, *e3 = NULL;

        ck_assert_int_eq(orch_options_parse(&o, 1, argv, NULL, stdout, &e1), -EINVAL);
        ck_assert_str_eq(e1, "orchd: error: option table: 'port' appears twice");
        o.table = builtin;
        o.n_table = 1;
        ck_assert_int_eq(orch_options_parse(&o, 1, argv, NULL, stdout, &e2), -EINVAL);
        ck_assert_str_eq(e2, "orchd: error: option table: 'config' is built in");
        o.table = misnamed;
        ck_assert_int_eq(orch_options_load_file(&o, "/nonexistent", NULL, &e3), -EINVAL);
        ck_assert_str_eq(e3, "orchd: error: option table: entry 0 is incomplete or misnamed");
        o.table = alias_h;
        ck_assert_int_eq(orch_options_parse(&o, 1, argv, NULL, stdout, &e4), -EINVAL);
        ck_assert_str_eq(e4, "orchd: error: option table: 'host' has an unusable alias");
        o.table = alias_colon;
        ck_assert_int_eq(orch_options_parse(&o, 1, argv, NULL, stdout, &e5), -EINVAL);
        ck_assert_str_eq(e5, "orchd: error: option table: 'port' has an unusable alias");
        o.table = alias_dup;
        o.n_table = 2;
        ck_assert_int_eq(orch_options_parse(&o, 1, argv, NULL, stdout, &e6), -EINVAL);
        ck_assert_str_eq(e6, "orchd: error: option table: alias '-p' appears twice");
}
END_TEST

static Suite *options_suite(void)
{
        Suite *s = suite_create("options");
        TCase *tc = tcase_create("options");

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_flags);
        tcase_add_test(tc, test_defaults_stay);
        tcase_add_test(tc, test_config_file);
        tcase_add_test(tc, test_precedence);
        tcase_add_test(tc, test_cmdline_errors);
        tcase_add_test(tc, test_file_errors);
        tcase_add_test(tc, test_file_unreadable);
        tcase_add_test(tc, test_help_and_version);
        tcase_add_test(tc, test_bad_table);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(options_suite)
