## Unit tests (check): one program per module, tests/unit/test-<module>.c.
UNIT_TESTS = \
	tests/unit/test-dns \
	tests/unit/test-options \
	tests/unit/test-cgroup \
	tests/unit/test-spawn \
	tests/unit/test-health \
	tests/unit/test-logs \
	tests/unit/test-ports \
	tests/unit/test-scheduler \
	tests/unit/test-reconciler \
	tests/unit/test-store \
	tests/unit/test-hashmap \
	tests/unit/test-http \
	tests/unit/test-httpd \
	tests/unit/test-httpclient \
	tests/unit/test-manifest \
	tests/unit/test-proto \
	tests/unit/test-units

check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)

UNIT_CPPFLAGS = $(ORCH_CPPFLAGS) $(CHECK_CFLAGS) -I$(top_srcdir)/tests/unit
UNIT_LDADD = $(ORCH_LIBS) $(CHECK_LIBS)

tests_unit_test_units_SOURCES = tests/unit/test-units.c tests/unit/testing.h
tests_unit_test_units_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_units_LDADD = $(UNIT_LDADD)

tests_unit_test_manifest_SOURCES = tests/unit/test-manifest.c tests/unit/testing.h
tests_unit_test_manifest_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_manifest_LDADD = $(UNIT_LDADD)

tests_unit_test_hashmap_SOURCES = tests/unit/test-hashmap.c tests/unit/testing.h
tests_unit_test_hashmap_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_hashmap_LDADD = $(UNIT_LDADD)

tests_unit_test_http_SOURCES = tests/unit/test-http.c tests/unit/testing.h
tests_unit_test_http_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_http_LDADD = $(UNIT_LDADD)

tests_unit_test_httpd_SOURCES = tests/unit/test-httpd.c tests/unit/testing.h
tests_unit_test_httpd_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_httpd_LDADD = $(HTTPD_LIBS) $(UNIT_LDADD) -lpthread

tests_unit_test_httpclient_SOURCES = tests/unit/test-httpclient.c tests/unit/testing.h
tests_unit_test_httpclient_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_httpclient_LDADD = $(HTTPD_LIBS) $(UNIT_LDADD) -lpthread

tests_unit_test_store_SOURCES = tests/unit/test-store.c tests/unit/testing.h
tests_unit_test_store_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd $(SQLITE_CFLAGS)
tests_unit_test_store_LDADD = $(STORE_LIBS) $(UNIT_LDADD)

tests_unit_test_scheduler_SOURCES = tests/unit/test-scheduler.c tests/unit/testing.h
tests_unit_test_scheduler_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_scheduler_LDADD = $(SCHED_LIBS) $(UNIT_LDADD)

tests_unit_test_options_SOURCES = tests/unit/test-options.c tests/unit/testing.h
tests_unit_test_options_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_options_LDADD = $(UNIT_LDADD)

## Integration tests: shell scripts driving real processes (root; they skip with a reason otherwise).
SH_LOG_COMPILER = $(SHELL)
AM_TESTS_ENVIRONMENT = \
	top_builddir='$(abs_top_builddir)'; export top_builddir; \
	top_srcdir='$(abs_top_srcdir)'; export top_srcdir; \
	CK_DEFAULT_TIMEOUT=$${CK_DEFAULT_TIMEOUT:-20}; export CK_DEFAULT_TIMEOUT;

tests_unit_test_reconciler_SOURCES = tests/unit/test-reconciler.c tests/unit/testing.h
tests_unit_test_reconciler_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_reconciler_LDADD = $(CORE_LIBS) $(UNIT_LDADD) $(LIBUV_LIBS)


## The test workload that integration tests run as instances (modes: orch-testprog --help).
check_PROGRAMS += tests/fixtures/orch-testprog
tests_fixtures_orch_testprog_SOURCES = tests/fixtures/orch-testprog.c
tests_fixtures_orch_testprog_CPPFLAGS = $(ORCH_CPPFLAGS) $(LIBUV_CFLAGS) -I$(top_srcdir)/examples
tests_fixtures_orch_testprog_LDADD = $(DEMO_HTTP_LIBS) -lpthread

## Smoke test of orch-demo and orch-testprog's HTTP servers (no orchd or agent involved).
TESTS += tests/integration/demo-programs.sh
EXTRA_DIST += tests/integration/demo-programs.sh

## The manifest language: the CLI end to end, and the JSON Schema against the parser.
TESTS += tests/integration/validate.sh tests/integration/schema.sh
EXTRA_DIST += tests/integration/validate.sh tests/integration/schema.sh \
	tests/fixtures/manifests tests/fuzz/corpus-manifest

## libFuzzer targets (./configure CC=clang --enable-fuzz [--enable-sanitizers]); run with
## tests/fuzz/fuzz-manifest -max_total_time=600 CORPUS_DIR $(srcdir)/tests/fuzz/corpus-manifest
if ENABLE_FUZZ
noinst_PROGRAMS += tests/fuzz/fuzz-manifest
tests_fuzz_fuzz_manifest_SOURCES = tests/fuzz/fuzz-manifest.c
tests_fuzz_fuzz_manifest_CPPFLAGS = $(ORCH_CPPFLAGS)
tests_fuzz_fuzz_manifest_LDADD = $(ORCH_LIBS)
tests_fuzz_fuzz_manifest_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
endif

## agent: confinement (real cgroups and processes; they skip without root).
tests_unit_test_cgroup_SOURCES = tests/unit/test-cgroup.c tests/unit/testing.h
tests_unit_test_cgroup_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_cgroup_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

tests_unit_test_spawn_SOURCES = tests/unit/test-spawn.c tests/unit/testing.h
tests_unit_test_spawn_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_spawn_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

## HTTP parser fuzzer (lib/http.c: strict lexer + llhttp in lockstep); run with
## tests/fuzz/fuzz-http -max_total_time=600 CORPUS_DIR $(srcdir)/tests/fuzz/corpus-http
EXTRA_DIST += tests/fuzz/corpus-http
if ENABLE_FUZZ
noinst_PROGRAMS += tests/fuzz/fuzz-http
tests_fuzz_fuzz_http_SOURCES = tests/fuzz/fuzz-http.c
tests_fuzz_fuzz_http_CPPFLAGS = $(ORCH_CPPFLAGS)
tests_fuzz_fuzz_http_LDADD = $(ORCH_LIBS)
tests_fuzz_fuzz_http_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
endif

## The agent protocol codec (lib/proto.c).
tests_unit_test_proto_SOURCES = tests/unit/test-proto.c tests/unit/testing.h
tests_unit_test_proto_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_test_proto_LDADD = $(UNIT_LDADD)

## agent: health checks, log capture and port allocation (real sockets, processes and files).
tests_unit_test_health_SOURCES = tests/unit/test-health.c tests/unit/testing.h
tests_unit_test_health_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_health_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

tests_unit_test_logs_SOURCES = tests/unit/test-logs.c tests/unit/testing.h
tests_unit_test_logs_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_logs_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

tests_unit_test_ports_SOURCES = tests/unit/test-ports.c tests/unit/testing.h
tests_unit_test_ports_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_ports_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

## Agent protocol fuzzer (lib/proto.c: the line reader and the decoder, against jansson); run with
## tests/fuzz/fuzz-proto -dict=$(srcdir)/tests/fuzz/proto.dict -max_total_time=600 CORPUS_DIR \
##   $(srcdir)/tests/fuzz/corpus-proto
EXTRA_DIST += tests/fuzz/corpus-proto tests/fuzz/proto.dict
if ENABLE_FUZZ
noinst_PROGRAMS += tests/fuzz/fuzz-proto
tests_fuzz_fuzz_proto_SOURCES = tests/fuzz/fuzz-proto.c
tests_fuzz_fuzz_proto_CPPFLAGS = $(ORCH_CPPFLAGS)
tests_fuzz_fuzz_proto_LDADD = $(ORCH_LIBS)
tests_fuzz_fuzz_proto_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
endif

## agent: the supervisor (instance state machine) with the exec driver: real processes and cgroups.
UNIT_TESTS += tests/unit/test-supervisor
tests_unit_test_supervisor_SOURCES = tests/unit/test-supervisor.c tests/unit/testing.h
tests_unit_test_supervisor_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_supervisor_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

## agent: the systemd driver against a real systemd user manager (skips where one cannot run).
UNIT_TESTS += tests/unit/test-driver-systemd
tests_unit_test_driver_systemd_SOURCES = tests/unit/test-driver-systemd.c tests/unit/testing.h
tests_unit_test_driver_systemd_CPPFLAGS = $(UNIT_CPPFLAGS) $(AGENT_CPPFLAGS)
tests_unit_test_driver_systemd_LDADD = $(AGENT_LIBS) $(UNIT_LDADD)

## Re-adoption after an agent restart (kill -9, SIGTERM with --keep-instances).
TESTS += tests/integration/readopt.sh
EXTRA_DIST += tests/integration/readopt.sh

## A real agent against a scripted orchd: what changes between the hello and the welcome is reported.
TESTS += tests/integration/agent-hello.sh
EXTRA_DIST += tests/integration/agent-hello.sh

## The systemd units as built pass systemd-analyze verify.
TESTS += tests/integration/units.sh
EXTRA_DIST += tests/integration/units.sh

## The orch CLI end to end against a real orchd (and one agent when built and root).
TESTS += tests/integration/cli.sh
EXTRA_DIST += tests/integration/cli.sh

## The cluster (tests/integration/lib.sh is the harness of these and of chaos-*.sh): placement by
## strategy and constraints, scaling, delete, pending with a reason; orchd restarts keep everything;
## bad input at the API and the agent port.
TESTS += tests/integration/cluster.sh tests/integration/cluster-restart.sh tests/integration/cluster-api.sh
EXTRA_DIST += tests/integration/lib.sh tests/integration/cluster.sh tests/integration/cluster-restart.sh \
	tests/integration/cluster-api.sh

## orchd's agent endpoint against fake agents over TCP (hello and fencing, commands and acks, events,
## TTL, log streams, drain delay), with the real state, store and reconciler.
UNIT_TESTS += tests/unit/test-agents
tests_unit_test_agents_SOURCES = tests/unit/test-agents.c tests/unit/testing.h
tests_unit_test_agents_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_agents_LDADD = $(CORE_LIBS) $(UNIT_LDADD) $(LIBUV_LIBS)

## The API gateway (orchd/gateway): its parts, then the whole gateway in front of orch-testprog backends.
UNIT_TESTS += tests/unit/test-gateway
tests_unit_test_gateway_SOURCES = tests/unit/test-gateway.c tests/unit/testing.h
tests_unit_test_gateway_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_gateway_LDADD = $(GATEWAY_LIBS) $(CORE_LIBS) $(UNIT_LDADD) $(LIBUV_LIBS) -lpthread

## Self-healing: an agent killed (fast and default heartbeats), a node partitioned in network
## namespaces and healed.
TESTS += tests/integration/chaos-agent-kill.sh tests/integration/chaos-agent-kill-default.sh \
	tests/integration/chaos-partition.sh
EXTRA_DIST += tests/integration/chaos-agent-kill.sh tests/integration/chaos-agent-kill-default.sh \
	tests/integration/chaos-partition.sh

## orchd's HTTP API for real (orch_api on port 0 over state, store, reconciler and registry),
## driven with lib/httpclient: status codes and the JSON keys of SPEC §3 and §4. The API calls the
## gateway's key store, which calls back into the core: CORE_LIBS on both sides of it.
UNIT_TESTS += tests/unit/test-api
tests_unit_test_api_SOURCES = tests/unit/test-api.c tests/unit/testing.h
tests_unit_test_api_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_api_LDADD = $(CORE_LIBS) $(GATEWAY_LIBS) $(CORE_LIBS) $(UNIT_LDADD) lib/libllhttp.a $(LIBUV_LIBS) -lpthread

## The service registry over the real state and store: who is an endpoint, the index rising once per
## change, and blocking queries through the real API (answer on change, time out, clients that leave).
UNIT_TESTS += tests/unit/test-registry
tests_unit_test_registry_SOURCES = tests/unit/test-registry.c tests/unit/testing.h
tests_unit_test_registry_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_registry_LDADD = $(CORE_LIBS) $(GATEWAY_LIBS) $(CORE_LIBS) $(UNIT_LDADD) lib/libllhttp.a $(LIBUV_LIBS) -lpthread

## Gateway fuzzer (orchd/gateway: path normalization, routing and head rewriting on what the strict parser
## accepts); run with
## tests/fuzz/fuzz-gateway -max_total_time=600 CORPUS_DIR $(srcdir)/tests/fuzz/corpus-gateway
EXTRA_DIST += tests/fuzz/corpus-gateway
if ENABLE_FUZZ
noinst_PROGRAMS += tests/fuzz/fuzz-gateway
tests_fuzz_fuzz_gateway_SOURCES = tests/fuzz/fuzz-gateway.c
tests_fuzz_fuzz_gateway_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd
tests_fuzz_fuzz_gateway_LDADD = $(GATEWAY_LIBS) $(ORCH_LIBS)
tests_fuzz_fuzz_gateway_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
endif

tests_unit_test_dns_SOURCES = tests/unit/test-dns.c tests/unit/testing.h
tests_unit_test_dns_CPPFLAGS = $(UNIT_CPPFLAGS) -I$(top_srcdir)/orchd
tests_unit_test_dns_LDADD = $(CORE_LIBS) $(GATEWAY_LIBS) $(CORE_LIBS) $(UNIT_LDADD) lib/libllhttp.a $(LIBUV_LIBS) -lpthread


## Self-healing, continued: orchd killed in the middle of applies, rolling updates (good, and two
## broken ones that roll back by themselves) under a poller, drain and uncordon.
TESTS += tests/integration/chaos-crash-apply.sh tests/integration/chaos-rollout.sh tests/integration/chaos-drain.sh
EXTRA_DIST += tests/integration/chaos-crash-apply.sh tests/integration/chaos-rollout.sh \
	tests/integration/chaos-drain.sh

## The gateway end to end: orchd with its gateway, two agents, routed orch-testprog services.
TESTS += tests/integration/gateway.sh
EXTRA_DIST += tests/integration/gateway.sh
