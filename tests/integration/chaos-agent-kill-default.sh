#!/bin/sh
# chaos-agent-kill.sh with orchd's default heartbeat interval (1 s, TTL 3 s): the node is down and
# its instances run elsewhere within 5 s of the agent's SIGKILL.
CHAOS_DEFAULTS=1
export CHAOS_DEFAULTS
exec bash "$(dirname "$0")/chaos-agent-kill.sh"
