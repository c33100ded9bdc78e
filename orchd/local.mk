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

## The control plane's core (docs/control-plane.md): the cluster model (state), the reconciler,
## the agent endpoint, the registry and the API handlers.
noinst_LIBRARIES += orchd/libcore.a
orchd_libcore_a_SOURCES = \
	orchd/agents.c orchd/agents.h \
	orchd/api.c orchd/api.h \
	orchd/dns.c orchd/dns.h \
	orchd/reconciler.c orchd/reconciler.h \
	orchd/registry.c orchd/registry.h \
	orchd/state.c orchd/state.h
orchd_libcore_a_CPPFLAGS = $(ORCH_CPPFLAGS)
CORE_LIBS = orchd/libcore.a orchd/libhttpd.a $(SCHED_LIBS) $(STORE_LIBS)

## The embedded API gateway (docs/gateway.md): routing tables built from the registry, proxy workers,
## balancing and passive health, rate limits, API keys. It sits before CORE_LIBS on link lines: it
## calls the registry, and the API calls its key store.
noinst_LIBRARIES += orchd/libgateway.a
orchd_libgateway_a_SOURCES = \
	orchd/gateway/apikeys.c orchd/gateway/apikeys.h \
	orchd/gateway/balance.c orchd/gateway/balance.h \
	orchd/gateway/gateway.c orchd/gateway/gateway.h \
	orchd/gateway/ratelimit.c orchd/gateway/ratelimit.h \
	orchd/gateway/rewrite.c orchd/gateway/rewrite.h \
	orchd/gateway/stats.c orchd/gateway/stats.h \
	orchd/gateway/table.c orchd/gateway/table.h \
	orchd/gateway/worker.c orchd/gateway/worker.h
orchd_libgateway_a_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd
GATEWAY_LIBS = orchd/libgateway.a

## orchd itself.
sbin_PROGRAMS += orchd/orchd
orchd_orchd_SOURCES = orchd/main.c
orchd_orchd_CPPFLAGS = $(ORCH_CPPFLAGS) -I$(top_srcdir)/orchd
orchd_orchd_LDADD = $(GATEWAY_LIBS) $(CORE_LIBS) $(ORCH_LIBS) lib/libllhttp.a $(LIBUV_LIBS)

## The HTTP/1.1 server of orchd's API and its router (docs/http.md); orchd and the tests link it.
noinst_LIBRARIES += orchd/libhttpd.a
orchd_libhttpd_a_SOURCES = \
	orchd/httpd.c \
	orchd/httpd.h \
	orchd/router.c \
	orchd/router.h
orchd_libhttpd_a_CPPFLAGS = $(ORCH_CPPFLAGS)
HTTPD_LIBS = orchd/libhttpd.a $(LIBUV_LIBS)

## The systemd unit with this installation's paths, installed to $(systemdsystemunitdir);
## tests/integration/units.sh verifies it.
orchdunitdir = $(systemdsystemunitdir)
orchdunit_DATA = orchd/orchd.service
EXTRA_DIST += orchd/orchd.service.in
CLEANFILES += orchd/orchd.service
orchd/orchd.service: $(top_srcdir)/orchd/orchd.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) $(@D) && \
	sed -e 's|@sbindir[@]|$(sbindir)|g' -e 's|@bindir[@]|$(bindir)|g' -e 's|@libexecdir[@]|$(libexecdir)|g' \
	    -e 's|@sysconfdir[@]|$(sysconfdir)|g' -e 's|@localstatedir[@]|$(localstatedir)|g' \
	    $(top_srcdir)/orchd/orchd.service.in >$@.tmp && mv $@.tmp $@
