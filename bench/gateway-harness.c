/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <getopt.h>
#include <signal.h>

#include <uv.h>

#include "gateway/gateway.h"
#include "log.h"
#include "registry.h"
#include "state.h"
#include "store.h"
#include "util.h"
#include "banned.h"

/*
 * orchd's gateway on its own, for bench/gateway.sh: the real gateway code (orchd/gateway, as linked
 * into orchd) in front of backends that already run, with an in-memory orchd state and registry that
 * list them as the healthy instances of one routed service (`route: {}`). No agents, no scheduler: what
 * is measured is the gateway. Prints "ready port=N" once it listens and runs until SIGTERM or SIGINT.
 *
 *   gateway-harness [--listen HOST:PORT] [--workers N] [--access-log] --backend IP:PORT [--backend ...]
 */

struct harness {
        uv_loop_t *loop;
        uv_signal_t sigterm, sigint;
        struct orch_gateway *gw;
};

static void on_signal(uv_signal_t *s, int signum)
{
        struct harness *h = s->data;

        uv_close((uv_handle_t *)&h->sigterm, NULL);
        uv_close((uv_handle_t *)&h->sigint, NULL);
        uv_stop(h->loop);
}

static _noreturn_ void usage(int status)
{
        fprintf(status ? stderr : stdout, "usage: gateway-harness [--listen HOST:PORT] [--workers N] "
                                          "[--access-log] --backend IP:PORT...\n");
        exit(status);
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                {"listen", required_argument, NULL, 'l'},  {"workers", required_argument, NULL, 'w'},
                {"backend", required_argument, NULL, 'b'}, {"access-log", no_argument, NULL, 'a'},
                {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
        };
        struct orch_gateway_config cfg = {.listen = "127.0.0.1:8080"};
        char dir[64] = "/tmp/orch-gw-harness-XXXXXX", cmd[128], **backends = NULL;
        struct harness h = {0};
        struct orch_store *store = NULL;
        struct orch_state *st = NULL;
        struct orch_registry *reg = NULL;
        struct orch_manifest m = {0};
        struct orch_diags d = {0};
        struct orch_node *node;
        struct orch_svc *svc;
        const char *change;
        static const char manifest[] = "kind: service\nname: bench\ncommand: [x]\nports: [{name: http}]\n"
                                       "route: {}\n";
        uint32_t workers = 0;
        int c, r;

        orch_log_set_program("gateway-harness");
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case 'l':
                        cfg.listen = optarg;
                        break;
                case 'w':
                        if (orch_parse_u32(optarg, &workers) < 0 || workers > 1024)
                                usage(2);
                        break;
                case 'b':
                        if (orch_strv_push(&backends, optarg) < 0)
                                return 1;
                        break;
                case 'a':
                        cfg.access_log = true;
                        break;
                case 'h':
                        usage(0);
                default:
                        usage(2);
                }
        }
        if (optind != argc || !backends)
                usage(2);
        cfg.workers = workers;

        h.loop = uv_default_loop();
        if (!mkdtemp(dir) ||
            orch_store_open(dir,
                            &(struct orch_store_options){.durability = ORCH_STORE_DURABLE_PROCESS_CRASH},
                            &store, NULL) < 0 ||
            orch_state_new(store, &st) < 0 || orch_state_upsert_node(st, "local", &node) < 0) {
                log_error("cannot set up a state in %s", dir);
                return 1;
        }
        node->address = strdup("127.0.0.1");
        orch_state_set_node_state(st, node, ORCH_NODE_READY);
        if (orch_manifest_parse_buffer(&m, "bench.yaml", manifest, strlen(manifest), &d) < 0 ||
            orch_state_apply_service(st, m.services[0], &change) < 0) {
                log_error("cannot apply the service");
                return 1;
        }
        free(m.services);
        orch_diags_release(&d);
        svc = orch_state_service(st, "bench");
        for (char **b = backends; *b; b++) {
                const char *colon = strrchr(*b, ':');
                struct orch_inst *inst;
                uint32_t port;
                char *ip;

                if (!colon || orch_parse_u32(colon + 1, &port) < 0 || port == 0 || port > 65535)
                        usage(2);
                ip = strndup(*b, (size_t)(colon - *b));
                if (!ip || orch_state_new_instance(st, svc, &inst) < 0)
                        return 1;
                /* the node's address is the instances' address: one node per distinct backend IP */
                if (!streq(ip, "127.0.0.1")) {
                        struct orch_node *other;
                        if (orch_state_upsert_node(st, ip, &other) < 0)
                                return 1;
                        free(other->address);
                        other->address = strdup(ip);
                        orch_state_set_node_state(st, other, ORCH_NODE_READY);
                        orch_state_place_instance(st, inst, other);
                } else {
                        orch_state_place_instance(st, inst, node);
                }
                free(ip);
                inst->ports = calloc(1, sizeof *inst->ports);
                if (!inst->ports)
                        return 1;
                inst->ports[0] = (struct orch_inst_port){strdup("http"), (uint16_t)port};
                inst->n_ports = 1;
                inst->state = ORCH_INSTANCE_RUNNING;
                inst->health = ORCH_HEALTH_PASSING;
        }
        if (orch_registry_new(h.loop, st, &reg) < 0)
                return 1;
        orch_registry_refresh_all(reg);
        cfg.registry = reg;
        cfg.store = store;
        r = orch_gateway_start(h.loop, &cfg, &h.gw);
        if (r < 0)
                return 1;
        printf("ready port=%d\n", orch_gateway_port(h.gw));
        fflush(stdout);

        uv_signal_init(h.loop, &h.sigterm);
        uv_signal_init(h.loop, &h.sigint);
        h.sigterm.data = h.sigint.data = &h;
        uv_signal_start(&h.sigterm, on_signal, SIGTERM);
        uv_signal_start(&h.sigint, on_signal, SIGINT);
        uv_run(h.loop, UV_RUN_DEFAULT);

        orch_gateway_stop(h.gw);
        orch_registry_free(reg);
        uv_run(h.loop, UV_RUN_DEFAULT);
        orch_state_flush(st);
        orch_state_free(st);
        orch_store_close(store);
        orch_strv_free(backends);
        orch_snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : 1;
}
