## bench: rules are added as the module lands.

## Agent protocol codec: start batches and acks encoded, framed and decoded per second (lib/proto.c).
noinst_PROGRAMS += bench/proto-bench
bench_proto_bench_SOURCES = bench/proto-bench.c
bench_proto_bench_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_proto_bench_LDADD = $(ORCH_LIBS)

## Placement throughput: 1M instances on 5,000 nodes, spread and binpack, churn, failures (docs/scheduler.md).
noinst_PROGRAMS += bench/sched-place
bench_sched_place_SOURCES = bench/sched-place.c
bench_sched_place_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd
bench_sched_place_LDADD = $(SCHED_LIBS) $(ORCH_LIBS)

## State store throughput: puts/s of instance records in batched transactions, and the load at start.
noinst_PROGRAMS += bench/store-bench
bench_store_bench_SOURCES = bench/store-bench.c
bench_store_bench_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd $(SQLITE_CFLAGS)
bench_store_bench_LDADD = $(STORE_LIBS) $(ORCH_LIBS)

## The exec driver's confinement: cgroup creation (direct vs libcgroup), N spawns into N cgroups,
## restart latency after idle against the classic fork + cgroup.procs shim (docs/agent.md).
noinst_PROGRAMS += bench/spawn-confine
bench_spawn_confine_SOURCES = bench/spawn-confine.c
bench_spawn_confine_CPPFLAGS = $(AGENT_CPPFLAGS)
bench_spawn_confine_LDADD = $(AGENT_LIBS)

## The control plane end to end (bench/sched.sh): simulated nodes that speak the real protocol to a
## real orchd, ack every start at once and report it running (docs/benchmarks.md).
noinst_PROGRAMS += bench/sched-sim
bench_sched_sim_SOURCES = bench/sched-sim.c
bench_sched_sim_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_sched_sim_LDADD = $(ORCH_LIBS)
EXTRA_DIST += bench/sched.sh

## Spawning and restarting 1,000 instances beside systemd and supervisord (bench/spawn.sh,
## docs/benchmarks.md). stamp is the workload: static, so that nothing runs between its exec and
## its clock read (and without the sanitizers, which cannot link statically).
noinst_PROGRAMS += bench/stamp bench/spawn-probe bench/spawn-bare bench/spawn-sdstart
bench_stamp_SOURCES = bench/stamp.c
bench_stamp_CFLAGS = -std=gnu11 $(WARN_CFLAGS)
bench_stamp_LDFLAGS = -static
bench_spawn_probe_SOURCES = bench/spawn-probe.c
bench_spawn_probe_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_spawn_probe_LDADD = $(ORCH_LIBS)
bench_spawn_bare_SOURCES = bench/spawn-bare.c
bench_spawn_bare_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_spawn_bare_LDADD = $(ORCH_LIBS)
bench_spawn_sdstart_SOURCES = bench/spawn-sdstart.c
bench_spawn_sdstart_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_spawn_sdstart_LDADD = $(ORCH_LIBS)
EXTRA_DIST += bench/spawn.sh

## The API gateway against nginx and haproxy (bench/gateway.sh): gateway-harness runs orchd's gateway code
## in front of running backends, listed as one routed service by an in-memory state and registry.
noinst_PROGRAMS += bench/gateway-harness
bench_gateway_harness_SOURCES = bench/gateway-harness.c
bench_gateway_harness_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd
bench_gateway_harness_LDADD = $(GATEWAY_LIBS) $(CORE_LIBS) $(ORCH_LIBS) $(LIBUV_LIBS) -lpthread
EXTRA_DIST += bench/gateway.sh

## Failover time after an agent's SIGKILL and a partition, default and 500ms heartbeats, beside
## Kubernetes' and Nomad's defaults (bench/failover.sh; root; uses tests/integration/lib.sh).
EXTRA_DIST += bench/failover.sh
