## agent: orch-agent's modules, built as one convenience library that the
## program, the tests and the benchmarks link. One source per line: other
## modules append themselves here.
noinst_LIBRARIES += agent/libagent.a

agent_libagent_a_SOURCES = \
	agent/cgroup.c \
	agent/cgroup.h \
	agent/spawn.c \
	agent/spawn.h \
	agent/health.c \
	agent/health.h \
	agent/logs.c \
	agent/logs.h \
	agent/ports.c \
	agent/ports.h \
	agent/supervisor.c \
	agent/supervisor.h \
	agent/driver.h \
	agent/driver-exec.c \
	agent/driver-systemd.c
agent_libagent_a_CPPFLAGS = $(ORCH_CPPFLAGS) $(CGROUP_CFLAGS) $(LIBUV_CFLAGS)

## What a program or test using the agent's modules links against.
AGENT_CPPFLAGS = $(ORCH_CPPFLAGS) $(CGROUP_CFLAGS) $(LIBUV_CFLAGS) -I$(top_srcdir)/agent
AGENT_LIBS = agent/libagent.a $(ORCH_LIBS) $(CGROUP_LIBS) $(LIBUV_LIBS)

## orch-agent itself: the connection to orchd and main.
sbin_PROGRAMS += agent/orch-agent
agent_orch_agent_SOURCES = agent/main.c agent/conn.c agent/conn.h
agent_orch_agent_CPPFLAGS = $(AGENT_CPPFLAGS)
agent_orch_agent_LDADD = $(AGENT_LIBS)

## The systemd unit with this installation's paths, installed to $(systemdsystemunitdir);
## tests/integration/units.sh verifies it.
agentunitdir = $(systemdsystemunitdir)
agentunit_DATA = agent/orch-agent.service
EXTRA_DIST += agent/orch-agent.service.in
CLEANFILES += agent/orch-agent.service
agent/orch-agent.service: $(top_srcdir)/agent/orch-agent.service.in Makefile
	$(AM_V_GEN)$(MKDIR_P) $(@D) && \
	sed -e 's|@sbindir[@]|$(sbindir)|g' -e 's|@bindir[@]|$(bindir)|g' -e 's|@libexecdir[@]|$(libexecdir)|g' \
	    -e 's|@sysconfdir[@]|$(sysconfdir)|g' -e 's|@localstatedir[@]|$(localstatedir)|g' \
	    $(top_srcdir)/agent/orch-agent.service.in >$@.tmp && mv $@.tmp $@
