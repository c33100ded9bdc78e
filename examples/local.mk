## The demo microservice that manifests/*.yaml run (installed: the README's quick start uses it),
## and the small HTTP/1.1 server and client it shares with tests/fixtures/orch-testprog.
noinst_LIBRARIES += examples/libdemohttp.a
examples_libdemohttp_a_SOURCES = examples/demo-http.c examples/demo-http.h
examples_libdemohttp_a_CPPFLAGS = $(ORCH_CPPFLAGS) $(LIBUV_CFLAGS) $(LLHTTP_CPPFLAGS)

DEMO_HTTP_LIBS = examples/libdemohttp.a $(ORCH_LIBS) lib/libllhttp.a $(LIBUV_LIBS)

bin_PROGRAMS += examples/orch-demo
examples_orch_demo_SOURCES = examples/orch-demo.c
examples_orch_demo_CPPFLAGS = $(ORCH_CPPFLAGS) $(LIBUV_CFLAGS)
examples_orch_demo_LDADD = $(DEMO_HTTP_LIBS)
