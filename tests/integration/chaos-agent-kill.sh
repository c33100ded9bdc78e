#!/bin/bash
# Self-healing after an agent dies (docs/control-plane.md, "Agents"): three agents run two
# services; node1's agent is killed with SIGKILL. Its node must be `down` once its TTL has passed
# and every instance it ran must be running on node2 or node3 within TTL + 2 s, with exact counts.
# The instances of the dead agent keep running meanwhile (nobody is left to stop them); when the
# agent is started again it re-adopts them, orchd fences them (they were replaced) and they stop:
# afterwards every node holds exactly the instances orchd placed there.
#
# orchd runs with --heartbeat-interval 300ms (TTL 900 ms); chaos-agent-kill-default.sh runs the
# same with the defaults (1 s, TTL 3 s).
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
if [ -n "${CHAOS_DEFAULTS:-}" ]; then
	ttl_ms=3000
else
	IT_ORCHD_EXTRA=(--heartbeat-interval 300ms)
	ttl_ms=900
fi
bound_ms=$((ttl_ms + 2000))
it_orchd_start
for k in 1 2 3; do it_agent_start "$k"; done
it_wait_nodes 3

apply "kind: service
name: web
replicas: 6
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}
stop: {timeout: 2s}
---
kind: service
name: worker
replicas: 6
command: [\"$IT_TESTPROG\", sleep]
stop: {timeout: 2s}
"
# on_nodes SERVICE: "N1 N2 N3", the instances of SERVICE with a process on node1..3.
on_nodes() { echo "$(node_count 1 "$1") $(node_count 2 "$1") $(node_count 3 "$1")"; }
wait_for '[ "$(running_count web)" = 6 ] && [ "$(running_count worker)" = 6 ] && [ "$(testprog_procs)" = 12 ]' 30 \
	"12 instances" || it_fail "the services did not come up"
{ [ "$(on_nodes web)" = "2 2 2" ] && [ "$(on_nodes worker)" = "2 2 2" ]; } ||
	it_fail "not spread evenly: web $(on_nodes web), worker $(on_nodes worker)"
victims=$(instances | jpy '" ".join(sorted(i["id"] for i in j if i["node"] == "node1"))')
it_ok "12 instances, 4 on node1: $victims"

# replaced: every service has its replicas running on node2 and node3, none live on node1.
replaced() {
	instances | jpy '
live = [i for i in j if i["desired"] == "run" and i["state"] not in ("lost", "exited", "failed")]
run = [i for i in live if i["state"] == "running"]
all(len([i for i in run if i["service"] == s]) == 6 for s in ("web", "worker")) and len(live) == 12 and all(i["node"] != "node1" for i in live)'
}

# --- kill -9 --------------------------------------------------------------------------------------
t0=$(date +%s%N)
it_agent_kill 1 KILL
down_ms=
replaced_ms=
deadline=$((t0 + (bound_ms + 3000) * 1000000))
while [ "$(date +%s%N)" -lt "$deadline" ]; do
	now_ms=$((($(date +%s%N) - t0) / 1000000))
	[ -z "$down_ms" ] && [ "$(node_state node1)" = down ] && down_ms=$now_ms
	[ -z "$replaced_ms" ] && replaced && replaced_ms=$now_ms
	[ -n "$down_ms" ] && [ -n "$replaced_ms" ] && break
	sleep 0.05
done
[ -n "$down_ms" ] || it_fail "node1 is not down $((bound_ms + 3000)) ms after its agent was killed: $(node_state node1)"
[ -n "$replaced_ms" ] || it_fail "node1's instances were not replaced: $(instances | jpy '[(i["id"], i["node"], i["state"]) for i in j]')"
it_log "node1 down after ${down_ms} ms, every instance running elsewhere after ${replaced_ms} ms (TTL ${ttl_ms} ms)"
[ "$down_ms" -le "$bound_ms" ] || it_fail "node1 went down after ${down_ms} ms, more than TTL + 2 s"
[ "$replaced_ms" -le "$bound_ms" ] || it_fail "the replacements ran after ${replaced_ms} ms, more than TTL + 2 s"
# the replaced records are lost, not silently gone
for id in $victims; do
	st=$(api GET "/v1/instances/$id" | jpy 'j["state"]') || st=gone
	[ "$st" = lost ] || it_fail "instance $id of the dead node is $st, not lost"
done
# on the nodes: 6 + 6 on node2 and node3, and node1's orphans still run (no agent is left to stop them)
wait_for '[ "$(($(node_count 2) + $(node_count 3)))" = 12 ]' 10 "12 processes on node2 and node3" ||
	it_fail "node2 and node3 hold $(node_count 2) and $(node_count 3) instance processes, not 12 in all"
[ "$(node_count 1)" = 4 ] || it_fail "node1 holds $(node_count 1) processes without its agent, expected its 4 orphans"
wait_for 'instances web | jpy "len([i for i in j if i[\"state\"] == \"running\" and i[\"health\"] == \"passing\"]) == 6"' 10 \
	"6 healthy web instances" || it_fail "the replacements do not pass their health checks"
it_ok "node1 down and its 4 instances replaced within TTL + 2 s; the lost records say lost"

# --- the agent comes back: its stale copies are stopped, nothing else changes -----------------------
survivors=$(instances | jpy '"\n".join(sorted("%s %s %s" % (i["id"], i["node"], i["pid"]) for i in j if i["state"] == "running"))')
it_agent_start 1
wait_for '[ "$(node_state node1)" = ready ] && [ "$(node_count 1)" = 0 ]' 15 "node1 ready without its stale instances" ||
	it_fail "node1 is $(node_state node1) with $(node_count 1) instance processes: $(node_procs 1)"
[ "$(testprog_procs)" = 12 ] || it_fail "$(testprog_procs) test processes run after the agent came back, expected 12"
wait_for 'instances | jpy "len(j) == 12"' 10 "the lost records to be settled" ||
	it_fail "records left: $(instances | jpy '[(i["id"], i["node"], i["state"]) for i in j]')"
[ "$(instances | jpy '"\n".join(sorted("%s %s %s" % (i["id"], i["node"], i["pid"]) for i in j if i["state"] == "running"))')" = "$survivors" ] ||
	it_fail "the return of node1 disturbed the other instances"
[ "$(node_cgroups 1)" = 0 ] || it_fail "node1 kept $(node_cgroups 1) instance cgroups"
it_ok "agent 1 back: its 4 stale copies stopped, 12 instances exactly, the others untouched"

# the returned node takes new work
scale worker 9
wait_for '[ "$(running_count worker)" = 9 ] && [ "$(node_count 1 worker)" -ge 1 ]' 20 "a worker on node1" ||
	it_fail "node1 takes no new instance: $(running_by_node worker)"
it_ok "node1 takes new instances again ($(running_by_node worker))"
