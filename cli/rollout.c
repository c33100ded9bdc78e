/* SPDX-License-Identifier: MIT */
#include "config.h"

#include "cli.h"
#include "client.h"
#include "json.h"
#include "output.h"
#include "units.h"
#include "util.h"
#include "banned.h"

extern const struct orch_cmd orch_cmd_rollout;

#define POLL_MSEC 1000U

struct rollout {
        const char *name;
        char *target; /* /v1/services/NAME/rollout */
        char watched[64];
        char last_line[1024];
};

/* Why a rollout failed: the message of its "failed" event (the rollout record is reset when the
 * automatic rollback starts, so the reason survives only there). */
struct failure_reason {
        const char *service, *revision;
        char reason[512];
};

static int failure_event(json_t *ev, const char *line, size_t len, void *userdata)
{
        struct failure_reason *f = userdata;
        const char *reason = orch_json_str(ev, "reason");

        if (streq_ptr(orch_json_str(ev, "type"), "rollout") &&
            streq_ptr(orch_json_str(ev, "state"), "failed") &&
            streq_ptr(orch_json_str(ev, "service"), f->service) &&
            streq_ptr(orch_json_str(ev, "revision"), f->revision) && reason)
                orch_strlcpy(f->reason, reason, sizeof f->reason);
        return 0;
}

static void failure_reason(struct orch_client *client, const char *service, const char *revision, char *buf,
                           size_t size)
{
        struct failure_reason f = {.service = service, .revision = revision};

        /* best effort: without the history the failure is still reported, just without a reason */
        if (orch_client_events(client, 0, failure_event, &f) < 0)
                f.reason[0] = '\0';
        orch_strlcpy(buf, f.reason, size);
}

/* "2 new (1 healthy) of 3 replicas, 1 old left": the counts of the rollout answer (live instances:
 * pending ones count as new or old too). */
static void progress_text(const json_t *ro, char *buf, size_t size)
{
        json_int_t replicas = json_integer_value(json_object_get(ro, "replicas"));
        json_int_t n_new = json_integer_value(json_object_get(ro, "new"));
        json_int_t old = json_integer_value(json_object_get(ro, "old"));
        json_int_t healthy = json_integer_value(json_object_get(ro, "healthy"));

        orch_snprintf(buf, size,
                      "%" JSON_INTEGER_FORMAT " new (%" JSON_INTEGER_FORMAT
                      " healthy) of %" JSON_INTEGER_FORMAT " replicas, %" JSON_INTEGER_FORMAT " old left",
                      n_new, healthy, replicas, old);
}

/* " deadline in 1m40s (2026-11-26T11:43:01.258Z)" or "". */
static void deadline_text(const json_t *ro, char *buf, size_t size)
{
        const char *deadline = orch_json_str(ro, "deadline");
        uint64_t at, now = orch_realtime_msec();
        char left[32];

        *buf = '\0';
        if (!deadline || orch_parse_time(deadline, &at) < 0)
                return;
        if (at <= now)
                orch_snprintf(buf, size, "; deadline passed (%s)", deadline);
        else if (orch_format_duration((at - now + 999) / 1000 * 1000, left, sizeof left) >= 0)
                orch_snprintf(buf, size, "; deadline in %s (%s)", left, deadline);
}

enum outcome {
        OUTCOME_WAIT,
        OUTCOME_DONE,
        OUTCOME_FAILED,
};

static enum outcome look(struct orch_client *client, struct rollout *ro_state, const json_t *ro)
{
        const char *state = strempty(orch_json_str(ro, "state")),
                   *rev = strempty(orch_json_str(ro, "revision"));
        const char *from = strempty(orch_json_str(ro, "from")), *message = orch_json_str(ro, "message");
        char progress[256], deadline[128], line[1024], reason[512];

        progress_text(ro, progress, sizeof progress);
        if (json_is_true(json_object_get(ro, "reverting"))) {
                /* orchd gave up on the rollout and is putting the previous revision back */
                failure_reason(client, ro_state->name, from, reason, sizeof reason);
                fprintf(stderr, "orch: rollout of %s to revision %s failed%s%s; %s revision %s\n",
                        ro_state->name, from, *reason ? ": " : "", reason,
                        streq(state, "complete") ? "rolled back to" : "rolling back to", rev);
                return OUTCOME_FAILED;
        }
        if (!*ro_state->watched)
                orch_strlcpy(ro_state->watched, rev, sizeof ro_state->watched);
        else if (!streq(ro_state->watched, rev)) {
                printf("a new rollout of %s started: revision %s\n", ro_state->name, rev);
                orch_strlcpy(ro_state->watched, rev, sizeof ro_state->watched);
        }
        if (streq(state, "complete")) {
                printf("rollout of %s to revision %s complete: %s\n", ro_state->name, rev, progress);
                return OUTCOME_DONE;
        }
        if (streq(state, "none")) {
                printf("%s has no rollout in progress: revision %s, %s\n", ro_state->name, rev, progress);
                return OUTCOME_DONE;
        }
        if (streq(state, "failed")) {
                fprintf(stderr, "orch: rollout of %s to revision %s failed%s%s\n", ro_state->name, rev,
                        message ? ": " : "", strempty(message));
                return OUTCOME_FAILED;
        }
        deadline_text(ro, deadline, sizeof deadline);
        orch_snprintf(line, sizeof line, "waiting for the rollout of %s to revision %s: %s%s%s%s",
                      ro_state->name, rev, progress, message ? "; step: " : "", strempty(message), deadline);
        /* a line per change, not per poll (the deadline's countdown alone is not a change) */
        {
                char key[1024];
                orch_snprintf(key, sizeof key, "%s|%s|%s", rev, progress, strempty(message));
                if (!streq(key, ro_state->last_line)) {
                        printf("%s\n", line);
                        fflush(stdout);
                        orch_strlcpy(ro_state->last_line, key, sizeof ro_state->last_line);
                }
        }
        return OUTCOME_WAIT;
}

static int status(struct orch_client *client, const char *name, bool wait, uint64_t timeout_msec)
{
        _cleanup_(freep) char *escaped = orch_client_escape(name);
        struct rollout st = {.name = name};
        uint64_t deadline = timeout_msec ? orch_now_msec() + timeout_msec : 0;
        int r = ORCH_EXIT_FAILURE;

        if (!escaped || !(st.target = orch_strdup_printf("/v1/services/%s/rollout", escaped)))
                return orch_cli_fail("out of memory");
        for (;;) {
                _cleanup_json_ json_t *ro = NULL;
                enum outcome o;

                if (orch_client_json(client, "GET", st.target, NULL, &ro, NULL) < 0)
                        break;
                o = look(client, &st, ro);
                if (o != OUTCOME_WAIT) {
                        r = o == OUTCOME_DONE ? ORCH_EXIT_OK : ORCH_EXIT_FAILURE;
                        break;
                }
                if (!wait) {
                        r = ORCH_EXIT_OK;
                        break;
                }
                if (deadline && orch_now_msec() >= deadline) {
                        char d[32];
                        orch_format_duration(timeout_msec, d, sizeof d);
                        orch_cli_fail("timed out after %s waiting for the rollout of %s", d, name);
                        break;
                }
                orch_cli_sleep_msec(POLL_MSEC);
        }
        free(st.target);
        return r;
}

static int undo(struct orch_client *client, const char *name)
{
        _cleanup_(freep) char *escaped = orch_client_escape(name), *target = NULL;
        _cleanup_json_ json_t *svc = NULL;

        if (!escaped || !(target = orch_strdup_printf("/v1/services/%s/rollout/undo", escaped)))
                return orch_cli_fail("out of memory");
        if (orch_client_json(client, "POST", target, NULL, &svc, NULL) < 0)
                return ORCH_EXIT_FAILURE;
        printf("%s rolling back to revision %s\n", name, strna(orch_json_str(svc, "revision")));
        return ORCH_EXIT_OK;
}

static int rollout_run(int argc, char **argv)
{
        static const struct option options[] = {
                {"no-wait", no_argument, NULL, 'W'},
                {"timeout", required_argument, NULL, 't'},
                ORCH_CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(orch_client_freep) struct orch_client *client = NULL;
        uint64_t timeout_msec = 0;
        bool wait = true, timeout_given = false;
        const char *action;
        int c, r;

        while ((c = orch_cli_getopt(&orch_cmd_rollout, argc, argv, ":", options)) >= 0) {
                switch (c) {
                case 'W':
                        wait = false;
                        break;
                case 't':
                        if (orch_cli_parse_timeout(&orch_cmd_rollout, optarg, &timeout_msec) < 0)
                                return ORCH_EXIT_USAGE;
                        timeout_given = true;
                        break;
                }
        }
        if (c == ORCH_CLI_GETOPT_USAGE)
                return ORCH_EXIT_USAGE;
        if (optind >= argc)
                return orch_cli_usage_error(&orch_cmd_rollout, "what to do: status or undo");
        action = argv[optind];
        if (!streq(action, "status") && !streq(action, "undo"))
                return orch_cli_usage_error(&orch_cmd_rollout,
                                            "unknown action '%s': expected status or undo", action);
        if (optind + 1 >= argc)
                return orch_cli_usage_error(&orch_cmd_rollout, "no service given");
        if (optind + 2 < argc)
                return orch_cli_usage_error(&orch_cmd_rollout, "unexpected argument '%s'", argv[optind + 2]);
        if (streq(action, "undo") && (!wait || timeout_given))
                return orch_cli_usage_error(&orch_cmd_rollout, "--no-wait and --timeout go with status");

        r = orch_cli_client(&client);
        if (r != ORCH_EXIT_OK)
                return r;
        if (streq(action, "undo"))
                return undo(client, argv[optind + 1]);
        return status(client, argv[optind + 1], wait, timeout_msec);
}

const struct orch_cmd orch_cmd_rollout = {
        .name = "rollout",
        .usage = "rollout status|undo SERVICE [--no-wait] [--timeout DURATION]",
        .summary = "Follow a rolling update, or roll back to the previous revision.",
        .help = "Actions:\n"
                "  status SERVICE  print the rollout's progress (new, old and healthy instances, what it\n"
                "                  waits for, the deadline) until it completes (exit 0) or fails (exit 1:\n"
                "                  orchd gave up, and unless auto_revert is off, rolls back)\n"
                "  undo SERVICE    roll back to the previous revision, as a new rollout\n"
                "\n"
                "Options:\n"
                "      --no-wait           status: print the current state once and exit (0 unless failed)\n"
                "      --timeout DURATION  status: give up waiting after this long (exit 1), e.g. 5m\n"
                "      --addr URL          orchd's API (default: $ORCH_ADDR or http://127.0.0.1:7070)\n"
                "\n"
                "A service without a rollout in progress (never updated, or only scaled) is reported\n"
                "as such, exit 0. While an automatic rollback runs, or after it, status exits 1.\n"
                "\n"
                "Examples:\n"
                "  orch apply -f web.yaml && orch rollout status web --timeout 5m\n"
                "  orch rollout undo web\n",
        .run = rollout_run,
};
