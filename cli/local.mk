bin_PROGRAMS += cli/orch

cli_orch_SOURCES = \
	cli/cli.h \
	cli/orch.c \
	cli/validate.c \
	cli/version.c
cli_orch_CPPFLAGS = $(ORCH_CPPFLAGS) $(LIBUV_CFLAGS)
cli_orch_LDADD = $(ORCH_LIBS) $(LIBUV_LIBS)
