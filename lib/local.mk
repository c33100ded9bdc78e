noinst_LIBRARIES += lib/liborch.a lib/libllhttp.a

lib_liborch_a_SOURCES = \
	lib/banned.h \
	lib/daemon.c lib/daemon.h \
	lib/diag.c lib/diag.h \
	lib/hashmap.c lib/hashmap.h \
	lib/http.c lib/http.h \
	lib/httpclient.c lib/httpclient.h \
	lib/json.c lib/json.h \
	lib/list.h \
	lib/log.c lib/log.h \
	lib/net.c lib/net.h \
	lib/macro.h \
	lib/manifest.c lib/manifest-json.c lib/manifest.h \
	lib/proto.c lib/proto.h \
	lib/types.c lib/types.h \
	lib/units.c lib/units.h \
	lib/util.c lib/util.h \
	lib/yaml-tree.c lib/yaml-tree.h
lib_liborch_a_SOURCES += lib/options.c lib/options.h

## llhttp is compiled from the C sources Debian's node-llhttp installs
## (configure finds them); lib/llhttp/*.c only #include them, nothing is copied.
## Generated code: our warning flags are not applied to it.
lib_libllhttp_a_SOURCES = lib/llhttp/core.c lib/llhttp/api.c lib/llhttp/http.c
lib_libllhttp_a_CPPFLAGS = -I$(LLHTTP_INCDIR) -I$(LLHTTP_SRCDIR)
lib_libllhttp_a_CFLAGS = -std=gnu11 -O2 -w $(SAN_CFLAGS)

LLHTTP_CPPFLAGS = -I$(LLHTTP_INCDIR)
## lib/http.c parses with llhttp; its header stays private to it.
lib_liborch_a_CPPFLAGS = $(ORCH_CPPFLAGS) $(LLHTTP_CPPFLAGS)

## What every program and test links against.
ORCH_LIBS = lib/liborch.a lib/libllhttp.a $(JANSSON_LIBS) $(YAML_LIBS) $(CRYPTO_LIBS) $(SYSTEMD_LIBS) $(LIBUV_LIBS)
ORCH_CPPFLAGS = $(AM_CPPFLAGS) $(JANSSON_CFLAGS) $(YAML_CFLAGS) $(CRYPTO_CFLAGS) $(SYSTEMD_CFLAGS) $(LIBUV_CFLAGS)
