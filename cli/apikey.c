/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "util.h"
#include "banned.h"

/*
 * orch apikey create|list|delete: the API keys of gateway routes with `auth: api-key`
 * (docs/gateway.md, "Protection"), through POST/GET/DELETE /v1/apikeys. orchd keeps only a
 * key's SHA-256: `create` prints the key once, and nothing can show it again.
 */

extern const struct orch_cmd orch_cmd_apikey;

static int create(struct orch_client *client, const char *service, const char *name,
                  enum orch_output_format format)
{
        _cleanup_json_ json_t *body = json_pack("{s:s, s:s}", "service", service, "name", name), *out = NULL;
        const char *key;

        if (!body)
                return orch_cli_fail("out of memory");
        if (orch_client_json(client, "POST", "/v1/apikeys", body, &out, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        if (format == ORCH_OUTPUT_JSON)
                return orch_output_json(out, stdout) < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
        key = orch_json_str(out, "key");
        if (!key)
                return orch_cli_fail("orchd's answer has no key");
        /* the key alone on stdout, so that `KEY=$(orch apikey create web ci)` works */
        printf("%s\n", key);
        fprintf(stderr, "API key %s (%s) created for service %s; it is shown this once.\n",
                strna(orch_json_str(out, "id")), name, service);
        return ORCH_EXIT_OK;
}

static int list(struct orch_client *client, const char *service, enum orch_output_format format)
{
        static const char *const headers[] = {"ID", "SERVICE", "NAME", "AGE"};
        _cleanup_(orch_table_freep) struct orch_table *t = NULL;
        _cleanup_json_ json_t *all = NULL, *keys = json_array();
        json_t *k;
        size_t i;

        if (!keys)
                return orch_cli_fail("out of memory");
        if (orch_client_json(client, "GET", "/v1/apikeys", NULL, &all, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        if (!json_is_array(all))
                return orch_cli_fail("orchd's answer is not a list of keys");
        json_array_foreach (all, i, k)
                if (!service || streq(strempty(orch_json_str(k, "service")), service))
                        json_array_append(keys, k);
        if (format == ORCH_OUTPUT_JSON)
                return orch_output_json(keys, stdout) < 0 ? ORCH_EXIT_FAILURE : ORCH_EXIT_OK;
        if (format == ORCH_OUTPUT_NAME) {
                json_array_foreach (keys, i, k)
                        printf("%s\n", strempty(orch_json_str(k, "id")));
                return ORCH_EXIT_OK;
        }
        if (json_array_size(keys) == 0) {
                fprintf(stderr, "No API keys found.\n");
                return ORCH_EXIT_OK;
        }
        t = orch_table_new(ELEMENTSOF(headers), headers);
        if (!t)
                return orch_cli_fail("out of memory");
        json_array_foreach (keys, i, k) {
                char age[32];

                orch_format_age_json(json_object_get(k, "created_at"), age, sizeof age);
                if (orch_table_add_row(t, (const char *const[]){orch_json_str(k, "id"), orch_json_str(k, "service"),
                                                                orch_json_str(k, "name"), age}) < 0)
                        return orch_cli_fail("out of memory");
        }
        orch_table_print(t, stdout, 0);
        return ORCH_EXIT_OK;
}

static int delete(struct orch_client *client, char *const *ids, size_t n)
{
        int status = ORCH_EXIT_OK;

        for (size_t i = 0; i < n; i++) {
                _cleanup_(freep) char *escaped = orch_client_escape(ids[i]), *target = NULL;

                if (!escaped || !(target = orch_strdup_printf("/v1/apikeys/%s", escaped)))
                        return orch_cli_fail("out of memory");
                if (orch_client_json(client, "DELETE", target, NULL, NULL, NULL) < 0) {
                        status = ORCH_EXIT_FAILURE;
                        continue;
                }
                printf("%s deleted\n", ids[i]);
        }
        return status;
}

static int apikey_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"output", required_argument, NULL, 'o'},
                {"service", required_argument, NULL, 's'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        enum orch_output_format format = ORCH_OUTPUT_TABLE;
        const char *action, *service = NULL;
        size_t n_args;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_apikey, argc, argv, ":o:", options)) >= 0) {
                switch (c) {
                case 'o':
                        if (orch_output_format_from_string(optarg, &format) < 0 || format == ORCH_OUTPUT_WIDE)
                                return orch_cli_usage_error(&orch_cmd_apikey,
                                                            "-o: expected table, json or name, not '%s'", optarg);
                        break;
                case 's':
                        service = optarg;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_apikey, "what to do: create, list or delete");
        action = argv[optind];
        n_args = (size_t)(argc - optind - 1);
        if (streq(action, "create")) {
                if (n_args != 2)
                        return orch_cli_usage_error(&orch_cmd_apikey, "create takes a SERVICE and a NAME");
                if (service)
                        return orch_cli_usage_error(&orch_cmd_apikey, "--service goes with list");
                if (format == ORCH_OUTPUT_NAME)
                        return orch_cli_usage_error(&orch_cmd_apikey, "-o name goes with list");
        } else if (streq(action, "list")) {
                if (n_args > 0)
                        return orch_cli_usage_error(&orch_cmd_apikey, "unexpected argument '%s'",
                                                    argv[optind + 1]);
        } else if (streq(action, "delete")) {
                if (n_args == 0)
                        return orch_cli_usage_error(&orch_cmd_apikey, "no key id given");
                if (service || format != ORCH_OUTPUT_TABLE)
                        return orch_cli_usage_error(&orch_cmd_apikey, "delete takes no -o or --service");
        } else {
                return orch_cli_usage_error(&orch_cmd_apikey,
                                            "unknown action '%s': expected create, list or delete", action);
        }

        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (streq(action, "create"))
                return create(client, argv[optind + 1], argv[optind + 2], format);
        if (streq(action, "list"))
                return list(client, service, format);
        return delete(client, argv + optind + 1, n_args);
}

const struct orch_cmd orch_cmd_apikey = {
        .name = "apikey",
        .usage = "apikey create SERVICE NAME | list [--service SERVICE] | delete ID...",
        .summary = "Manage the API keys of gateway routes with auth: api-key.",
        .help = "Options:\n"
                "  -o, --output FORMAT    create: table (the key alone) or json; list: table, json or name\n"
                "      --service SERVICE  list: only the keys of this service\n"
                "      --addr URL         orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "create prints the new key on stdout (its id on stderr). orchd keeps only the key's\n"
                "SHA-256, so the key is shown this once. Clients send it as `X-API-Key: KEY` or\n"
                "`Authorization: Bearer KEY` to the routes of SERVICE; a deleted key stops working\n"
                "at once.\n"
                "\n"
                "Examples:\n"
                "  KEY=$(orch apikey create web ci)\n"
                "  orch apikey list --service web\n"
                "  orch apikey delete 3f9c2a0d\n",
        .run = apikey_run,
};
