## orchd: rules are added as the module lands.

## The state store (docs/operations.md, "State store"): orchd's only writer of its data dir.
noinst_LIBRARIES += orchd/libstore.a
orchd_libstore_a_SOURCES = orchd/store.c orchd/store.h orchd/store-sqlite.c
orchd_libstore_a_CPPFLAGS = $(ORCH_CPPFLAGS) $(SQLITE_CFLAGS)
STORE_LIBS = orchd/libstore.a $(SQLITE_LIBS)
