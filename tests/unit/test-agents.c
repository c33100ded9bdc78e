/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "agents.h"
#include "proto.h"
#include "reconciler.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "testing.h"
#include "util.h"
#include "banned.h"

/*
 * orchd's agent endpoint for real: a store in a temporary directory, the state, the reconciler
 * wired to orch_agents, listening on 127.0.0.1, and fake agents written here that speak
 * lib/proto over TCP sockets. Everything runs on the test's thread: the fake agents' sockets are
 * non-blocking and every wait runs the loop in between.
 */

#define TOKEN "join-token-for-the-tests"

struct fake {
        int fd;
        char node[64];
        struct orch_proto_reader rd;
        struct orch_proto_msg *q[512]; /* frames received, oldest first */
        size_t nq;
        bool eof;
        bool heartbeat;       /* send heartbeats while the loop runs */
        bool keep_heartbeats; /* queue orchd's heartbeat replies too (dropped otherwise) */
        uint64_t last_hb_usec, seq;
};

struct harness {
        char dir[64];
        uv_loop_t loop;
        struct orch_store *store;
        struct orch_state *st;
        struct orch_agents *agents;
        struct orch_reconciler *rc;
        struct orch_registry *reg;
        int port;
        struct fake *fakes[8];
        size_t n_fakes;
        /* events published after their flush, by type */
        size_t n_events;
        char last_event_type[64];
};

static const struct orch_reconciler_ops agent_ops = {orch_agents_start_instance, orch_agents_stop_instance,
                                                     orch_agents_flush};

static void on_event(void *userdata, uint64_t index, json_t *event)
{
        struct harness *h = userdata;
        const char *type = json_string_value(json_object_get(event, "type"));

        h->n_events++;
        orch_strlcpy(h->last_event_type, type ? type : "", sizeof h->last_event_type);
        orch_registry_on_event(h->reg, event);
}

/* agents.h has no way to ask for the bound port: take a free one from the kernel and hand it over. */
static int free_port(void)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof sa;
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        port = ntohs(sa.sin_port);
        close(fd);
        return port;
}

static void harness_init_with(struct harness *h, uint64_t heartbeat_ms, uint64_t drain_delay_ms)
{
        char listen[64];
        struct orch_agents_config cfg = {
                .join_token = TOKEN,
                .heartbeat_ms = heartbeat_ms,
                .ttl_factor = 3,
                .drain_delay_ms = drain_delay_ms,
        };

        memset(h, 0, sizeof *h);
        orch_strlcpy(h->dir, "/tmp/orch-test-agents-XXXXXX", sizeof h->dir);
        ck_assert_ptr_nonnull(mkdtemp(h->dir));
        ck_assert_int_eq(uv_loop_init(&h->loop), 0);
        ck_assert_int_eq(orch_store_open(h->dir, NULL, &h->store, NULL), 0);
        ck_assert_int_eq(orch_state_new(h->store, &h->st), 0);
        ck_assert_int_eq(orch_registry_new(&h->loop, h->st, &h->reg), 0);
        h->st->on_event = on_event;
        h->st->on_event_userdata = h;
        h->port = free_port();
        orch_snprintf(listen, sizeof listen, "127.0.0.1:%d", h->port);
        cfg.listen = listen;
        ck_assert_int_eq(orch_agents_new(&h->loop, h->st, &cfg, &h->agents), 0);
        ck_assert_int_eq(orch_reconciler_new(&h->loop, h->st, &agent_ops, h->agents, &h->rc), 0);
        orch_agents_set_reconciler(h->agents, h->rc);
        ck_assert_int_eq(orch_agents_listen(h->agents), 0);
}

static void harness_init(struct harness *h)
{
        /* TTL 3 s: no node goes down in a test that does not wait for it */
        harness_init_with(h, 1000, 0);
}

static void fake_free(struct fake *f)
{
        for (size_t i = 0; i < f->nq; i++)
                orch_proto_msg_free(f->q[i]);
        orch_proto_reader_release(&f->rd);
        if (f->fd >= 0)
                close(f->fd);
        free(f);
}

static void harness_release(struct harness *h)
{
        char cmd[128];

        for (size_t i = 0; i < h->n_fakes; i++)
                fake_free(h->fakes[i]);
        orch_agents_close(h->agents);
        orch_reconciler_close(h->rc);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&h->loop), 0);
        h->st->on_event = NULL;
        orch_registry_free(h->reg);
        orch_state_free(h->st);
        orch_store_close(h->store);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
        ck_assert_int_eq(system(cmd), 0);
}

/* --- the fake agent ------------------------------------------------------------------------- */

static void fake_send_raw(struct fake *f, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = send(f->fd, data, len, MSG_NOSIGNAL);
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                        struct pollfd p = {.fd = f->fd, .events = POLLOUT};
                        poll(&p, 1, 10);
                        continue;
                }
                ck_assert_int_gt(n, 0);
                data += n;
                len -= (size_t)n;
        }
}

static void fake_send(struct fake *f, const struct orch_proto_msg *m)
{
        struct orch_buf b = {0};
        struct orch_proto_error err;

        ck_assert_msg(orch_proto_encode(&b, m, &err) == 0, "encode: %s", err.message);
        fake_send_raw(f, b.data, b.len);
        orch_buf_release(&b);
}

/* Reads what arrived, without blocking. */
static void fake_read(struct fake *f)
{
        for (;;) {
                char *space, *frame;
                size_t size, len;
                ssize_t n;

                if (f->eof)
                        return;
                ck_assert_int_eq(orch_proto_reader_space(&f->rd, 64 * 1024, &space, &size), 0);
                n = recv(f->fd, space, size, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                        return;
                if (n <= 0) {
                        f->eof = true;
                        return;
                }
                ck_assert_int_eq(orch_proto_reader_commit(&f->rd, (size_t)n), 0);
                while (orch_proto_reader_next(&f->rd, &frame, &len) > 0) {
                        struct orch_proto_msg *m = NULL;
                        struct orch_proto_error err;
                        ck_assert_msg(orch_proto_decode(frame, len, &m, &err) == 0,
                                      "orchd sent a bad frame: %s", err.message);
                        ck_assert(orch_proto_type_sent_by_server(m->type));
                        if (m->type == ORCH_PROTO_HEARTBEAT && !f->keep_heartbeats) {
                                orch_proto_msg_free(m);
                                continue;
                        }
                        ck_assert_uint_lt(f->nq, ELEMENTSOF(f->q));
                        f->q[f->nq++] = m;
                }
        }
}

static void fake_heartbeat(struct fake *f)
{
        struct orch_proto_msg m = {.type = ORCH_PROTO_HEARTBEAT, .heartbeat = {.seq = ++f->seq}};

        fake_send(f, &m);
        f->last_hb_usec = orch_now_usec();
}

/* Runs the loop for about `ms`; the fake agents read and heartbeat meanwhile. */
static void pump(struct harness *h, uint64_t ms)
{
        uint64_t end = orch_now_usec() + ms * 1000;

        do {
                uv_run(&h->loop, UV_RUN_NOWAIT);
                for (size_t i = 0; i < h->n_fakes; i++) {
                        struct fake *f = h->fakes[i];
                        if (f->fd < 0)
                                continue;
                        if (f->heartbeat && !f->eof && orch_now_usec() > f->last_hb_usec + 50 * 1000)
                                fake_heartbeat(f);
                        fake_read(f);
                }
                usleep(1000);
        } while (orch_now_usec() < end);
}

static struct fake *fake_connect(struct harness *h, const char *node)
{
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)h->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct fake *f = calloc(1, sizeof *f);
        int one = 1;

        ck_assert_ptr_nonnull(f);
        orch_strlcpy(f->node, node, sizeof f->node);
        orch_proto_reader_init(&f->rd, 0);
        f->fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(f->fd, 0);
        /* frames go out at once, as the real agent's (libuv, TCP_NODELAY) */
        ck_assert_int_eq(setsockopt(f->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
        ck_assert_int_eq(connect(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_uint_lt(h->n_fakes, ELEMENTSOF(h->fakes));
        h->fakes[h->n_fakes++] = f;
        pump(h, 5);
        return f;
}

/* The agent goes away as after kill -9: its socket closes. */
static void fake_disconnect(struct fake *f)
{
        close(f->fd);
        f->fd = -1;
        f->eof = true;
}

static void fake_hello(struct fake *f, const char *token, const struct orch_proto_report *reports, size_t n)
{
        static const char *drivers[] = {"exec"};
        struct orch_proto_label labels[] = {{"zone", "eu-1"}};
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_HELLO,
                .hello = {.proto = ORCH_PROTO_VERSION,
                          .node = f->node,
                          .token = token,
                          .address = "127.0.0.1",
                          .version = "test",
                          .labels = labels,
                          .n_labels = 1,
                          .capacity = {.cpu_millis = 4000, .memory = 8ULL << 30},
                          .drivers = drivers,
                          .n_drivers = 1,
                          .instances = (struct orch_proto_report *)reports,
                          .n_instances = n},
        };

        fake_send(f, &m);
}

/* The next frame orchd sent to this agent (owned by the caller), or NULL after `ms`. */
static struct orch_proto_msg *fake_next(struct harness *h, struct fake *f, uint64_t ms)
{
        uint64_t end = orch_now_usec() + ms * 1000;
        struct orch_proto_msg *m;

        while (f->nq == 0 && !f->eof && orch_now_usec() < end)
                pump(h, 1);
        fake_read(f);
        if (f->nq == 0)
                return NULL;
        m = f->q[0];
        memmove(&f->q[0], &f->q[1], (f->nq - 1) * sizeof f->q[0]);
        f->nq--;
        return m;
}

/* The next frame that is not a heartbeat reply. */
static struct orch_proto_msg *fake_next_cmd(struct harness *h, struct fake *f, uint64_t ms)
{
        uint64_t end = orch_now_usec() + ms * 1000;

        for (;;) {
                uint64_t now = orch_now_usec();
                struct orch_proto_msg *m = fake_next(h, f, now < end ? (end - now) / 1000 : 0);
                if (!m || m->type != ORCH_PROTO_HEARTBEAT)
                        return m;
                orch_proto_msg_free(m);
        }
}

static struct orch_proto_msg *expect(struct harness *h, struct fake *f, enum orch_proto_type type)
{
        struct orch_proto_msg *m = fake_next_cmd(h, f, 3000);

        ck_assert_msg(m != NULL, "agent %s: expected a %s frame, got nothing", f->node,
                      orch_proto_type_to_string(type));
        ck_assert_msg(m->type == type, "agent %s: expected a %s frame, got %s", f->node,
                      orch_proto_type_to_string(type), orch_proto_type_to_string(m->type));
        return m;
}

static void expect_closed(struct harness *h, struct fake *f)
{
        uint64_t end = orch_now_usec() + 3000 * 1000;

        while (!f->eof && orch_now_usec() < end)
                pump(h, 2);
        ck_assert_msg(f->eof, "agent %s: orchd did not close the connection", f->node);
}

static void fake_ack(struct fake *f, uint64_t id, bool ok, const char *error)
{
        struct orch_proto_msg m = {.type = ORCH_PROTO_ACK, .ack = {.id = id, .ok = ok, .error = error}};

        fake_send(f, &m);
}

/* A hello without instances, and its welcome; the agent heartbeats from then on. */
static struct fake *fake_join(struct harness *h, const char *node)
{
        struct fake *f = fake_connect(h, node);
        struct orch_proto_msg *m;

        fake_hello(f, TOKEN, NULL, 0);
        m = expect(h, f, ORCH_PROTO_WELCOME);
        ck_assert_str_eq(m->welcome.node, node);
        ck_assert_uint_gt(m->welcome.ttl_ms, m->welcome.heartbeat_ms);
        orch_proto_msg_free(m);
        f->heartbeat = true;
        return f;
}

static void fake_event(struct fake *f, const char *instance, const char *service, const char *revision,
                       uint64_t generation, enum orch_instance_state state, enum orch_health_state health)
{
        struct orch_proto_port ports[] = {{"http", 20001}};
        struct orch_proto_msg m = {
                .type = ORCH_PROTO_EVENT,
                .event = {.seq = ++f->seq,
                          .report = {.instance = instance,
                                     .service = service,
                                     .revision = revision,
                                     .generation = generation,
                                     .state = state,
                                     .health = health,
                                     .pid = state == ORCH_INSTANCE_RUNNING ? 4242 : 0,
                                     .ports = ports,
                                     .n_ports = 1,
                                     .started_at = orch_realtime_msec()}},
        };

        fake_send(f, &m);
}

/* --- helpers on orchd's side ---------------------------------------------------------------- */

static struct orch_svc *apply(struct harness *h, const char *yaml)
{
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        const char *change;
        char name[64];
        int r = orch_manifest_parse_buffer(&m, "test.yaml", yaml, strlen(yaml), &d);

        if (r < 0)
                orch_diags_print(&d, stderr);
        ck_assert_int_ge(r, 0);
        ck_assert_uint_eq(m.n_services, 1);
        orch_strlcpy(name, m.services[0]->name, sizeof name);
        ck_assert_int_ge(orch_state_apply_service(h->st, m.services[0], &change), 0);
        free(m.services);
        orch_diags_release(&d);
        ck_assert_int_eq(orch_state_flush(h->st), 0);
        return orch_state_service(h->st, name);
}

static const char web[] = "kind: service\nname: web\nreplicas: 1\ncommand: [/bin/sleep, '100']\n"
                          "ports: [{name: http}]\nresources: {cpu: 100m, memory: 64Mi}\n";

static struct orch_inst *first_instance(struct orch_svc *svc)
{
        ck_assert(!orch_list_empty(&svc->instances));
        return orch_list_entry(svc->instances.next, struct orch_inst, svc_link);
}

/* Expects the spec and the start of exactly one instance; returns the start (owned). */
static struct orch_proto_msg *expect_spec_and_start(struct harness *h, struct fake *f, struct orch_svc *svc)
{
        struct orch_proto_msg *m = expect(h, f, ORCH_PROTO_SPEC);

        ck_assert_str_eq(m->spec.service, svc->name);
        ck_assert_str_eq(m->spec.revision, svc->revision);
        ck_assert_ptr_nonnull(m->spec.parsed);
        fake_ack(f, m->spec.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(h, f, ORCH_PROTO_START);
        ck_assert_uint_eq(m->start.n_instances, 1);
        return m;
}

/* --- tests ---------------------------------------------------------------------------------- */

START_TEST(test_bad_token)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;

        harness_init(&h);
        f = fake_connect(&h, "n1");
        fake_hello(f, "not-the-token", NULL, 0);
        m = expect(&h, f, ORCH_PROTO_ERROR);
        ck_assert_str_eq(m->error.error, "invalid join token");
        ck_assert_ptr_null(strstr(m->error.error, "not-the-token")); /* never echoed */
        orch_proto_msg_free(m);
        expect_closed(&h, f);
        /* nothing was registered */
        ck_assert_ptr_null(orch_state_node(h.st, "n1"));
        ck_assert_uint_eq(orch_agents_connected(h.agents), 0);
        harness_release(&h);
}
END_TEST

START_TEST(test_garbage_closes_only_that_connection)
{
        struct harness h;
        struct fake *good, *bad;
        struct orch_proto_msg *m;
        static const char garbage[] = "{\"type\": \"heartbeat\", \"seq\": -1}\n";

        harness_init(&h);
        good = fake_join(&h, "n1");
        good->heartbeat = false;
        bad = fake_join(&h, "n2");
        bad->heartbeat = false;
        ck_assert_uint_eq(orch_agents_connected(h.agents), 2);

        fake_send_raw(bad, garbage, strlen(garbage));
        m = expect(&h, bad, ORCH_PROTO_ERROR);
        ck_assert_msg(strstr(m->error.error, "seq"), "the error names the field: %s", m->error.error);
        orch_proto_msg_free(m);
        expect_closed(&h, bad);

        /* the other agent is untouched: its heartbeat is answered */
        good->keep_heartbeats = true;
        fake_heartbeat(good);
        m = fake_next(&h, good, 3000);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(m->type, ORCH_PROTO_HEARTBEAT);
        ck_assert_uint_eq(m->heartbeat.seq, good->seq);
        ck_assert_uint_gt(m->heartbeat.ttl_ms, m->heartbeat.heartbeat_ms);
        orch_proto_msg_free(m);
        ck_assert_uint_eq(orch_agents_connected(h.agents), 1);

        /* not JSON at all, from a connection that never said hello */
        bad = fake_connect(&h, "n3");
        fake_send_raw(bad, "GET / HTTP/1.1\r\n\r\n", 18);
        m = expect(&h, bad, ORCH_PROTO_ERROR);
        orch_proto_msg_free(m);
        expect_closed(&h, bad);
        ck_assert_uint_eq(orch_agents_connected(h.agents), 1);
        harness_release(&h);
}
END_TEST

START_TEST(test_first_frame_must_be_hello)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;

        harness_init(&h);
        f = fake_connect(&h, "n1");
        fake_heartbeat(f);
        m = expect(&h, f, ORCH_PROTO_ERROR);
        ck_assert_msg(strstr(m->error.error, "hello"), "%s", m->error.error);
        orch_proto_msg_free(m);
        expect_closed(&h, f);

        /* a second hello on a registered connection is an error too */
        f = fake_join(&h, "n2");
        fake_hello(f, TOKEN, NULL, 0);
        m = expect(&h, f, ORCH_PROTO_ERROR);
        orch_proto_msg_free(m);
        expect_closed(&h, f);
        harness_release(&h);
}
END_TEST

START_TEST(test_join_start_ack_events)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_node *node;
        uint64_t gen;
        char id[ORCH_INSTANCE_ID_MAX + 1];

        harness_init(&h);
        f = fake_join(&h, "n1");
        node = orch_state_node(h.st, "n1");
        ck_assert_ptr_nonnull(node);
        ck_assert_int_eq(node->state, ORCH_NODE_READY);
        ck_assert_uint_eq(node->cpu_millis, 4000);
        ck_assert_str_eq(node->address, "127.0.0.1");

        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        inst = first_instance(svc);
        ck_assert_str_eq(m->start.instances[0].instance, inst->id);
        ck_assert_str_eq(m->start.instances[0].service, "web");
        ck_assert_str_eq(m->start.instances[0].revision, svc->revision);
        ck_assert_uint_eq(m->start.instances[0].generation, inst->generation);
        ck_assert_ptr_eq(inst->node, node);
        ck_assert_uint_eq(node->alloc_cpu_millis, 100);
        orch_strlcpy(id, inst->id, sizeof id);
        gen = inst->generation;
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);

        /* starting, then running: orchd's record follows */
        fake_event(f, id, "web", svc->revision, gen, ORCH_INSTANCE_STARTING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_STARTING);
        ck_assert(inst->confirmed);
        fake_event(f, id, "web", svc->revision, gen, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_RUNNING);
        ck_assert_int_eq(inst->pid, 4242);
        ck_assert_uint_eq(inst->n_ports, 1);
        ck_assert_uint_eq(inst->ports[0].port, 20001);
        ck_assert(orch_registry_is_endpoint(inst));
        ck_assert_uint_eq(orch_svc_ready_count(svc), 1);

        /* an event about another generation of the id is a replaced copy's: ignored */
        fake_event(f, id, "web", svc->revision, gen + 100, ORCH_INSTANCE_FAILED, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_RUNNING);
        /* and one about an id orchd does not know changes nothing either */
        fake_event(f, "web-0badc0de", "web", svc->revision, 1, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        ck_assert_ptr_null(orch_state_instance(h.st, "web-0badc0de"));

        /* the agent says it exited (restart policy): terminal, resources released, not replaced */
        fake_event(f, id, "web", svc->revision, gen, ORCH_INSTANCE_EXITED, ORCH_HEALTH_UNKNOWN);
        pump(&h, 50);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_EXITED);
        ck_assert_uint_eq(node->alloc_cpu_millis, 0);
        ck_assert_uint_eq(h.st->n_instances, 1);
        m = fake_next_cmd(&h, f, 100);
        ck_assert_ptr_null(m);
        harness_release(&h);
}
END_TEST

START_TEST(test_scale_down_stop_ack_forgets)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        char id[ORCH_INSTANCE_ID_MAX + 1];
        uint64_t gen;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        gen = inst->generation;
        fake_event(f, id, "web", svc->revision, gen, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);

        ck_assert_int_eq(orch_state_scale_service(h.st, svc, 0), 1);
        m = expect(&h, f, ORCH_PROTO_STOP);
        ck_assert_uint_eq(m->stop.n_instances, 1);
        ck_assert_str_eq(m->stop.instances[0].instance, id);
        ck_assert_uint_eq(m->stop.instances[0].generation, gen);
        /* out of the registry at once, but known until the agent confirms */
        ck_assert(!orch_registry_is_endpoint(inst));
        ck_assert_ptr_nonnull(orch_state_instance(h.st, id));
        fake_ack(f, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        pump(&h, 50);
        ck_assert_ptr_null(orch_state_instance(h.st, id));
        ck_assert_uint_eq(h.st->n_instances, 0);
        ck_assert_uint_eq(orch_state_node(h.st, "n1")->alloc_memory, 0);
        harness_release(&h);
}
END_TEST

START_TEST(test_start_refused)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, false, "user nobody does not exist");
        orch_proto_msg_free(m);
        pump(&h, 50);
        inst = first_instance(svc);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_FAILED);
        ck_assert_str_eq(inst->reason, "user nobody does not exist");
        ck_assert_uint_eq(orch_state_node(h.st, "n1")->alloc_cpu_millis, 0);
        /* failed counts towards replicas: nothing else is started */
        ck_assert_ptr_null(fake_next_cmd(&h, f, 100));
        ck_assert_uint_eq(h.st->n_instances, 1);
        harness_release(&h);
}
END_TEST

START_TEST(test_hello_unknown_instance_stopped_before_welcome)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_proto_report rep = {.instance = "ghost-00c0ffee",
                                        .service = "ghost",
                                        .revision = "0123456789abcdef",
                                        .generation = 7,
                                        .state = ORCH_INSTANCE_RUNNING,
                                        .health = ORCH_HEALTH_UNKNOWN,
                                        .pid = 99};

        harness_init(&h);
        f = fake_connect(&h, "n1");
        fake_hello(f, TOKEN, &rep, 1);
        m = expect(&h, f, ORCH_PROTO_STOP);
        ck_assert_uint_eq(m->stop.n_instances, 1);
        ck_assert_str_eq(m->stop.instances[0].instance, "ghost-00c0ffee");
        ck_assert_uint_eq(m->stop.instances[0].generation, 7);
        fake_ack(f, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        ck_assert_ptr_null(orch_state_instance(h.st, "ghost-00c0ffee"));
        harness_release(&h);
}
END_TEST

START_TEST(test_hello_adopts_wanted_instance)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_proto_report rep;
        char id[ORCH_INSTANCE_ID_MAX + 1], rev[ORCH_REVISION_LEN + 1];
        uint64_t gen, generation_counter;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        orch_strlcpy(rev, svc->revision, sizeof rev);
        gen = inst->generation;
        fake_event(f, id, "web", rev, gen, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);

        /* the agent restarts (its connection drops) and comes back within the TTL */
        fake_disconnect(f);
        pump(&h, 50);
        ck_assert_uint_eq(orch_agents_connected(h.agents), 0);
        ck_assert_int_eq(orch_state_node(h.st, "n1")->state, ORCH_NODE_READY);
        generation_counter = h.st->generation;

        f = fake_connect(&h, "n1");
        rep = (struct orch_proto_report){.instance = id,
                                         .service = "web",
                                         .revision = rev,
                                         .generation = gen,
                                         .state = ORCH_INSTANCE_RUNNING,
                                         .health = ORCH_HEALTH_UNKNOWN,
                                         .pid = 4343,
                                         .restarts = 0};
        fake_hello(f, TOKEN, &rep, 1);
        /* adopted as is: the welcome comes first and nothing is stopped or started */
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        f->heartbeat = true;
        ck_assert_ptr_null(fake_next_cmd(&h, f, 200));
        inst = orch_state_instance(h.st, id);
        ck_assert_ptr_nonnull(inst);
        ck_assert_uint_eq(inst->generation, gen);
        ck_assert_int_eq(inst->pid, 4343);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_RUNNING);
        ck_assert_uint_eq(h.st->generation, generation_counter);
        ck_assert_uint_eq(h.st->n_instances, 1);
        harness_release(&h);
}
END_TEST

START_TEST(test_hello_wanted_other_generation_is_restarted)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_proto_report rep;
        char id[ORCH_INSTANCE_ID_MAX + 1], rev[ORCH_REVISION_LEN + 1];
        uint64_t gen;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        orch_strlcpy(rev, svc->revision, sizeof rev);
        gen = inst->generation;
        fake_disconnect(f);
        pump(&h, 20);

        /* the agent comes back with an older copy of the same id */
        f = fake_connect(&h, "n1");
        rep = (struct orch_proto_report){.instance = id,
                                         .service = "web",
                                         .revision = rev,
                                         .generation = gen - 1 ? gen - 1 : 1,
                                         .state = ORCH_INSTANCE_RUNNING,
                                         .health = ORCH_HEALTH_UNKNOWN};
        if (rep.generation == gen)
                rep.generation = gen + 1;
        fake_hello(f, TOKEN, &rep, 1);
        /* stopped at the generation it holds, before the welcome */
        m = expect(&h, f, ORCH_PROTO_STOP);
        ck_assert_str_eq(m->stop.instances[0].instance, id);
        ck_assert_uint_eq(m->stop.instances[0].generation, rep.generation);
        fake_ack(f, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        /* orchd placed it again on the node at a new generation */
        inst = orch_state_instance(h.st, id);
        ck_assert_ptr_nonnull(inst);
        ck_assert_uint_gt(inst->generation, gen);
        ck_assert(orch_inst_is_live(inst));
        harness_release(&h);
}
END_TEST

START_TEST(test_node_down_lost_replaced_and_fenced_on_return)
{
        struct harness h;
        struct fake *a, *b;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst, *repl = NULL;
        struct orch_node *na;
        struct orch_proto_report rep;
        struct orch_list *p;
        char id[ORCH_INSTANCE_ID_MAX + 1], rev[ORCH_REVISION_LEN + 1];
        uint64_t gen;

        /* heartbeat every 100 ms, TTL 300 ms */
        harness_init_with(&h, 100, 0);
        a = fake_join(&h, "na");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, a, svc);
        fake_ack(a, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        orch_strlcpy(rev, svc->revision, sizeof rev);
        gen = inst->generation;
        fake_event(a, id, "web", rev, gen, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        ck_assert(orch_registry_is_endpoint(inst));

        b = fake_join(&h, "nb");
        /* a partition: na's agent goes silent but keeps its socket */
        a->heartbeat = false;
        pump(&h, 600);
        na = orch_state_node(h.st, "na");
        ck_assert_int_eq(na->state, ORCH_NODE_DOWN);
        expect_closed(&h, a);
        inst = orch_state_instance(h.st, id);
        ck_assert_ptr_nonnull(inst); /* the record stays until the node confirms */
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_LOST);
        ck_assert(!orch_inst_is_live(inst));
        ck_assert(!orch_registry_is_endpoint(inst));
        ck_assert_uint_eq(na->alloc_cpu_millis, 0);

        /* replaced on nb with a new id and a new generation */
        m = expect_spec_and_start(&h, b, svc);
        ck_assert_str_ne(m->start.instances[0].instance, id);
        ck_assert_uint_gt(m->start.instances[0].generation, gen);
        fake_ack(b, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        orch_list_foreach (p, &svc->instances) {
                struct orch_inst *i = orch_list_entry(p, struct orch_inst, svc_link);
                if (orch_inst_is_live(i))
                        repl = i;
        }
        ck_assert_ptr_nonnull(repl);
        ck_assert_str_eq(repl->node->name, "nb");

        /* the partition heals: na says hello with its old copy, which is stopped before the welcome */
        a = fake_connect(&h, "na");
        rep = (struct orch_proto_report){.instance = id,
                                         .service = "web",
                                         .revision = rev,
                                         .generation = gen,
                                         .state = ORCH_INSTANCE_RUNNING,
                                         .health = ORCH_HEALTH_UNKNOWN,
                                         .pid = 4242};
        fake_hello(a, TOKEN, &rep, 1);
        m = expect(&h, a, ORCH_PROTO_STOP);
        ck_assert_str_eq(m->stop.instances[0].instance, id);
        ck_assert_uint_eq(m->stop.instances[0].generation, gen);
        fake_ack(a, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, a, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        a->heartbeat = true;
        pump(&h, 50);
        /* the lost record is gone once the node confirmed the stop; nothing else moved */
        ck_assert_ptr_null(orch_state_instance(h.st, id));
        ck_assert_int_eq(na->state, ORCH_NODE_READY);
        ck_assert_uint_eq(h.st->n_instances, 1);
        ck_assert(orch_inst_is_live(repl));
        ck_assert_ptr_null(fake_next_cmd(&h, a, 100));
        harness_release(&h);
}
END_TEST

START_TEST(test_lost_not_reported_is_forgotten)
{
        struct harness h;
        struct fake *a, *b;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        char id[ORCH_INSTANCE_ID_MAX + 1];

        harness_init_with(&h, 100, 0);
        a = fake_join(&h, "na");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, a, svc);
        fake_ack(a, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        b = fake_join(&h, "nb");
        fake_disconnect(a);
        pump(&h, 600);
        ck_assert_int_eq(orch_state_instance(h.st, id)->state, ORCH_INSTANCE_LOST);
        m = expect_spec_and_start(&h, b, svc);
        orch_proto_msg_free(m);

        /* the node comes back empty (rebooted): the lost record goes without a stop */
        a = fake_connect(&h, "na");
        fake_hello(a, TOKEN, NULL, 0);
        m = expect(&h, a, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        a->heartbeat = true;
        pump(&h, 50);
        ck_assert_ptr_null(orch_state_instance(h.st, id));
        ck_assert_ptr_null(fake_next_cmd(&h, a, 100));
        harness_release(&h);
}
END_TEST

START_TEST(test_same_node_reconnect_replaces_connection)
{
        struct harness h;
        struct fake *old, *new;

        harness_init(&h);
        old = fake_join(&h, "n1");
        old->heartbeat = false;
        new = fake_join(&h, "n1");
        expect_closed(&h, old);
        ck_assert_uint_eq(orch_agents_connected(h.agents), 1);
        ck_assert_ptr_nonnull(orch_state_node(h.st, "n1")->conn);
        ck_assert_uint_eq(h.st->n_nodes, 1);
        (void)new;
        harness_release(&h);
}
END_TEST

START_TEST(test_drain_delay)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        uint64_t t0;

        harness_init_with(&h, 1000, 300);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        fake_event(f, inst->id, "web", svc->revision, inst->generation, ORCH_INSTANCE_RUNNING,
                   ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        {
                json_t *j = orch_registry_json(h.reg, "web");
                ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 1);
                json_decref(j);
        }

        t0 = orch_now_usec();
        ck_assert_int_eq(orch_state_scale_service(h.st, svc, 0), 1);
        pump(&h, 20);
        {
                /* out of the registry at once */
                json_t *j = orch_registry_json(h.reg, "web");
                ck_assert_uint_eq(json_array_size(json_object_get(j, "endpoints")), 0);
                json_decref(j);
        }
        /* the stop signal only after the delay */
        m = expect(&h, f, ORCH_PROTO_STOP);
        ck_assert_uint_ge(orch_now_usec() - t0, 250 * 1000);
        orch_proto_msg_free(m);
        harness_release(&h);
}
END_TEST

struct log_sink {
        struct orch_buf data;
        bool ended;
        char error[128];
};

static void sink_data(void *userdata, const char *data, size_t len)
{
        struct log_sink *s = userdata;
        orch_buf_put(&s->data, data, len);
}

static void sink_end(void *userdata, const char *error)
{
        struct log_sink *s = userdata;
        ck_assert(!s->ended); /* exactly once */
        s->ended = true;
        orch_strlcpy(s->error, error ? error : "", sizeof s->error);
}

START_TEST(test_logs_stream)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_log_stream *s = NULL;
        struct log_sink sink = {0};
        uint64_t id;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);

        ck_assert_int_eq(orch_agents_logs(h.agents, inst, 10, false, sink_data, sink_end, &sink, &s), 0);
        m = expect(&h, f, ORCH_PROTO_LOGS);
        ck_assert_str_eq(m->logs.instance, inst->id);
        ck_assert_uint_eq(m->logs.tail, 10);
        ck_assert(!m->logs.follow);
        id = m->logs.id;
        orch_proto_msg_free(m);
        {
                struct orch_proto_msg l = {.type = ORCH_PROTO_LOG,
                                           .log = {.id = id, .data = "hello\n", .data_len = 6}};
                fake_send(f, &l);
                l.log.data = "world\n";
                fake_send(f, &l);
        }
        fake_ack(f, id, true, NULL);
        pump(&h, 50);
        ck_assert(sink.ended);
        ck_assert_str_eq(sink.error, "");
        ck_assert_uint_eq(sink.data.len, 12);
        ck_assert(memcmp(sink.data.data, "hello\nworld\n", 12) == 0);

        /* a following stream ends with a reason when the agent goes away */
        orch_buf_reset(&sink.data);
        sink.ended = false;
        ck_assert_int_eq(orch_agents_logs(h.agents, inst, 10, true, sink_data, sink_end, &sink, &s), 0);
        m = expect(&h, f, ORCH_PROTO_LOGS);
        ck_assert(m->logs.follow);
        orch_proto_msg_free(m);
        fake_disconnect(f);
        pump(&h, 50);
        ck_assert(sink.ended);
        ck_assert_msg(strstr(sink.error, "disconnected"), "%s", sink.error);
        orch_buf_release(&sink.data);
        harness_release(&h);
}
END_TEST

START_TEST(test_hello_in_parts)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        size_t stops = 0;
        /* three unknown instances over two hello frames: fenced together after the last part */
        struct orch_proto_report reps[3];
        char ids[3][32];
        struct orch_buf b = {0}, part = {0};
        struct orch_proto_error err;
        static const char *drivers[] = {"exec"};

        harness_init(&h);
        for (size_t i = 0; i < 3; i++) {
                orch_snprintf(ids[i], sizeof ids[i], "old-%08zx", i + 1);
                reps[i] = (struct orch_proto_report){.instance = ids[i],
                                                     .service = "old",
                                                     .revision = "0123456789abcdef",
                                                     .generation = i + 1,
                                                     .state = ORCH_INSTANCE_RUNNING,
                                                     .health = ORCH_HEALTH_UNKNOWN};
        }
        f = fake_connect(&h, "n1");
        {
                /* encode each part by itself, then mark the first with "more" */
                struct orch_proto_msg hm = {
                        .type = ORCH_PROTO_HELLO,
                        .hello = {.proto = ORCH_PROTO_VERSION,
                                  .node = "n1",
                                  .token = TOKEN,
                                  .address = "127.0.0.1",
                                  .version = "test",
                                  .capacity = {.cpu_millis = 1000, .memory = 1ULL << 30},
                                  .drivers = drivers,
                                  .n_drivers = 1,
                                  .instances = reps,
                                  .n_instances = 2},
                };
                ck_assert_int_eq(orch_proto_encode(&part, &hm, &err), 0);
                ck_assert(part.len > 2 && part.data[part.len - 2] == '}');
                orch_buf_put(&b, part.data, part.len - 2);
                orch_buf_puts(&b, ",\"more\":true}\n");
                orch_buf_reset(&part);
                hm.hello.instances = &reps[2];
                hm.hello.n_instances = 1;
                ck_assert_int_eq(orch_proto_encode(&part, &hm, &err), 0);
        }
        fake_send_raw(f, b.data, b.len);
        pump(&h, 50);
        /* nothing until the last part */
        ck_assert_uint_eq(f->nq, 0);
        ck_assert_ptr_null(orch_state_node(h.st, "n1"));
        fake_send_raw(f, part.data, part.len);
        m = expect(&h, f, ORCH_PROTO_STOP);
        stops = m->stop.n_instances;
        orch_proto_msg_free(m);
        ck_assert_uint_eq(stops, 3);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        orch_buf_release(&b);
        orch_buf_release(&part);
        harness_release(&h);
}
END_TEST

START_TEST(test_heartbeats_answered_while_a_command_waits)
{
        /* not waited out here (30 s); the connection of an agent that never answers a command
         * stays open meanwhile and orchd keeps answering its heartbeats */
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect(&h, f, ORCH_PROTO_SPEC);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_START);
        orch_proto_msg_free(m);
        f->keep_heartbeats = true;
        fake_heartbeat(f);
        m = fake_next(&h, f, 1000);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(m->type, ORCH_PROTO_HEARTBEAT);
        orch_proto_msg_free(m);
        ck_assert_uint_eq(orch_agents_connected(h.agents), 1);
        (void)svc;
        harness_release(&h);
}
END_TEST

/* Regression: docs/protocol.md: "an instance orchd wants on this node that the report lacks -> start
 * again (same id, new generation)" */
START_TEST(test_missing_wanted_is_started_again)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        char id[ORCH_INSTANCE_ID_MAX + 1];
        uint64_t gen;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        gen = inst->generation;
        fake_event(f, id, "web", svc->revision, gen, ORCH_INSTANCE_RUNNING, ORCH_HEALTH_UNKNOWN);
        pump(&h, 20);
        fake_disconnect(f);
        pump(&h, 20);

        /* the agent lost its instance (rebooted) and says hello without it */
        f = fake_connect(&h, "n1");
        fake_hello(f, TOKEN, NULL, 0);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        f->heartbeat = true;
        inst = orch_state_instance(h.st, id);
        ck_assert_uint_gt(inst->generation, gen);
        /* the start of the same id at its new generation must follow the welcome */
        m = expect(&h, f, ORCH_PROTO_SPEC);
        fake_ack(f, m->spec.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_START);
        ck_assert_str_eq(m->start.instances[0].instance, id);
        ck_assert_uint_eq(m->start.instances[0].generation, inst->generation);
        orch_proto_msg_free(m);
        harness_release(&h);
}
END_TEST

START_TEST(test_other_generation_is_started_again)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;
        struct orch_proto_report rep;
        char id[ORCH_INSTANCE_ID_MAX + 1], rev[ORCH_REVISION_LEN + 1];
        uint64_t gen;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        orch_strlcpy(id, inst->id, sizeof id);
        orch_strlcpy(rev, svc->revision, sizeof rev);
        gen = inst->generation;
        fake_disconnect(f);
        pump(&h, 20);
        f = fake_connect(&h, "n1");
        rep = (struct orch_proto_report){.instance = id,
                                         .service = "web",
                                         .revision = rev,
                                         .generation = gen + 5,
                                         .state = ORCH_INSTANCE_RUNNING,
                                         .health = ORCH_HEALTH_UNKNOWN};
        fake_hello(f, TOKEN, &rep, 1);
        m = expect(&h, f, ORCH_PROTO_STOP);
        fake_ack(f, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        f->heartbeat = true;
        m = expect(&h, f, ORCH_PROTO_SPEC);
        fake_ack(f, m->spec.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_START);
        ck_assert_str_eq(m->start.instances[0].instance, id);
        orch_proto_msg_free(m);
        harness_release(&h);
}
END_TEST

/* Regression: delete a service whose instance ended by itself (exited, confirmed) */
START_TEST(test_delete_with_exited_instance)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, f, svc);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        fake_event(f, inst->id, "web", svc->revision, inst->generation, ORCH_INSTANCE_EXITED,
                   ORCH_HEALTH_UNKNOWN);
        pump(&h, 50);
        ck_assert_int_eq(inst->state, ORCH_INSTANCE_EXITED);
        ck_assert_int_eq(orch_state_delete_service(h.st, svc), 1);
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        /* the agent is told to forget the exited instance, and orchd forgets it and the service */
        m = expect(&h, f, ORCH_PROTO_STOP);
        fake_ack(f, m->stop.id, true, NULL);
        orch_proto_msg_free(m);
        pump(&h, 400);
        ck_assert_ptr_null(orch_state_service(h.st, "web"));
        harness_release(&h);
}
END_TEST

/* Regression: a stop orchd sent is never acked because the node dies: the service is never removed */
START_TEST(test_stop_unacked_node_dies_blocks_delete)
{
        struct harness h;
        struct fake *a, *b;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_inst *inst;

        harness_init_with(&h, 100, 0);
        a = fake_join(&h, "na");
        svc = apply(&h, web);
        m = expect_spec_and_start(&h, a, svc);
        fake_ack(a, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        inst = first_instance(svc);
        fake_event(a, inst->id, "web", svc->revision, inst->generation, ORCH_INSTANCE_RUNNING,
                   ORCH_HEALTH_UNKNOWN);
        b = fake_join(&h, "nb");
        (void)b;
        pump(&h, 20);
        ck_assert_int_eq(orch_state_delete_service(h.st, svc), 1);
        ck_assert_int_eq(orch_state_flush(h.st), 0);
        m = expect(&h, a, ORCH_PROTO_STOP);
        orch_proto_msg_free(m);
        /* the node dies before it confirms */
        a->heartbeat = false;
        pump(&h, 1500);
        ck_assert_int_eq(orch_state_node(h.st, "na")->state, ORCH_NODE_DOWN);
        ck_assert_msg(orch_state_service(h.st, "web") == NULL,
                      "service still there: its instance is %s on a down node, desired stop",
                      orch_instance_state_to_string(first_instance(svc)->state));
        harness_release(&h);
}
END_TEST

/* Regression: re-placing the missing instances of a hello moved each to the tail of the node's list
 * while the loop walked it, so with two of them the loop never ended. */
START_TEST(test_several_missing_are_started_again)
{
        struct harness h;
        struct fake *f;
        struct orch_proto_msg *m;
        struct orch_svc *svc;
        struct orch_list *p;
        size_t n = 0;

        harness_init(&h);
        f = fake_join(&h, "n1");
        svc = apply(&h, "kind: service\nname: web\nreplicas: 3\ncommand: [/bin/sleep, '100']\n");
        m = expect(&h, f, ORCH_PROTO_SPEC);
        ck_assert_str_eq(m->spec.revision, svc->revision);
        fake_ack(f, m->spec.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_START);
        ck_assert_uint_eq(m->start.n_instances, 3);
        fake_ack(f, m->start.id, true, NULL);
        orch_proto_msg_free(m);
        fake_disconnect(f);
        pump(&h, 20);

        f = fake_connect(&h, "n1");
        fake_hello(f, TOKEN, NULL, 0);
        m = expect(&h, f, ORCH_PROTO_WELCOME);
        orch_proto_msg_free(m);
        f->heartbeat = true;
        m = expect(&h, f, ORCH_PROTO_SPEC);
        fake_ack(f, m->spec.id, true, NULL);
        orch_proto_msg_free(m);
        m = expect(&h, f, ORCH_PROTO_START);
        ck_assert_uint_eq(m->start.n_instances, 3);
        orch_proto_msg_free(m);
        orch_list_foreach (p, &orch_state_node(h.st, "n1")->instances)
                n++;
        ck_assert_uint_eq(n, 3);
        harness_release(&h);
}
END_TEST

static Suite *agents_suite(void)
{
        Suite *s = suite_create("agents");
        TCase *tc = tcase_create("endpoint");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_bad_token);
        tcase_add_test(tc, test_garbage_closes_only_that_connection);
        tcase_add_test(tc, test_first_frame_must_be_hello);
        tcase_add_test(tc, test_join_start_ack_events);
        tcase_add_test(tc, test_scale_down_stop_ack_forgets);
        tcase_add_test(tc, test_start_refused);
        tcase_add_test(tc, test_hello_unknown_instance_stopped_before_welcome);
        tcase_add_test(tc, test_hello_adopts_wanted_instance);
        tcase_add_test(tc, test_hello_wanted_other_generation_is_restarted);
        tcase_add_test(tc, test_node_down_lost_replaced_and_fenced_on_return);
        tcase_add_test(tc, test_lost_not_reported_is_forgotten);
        tcase_add_test(tc, test_same_node_reconnect_replaces_connection);
        tcase_add_test(tc, test_drain_delay);
        tcase_add_test(tc, test_logs_stream);
        tcase_add_test(tc, test_hello_in_parts);
        tcase_add_test(tc, test_heartbeats_answered_while_a_command_waits);
        suite_add_tcase(s, tc);
        tc = tcase_create("repro");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_missing_wanted_is_started_again);
        tcase_add_test(tc, test_several_missing_are_started_again);
        tcase_add_test(tc, test_other_generation_is_started_again);
        tcase_add_test(tc, test_delete_with_exited_instance);
        tcase_add_test(tc, test_stop_unacked_node_dies_blocks_delete);
        suite_add_tcase(s, tc);
        return s;
}

ORCH_TEST_MAIN(agents_suite)
