## orchd: rules are added as the module lands.

## The state store (docs/operations.md, "State store"): orchd's only writer of its data dir.
noinst_LIBRARIES += orchd/libstore.a
orchd_libstore_a_SOURCES = orchd/store.c orchd/store.h orchd/store-sqlite.c
orchd_libstore_a_CPPFLAGS = $(ORCH_CPPFLAGS) $(SQLITE_CFLAGS)
STORE_LIBS = orchd/libstore.a $(SQLITE_LIBS)

## Placement decisions (docs/scheduler.md): a pure module, no I/O; linked by orchd, its tests and bench.
noinst_LIBRARIES += orchd/libsched.a
orchd_libsched_a_SOURCES = orchd/scheduler.c orchd/scheduler.h
orchd_libsched_a_CPPFLAGS = $(ORCH_CPPFLAGS)
SCHED_LIBS = orchd/libsched.a

## The control plane's core: the cluster model (state) and the reconciler (docs/control-plane.md).
noinst_LIBRARIES += orchd/libcore.a
orchd_libcore_a_SOURCES = \
	orchd/reconciler.c orchd/reconciler.h \
	orchd/state.c orchd/state.h
orchd_libcore_a_CPPFLAGS = $(ORCH_CPPFLAGS)
CORE_LIBS = orchd/libcore.a $(SCHED_LIBS) $(STORE_LIBS)

## The HTTP/1.1 server of orchd's API and its router (docs/http.md); orchd and the tests link it.
noinst_LIBRARIES += orchd/libhttpd.a
orchd_libhttpd_a_SOURCES = \
	orchd/httpd.c \
	orchd/httpd.h \
	orchd/router.c \
	orchd/router.h
orchd_libhttpd_a_CPPFLAGS = $(ORCH_CPPFLAGS)
HTTPD_LIBS = orchd/libhttpd.a $(LIBUV_LIBS)
