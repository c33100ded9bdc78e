## bench: rules are added as the module lands.

## Agent protocol codec: start batches and acks encoded, framed and decoded per second (lib/proto.c).
noinst_PROGRAMS += bench/proto-bench
bench_proto_bench_SOURCES = bench/proto-bench.c
bench_proto_bench_CPPFLAGS = $(ORCH_CPPFLAGS)
bench_proto_bench_LDADD = $(ORCH_LIBS)
