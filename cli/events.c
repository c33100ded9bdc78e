/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <inttypes.h>

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_events;

struct events {
        bool raw; /* -o json: the server's lines as they are */
        const char *service, *instance, *node;
        const char *addr;
};

static bool wanted(const struct events *e, const json_t *ev)
{
        return (!e->service || streq_ptr(orch_json_str(ev, "service"), e->service)) &&
               (!e->instance || streq_ptr(orch_json_str(ev, "instance"), e->instance)) &&
               (!e->node || streq_ptr(orch_json_str(ev, "node"), e->node));
}

static void print_event(const struct events *e, const json_t *ev, const char *line, size_t len)
{
        if (!wanted(e, ev))
                return;
        if (e->raw) {
                fwrite(line, 1, len, stdout);
                fputc('\n', stdout);
        } else
                orch_output_event(ev, stdout, 0);
        fflush(stdout);
}

/* Following: one NDJSON line at a time, as orchd publishes them. */
static int event_line(const char *line, size_t len, void *userdata)
{
        struct events *e = userdata;
        _cleanup_json_ json_t *ev = NULL;

        if (len == 0)
                return 0;
        ev = json_loadb(line, len, 0, NULL);
        if (!json_is_object(ev)) {
                fprintf(stderr, "orch: orchd at %s sent an event that is not a JSON object\n", e->addr);
                return -EBADMSG;
        }
        print_event(e, ev, line, len);
        return 0;
}

/* The history, paged by orch_client_events(). */
static int event_object(json_t *ev, const char *line, size_t len, void *userdata)
{
        print_event(userdata, ev, line, len);
        return 0;
}

static int events_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"follow", no_argument, NULL, 'f'},
                {"since", required_argument, NULL, 's'},
                {"output", required_argument, NULL, 'o'},
                {"service", required_argument, NULL, 'S'},
                {"instance", required_argument, NULL, 'I'},
                {"node", required_argument, NULL, 'N'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        struct events e = {0};
        enum orch_output_format format = ORCH_OUTPUT_TABLE;
        bool follow = false;
        uint64_t since = 0;
        char target[80];
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_events, argc, argv, ":fo:", options)) >= 0) {
                switch (c) {
                case 'f':
                        follow = true;
                        break;
                case 's':
                        if (orch_parse_u64(optarg, &since) < 0)
                                return orch_cli_usage_error(&orch_cmd_events,
                                                            "--since: expected an event index, not '%s'",
                                                            optarg);
                        break;
                case 'o':
                        if (orch_output_format_from_string(optarg, &format) < 0 ||
                            (format != ORCH_OUTPUT_TABLE && format != ORCH_OUTPUT_JSON))
                                return orch_cli_usage_error(&orch_cmd_events,
                                                            "-o: expected table or json, not '%s'", optarg);
                        break;
                case 'S':
                        e.service = optarg;
                        break;
                case 'I':
                        e.instance = optarg;
                        break;
                case 'N':
                        e.node = optarg;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind < argc)
                return orch_cli_usage_error(&orch_cmd_events, "unexpected argument '%s'", argv[optind]);
        e.raw = format == ORCH_OUTPUT_JSON;

        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        e.addr = orch_client_addr(client);
        if (!follow)
                return orch_client_events(client, since, event_object, &e) < 0 ? ORCH_EXIT_FAILURE
                                                                               : ORCH_EXIT_OK;
        orch_client_no_read_timeout(client);
        orch_client_exit_on_interrupt();
        orch_snprintf(target, sizeof target, "/v1/events?since=%" PRIu64 "&follow=1", since);
        return orch_client_stream(client, target, ORCH_HTTPCLIENT_LINES, event_line, &e) < 0
                       ? ORCH_EXIT_FAILURE
                       : ORCH_EXIT_OK;
}

const struct orch_cmd orch_cmd_events = {
        .name = "events",
        .usage = "events [-f] [--since INDEX] [-o table|json] [--service S] [--instance I] [--node N]",
        .summary = "Print the cluster's events, and follow new ones.",
        .help = "Options:\n"
                "  -f, --follow         after the history, print new events as they happen, until\n"
                "                       interrupted (Ctrl-C ends it, exit status 0)\n"
                "      --since INDEX    only events with a higher index\n"
                "  -o, --output FORMAT  table (default): TIME TYPE MESSAGE; json: orchd's NDJSON lines,\n"
                "                       one event object per line with its rising \"index\"\n"
                "      --service NAME   only events about this service\n"
                "      --instance ID    only events about this instance\n"
                "      --node NAME      only events about this node\n"
                "      --addr URL       orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "Examples:\n"
                "  orch events --service web\n"
                "  orch events -f -o json --since 1200\n",
        .run = events_run,
};
