/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <jansson.h>

#include "manifest.h"
#include "proto.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

#define REV_A "0123456789abcdef"
#define REV_B "fedcba9876543210"

/* ---------------------------------------------------------------------------------------------- */
/* Helpers */

/* Encodes m, checks the framing (one line per frame, "type" first, valid for jansson) and returns
 * the text. */
static char *encode_ok(const struct orch_proto_msg *m)
{
        struct orch_buf b = {0};
        struct orch_proto_error e = {{0}};
        int r = orch_proto_encode(&b, m, &e);

        ck_assert_msg(r == 0, "encode %s: %d %s", orch_proto_type_to_string(m->type), r, e.message);
        ck_assert_uint_gt(b.len, 0);
        ck_assert_int_eq(b.data[b.len - 1], '\n');
        ck_assert_msg(memchr(b.data, '\n', b.len) == b.data + b.len - 1 || m->type == ORCH_PROTO_HELLO,
                      "more than one line: %s", b.data);
        ck_assert_msg(strncmp(b.data, "{\"type\":\"", 9) == 0, "type is not first: %s", b.data);
        for (char *line = b.data; line < b.data + b.len;) {
                char *nl = memchr(line, '\n', (size_t)(b.data + b.len - line));
                json_error_t je;
                json_t *j = json_loadb(line, (size_t)(nl - line), JSON_REJECT_DUPLICATES, &je);
                ck_assert_msg(j, "jansson rejects our frame: %s: %.200s", je.text, line);
                ck_assert(json_is_object(j));
                json_decref(j);
                line = nl + 1;
        }
        return orch_buf_steal(&b);
}

static struct orch_proto_msg *decode_ok(const char *frame)
{
        struct orch_proto_msg *m = NULL;
        struct orch_proto_error e = {{0}};
        int r = orch_proto_decode(frame, strlen(frame), &m, &e);

        ck_assert_msg(r == 0, "decode failed: %s\n  frame: %.300s", e.message, frame);
        return m;
}

static void decode_fails(const char *frame, size_t len, int expected_r, const char *expected)
{
        struct orch_proto_msg *m = NULL;
        struct orch_proto_error e = {{0}};
        int r = orch_proto_decode(frame, len, &m, &e);

        ck_assert_msg(r == expected_r, "expected %d, got %d (%s) for %.200s", expected_r, r, e.message,
                      frame);
        ck_assert_ptr_null(m);
        ck_assert_msg(streq(e.message, expected), "for %.200s\n  expected: %s\n  got:      %s", frame,
                      expected, e.message);
}

static void decode_error(const char *frame, const char *expected)
{
        decode_fails(frame, strlen(frame), -EINVAL, expected);
}

/* Encodes, decodes, and hands back the decoded message for field-by-field comparison. */
static struct orch_proto_msg *round_trip(const struct orch_proto_msg *m)
{
        _cleanup_(freep) char *text = encode_ok(m);
        struct orch_proto_msg *d = decode_ok(text);

        ck_assert_int_eq(d->type, m->type);
        /* Encoding what was decoded gives the same bytes: nothing is lost or reordered. */
        _cleanup_(freep) char *again = encode_ok(d);
        ck_assert_str_eq(again, text);
        return d;
}

static void encode_error(const struct orch_proto_msg *m, const char *expected)
{
        struct orch_buf b = {0};
        struct orch_proto_error e = {{0}};

        orch_buf_puts(&b, "queued\n");
        ck_assert_int_eq(orch_proto_encode(&b, m, &e), -EINVAL);
        ck_assert_msg(streq(e.message, expected), "\n  expected: %s\n  got:      %s", expected, e.message);
        /* Nothing half-written stays queued. */
        ck_assert_str_eq(b.data, "queued\n");
        ck_assert_uint_eq(b.len, 7);
        orch_buf_release(&b);
}

static void report_eq(const struct orch_proto_report *a, const struct orch_proto_report *b)
{
        ck_assert_str_eq(a->instance, b->instance);
        ck_assert_str_eq(a->service, b->service);
        ck_assert_str_eq(a->revision, b->revision);
        ck_assert_uint_eq(a->generation, b->generation);
        ck_assert_int_eq(a->state, b->state);
        ck_assert_int_eq(a->health, b->health);
        ck_assert_uint_eq(a->pid, b->pid);
        ck_assert_uint_eq(a->n_ports, b->n_ports);
        for (size_t i = 0; i < a->n_ports; i++) {
                ck_assert_str_eq(a->ports[i].name, b->ports[i].name);
                ck_assert_uint_eq(a->ports[i].port, b->ports[i].port);
        }
        ck_assert_uint_eq(a->restarts, b->restarts);
        ck_assert_uint_eq(a->started_at, b->started_at);
        ck_assert_int_eq(a->has_exit, b->has_exit);
        ck_assert_uint_eq(a->exit.code, b->exit.code);
        ck_assert_uint_eq(a->exit.signal, b->exit.signal);
        ck_assert_int_eq(a->exit.oom, b->exit.oom);
        ck_assert(streq_ptr(a->reason, b->reason));
        ck_assert(streq_ptr(a->cgroup, b->cgroup));
}

static struct orch_proto_port sample_ports[] = {{"http", 20001}, {"admin-ui", 65535}};

static struct orch_proto_report full_report(void)
{
        return (struct orch_proto_report){
                .instance = "web-1a2b3c4d",
                .service = "web",
                .revision = REV_A,
                .generation = 42,
                .state = ORCH_INSTANCE_RUNNING,
                .health = ORCH_HEALTH_PASSING,
                .pid = 4242,
                .ports = sample_ports,
                .n_ports = ELEMENTSOF(sample_ports),
                .restarts = 3,
                .started_at = 1764154462123,
                .has_exit = true,
                .exit = {.code = 1, .signal = 9, .oom = true},
                .reason = "restarted after \"exit 1\"\n(oom)",
                .cgroup = "/sys/fs/cgroup/orch/web-1a2b3c4d",
        };
}

/* ---------------------------------------------------------------------------------------------- */
/* Round trips, one per message type */

START_TEST(test_hello_round_trip)
{
        struct orch_proto_label labels[] = {
                {"zone", "eu-1"}, {"kubernetes.io/hostname", "n1"}, {"empty", ""}};
        const char *drivers[] = {"exec", "systemd"};
        struct orch_proto_report reports[] = {
                full_report(),
                {.instance = "api-0",
                 .service = "api",
                 .revision = REV_B,
                 .generation = 1,
                 .state = ORCH_INSTANCE_PENDING,
                 .health = ORCH_HEALTH_UNKNOWN},
        };
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_HELLO,
                .hello = {.proto = ORCH_PROTO_VERSION,
                          .node = "node-1.example.com",
                          .token = "s3cr3t-t0ken",
                          .address = "192.0.2.10",
                          .version = "0.1.0 (abc)",
                          .labels = labels,
                          .n_labels = ELEMENTSOF(labels),
                          .capacity = {.cpu_millis = 2000, .memory = 4ULL << 30},
                          .drivers = drivers,
                          .n_drivers = ELEMENTSOF(drivers),
                          .instances = reports,
                          .n_instances = ELEMENTSOF(reports)},
        };
        _cleanup_(orch_proto_msg_freep) struct orch_proto_msg *d = round_trip(&m);
        const struct orch_proto_hello *h = &d->hello;

        ck_assert_uint_eq(h->proto, 1);
        ck_assert_str_eq(h->node, "node-1.example.com");
        ck_assert_str_eq(h->token, "s3cr3t-t0ken");
        ck_assert_str_eq(h->address, "192.0.2.10");
        ck_assert_str_eq(h->version, "0.1.0 (abc)");
        ck_assert_uint_eq(h->n_labels, 3);
        for (size_t i = 0; i < 3; i++) {
                ck_assert_str_eq(h->labels[i].key, labels[i].key);
                ck_assert_str_eq(h->labels[i].value, labels[i].value);
        }
        ck_assert_uint_eq(h->capacity.cpu_millis, 2000);
        ck_assert_uint_eq(h->capacity.memory, 4ULL << 30);
        ck_assert_uint_eq(h->n_drivers, 2);
        ck_assert_str_eq(h->drivers[0], "exec");
        ck_assert_str_eq(h->drivers[1], "systemd");
        ck_assert_uint_eq(h->n_instances, 2);
        report_eq(&h->instances[0], &reports[0]);
        report_eq(&h->instances[1], &reports[1]);
        ck_assert(!h->more);

        /* IPv6 addresses and host names are addresses too; no labels and no instances are fine. */
        m.hello.address = "2001:db8::1";
        m.hello.n_labels = 0;
        m.hello.n_instances = 0;
        orch_proto_msg_free(round_trip(&m));
        m.hello.address = "node-1.internal";
        orch_proto_msg_free(round_trip(&m));
}
END_TEST

START_TEST(test_small_messages_round_trip)
{
        struct orch_proto_msg w = {
                .type = ORCH_PROTO_WELCOME,
                .welcome = {
                        .node = "n1", .heartbeat_ms = 1000, .ttl_ms = 5000, .server_time = 1764154462123}};
        struct orch_proto_msg e = {.type = ORCH_PROTO_ERROR, .error = {.error = "invalid join token"}};
        struct orch_proto_msg hb = {.type = ORCH_PROTO_HEARTBEAT, .heartbeat = {.seq = 0}};
        struct orch_proto_msg hbs = {.type = ORCH_PROTO_HEARTBEAT,
                                     .heartbeat = {.seq = 77, .heartbeat_ms = 2000, .ttl_ms = 10000}};
        struct orch_proto_msg lc = {.type = ORCH_PROTO_LOGS_CANCEL, .logs_cancel = {.id = 9}};
        struct orch_proto_msg *d;
        char *text;

        d = round_trip(&w);
        ck_assert_str_eq(d->welcome.node, "n1");
        ck_assert_uint_eq(d->welcome.heartbeat_ms, 1000);
        ck_assert_uint_eq(d->welcome.ttl_ms, 5000);
        ck_assert_uint_eq(d->welcome.server_time, 1764154462123);
        orch_proto_msg_free(d);

        d = round_trip(&e);
        ck_assert_str_eq(d->error.error, "invalid join token");
        orch_proto_msg_free(d);

        text = encode_ok(&hb);
        ck_assert_str_eq(text, "{\"type\":\"heartbeat\",\"seq\":0}\n");
        free(text);
        d = round_trip(&hbs);
        ck_assert_uint_eq(d->heartbeat.seq, 77);
        ck_assert_uint_eq(d->heartbeat.heartbeat_ms, 2000);
        ck_assert_uint_eq(d->heartbeat.ttl_ms, 10000);
        orch_proto_msg_free(d);

        text = encode_ok(&lc);
        ck_assert_str_eq(text, "{\"type\":\"logs_cancel\",\"id\":9}\n");
        free(text);
        d = round_trip(&lc);
        ck_assert_uint_eq(d->logs_cancel.id, 9);
        orch_proto_msg_free(d);
}
END_TEST

START_TEST(test_spec_round_trip)
{
        static const char yaml[] = "kind: service\n"
                                   "name: web\n"
                                   "replicas: 2\n"
                                   "command: [\"/usr/bin/python3\", \"-m\", \"http.server\", \"${PORT}\"]\n"
                                   "env: {GREETING: \"h\\u00e9llo \\\"world\\\"\"}\n"
                                   "ports:\n  - name: http\n"
                                   "resources: {cpu: 250m, memory: 64Mi}\n";
        struct orch_manifest mf = {0};
        struct orch_diags diags = {0};
        json_t *canonical = NULL;
        char revision[ORCH_REVISION_LEN + 1];
        struct orch_proto_msg *d;

        ck_assert_int_eq(orch_manifest_parse_buffer(&mf, "web.yaml", yaml, sizeof yaml - 1, &diags), 0);
        ck_assert_uint_eq(mf.n_services, 1);
        ck_assert_int_eq(orch_service_to_json(mf.services[0], &canonical), 0);
        ck_assert_int_eq(orch_service_revision(mf.services[0], revision), 0);

        struct orch_proto_msg m = {
                .type = ORCH_PROTO_SPEC,
                .spec = {.id = 1, .service = "web", .revision = revision, .spec = canonical},
        };
        d = round_trip(&m);
        ck_assert_uint_eq(d->spec.id, 1);
        ck_assert_str_eq(d->spec.service, "web");
        ck_assert_str_eq(d->spec.revision, revision);
        ck_assert(json_equal(d->spec.spec, canonical));
        ck_assert_ptr_nonnull(d->spec.parsed);
        ck_assert(orch_service_equal(d->spec.parsed, mf.services[0]));
        orch_proto_msg_free(d);

        /* A spec filed under another name would be cached as the wrong service. */
        m.spec.service = "api";
        encode_error(&m, "spec.spec: the spec's name \"web\" does not match service \"api\"");

        json_decref(canonical);
        for (size_t i = 0; i < mf.n_services; i++)
                orch_service_free(mf.services[i]);
        free(mf.services);
        orch_diags_release(&diags);
}
END_TEST

START_TEST(test_start_stop_round_trip)
{
        struct orch_proto_start_item items[100];
        struct orch_proto_stop_item stops[] = {{"web-1a2b3c4d", 7}, {"api-0", 1}};
        char ids[100][32];
        struct orch_proto_msg *d;

        for (size_t i = 0; i < ELEMENTSOF(items); i++) {
                (void)orch_snprintf(ids[i], sizeof ids[i], "my-svc-%08zx", i * 7919);
                items[i] =
                        (struct orch_proto_start_item){ids[i], "my-svc", i % 2 ? REV_A : REV_B, 1000000 + i};
        }
        struct orch_proto_msg start = {.type = ORCH_PROTO_START,
                                       .start = {.id = 12345, .instances = items, .n_instances = 100}};
        d = round_trip(&start);
        ck_assert_uint_eq(d->start.id, 12345);
        ck_assert_uint_eq(d->start.n_instances, 100);
        for (size_t i = 0; i < 100; i++) {
                ck_assert_str_eq(d->start.instances[i].instance, ids[i]);
                ck_assert_str_eq(d->start.instances[i].service, "my-svc");
                ck_assert_str_eq(d->start.instances[i].revision, i % 2 ? REV_A : REV_B);
                ck_assert_uint_eq(d->start.instances[i].generation, 1000000 + i);
        }
        orch_proto_msg_free(d);

        struct orch_proto_msg stop = {
                .type = ORCH_PROTO_STOP,
                .stop = {.id = 2, .instances = stops, .n_instances = 2, .reason = "scaled down"}};
        d = round_trip(&stop);
        ck_assert_uint_eq(d->stop.n_instances, 2);
        ck_assert_str_eq(d->stop.instances[0].instance, "web-1a2b3c4d");
        ck_assert_uint_eq(d->stop.instances[0].generation, 7);
        ck_assert_str_eq(d->stop.instances[1].instance, "api-0");
        ck_assert_str_eq(d->stop.reason, "scaled down");
        orch_proto_msg_free(d);

        stop.stop.reason = NULL;
        d = round_trip(&stop);
        ck_assert_ptr_null(d->stop.reason);
        orch_proto_msg_free(d);
}
END_TEST

START_TEST(test_logs_round_trip)
{
        struct orch_proto_msg logs = {.type = ORCH_PROTO_LOGS,
                                      .logs = {.id = 3, .instance = "web-0", .tail = ORCH_PROTO_TAIL_ALL}};
        struct orch_proto_msg *d;
        char *text;

        text = encode_ok(&logs);
        ck_assert_str_eq(text, "{\"type\":\"logs\",\"id\":3,\"instance\":\"web-0\"}\n");
        free(text);
        d = round_trip(&logs);
        ck_assert_uint_eq(d->logs.tail, ORCH_PROTO_TAIL_ALL);
        ck_assert(!d->logs.follow);
        orch_proto_msg_free(d);

        logs.logs.tail = 0;
        logs.logs.follow = true;
        d = round_trip(&logs);
        ck_assert_uint_eq(d->logs.tail, 0);
        ck_assert(d->logs.follow);
        orch_proto_msg_free(d);

        /* Log data is whatever the process printed. */
        static const char data[] = "line 1\n\t\"quoted\" \\ back\x01\x1f caf\xc3\xa9 \xf0\x9f\x98\x80\n";
        struct orch_proto_msg log = {.type = ORCH_PROTO_LOG,
                                     .log = {.id = 3, .data = data, .data_len = sizeof data - 1}};
        text = encode_ok(&log);
        ck_assert_str_eq(text,
                         "{\"type\":\"log\",\"id\":3,\"data\":\"line 1\\n\\t\\\"quoted\\\" \\\\ back\\u0001"
                         "\\u001f caf\xc3\xa9 \xf0\x9f\x98\x80\\n\"}\n");
        free(text);
        d = round_trip(&log);
        ck_assert_uint_eq(d->log.data_len, sizeof data - 1);
        ck_assert(memcmp(d->log.data, data, sizeof data) == 0);
        ck_assert(!d->log.eof);
        orch_proto_msg_free(d);

        /* Invalid UTF-8 and NUL bytes become U+FFFD rather than an invalid frame. */
        static const char bad[] = "a\xff"
                                  "b\0c\xc3(\xed\xa0\x80\xe2\x82";
        log.log.data = bad;
        log.log.data_len = sizeof bad - 1;
        log.log.eof = true;
        d = round_trip(&log);
        ck_assert_str_eq(d->log.data, "a\xef\xbf\xbd"
                                      "b\xef\xbf\xbd"
                                      "c\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd"
                                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
        ck_assert(d->log.eof);
        orch_proto_msg_free(d);

        /* The last chunk may be empty. */
        log.log.data = NULL;
        log.log.data_len = 0;
        d = round_trip(&log);
        ck_assert_str_eq(d->log.data, "");
        ck_assert_uint_eq(d->log.data_len, 0);
        orch_proto_msg_free(d);
}
END_TEST

START_TEST(test_ack_round_trip)
{
        struct orch_proto_ack_result results[] = {
                {"web-1", true, NULL}, {"web-2", false, "exec /srv/web: No such file or directory"}};
        struct orch_proto_msg ack = {.type = ORCH_PROTO_ACK, .ack = {.id = 5, .ok = true}};
        struct orch_proto_msg *d;
        char *text;

        text = encode_ok(&ack);
        ck_assert_str_eq(text, "{\"type\":\"ack\",\"id\":5,\"ok\":true}\n");
        free(text);

        ack.ack.ok = false;
        ack.ack.error = "1 of 2 instances failed";
        ack.ack.results = results;
        ack.ack.n_results = 2;
        d = round_trip(&ack);
        ck_assert(!d->ack.ok);
        ck_assert_str_eq(d->ack.error, "1 of 2 instances failed");
        ck_assert_uint_eq(d->ack.n_results, 2);
        ck_assert(d->ack.results[0].ok);
        ck_assert_ptr_null(d->ack.results[0].error);
        ck_assert(!d->ack.results[1].ok);
        ck_assert_str_eq(d->ack.results[1].error, results[1].error);
        orch_proto_msg_free(d);
}
END_TEST

START_TEST(test_event_usage_round_trip)
{
        struct orch_proto_msg ev = {.type = ORCH_PROTO_EVENT, .event = {.seq = 99, .report = full_report()}};
        struct orch_proto_usage_item items[] = {{"web-1", 123456789, 64ULL << 20, 3}, {"web-2", 0, 0, 0}};
        struct orch_proto_msg usage = {.type = ORCH_PROTO_USAGE,
                                       .usage = {.instances = items, .n_instances = 2}};
        struct orch_proto_msg *d;
        char *text;

        d = round_trip(&ev);
        ck_assert_uint_eq(d->event.seq, 99);
        report_eq(&d->event.report, &ev.event.report);
        orch_proto_msg_free(d);

        /* The report is written flat, next to seq. */
        ev.event.report = (struct orch_proto_report){.instance = "web-0",
                                                     .service = "web",
                                                     .revision = REV_A,
                                                     .generation = 1,
                                                     .state = ORCH_INSTANCE_EXITED,
                                                     .health = ORCH_HEALTH_UNKNOWN};
        text = encode_ok(&ev);
        ck_assert_str_eq(text, "{\"type\":\"event\",\"seq\":99,\"instance\":\"web-0\",\"service\":\"web\","
                               "\"revision\":\"" REV_A "\",\"generation\":1,\"state\":\"exited\","
                               "\"health\":\"unknown\"}\n");
        free(text);

        d = round_trip(&usage);
        ck_assert_uint_eq(d->usage.n_instances, 2);
        ck_assert_str_eq(d->usage.instances[0].instance, "web-1");
        ck_assert_uint_eq(d->usage.instances[0].cpu_usec, 123456789);
        ck_assert_uint_eq(d->usage.instances[0].memory, 64ULL << 20);
        ck_assert_uint_eq(d->usage.instances[0].pids, 3);
        orch_proto_msg_free(d);

        usage.usage.n_instances = 0;
        text = encode_ok(&usage);
        ck_assert_str_eq(text, "{\"type\":\"usage\",\"instances\":[]}\n");
        free(text);
}
END_TEST

/* ---------------------------------------------------------------------------------------------- */
/* Decoding: what peers may send, and what they may not */

START_TEST(test_decode_tolerance)
{
        struct orch_proto_msg *d;

        /* type anywhere, unknown fields of any shape, whitespace, escapes in keys and values, null as
         * absent, a trailing newline. */
        d = decode_ok(" {\"future\": {\"a\": [1, -2.5e+3, true, null, {\"x\": \"\\u00e9\"}]},\r\n"
                      "\t\"ok\" : true, \"i\\u0064\": 5, \"error\": null, \"typ\\u0065\": \"a\\u0063k\"}\n");
        ck_assert_int_eq(d->type, ORCH_PROTO_ACK);
        ck_assert_uint_eq(d->ack.id, 5);
        ck_assert(d->ack.ok);
        ck_assert_ptr_null(d->ack.error);
        orch_proto_msg_free(d);

        d = decode_ok("{\"type\":\"error\",\"error\":\"caf\\u00e9 \\ud83d\\ude00 \\\"x\\\" \\/ "
                      "\\b\\f\\n\\r\\t\"}");
        ck_assert_str_eq(d->error.error, "caf\xc3\xa9 \xf0\x9f\x98\x80 \"x\" / \b\f\n\r\t");
        orch_proto_msg_free(d);

        /* Duplicate unknown keys are ignored with the rest of what is unknown. */
        d = decode_ok("{\"type\":\"heartbeat\",\"x\":1,\"x\":2,\"seq\":18446744}");
        ck_assert_uint_eq(d->heartbeat.seq, 18446744);
        orch_proto_msg_free(d);

        /* The largest values each field takes. */
        d = decode_ok("{\"type\":\"start\",\"id\":9223372036854775807,\"instances\":[{\"instance\":"
                      "\"abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz-012345678-0123456789abcdef\","
                      "\"service\":\"abcdefghijklmnopqrstuvwxyz-abcdefghijklmnopqrstuvwxyz-012345678\","
                      "\"revision\":\"" REV_A "\",\"generation\":9223372036854775807}]}");
        ck_assert_uint_eq(d->start.id, INT64_MAX);
        ck_assert_uint_eq(d->start.instances[0].generation, INT64_MAX);
        orch_proto_msg_free(d);
}
END_TEST

START_TEST(test_decode_garbage)
{
        static const struct {
                const char *frame;
                const char *error;
        } cases[] = {
                {"", "frame: empty frame"},
                {"   ", "frame: empty frame"},
                {"hello", "frame: invalid JSON at byte 0: expected a JSON object, found 'h'"},
                {"[1,2]", "frame: expected a JSON object, got an array"},
                {"\"start\"", "frame: expected a JSON object, got \"start\""},
                {"42", "frame: expected a JSON object, got 42"},
                {"null", "frame: expected a JSON object, got null"},
                {"{", "frame: invalid JSON at byte 1: expected a string key, found the end of the frame"},
                {"{\"type\":\"ack\"",
                 "ack: invalid JSON at byte 13: expected ',' or '}', found the end of the frame"},
                {"{}", "frame: missing \"type\""},
                {"{\"id\":1}", "frame: missing \"type\""},
                {"{\"type\":5}", "frame.type: expected a string, got 5"},
                {"{\"type\":\"launch\"}", "frame.type: unknown message type \"launch\""},
                {"{\"type\":\"START\"}", "frame.type: unknown message type \"START\""},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"type\":\"heartbeat\"}",
                 "heartbeat.type: duplicate field"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"seq\":2}", "heartbeat.seq: duplicate field"},
                {"{\"type\":\"heartbeat\",\"seq\":1}x",
                 "heartbeat: invalid JSON at byte 28: expected the end of the frame, found 'x'"},
                {"{\"type\":\"heartbeat\",\"seq\":1}{}",
                 "heartbeat: invalid JSON at byte 28: expected the end of the frame, found '{'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,}",
                 "heartbeat: invalid JSON at byte 28: expected a string key, found '}'"},
                {"{\"type\":\"heartbeat\" \"seq\":1}",
                 "heartbeat: invalid JSON at byte 20: expected ',' or '}', found '\"'"},
                {"{'type':'heartbeat'}", "frame: invalid JSON at byte 1: expected a string key, found '''"},
                {"{\"type\":\"heartbeat\",\"seq\":01}",
                 "heartbeat: invalid JSON at byte 27: expected ',' or '}', found '1'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":tru}",
                 "heartbeat: invalid JSON at byte 32: expected a value, found 't'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":[1,]}",
                 "heartbeat: invalid JSON at byte 35: expected a value, found ']'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":1.}",
                 "heartbeat: invalid JSON at byte 34: expected a digit after '.', found '}'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"a\\qb\"}",
                 "heartbeat: invalid JSON at byte 35: invalid escape, found 'q'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\\u12\"}",
                 "heartbeat: invalid JSON at byte 33: invalid \\u escape, found '\\'"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\\u0000\"}",
                 "heartbeat: invalid JSON at byte 33: \\u0000 is not allowed in a string"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\\ud800\"}",
                 "heartbeat: invalid JSON at byte 33: high surrogate without a low one"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\\udc00\"}",
                 "heartbeat: invalid JSON at byte 33: lone low surrogate"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"a\tb\"}",
                 "heartbeat: invalid JSON at byte 34: control character in a string, found byte 0x09"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"abc}",
                 "heartbeat: invalid JSON at byte 37: unterminated string"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\xc3\"}",
                 "heartbeat: invalid JSON at byte 33: invalid UTF-8"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\xc0\xaf\"}",
                 "heartbeat: invalid JSON at byte 33: invalid UTF-8"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\xed\xa0\x80\"}",
                 "heartbeat: invalid JSON at byte 33: invalid UTF-8"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"\xf4\x90\x80\x80\"}",
                 "heartbeat: invalid JSON at byte 33: invalid UTF-8"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":\xc3\xa9}",
                 "heartbeat: invalid JSON at byte 32: expected a value, found byte 0xc3"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"x\":"
                 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                 "[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
                 "heartbeat: invalid JSON at byte 95: nested deeper than 64 levels"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                decode_error(cases[i].frame, cases[i].error);

        /* NUL bytes, raw or in a string, end nothing early: the length counts. */
        decode_fails("{\"type\":\"heartbeat\",\"seq\":1}\0", 29, -EINVAL,
                     "heartbeat: invalid JSON at byte 28: expected the end of the frame, found a NUL byte");
        decode_fails("{\"type\":\"heartbeat\",\"seq\":1,\"x\":\"a\0b\"}", 39, -EINVAL,
                     "heartbeat: invalid JSON at byte 34: NUL byte in a string");
        decode_fails("{\"type\":\"hea\0rtbeat\"}", 21, -EINVAL,
                     "frame: invalid JSON at byte 12: NUL byte in a string");
        decode_fails("\0", 1, -EINVAL,
                     "frame: invalid JSON at byte 0: expected a JSON object, found a NUL byte");
}
END_TEST

/* An event with valid identity fields, and a hello with valid registration fields and a driver:
 * the cases below add the one field under test. */
#define EVENT_HEAD                                                                                       \
        "{\"type\":\"event\",\"seq\":1,\"instance\":\"web-1\",\"service\":\"web\",\"revision\":\"" REV_A \
        "\",\"generation\":1,"
#define HELLO_HEAD                                                                                        \
        "{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\",\"version\":" \
        "\"1\","                                                                                          \
        "\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"exec\"],"

START_TEST(test_decode_field_errors)
{
        static const struct {
                const char *frame;
                const char *error;
        } cases[] = {
                /* required fields, types, ranges */
                {"{\"type\":\"heartbeat\"}", "heartbeat.seq: required field missing"},
                {"{\"type\":\"heartbeat\",\"seq\":null}", "heartbeat.seq: required field missing"},
                {"{\"type\":\"heartbeat\",\"seq\":\"1\"}",
                 "heartbeat.seq: expected a non-negative integer, got \"1\""},
                {"{\"type\":\"heartbeat\",\"seq\":-1}",
                 "heartbeat.seq: expected a non-negative integer, got -1"},
                {"{\"type\":\"heartbeat\",\"seq\":1.0}",
                 "heartbeat.seq: expected a non-negative integer, got 1.0"},
                {"{\"type\":\"heartbeat\",\"seq\":1e3}",
                 "heartbeat.seq: expected a non-negative integer, got 1e3"},
                {"{\"type\":\"heartbeat\",\"seq\":9223372036854775808}",
                 "heartbeat.seq: expected a non-negative integer, got 9223372036854775808"},
                {"{\"type\":\"heartbeat\",\"seq\":"
                 "123456789012345678901234567890123456789012345678901234567890}",
                 "heartbeat.seq: expected a non-negative integer, got "
                 "1234567890123456789012345678901234567890..."},
                {"{\"type\":\"heartbeat\",\"seq\":[]}",
                 "heartbeat.seq: expected a non-negative integer, got an array"},
                {"{\"type\":\"heartbeat\",\"seq\":{}}",
                 "heartbeat.seq: expected a non-negative integer, got an object"},
                {"{\"type\":\"heartbeat\",\"seq\":true}",
                 "heartbeat.seq: expected a non-negative integer, got true"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"ttl_ms\":3000}",
                 "heartbeat.heartbeat_ms: required with ttl_ms"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"heartbeat_ms\":3000,\"ttl_ms\":3000}",
                 "heartbeat.ttl_ms: must be greater than heartbeat_ms (3000), got 3000"},
                {"{\"type\":\"heartbeat\",\"seq\":1,\"heartbeat_ms\":0,\"ttl_ms\":3000}",
                 "heartbeat.heartbeat_ms: expected an integer from 1 to 86400000, got 0"},
                {"{\"type\":\"welcome\",\"node\":\"n\",\"heartbeat_ms\":1000,\"ttl_ms\":999,\"server_time\":"
                 "1}",
                 "welcome.ttl_ms: must be greater than heartbeat_ms (1000), got 999"},
                {"{\"type\":\"welcome\",\"node\":\"-n\",\"heartbeat_ms\":1000,\"ttl_ms\":3000,\"server_"
                 "time\":1}",
                 "welcome.node: invalid node name \"-n\": expected at most 253 characters: dot-separated "
                 "labels of letters, digits, '-' and '_'"},
                {"{\"type\":\"error\",\"error\":\"\"}", "error.error: must not be empty"},
                {"{\"type\":\"error\",\"error\":7}", "error.error: expected a string, got 7"},
                {"{\"type\":\"logs_cancel\",\"id\":0}",
                 "logs_cancel.id: expected a positive integer, got 0"},
                {"{\"type\":\"logs\",\"id\":1,\"instance\":\"web-1\",\"follow\":\"yes\"}",
                 "logs.follow: expected true or false, got \"yes\""},
                {"{\"type\":\"logs\",\"id\":1,\"instance\":\"web-1\",\"tail\":-5}",
                 "logs.tail: expected a non-negative integer, got -5"},
                {"{\"type\":\"log\",\"id\":1}", "log.data: required field missing"},

                /* start: the example of the brief, and every check of an item */
                {"{\"type\":\"start\",\"id\":1,\"instances\":[]}",
                 "start.instances: at least 1 entry is required"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":{}}",
                 "start.instances: expected an array, got an object"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[5]}",
                 "start.instances[0]: expected an object, got 5"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-1\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":1},{\"instance\":\"web-2\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":-3}]}",
                 "start.instances[1].generation: expected a positive integer, got -3"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-1\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":0}]}",
                 "start.instances[0].generation: expected a positive integer, got 0"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-1\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\"}]}",
                 "start.instances[0].generation: required field missing"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"Web-1\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].instance: invalid instance id \"Web-1\": expected <service>-<suffix>, "
                 "the suffix 1 to 16 lower-case letters or digits"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].instance: invalid instance id \"web-\": expected <service>-<suffix>, "
                 "the suffix 1 to 16 lower-case letters or digits"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-0123456789abcdefa\","
                 "\"service\":\"web\",\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].instance: invalid instance id \"web-0123456789abcdefa\": expected "
                 "<service>-<suffix>, the suffix 1 to 16 lower-case letters or digits"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"api-1\",\"service\":\"web\","
                 "\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].instance: \"api-1\" does not belong to service \"web\""},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-api-1\",\"service\":"
                 "\"web\",\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].instance: \"web-api-1\" does not belong to service \"web\""},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-1\",\"service\":\"web\","
                 "\"revision\":\"0123456789ABCDEF\",\"generation\":1}]}",
                 "start.instances[0].revision: invalid revision \"0123456789ABCDEF\": expected 16 "
                 "lower-case hex digits"},
                {"{\"type\":\"start\",\"id\":1,\"instances\":[{\"instance\":\"web-1\",\"service\":\"9web\","
                 "\"revision\":\"" REV_A "\",\"generation\":1}]}",
                 "start.instances[0].service: invalid service name \"9web\": expected "
                 "^[a-z][a-z0-9-]{0,62}$"},
                {"{\"type\":\"stop\",\"id\":1,\"instances\":[{\"instance\":\"web-1\"}]}",
                 "stop.instances[0].generation: required field missing"},

                /* ack */
                {"{\"type\":\"ack\",\"id\":1,\"ok\":false}", "ack.error: required when ok is false"},
                {"{\"type\":\"ack\",\"id\":1,\"ok\":1}", "ack.ok: expected true or false, got 1"},
                {"{\"type\":\"ack\",\"id\":1,\"ok\":true,\"results\":[{\"instance\":\"web-1\",\"ok\":false,"
                 "\"error\":\"boom\"}]}",
                 "ack.results[0].ok: false, but the ack says ok"},
                {"{\"type\":\"ack\",\"id\":1,\"ok\":false,\"error\":\"x\",\"results\":[{\"instance\":\"web-"
                 "1\",\"ok\":false}]}",
                 "ack.results[0].error: required when ok is false"},

                /* event: the report beside seq */
                {EVENT_HEAD "\"state\":\"lost\",\"health\":\"unknown\"}",
                 "event.state: \"lost\" is decided by orchd, not reported by agents"},
                {EVENT_HEAD "\"state\":\"sleeping\",\"health\":\"unknown\"}",
                 "event.state: expected one of pending, starting, running, stopping, exited, failed, got "
                 "\"sleeping\""},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"ok\"}",
                 "event.health: expected one of passing, failing, unknown, got \"ok\""},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"ports\":{\"http\":0}}",
                 "event.ports.http: expected an integer from 1 to 65535, got 0"},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"ports\":{\"http\":65536}}",
                 "event.ports.http: expected an integer from 1 to 65535, got 65536"},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"ports\":{\"HTTP\":80}}",
                 "event.ports: invalid port name \"HTTP\": expected ^[a-z][a-z0-9-]{0,30}$"},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"ports\":{\"a\":1,\"a\":2}}",
                 "event.ports: duplicate port \"a\""},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"pid\":4194305}",
                 "event.pid: expected an integer from 1 to 4194304, got 4194305"},
                {EVENT_HEAD "\"state\":\"exited\",\"health\":\"unknown\",\"exit\":{\"code\":256,\"signal\":"
                            "0,\"oom\":false}}",
                 "event.exit.code: expected an integer from 0 to 255, got 256"},
                {EVENT_HEAD "\"state\":\"exited\",\"health\":\"unknown\",\"exit\":{\"code\":0}}",
                 "event.exit.signal: required field missing"},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"cgroup\":\"orch/web-1\"}",
                 "event.cgroup: invalid cgroup path \"orch/web-1\": expected an absolute path without "
                 "control characters"},
                {EVENT_HEAD "\"state\":\"running\",\"health\":\"passing\",\"cgroup\":\"/a\\nb\"}",
                 "event.cgroup: invalid cgroup path \"/a\\x0ab\": expected an absolute path without control "
                 "characters"},
                {"{\"type\":\"event\",\"seq\":1,\"instance\":\"api-1\",\"service\":\"web\",\"revision\":"
                 "\"" REV_A "\",\"generation\":1,\"state\":\"running\",\"health\":\"passing\"}",
                 "event.instance: \"api-1\" does not belong to service \"web\""},

                /* hello */
                {"{\"type\":\"hello\"}", "hello.proto: required field missing"},
                {"{\"type\":\"hello\",\"proto\":0,\"node\":\"n\",\"token\":\"t\",\"address\":\"127.0.0.1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"exec\"]}",
                 "hello.proto: expected an integer from 1 to 65535, got 0"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t o "
                 "k\",\"address\":\"127.0.0.1\",\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":"
                 "1},\"drivers\":[\"exec\"]}",
                 "hello.token: invalid token: expected 1 to 1024 printable ASCII characters"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"a "
                 "b\",\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"exec\"]"
                 "}",
                 "hello.address: invalid address \"a b\": expected an IP address or a host name"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1},\"drivers\":[\"exec\"]}",
                 "hello.capacity.memory: required field missing"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":0,\"memory\":1},\"drivers\":[\"exec\"]}",
                 "hello.capacity.cpu_millis: expected an integer from 1 to 4294967295, got 0"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[]}",
                 "hello.drivers: at least 1 entry is required"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"exec\",7]}",
                 "hello.drivers[1]: expected a string, got 7"},
                {"{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                 "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"Exec\"]}",
                 "hello.drivers[0]: invalid driver name \"Exec\": expected ^[a-z][a-z0-9-]{0,30}$"},
                {HELLO_HEAD "\"labels\":{\"zone\":\"eu 1\"}}",
                 "hello.labels.zone: invalid label value \"eu 1\": expected at most 63 of letters, digits, "
                 "'.', '_', '-'"},
                {HELLO_HEAD "\"labels\":{\"zone\":5}}", "hello.labels.zone: expected a string, got 5"},
                {HELLO_HEAD "\"labels\":{\"a\\nb\":\"x\"}}",
                 "hello.labels: invalid label key \"a\\x0ab\": expected 1 to 63 of letters, digits, '.', "
                 "'_', '/', '-', starting with a letter or digit"},
                {HELLO_HEAD "\"labels\":{\"a\":\"x\",\"\\u0061\":\"y\"}}",
                 "hello.labels: duplicate label \"a\""},
                {HELLO_HEAD "\"instances\":[{\"instance\":\"web-1\"}]}",
                 "hello.instances[0].service: required field missing"},
                {HELLO_HEAD "\"more\":\"no\"}", "hello.more: expected true or false, got \"no\""},

                /* spec */
                {"{\"type\":\"spec\",\"id\":1,\"service\":\"web\",\"revision\":\"" REV_A "\",\"spec\":[]}",
                 "spec.spec: expected an object, got an array"},
                {"{\"type\":\"spec\",\"id\":1,\"service\":\"web\",\"revision\":\"" REV_A "\",\"spec\":{"
                 "\"name\":\"web\","
                 "\"name\":\"api\"}}",
                 "spec.spec: invalid JSON: duplicate object key near '\"name\"'"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                decode_error(cases[i].frame, cases[i].error);
}
END_TEST

START_TEST(test_decode_spec_errors)
{
        struct orch_proto_msg *m = NULL;
        struct orch_proto_error e = {{0}};
        const char *frame;

        /* orch_service_from_json() judges the spec; its first diagnostic is the message. */
        frame = "{\"type\":\"spec\",\"id\":1,\"service\":\"web\",\"revision\":\"" REV_A "\",\"spec\":"
                "{\"kind\":\"service\",\"name\":\"web\",\"command\":[\"/bin/"
                "true\"],\"replicas\":\"three\"}}";
        ck_assert_int_eq(orch_proto_decode(frame, strlen(frame), &m, &e), -EINVAL);
        ck_assert_msg(startswith(e.message, "spec.spec: ") && strstr(e.message, "replicas"), "%s",
                      e.message);

        frame = "{\"type\":\"spec\",\"id\":1,\"service\":\"web\",\"revision\":\"" REV_A "\",\"spec\":"
                "{\"kind\":\"service\",\"name\":\"api\",\"command\":[\"/bin/true\"]}}";
        decode_error(frame, "spec.spec: the spec's name \"api\" does not match service \"web\"");

        frame = "{\"type\":\"spec\",\"id\":1,\"service\":\"web\",\"revision\":\"" REV_A "\",\"spec\":"
                "{\"kind\":\"service\",\"name\":\"web\",\"command\":[\"/bin/true\"]}}";
        m = decode_ok(frame);
        ck_assert_str_eq(m->spec.parsed->name, "web");
        orch_proto_msg_free(m);
}
END_TEST

START_TEST(test_decode_limits)
{
        struct orch_buf b = {0};
        struct orch_proto_msg *m = NULL;

        /* Bounded arrays: one entry past the limit is refused as soon as it is seen. */
        orch_buf_puts(&b, "{\"type\":\"usage\",\"instances\":[");
        for (size_t i = 0; i <= ORCH_PROTO_MAX_INSTANCES; i++)
                orch_buf_printf(&b, "%s{\"instance\":\"w-%zx\",\"cpu_usec\":1,\"memory\":2,\"pids\":3}",
                                i ? "," : "", i);
        orch_buf_puts(&b, "]}");
        decode_error(b.data, "usage.instances: more than 100000 entries");
        orch_buf_reset(&b);

        orch_buf_puts(
                &b, "{\"type\":\"hello\",\"proto\":1,\"node\":\"n\",\"token\":\"t\",\"address\":\"::1\","
                    "\"version\":\"1\",\"capacity\":{\"cpu_millis\":1,\"memory\":1},\"drivers\":[\"exec\"],"
                    "\"labels\":{");
        for (size_t i = 0; i <= ORCH_PROTO_MAX_LABELS; i++)
                orch_buf_printf(&b, "%s\"k%zu\":\"v\"", i ? "," : "", i);
        orch_buf_puts(&b, "}}");
        decode_error(b.data, "hello.labels: more than 64 entries");
        orch_buf_reset(&b);

        /* Free text: 4096 bytes pass, one more does not. */
        orch_buf_puts(&b, "{\"type\":\"error\",\"error\":\"");
        for (size_t i = 0; i < ORCH_PROTO_TEXT_MAX; i++)
                orch_buf_putc(&b, 'x');
        orch_buf_puts(&b, "\"}");
        m = decode_ok(b.data);
        ck_assert_uint_eq(strlen(m->error.error), ORCH_PROTO_TEXT_MAX);
        m = orch_proto_msg_free(m);
        orch_buf_consume(&b, 0);
        b.len -= 2;
        orch_buf_puts(&b, "y\"}");
        decode_error(b.data, "error.error: longer than 4096 bytes");
        orch_buf_reset(&b);

        /* Node names: 253 characters of 63-character labels, not one more. */
        {
                char node[300] = "", frame[600];
                for (int i = 0; i < 4; i++)
                        memcpy(node + i * 64,
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", 64);
                node[253] = '\0';
                ck_assert(orch_proto_node_name_valid(node));
                node[253] = 'a';
                node[254] = '\0';
                ck_assert(!orch_proto_node_name_valid(node));
                node[253] = '\0';
                (void)orch_snprintf(frame, sizeof frame,
                                    "{\"type\":\"welcome\",\"node\":\"%s\",\"heartbeat_ms\":1,"
                                    "\"ttl_ms\":2,\"server_time\":0}",
                                    node);
                m = decode_ok(frame);
                ck_assert_str_eq(m->welcome.node, node);
                m = orch_proto_msg_free(m);
        }

        /* A frame over the limit is refused before it is even copied. */
        decode_fails("{}", ORCH_PROTO_MAX_FRAME + 1, -EMSGSIZE,
                     "frame: 16777217 bytes, the limit is 16777216");
        orch_buf_release(&b);
}
END_TEST

START_TEST(test_value_checks)
{
        ck_assert(orch_proto_instance_id_valid("web-1a2b3c4d"));
        ck_assert(orch_proto_instance_id_valid("my-web-api-0"));
        ck_assert(orch_proto_instance_id_valid("a-0"));
        ck_assert(!orch_proto_instance_id_valid("web"));
        ck_assert(!orch_proto_instance_id_valid("-1"));
        ck_assert(!orch_proto_instance_id_valid("web-1-"));
        /* "web-" is a valid service name (SPEC §2), so this is its instance 1. */
        ck_assert(orch_proto_instance_id_valid("web--1"));
        ck_assert(!orch_proto_instance_id_valid("web-1A"));
        ck_assert(!orch_proto_instance_id_valid("1web-1"));
        ck_assert(!orch_proto_instance_id_valid(""));
        ck_assert(!orch_proto_instance_id_valid(NULL));
        ck_assert(orch_proto_instance_of("my-web-0", "my-web"));
        ck_assert(!orch_proto_instance_of("my-web-0", "my"));
        ck_assert(!orch_proto_instance_of("my-web-0", "my-web-0"));
        ck_assert(!orch_proto_instance_of("web-", "web"));

        ck_assert(orch_proto_revision_valid(REV_A));
        ck_assert(!orch_proto_revision_valid("0123456789abcde"));
        ck_assert(!orch_proto_revision_valid("0123456789abcdeg"));

        ck_assert(orch_proto_node_name_valid("node_1.Example-2.com"));
        ck_assert(!orch_proto_node_name_valid("node..1"));
        ck_assert(!orch_proto_node_name_valid("node-.1"));
        ck_assert(!orch_proto_node_name_valid(".node"));
        ck_assert(!orch_proto_node_name_valid("node."));
        ck_assert(!orch_proto_node_name_valid("no de"));
        ck_assert(!orch_proto_node_name_valid(""));

        ck_assert(orch_proto_label_key_valid("kubernetes.io/zone"));
        ck_assert(!orch_proto_label_key_valid("/zone"));
        ck_assert(!orch_proto_label_key_valid("zone=eu"));
        ck_assert(orch_proto_label_value_valid(""));
        ck_assert(orch_proto_label_value_valid("eu-1.a_b"));
        ck_assert(!orch_proto_label_value_valid("eu/1"));
}
END_TEST

/* ---------------------------------------------------------------------------------------------- */
/* Encoding: the sender refuses what the peer would refuse */

START_TEST(test_encode_errors)
{
        struct orch_proto_start_item items[] = {{"web-1", "web", REV_A, 1}, {"web-2", "web", REV_A, 0}};
        struct orch_proto_msg m = {.type = ORCH_PROTO_START,
                                   .start = {.id = 1, .instances = items, .n_instances = 2}};

        encode_error(&m, "start.instances[1].generation: expected a positive integer, got 0");
        items[1].generation = 2;
        items[1].instance = "api-2";
        encode_error(&m, "start.instances[1].instance: \"api-2\" does not belong to service \"web\"");
        items[1].instance = NULL;
        encode_error(&m, "start.instances[1].instance: required field missing");
        items[1].instance = "web-2";
        m.start.n_instances = 0;
        encode_error(&m, "start.instances: at least 1 entry is required");
        m.start.n_instances = 2;
        m.start.id = 0;
        encode_error(&m, "start.id: expected a positive integer, got 0");

        struct orch_proto_report r = full_report();
        r.state = ORCH_INSTANCE_LOST;
        struct orch_proto_msg ev = {.type = ORCH_PROTO_EVENT, .event = {.seq = 1, .report = r}};
        encode_error(&ev, "event.state: \"lost\" is decided by orchd, not reported by agents");
        ev.event.report.state = _ORCH_INSTANCE_STATE_MAX;
        encode_error(
                &ev,
                "event.state: expected one of pending, starting, running, stopping, exited, failed, got 7");
        ev.event.report.state = ORCH_INSTANCE_RUNNING;
        ev.event.report.health = -1;
        encode_error(&ev, "event.health: expected one of passing, failing, unknown, got -1");
        ev.event.report.health = ORCH_HEALTH_PASSING;
        struct orch_proto_port dup[] = {{"http", 1}, {"http", 2}};
        ev.event.report.ports = dup;
        ev.event.report.n_ports = 2;
        encode_error(&ev, "event.ports: duplicate port \"http\"");
        dup[1] = (struct orch_proto_port){"admin", 0};
        encode_error(&ev, "event.ports.admin: expected an integer from 1 to 65535, got 0");

        struct orch_proto_msg w = {.type = ORCH_PROTO_WELCOME,
                                   .welcome = {.node = "n", .heartbeat_ms = 5000, .ttl_ms = 1000}};
        encode_error(&w, "welcome.ttl_ms: must be greater than heartbeat_ms (5000), got 1000");

        struct orch_proto_msg a = {.type = ORCH_PROTO_ACK, .ack = {.id = 1, .ok = false}};
        encode_error(&a, "ack.error: required when ok is false");
        struct orch_proto_msg e = {.type = ORCH_PROTO_ERROR, .error = {.error = ""}};
        encode_error(&e, "error.error: must not be empty");

        struct orch_proto_label labels[] = {{"zone", "eu 1"}};
        const char *drivers[] = {"exec"};
        struct orch_proto_msg h = {
                .type = ORCH_PROTO_HELLO,
                .hello = {.proto = 1,
                          .node = "n",
                          .token = "secret",
                          .address = "::1",
                          .version = "1",
                          .labels = labels,
                          .n_labels = 1,
                          .capacity = {1, 1},
                          .drivers = drivers,
                          .n_drivers = 1},
        };
        encode_error(
                &h,
                "hello.labels.zone: invalid label value \"eu 1\": expected at most 63 of letters, digits, "
                "'.', '_', '-'");
        h.hello.n_labels = 0;
        h.hello.token = "secret with spaces";
        /* The token is a secret: it is named, never shown. */
        encode_error(&h, "hello.token: invalid token: expected 1 to 1024 printable ASCII characters");

        /* A count without its array is a caller bug, reported rather than followed. */
        h.hello.token = "secret";
        h.hello.labels = NULL;
        h.hello.n_labels = 1;
        encode_error(&h, "hello.labels: required field missing");
        h.hello.n_labels = 0;
        h.hello.drivers = NULL;
        encode_error(&h, "hello.drivers: required field missing");
        h.hello.drivers = drivers;
        ev.event.report.ports = NULL;
        encode_error(&ev, "event.ports: required field missing");

        struct orch_proto_msg bad = {.type = _ORCH_PROTO_TYPE_MAX};
        encode_error(&bad, "frame: unknown message type 13");

        struct orch_proto_msg spec = {.type = ORCH_PROTO_SPEC,
                                      .spec = {.id = 1, .service = "web", .revision = REV_A}};
        encode_error(&spec, "spec.spec: required field missing");
}
END_TEST

START_TEST(test_encode_text)
{
        /* Free text longer than the limit is cut at a character boundary, never refused: an error
         * message must not cost the connection. */
        char *text = malloc(ORCH_PROTO_TEXT_MAX + 16);
        struct orch_proto_msg *d;
        char *line;

        memset(text, 'x', ORCH_PROTO_TEXT_MAX - 1);
        memcpy(text + ORCH_PROTO_TEXT_MAX - 1, "\xc3\xa9tail", 7);
        struct orch_proto_msg m = {.type = ORCH_PROTO_ERROR, .error = {.error = text}};
        line = encode_ok(&m);
        d = decode_ok(line);
        ck_assert_uint_eq(strlen(d->error.error), ORCH_PROTO_TEXT_MAX - 1);
        ck_assert(strspn(d->error.error, "x") == ORCH_PROTO_TEXT_MAX - 1);
        orch_proto_msg_free(d);
        free(line);

        /* Escapes count as the characters they stand for. */
        memset(text, '\n', ORCH_PROTO_TEXT_MAX + 10);
        text[ORCH_PROTO_TEXT_MAX + 10] = '\0';
        line = encode_ok(&m);
        d = decode_ok(line);
        ck_assert_uint_eq(strlen(d->error.error), ORCH_PROTO_TEXT_MAX);
        orch_proto_msg_free(d);
        free(line);

        /* Invalid UTF-8 in a reason is replaced, like log data. */
        struct orch_proto_msg s = {.type = ORCH_PROTO_STOP,
                                   .stop = {.id = 1,
                                            .instances = (struct orch_proto_stop_item[]){{"web-1", 1}},
                                            .n_instances = 1,
                                            .reason = "bad \xff byte"}};
        line = encode_ok(&s);
        d = decode_ok(line);
        ck_assert_str_eq(d->stop.reason, "bad \xef\xbf\xbd byte");
        orch_proto_msg_free(d);
        free(line);
        free(text);
}
END_TEST

START_TEST(test_hello_split)
{
        /* A node with more instances than one frame holds: the hello is split, each part a complete
         * hello, all but the last with "more". */
        const size_t n = 80000;
        struct orch_proto_report *reports = calloc(n, sizeof *reports);
        char(*ids)[40] = calloc(n, sizeof *ids);
        const char *drivers[] = {"exec"};
        struct orch_proto_reader reader;
        struct orch_buf b = {0};
        size_t seen = 0, parts = 0;
        char *frame;
        size_t len;
        int r;

        for (size_t i = 0; i < n; i++) {
                (void)orch_snprintf(ids[i], sizeof ids[i], "a-rather-long-service-name-%08zx", i);
                reports[i] = full_report();
                reports[i].instance = ids[i];
                reports[i].service = "a-rather-long-service-name";
                reports[i].generation = i + 1;
        }
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_HELLO,
                .hello = {.proto = 1,
                          .node = "big",
                          .token = "t",
                          .address = "::1",
                          .version = "1",
                          .capacity = {1, 1},
                          .drivers = drivers,
                          .n_drivers = 1,
                          .instances = reports,
                          .n_instances = n},
        };
        ck_assert_int_eq(orch_proto_encode(&b, &m, NULL), 0);
        ck_assert_uint_gt(b.len, ORCH_PROTO_MAX_FRAME);

        orch_proto_reader_init(&reader, 0);
        ck_assert_int_eq(orch_proto_reader_feed(&reader, b.data, b.len), 0);
        while ((r = orch_proto_reader_next(&reader, &frame, &len)) > 0) {
                struct orch_proto_msg *d = NULL;
                struct orch_proto_error e;
                ck_assert_uint_le(len, ORCH_PROTO_MAX_FRAME);
                ck_assert_int_eq(orch_proto_decode(frame, len, &d, &e), 0);
                ck_assert_str_eq(d->hello.node, "big");
                for (size_t i = 0; i < d->hello.n_instances; i++, seen++) {
                        ck_assert_str_eq(d->hello.instances[i].instance, ids[seen]);
                        ck_assert_uint_eq(d->hello.instances[i].generation, seen + 1);
                }
                parts++;
                ck_assert_int_eq(d->hello.more, seen < n);
                orch_proto_msg_free(d);
        }
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(seen, n);
        ck_assert_uint_ge(parts, 2);

        orch_proto_reader_release(&reader);
        orch_buf_release(&b);
        free(ids);
        free(reports);
}
END_TEST

/* ---------------------------------------------------------------------------------------------- */
/* Framing */

static const char stream[] = "{\"type\":\"heartbeat\",\"seq\":1}\n"
                             "{\"type\":\"ack\",\"id\":2,\"ok\":true}\n"
                             "\n"
                             "{\"type\":\"error\",\"error\":\"caf\xc3\xa9\"}\n";
static const char *const stream_frames[] = {
        "{\"type\":\"heartbeat\",\"seq\":1}",
        "{\"type\":\"ack\",\"id\":2,\"ok\":true}",
        "",
        "{\"type\":\"error\",\"error\":\"caf\xc3\xa9\"}",
};

static size_t drain(struct orch_proto_reader *r, size_t got)
{
        char *frame;
        size_t len;
        int k;

        while ((k = orch_proto_reader_next(r, &frame, &len)) > 0) {
                ck_assert_uint_lt(got, ELEMENTSOF(stream_frames));
                ck_assert_uint_eq(len, strlen(stream_frames[got]));
                ck_assert(memcmp(frame, stream_frames[got], len) == 0);
                ck_assert_int_eq(frame[len], '\0');
                got++;
        }
        ck_assert_int_eq(k, 0);
        return got;
}

START_TEST(test_reader_split_everywhere)
{
        const size_t n = sizeof stream - 1;

        /* Two pieces, split at every byte. */
        for (size_t at = 0; at <= n; at++) {
                struct orch_proto_reader r;
                size_t got;
                orch_proto_reader_init(&r, 0);
                ck_assert_int_eq(orch_proto_reader_feed(&r, stream, at), 0);
                got = drain(&r, 0);
                ck_assert_int_eq(orch_proto_reader_feed(&r, stream + at, n - at), 0);
                got = drain(&r, got);
                ck_assert_uint_eq(got, ELEMENTSOF(stream_frames));
                orch_proto_reader_release(&r);
        }

        /* One byte at a time, through the zero-copy path libuv uses. */
        {
                struct orch_proto_reader r;
                size_t got = 0;
                orch_proto_reader_init(&r, 0);
                for (size_t i = 0; i < n; i++) {
                        char *space;
                        size_t room;
                        ck_assert_int_eq(orch_proto_reader_space(&r, 1, &space, &room), 0);
                        ck_assert_uint_ge(room, 1);
                        *space = stream[i];
                        ck_assert_int_eq(orch_proto_reader_commit(&r, 1), 0);
                        got = drain(&r, got);
                }
                ck_assert_uint_eq(got, ELEMENTSOF(stream_frames));
                orch_proto_reader_release(&r);
        }

        /* Every frame of the stream also decodes when split anywhere: the decoder only sees whole
         * lines. Without draining in between, frames queue up and come out in order. */
        {
                struct orch_proto_reader r;
                orch_proto_reader_init(&r, 0);
                for (size_t i = 0; i < n; i++)
                        ck_assert_int_eq(orch_proto_reader_feed(&r, stream + i, 1), 0);
                ck_assert_uint_eq(drain(&r, 0), ELEMENTSOF(stream_frames));
                orch_proto_reader_release(&r);
        }
}
END_TEST

START_TEST(test_reader_limits)
{
        struct orch_proto_reader r;
        char *frame;
        size_t len;

        /* Exactly the limit passes; one byte more fails, for complete and partial frames alike. */
        orch_proto_reader_init(&r, 8);
        ck_assert_int_eq(orch_proto_reader_feed(&r, "12345678\n", 9), 0);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 1);
        ck_assert_str_eq(frame, "12345678");
        ck_assert_int_eq(orch_proto_reader_feed(&r, "12345678", 8), 0);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 0);
        ck_assert_int_eq(orch_proto_reader_feed(&r, "9", 1), -EMSGSIZE);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), -EMSGSIZE);
        ck_assert_int_eq(orch_proto_reader_feed(&r, "\n", 1), -EMSGSIZE);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), -EMSGSIZE);
        orch_proto_reader_release(&r);

        /* Complete frames before the oversized one are still delivered, then the error, for good. */
        orch_proto_reader_init(&r, 8);
        ck_assert_int_eq(orch_proto_reader_feed(&r, "ab\ncd\n123456789\nef\n", 19), -EMSGSIZE);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 1);
        ck_assert_str_eq(frame, "ab");
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 1);
        ck_assert_str_eq(frame, "cd");
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), -EMSGSIZE);
        ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), -EMSGSIZE);
        orch_proto_reader_release(&r);

        /* Committing more than the space offered is a caller bug. */
        {
                char *space;
                size_t room;
                orch_proto_reader_init(&r, 0);
                ck_assert_int_eq(orch_proto_reader_space(&r, 16, &space, &room), 0);
                ck_assert_int_eq(orch_proto_reader_commit(&r, room + 1), -EINVAL);
                orch_proto_reader_release(&r);
        }
}
END_TEST

START_TEST(test_reader_oversized_stream)
{
        /* A peer sending 17 MiB without a newline: refused once 16 MiB have passed, memory bounded
         * near the limit, and nothing after is stored. */
        const size_t chunk = 64 * 1024;
        char *junk = malloc(chunk);
        struct orch_proto_reader r;
        size_t sent = 0;
        int k = 0;

        memset(junk, 'x', chunk);
        orch_proto_reader_init(&r, 0);
        while (sent < 17u * 1024 * 1024) {
                k = orch_proto_reader_feed(&r, junk, chunk);
                if (k < 0)
                        break;
                sent += chunk;
        }
        ck_assert_int_eq(k, -EMSGSIZE);
        ck_assert_uint_eq(sent, ORCH_PROTO_MAX_FRAME);
        ck_assert_uint_le(r.buf.cap, 2 * (ORCH_PROTO_MAX_FRAME + chunk));
        ck_assert_uint_eq(r.buf.len, 0);
        ck_assert_int_eq(orch_proto_reader_feed(&r, "\n", 1), -EMSGSIZE);
        orch_proto_reader_release(&r);

        /* A single feed of 17 MiB is refused without copying it all. */
        {
                size_t big = 17u * 1024 * 1024;
                char *blob = malloc(big);
                char *frame;
                size_t len;
                memset(blob, 'y', big);
                memcpy(blob, "{}\n", 3);
                orch_proto_reader_init(&r, 0);
                ck_assert_int_eq(orch_proto_reader_feed(&r, blob, big), -EMSGSIZE);
                ck_assert_uint_le(r.buf.cap, 2 * (ORCH_PROTO_MAX_FRAME + chunk));
                ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 1);
                ck_assert_str_eq(frame, "{}");
                ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), -EMSGSIZE);
                orch_proto_reader_release(&r);
                free(blob);
        }

        /* After a big frame the memory is given back once it is consumed. */
        {
                size_t big = 4u * 1024 * 1024;
                char *blob = malloc(big + 1);
                char *frame;
                size_t len;
                memset(blob, 'z', big);
                blob[big] = '\n';
                orch_proto_reader_init(&r, 0);
                ck_assert_int_eq(orch_proto_reader_feed(&r, blob, big + 1), 0);
                ck_assert_int_eq(orch_proto_reader_next(&r, &frame, &len), 1);
                ck_assert_uint_eq(len, big);
                ck_assert_int_eq(orch_proto_reader_feed(&r, "{}\n", 3), 0);
                ck_assert_uint_le(r.buf.cap, 1024);
                orch_proto_reader_release(&r);
                free(blob);
        }
        free(junk);
}
END_TEST

/* ---------------------------------------------------------------------------------------------- */
/* Against jansson: what we accept, jansson accepts with the same values */

START_TEST(test_agrees_with_jansson)
{
        static const char *const frames[] = {
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[1,2,{\"y\":\"\\ud83d\\ude00\"}]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":-0.5e-7}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\\u00e9\\u20ac\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\xe2\x82\xac\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":{}}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[01]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[1.]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[.1]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[+1]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[1e]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[-]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":[nul]}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\\x\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\x7f\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\xef\xbf\xbf\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\xe0\x80\x80\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\xf0\x80\x80\x80\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"x\":\"\xf5\x80\x80\x80\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true} ",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true}\t\r\n",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"error\":\"\\ud800\\udc00\"}",
                "{\"type\":\"ack\",\"id\":1,\"ok\":true,\"error\":\"\\uDBFF\\uDFFF\"}",
        };

        for (size_t i = 0; i < ELEMENTSOF(frames); i++) {
                struct orch_proto_msg *m = NULL;
                json_error_t je;
                json_t *j = json_loads(frames[i], 0, &je);
                int r = orch_proto_decode(frames[i], strlen(frames[i]), &m, NULL);

                ck_assert_msg((r == 0) == (j != NULL), "%s: we say %d, jansson says %s", frames[i], r,
                              j ? "ok" : je.text);
                if (m && m->ack.error) {
                        ck_assert_str_eq(m->ack.error, json_string_value(json_object_get(j, "error")));
                }
                orch_proto_msg_free(m);
                json_decref(j);
        }
}
END_TEST

/* ---------------------------------------------------------------------------------------------- */
/* Types and fencing */

START_TEST(test_types)
{
        for (int t = 0; t < _ORCH_PROTO_TYPE_MAX; t++) {
                const char *s = orch_proto_type_to_string(t);
                ck_assert_ptr_nonnull(s);
                ck_assert_int_eq(orch_proto_type_from_string(s), t);
                /* Every type has a sender; only error and heartbeat go both ways. */
                ck_assert(orch_proto_type_sent_by_agent(t) || orch_proto_type_sent_by_server(t));
                ck_assert_int_eq(orch_proto_type_sent_by_agent(t) && orch_proto_type_sent_by_server(t),
                                 t == ORCH_PROTO_ERROR || t == ORCH_PROTO_HEARTBEAT);
        }
        ck_assert_int_eq(orch_proto_type_from_string("nope"), _ORCH_PROTO_TYPE_INVALID);
        ck_assert_int_eq(orch_proto_type_from_string(NULL), _ORCH_PROTO_TYPE_INVALID);
        ck_assert_ptr_null(orch_proto_type_to_string(_ORCH_PROTO_TYPE_MAX));
        ck_assert(orch_proto_type_sent_by_server(ORCH_PROTO_START));
        ck_assert(!orch_proto_type_sent_by_agent(ORCH_PROTO_START));
        ck_assert(orch_proto_type_sent_by_agent(ORCH_PROTO_ACK));
        ck_assert(!orch_proto_type_sent_by_server(ORCH_PROTO_ACK));
        ck_assert(orch_proto_type_is_command(ORCH_PROTO_SPEC));
        ck_assert(orch_proto_type_is_command(ORCH_PROTO_START));
        ck_assert(orch_proto_type_is_command(ORCH_PROTO_STOP));
        ck_assert(orch_proto_type_is_command(ORCH_PROTO_LOGS));
        ck_assert(!orch_proto_type_is_command(ORCH_PROTO_LOGS_CANCEL));
        ck_assert(!orch_proto_type_is_command(ORCH_PROTO_ACK));
}
END_TEST

START_TEST(test_fencing)
{
        /* The agent on start */
        ck_assert_int_eq(orch_proto_fence_start(0, 5), ORCH_PROTO_START_NEW);
        ck_assert_int_eq(orch_proto_fence_start(5, 5), ORCH_PROTO_START_SAME);
        ck_assert_int_eq(orch_proto_fence_start(5, 6), ORCH_PROTO_START_SUPERSEDE);
        ck_assert_int_eq(orch_proto_fence_start(6, 5), ORCH_PROTO_START_STALE);

        /* The agent on stop */
        ck_assert_int_eq(orch_proto_fence_stop(0, 5), ORCH_PROTO_STOP_UNKNOWN);
        ck_assert_int_eq(orch_proto_fence_stop(5, 4), ORCH_PROTO_STOP_STALE);
        ck_assert_int_eq(orch_proto_fence_stop(5, 5), ORCH_PROTO_STOP_STOP);
        ck_assert_int_eq(orch_proto_fence_stop(5, 9), ORCH_PROTO_STOP_STOP);

        /* orchd on hello: every (record, reported) combination */
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_NONE, 0, 0), ORCH_PROTO_FENCE_NONE);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_NONE, 0, 3), ORCH_PROTO_FENCE_STOP);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_REPLACED, 3, 3), ORCH_PROTO_FENCE_STOP);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_REPLACED, 3, 0), ORCH_PROTO_FENCE_NONE);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_WANTED, 3, 3), ORCH_PROTO_FENCE_ADOPT);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_WANTED, 3, 2), ORCH_PROTO_FENCE_RESTART);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_WANTED, 3, 4), ORCH_PROTO_FENCE_RESTART);
        ck_assert_int_eq(orch_proto_fence_hello(ORCH_PROTO_RECORD_WANTED, 3, 0), ORCH_PROTO_FENCE_START);

        ck_assert(orch_proto_fence_current(ORCH_PROTO_RECORD_WANTED, 3, 3));
        ck_assert(!orch_proto_fence_current(ORCH_PROTO_RECORD_WANTED, 3, 2));
        ck_assert(!orch_proto_fence_current(ORCH_PROTO_RECORD_REPLACED, 3, 3));
        ck_assert(!orch_proto_fence_current(ORCH_PROTO_RECORD_NONE, 0, 0));

        /* A stop at the reported generation, then a start at a new one, passes the agent's fence:
         * what RESTART relies on. */
        ck_assert_int_eq(orch_proto_fence_stop(2, 2), ORCH_PROTO_STOP_STOP);
        ck_assert_int_eq(orch_proto_fence_start(0, 4), ORCH_PROTO_START_NEW);

        for (int v = 0; v < _ORCH_PROTO_START_VERDICT_MAX; v++)
                ck_assert_ptr_nonnull(orch_proto_start_verdict_to_string(v));
        for (int v = 0; v < _ORCH_PROTO_STOP_VERDICT_MAX; v++)
                ck_assert_ptr_nonnull(orch_proto_stop_verdict_to_string(v));
        for (int v = 0; v < _ORCH_PROTO_FENCE_ACTION_MAX; v++)
                ck_assert_ptr_nonnull(orch_proto_fence_action_to_string(v));
        ck_assert_str_eq(orch_proto_fence_action_to_string(ORCH_PROTO_FENCE_RESTART), "restart");
        ck_assert_ptr_null(orch_proto_fence_action_to_string(_ORCH_PROTO_FENCE_ACTION_MAX));
}
END_TEST

static Suite *proto_suite(void)
{
        Suite *s = suite_create("proto");
        TCase *tc = tcase_create("codec");
        TCase *big = tcase_create("big");

        tcase_add_test(tc, test_hello_round_trip);
        tcase_add_test(tc, test_small_messages_round_trip);
        tcase_add_test(tc, test_spec_round_trip);
        tcase_add_test(tc, test_start_stop_round_trip);
        tcase_add_test(tc, test_logs_round_trip);
        tcase_add_test(tc, test_ack_round_trip);
        tcase_add_test(tc, test_event_usage_round_trip);
        tcase_add_test(tc, test_decode_tolerance);
        tcase_add_test(tc, test_decode_garbage);
        tcase_add_test(tc, test_decode_field_errors);
        tcase_add_test(tc, test_decode_spec_errors);
        tcase_add_test(tc, test_value_checks);
        tcase_add_test(tc, test_encode_errors);
        tcase_add_test(tc, test_encode_text);
        tcase_add_test(tc, test_reader_split_everywhere);
        tcase_add_test(tc, test_reader_limits);
        tcase_add_test(tc, test_agrees_with_jansson);
        tcase_add_test(tc, test_types);
        tcase_add_test(tc, test_fencing);
        suite_add_tcase(s, tc);

        /* Tens of megabytes through the codec: generous time for sanitizer builds. */
        tcase_add_test(big, test_decode_limits);
        tcase_add_test(big, test_hello_split);
        tcase_add_test(big, test_reader_oversized_stream);
        tcase_set_timeout(big, 120);
        suite_add_tcase(s, big);
        return s;
}

ORCH_TEST_MAIN(proto_suite)
