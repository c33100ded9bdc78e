#!/bin/bash
# A real two-way partition of one node (docs/protocol.md, "Liveness"; docs/control-plane.md,
# "Failure cases"). orchd and three agents each run in their own network namespace, linked by veth
# pairs to a bridge in a "switch" namespace (192.0.2.0/24; see lib.sh). Setting node1's bridge port
# down cuts it off silently in both directions: node1 goes down after its TTL and its instances are
# replaced on node2 and node3, while its own copies keep running behind the partition. Setting the
# port up heals it: within 2 s node1's agent is back, its stale copies are stopped and every count
# is exact, checked on every node's cgroups and not only in orchd's view. The web instances answer
# at the addresses the registry gives, from orchd's namespace. The partition lasts
# CHAOS_PARTITION_HOLD seconds (6) after node1's instances were replaced.
#
# A second round (CHAOS_LOST_SYN=0 skips it) runs on node2 with static neighbour entries, so that only the
# packets are lost (no ARP failure ends the agent's connection attempts early), as behind a
# router: the agent must still be back within 2 s of the heal (the partition lasts
# CHAOS_LOST_SYN_HOLD seconds, 12).
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init --netns 3
IT_ORCHD_EXTRA=(--heartbeat-interval 500ms)
ttl_ms=1500
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
on_nodes() { echo "$(node_count 1 "$1") $(node_count 2 "$1") $(node_count 3 "$1")"; }
healthy_web() { instances web | jpy 'len([i for i in j if i["state"] == "running" and i["health"] == "passing"])'; }
wait_for '[ "$(healthy_web)" = 6 ] && [ "$(running_count worker)" = 6 ] && [ "$(testprog_procs)" = 12 ]' 30 \
	"12 instances" || it_fail "the services did not come up"
{ [ "$(on_nodes web)" = "2 2 2" ] && [ "$(on_nodes worker)" = "2 2 2" ]; } ||
	it_fail "not spread evenly: web $(on_nodes web), worker $(on_nodes worker)"
api GET /v1/nodes | jpy 'sorted(n["address"] for n in j) == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]' ||
	it_fail "node addresses: $(api GET /v1/nodes | jpy '[n["address"] for n in j]')"

# reachable: every endpoint of web in the registry answers, from orchd's namespace.
reachable() {
	local e n=0
	for e in $(api GET /v1/registry/web | jpy '" ".join("%s:%s" % (e["address"], e["port"]) for e in j["endpoints"])'); do
		it_hub curl -sf -o /dev/null --max-time 2 "http://$e/healthz" || return 1
		n=$((n + 1))
	done
	[ "$n" = 6 ]
}
reachable || it_fail "the registry's web endpoints do not all answer: $(api GET /v1/registry/web)"
it_ok "12 instances on 3 namespaced nodes, web reachable through the bridge"

# The services' sizes; the scale-up at the end of a round changes worker.
n_web=6
n_worker=6

# exact: orchd sees every replica running, no other live record, and the nodes hold exactly those
# processes.
exact() {
	local view nodes k
	view=$(instances | jpy "
want = {'web': $n_web, 'worker': $n_worker}
live = [i for i in j if i['desired'] == 'run' and i['state'] not in ('lost', 'exited', 'failed')]
ok = len(live) == sum(want.values()) and all(len([i for i in live if i['service'] == s and i['state'] == 'running']) == n for s, n in want.items())
'\\n'.join(sorted('%s %s' % (i['node'], i['id']) for i in live)) if ok else None") || return 1
	nodes=$(for k in 1 2 3; do node_procs "$k" | awk -v n="node$k" '{print n, $1}'; done | sort)
	[ "$view" = "$nodes" ]
}

# replaced K: every replica runs, none of them on node K.
replaced() {
	instances | jpy "
live = [i for i in j if i['desired'] == 'run' and i['state'] not in ('lost', 'exited', 'failed')]
len(live) == $((n_web + n_worker)) and all(i['node'] != 'node$1' and i['state'] == 'running' for i in live)"
}

# others K: the instance processes on the nodes other than K.
others() {
	local k n=0
	for k in 1 2 3; do [ "$k" = "$1" ] || n=$((n + $(node_count "$k"))); done
	echo "$n"
}

# round K HOLD: partitions node K for HOLD seconds and heals it (see the top of the file).
round() {
	local k=$1 hold=$2 stale total=$((n_web + n_worker)) t0 down_ms replaced_ms heal_ms ready_ms
	local lost_before
	stale=$(node_procs "$k" | awk '{print $1}' | sort | tr '\n' ' ')
	[ -n "$stale" ] || it_fail "node$k runs no instance to lose"
	lost_before=$(grep -c 'connection to orchd .* lost' "$IT_TMP/agent-$k.log" || true)
	t0=$(date +%s%N)
	it_partition "$k"
	wait_for "[ \"\$(node_state node$k)\" = down ]" $(((ttl_ms + 2000) / 1000 + 1)) "node$k down" ||
		it_fail "node$k is $(node_state "node$k") after the partition"
	down_ms=$((($(date +%s%N) - t0) / 1000000))
	wait_for "replaced $k" 5 "node$k's instances to be replaced" ||
		it_fail "not replaced: $(instances | jpy '[(i["id"], i["node"], i["state"]) for i in j]')"
	replaced_ms=$((($(date +%s%N) - t0) / 1000000))
	it_log "node$k down after ${down_ms} ms, replaced after ${replaced_ms} ms (TTL ${ttl_ms} ms)"
	[ "$replaced_ms" -le $((ttl_ms + 2000)) ] || it_fail "replacing took ${replaced_ms} ms, more than TTL + 2 s"
	wait_for "[ \"\$(others $k)\" = $total ]" 10 "$total processes on the other nodes" ||
		it_fail "the other nodes hold $(others "$k") instance processes, not $total"
	# behind the partition node K's copies still run: its agent cannot hear orchd's verdict
	[ "$(node_procs "$k" | awk '{print $1}' | sort | tr '\n' ' ')" = "$stale" ] ||
		it_fail "node$k's instances changed behind the partition: $(node_procs "$k")"
	wait_for '[ "$(healthy_web)" = 6 ] && reachable' 10 "6 healthy web endpoints" ||
		it_fail "web is not whole again: $(api GET /v1/registry/web)"
	it_ok "partitioned node$k down, its $(echo "$stale" | wc -w) instances replaced elsewhere, web whole"

	# long enough for the agent to give up its connection (after its TTL) and to dial orchd in
	# vain: the heal must not wait for the end of a connection attempt
	sleep "$hold"
	[ "$(grep -c 'connection to orchd .* lost' "$IT_TMP/agent-$k.log")" -gt "$lost_before" ] ||
		it_fail "node$k's agent did not notice the partition"

	t0=$(date +%s%N)
	it_heal "$k"
	wait_for "exact && [ \"\$(node_count $k)\" = 0 ] && [ \"\$(testprog_procs)\" = $total ]" 20 "no duplicate after the heal" ||
		it_fail "after the heal: node$k holds $(node_procs "$k" | tr '\n' ' '); $(testprog_procs) test processes; node$k $(node_state "node$k")"
	heal_ms=$((($(date +%s%N) - t0) / 1000000))
	wait_for "[ \"\$(node_state node$k)\" = ready ]" 10 "node$k ready" || it_fail "node$k is $(node_state "node$k") after the heal"
	ready_ms=$((($(date +%s%N) - t0) / 1000000))
	it_log "after the heal: stale copies gone and counts exact at ${heal_ms} ms, node$k ready at ${ready_ms} ms"
	[ "$heal_ms" -le 2000 ] || it_fail "the stale copies were stopped ${heal_ms} ms after the heal, more than 2 s"
	wait_for "instances | jpy 'len(j) == $total'" 10 "the lost records to be settled" ||
		it_fail "records left: $(instances | jpy '[(i["id"], i["node"], i["state"]) for i in j]')"
	exact || it_fail "counts are not exact after the lost records went"
	reachable || it_fail "web is not reachable after the heal"
	it_ok "healed: node$k ready, its stale copies stopped, $total instances exactly"

	# the healed node takes new work
	n_worker=$((n_worker + 3))
	scale worker "$n_worker"
	wait_for "[ \"\$(running_count worker)\" = $n_worker ] && [ \"\$(node_count $k worker)\" -ge 1 ] && exact" 20 \
		"a worker on node$k" || it_fail "node$k takes no new instance: $(running_by_node worker)"
	it_ok "node$k takes new instances again ($(running_by_node worker))"
}

# --- the bridge port down: the agent's packets and ARP go nowhere --------------------------------
round 1 "${CHAOS_PARTITION_HOLD:-6}"

# --- only the packets are lost: with static neighbour entries the agent's connection attempts do
# not fail fast (no ARP failure), their SYNs are dropped, as behind a router ---------------------
if [ "${CHAOS_LOST_SYN:-1}" != 0 ]; then
	mac() { ip -n "$(it_ns "$1")" -j link show eth0 | jpy 'j[0]["address"]'; }
	ip -n "$(it_ns n2)" neigh replace 192.0.2.1 lladdr "$(mac hub)" nud permanent dev eth0
	ip -n "$(it_ns hub)" neigh replace 192.0.2.12 lladdr "$(mac n2)" nud permanent dev eth0
	round 2 "${CHAOS_LOST_SYN_HOLD:-12}"
fi
