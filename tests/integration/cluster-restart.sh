#!/bin/bash
# orchd restarts (docs/control-plane.md, "Failure cases"): with three agents running two services
# (HTTP servers with a health check, and sleepers), orchd is stopped with SIGTERM and started
# again, then killed with SIGKILL and started again. Each time every service and instance is kept,
# the agents reconnect, and nothing is restarted: the same instance ids on the same nodes with the
# same pids and restart counts, in orchd's view and in the cgroups on the nodes. The instances
# keep running (and serving) while orchd is away.
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
IT_ORCHD_EXTRA=(--heartbeat-interval 300ms)
it_orchd_start
for k in 1 2 3; do it_agent_start "$k"; done
it_wait_nodes 3

apply "kind: service
name: web
replicas: 4
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 300ms, timeout: 200ms, grace: 0s}
---
kind: service
name: worker
replicas: 5
command: [\"$IT_TESTPROG\", sleep]
"
all_up() {
	[ "$(running_count web)" = 4 ] && [ "$(running_count worker)" = 5 ] &&
		instances web | jpy 'all(i["health"] == "passing" for i in j)'
}
wait_for all_up 30 "4 web and 5 worker instances running" || it_fail "the services did not come up"

# snapshot: "id node pid restarts state health" for every instance, as orchd sees it.
snapshot() {
	instances | jpy '"\n".join("%s %s %s %s %s %s" % (i["id"], i["node"], i["pid"], i["restarts"], i["state"], i["health"]) for i in j)'
}
# on_nodes: "nodeK instance pid" for every instance process, from the cgroups.
on_nodes() {
	local k
	for k in 1 2 3; do node_procs "$k" | sed "s/^/node$k /"; done | sort
}
services() { api GET /v1/services | jpy '" ".join("%s:%s:%s" % (s["name"], s["replicas"], s["revision"]) for s in j)'; }
# serving: every web instance seen before answers its health check (orchd need not be up).
serving() {
	local a
	for a in $web_addresses; do
		curl -sf -o /dev/null --max-time 2 "http://$a/healthz" || return 1
	done
}

before=$(snapshot)
web_addresses=$(instances web | jpy '" ".join(i["address"] for i in j)')
nodes_before=$(on_nodes)
services_before=$(services)
[ "$(echo "$nodes_before" | wc -l)" = 9 ] || it_fail "expected 9 instance processes, the nodes hold: $nodes_before"
it_ok "9 instances running on 3 nodes"

# restart HOW: stops orchd with signal HOW, checks the instances meanwhile, starts it again and
# checks that nothing changed.
restart() {
	local sig=$1 status t0
	it_orchd_kill "$sig"
	status=$IT_ORCHD_STATUS
	if [ "$sig" = TERM ]; then
		[ "$status" = 0 ] || it_fail "orchd exited with status $status after SIGTERM"
	else
		[ "$status" = 137 ] || it_fail "orchd exited with status $status after SIGKILL"
	fi
	[ "$(on_nodes)" = "$nodes_before" ] || it_fail "instances changed while orchd was away:
$(diff <(echo "$nodes_before") <(on_nodes))"
	serving || it_fail "an instance stopped serving while orchd was away"
	it_ok "orchd stopped with SIG$sig: every instance still runs and serves"

	t0=$(it_now_ms)
	it_orchd_start
	wait_for '[ "$(ready_nodes)" = 3 ]' 20 "the agents to reconnect" || it_fail "the agents did not reconnect"
	[ "$(services)" = "$services_before" ] || it_fail "services changed: $services_before -> $(services)"
	wait_for '[ "$(snapshot)" = "$before" ]' 10 "orchd's view to be as before" ||
		it_fail "instances changed across the restart:
$(diff <(echo "$before") <(snapshot))"
	it_ok "orchd started again: agents back after $(($(it_now_ms) - t0)) ms, services and instances unchanged"
	# nothing happens later either: no stop, no restart, no new placement
	sleep 1.5
	[ "$(snapshot)" = "$before" ] || it_fail "instances changed after the agents reconnected:
$(diff <(echo "$before") <(snapshot))"
	[ "$(on_nodes)" = "$nodes_before" ] || it_fail "instance processes changed after the restart:
$(diff <(echo "$nodes_before") <(on_nodes))"
	[ "$(testprog_procs)" = 9 ] || it_fail "$(testprog_procs) test processes run, expected 9"
	serving || it_fail "an instance does not serve after the restart"
	it_ok "1.5 s later: same pids, zero restarts, 9 processes"
}

restart TERM
restart KILL

# the restarted orchd is fully working: it still places and stops
scale worker 7
wait_for '[ "$(running_count worker)" = 7 ] && [ "$(testprog_procs)" = 11 ]' 20 "7 workers" ||
	it_fail "scaling after the restarts: $(running_count worker) workers, $(testprog_procs) processes"
it_ok "the restarted orchd scales worker to 7"
