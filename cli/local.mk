## orch, the command-line client: one file per verb (cli/<verb>.c) and the command table in
## cli/orch.c; client.c talks to orchd, output.c formats, resource.c names the kinds of object.
bin_PROGRAMS += cli/orch

cli_orch_SOURCES = \
	cli/cli.h \
	cli/orch.c \
	cli/client.c \
	cli/client.h \
	cli/output.c \
	cli/output.h \
	cli/resource.c \
	cli/resource.h \
	cli/apikey.c \
	cli/apply.c \
	cli/delete.c \
	cli/describe.c \
	cli/drain.c \
	cli/events.c \
	cli/get.c \
	cli/logs.c \
	cli/rollout.c \
	cli/scale.c \
	cli/uncordon.c \
	cli/validate.c \
	cli/version.c
cli_orch_CPPFLAGS = $(ORCH_CPPFLAGS) $(LIBUV_CFLAGS)
cli_orch_LDADD = $(ORCH_LIBS) $(LIBUV_LIBS)

## Bash completion: bash-completion loads completions by command name, so the file is installed
## as $(bashcompletiondir)/orch (prerequisite-only rules: other local.mk files may hook in too).
EXTRA_DIST += cli/orch.bash-completion
install-data-local: install-cli-bash-completion
uninstall-local: uninstall-cli-bash-completion
install-cli-bash-completion:
	$(MKDIR_P) "$(DESTDIR)$(bashcompletiondir)"
	$(INSTALL_DATA) "$(srcdir)/cli/orch.bash-completion" "$(DESTDIR)$(bashcompletiondir)/orch"
uninstall-cli-bash-completion:
	rm -f "$(DESTDIR)$(bashcompletiondir)/orch"
.PHONY: install-cli-bash-completion uninstall-cli-bash-completion
