#!/bin/bash
# Placement on a real cluster (docs/scheduler.md, docs/control-plane.md): orchd and three agents on
# loopback (node1 zone=a, node2 and node3 zone=b, 1Gi and 2 CPUs each). Spread places evenly,
# binpack fills one node before the next, constraints (= and !=) are honoured, scaling up and down
# gives exact counts, a delete leaves no process and no cgroup on any node, and a service that no
# node can take stays pending with its reason until a fitting agent joins. Every count is checked
# twice: in orchd's view, and in the instance cgroups on the nodes.
# wait_for conditions are single-quoted on purpose (evaluated at each poll); IT_* are lib.sh's
# shellcheck disable=SC2016,SC2034,SC2119
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

it_init
IT_ORCHD_EXTRA=(--heartbeat-interval 300ms)
it_orchd_start
it_agent_start 1 --label zone=a --memory 1Gi --cpus 2
it_agent_start 2 --label zone=b --memory 1Gi --cpus 2
it_agent_start 3 --label zone=b --memory 1Gi --cpus 2
it_wait_nodes 3
it_ok "orchd and 3 agents up"

# service NAME REPLICAS [EXTRA-YAML-LINES]: a sleeping instance of the test program, as nobody.
service() {
	printf 'kind: service\nname: %s\nreplicas: %s\ncommand: ["%s", sleep]\nstop: {timeout: 2s}\n%s\n' \
		"$1" "$2" "$IT_TESTPROG" "${3:-}"
}

# on_nodes SERVICE: "N1 N2 N3", the instances of SERVICE with a process on node1..3.
on_nodes() { echo "$(node_count 1 "$1") $(node_count 2 "$1") $(node_count 3 "$1")"; }

# settled SERVICE N: orchd sees N running and the nodes hold exactly N processes for it.
settled() {
	local a b c
	[ "$(running_count "$1")" = "$2" ] || return 1
	read -r a b c <<<"$(on_nodes "$1")"
	[ $((a + b + c)) = "$2" ]
}

# agree SERVICE: orchd's per-node view equals the cgroups on the nodes.
agree() {
	local k n seen=
	for k in 1 2 3; do
		n=$(node_count "$k" "$1")
		[ "$n" = 0 ] || seen="$seen node$k=$n"
	done
	[ "$(running_by_node "$1")" = "${seen# }" ]
}

# --- spread ---------------------------------------------------------------------------------------
apply "$(service sp 6)"
wait_for 'settled sp 6' 30 "6 instances of sp" || it_fail "sp: $(running_count sp) running, on nodes: $(on_nodes sp)"
agree sp || it_fail "orchd's view of sp ($(running_by_node sp)) differs from the nodes ($(on_nodes sp))"
[ "$(on_nodes sp)" = "2 2 2" ] || it_fail "spread placed sp as $(on_nodes sp), not 2 2 2"
# every instance runs as nobody, in its own cgroup
for pid in $(node_procs 1 | awk '{print $2}'); do
	[ "$(ps -o user= -p "$pid")" = nobody ] || it_fail "instance pid $pid runs as $(ps -o user= -p "$pid")"
done
it_ok "spread: 6 instances as 2 2 2"

# --- binpack --------------------------------------------------------------------------------------
apply "$(service bp 5 'resources: {memory: 256Mi}
placement: {strategy: binpack}')"
wait_for 'settled bp 5' 30 "5 instances of bp" || it_fail "bp: $(running_count bp) running, on nodes: $(on_nodes bp)"
agree bp || it_fail "orchd's view of bp ($(running_by_node bp)) differs from the nodes ($(on_nodes bp))"
[ "$(on_nodes bp | tr ' ' '\n' | sort -n | tr '\n' ' ')" = "0 1 4 " ] ||
	it_fail "binpack placed 5 x 256Mi on 1Gi nodes as $(on_nodes bp), not 4 on one node and 1 on another"
scale bp 8
wait_for 'settled bp 8' 30 "8 instances of bp" || it_fail "bp: $(running_count bp) running, on nodes: $(on_nodes bp)"
[ "$(on_nodes bp | tr ' ' '\n' | sort -n | tr '\n' ' ')" = "0 4 4 " ] ||
	it_fail "binpack placed 8 x 256Mi on 1Gi nodes as $(on_nodes bp), not two full nodes"
it_ok "binpack: 5 then 8 instances of 256Mi fill one node, then a second ($(on_nodes bp))"

# --- constraints ----------------------------------------------------------------------------------
apply "$(service inb 4 'placement: {constraints: ["zone=b"]}')
---
$(service notb 3 'placement: {constraints: ["zone!=b"]}')"
wait_for 'settled inb 4 && settled notb 3' 30 "inb and notb" ||
	it_fail "inb: $(on_nodes inb), notb: $(on_nodes notb)"
[ "$(on_nodes inb)" = "0 2 2" ] || it_fail "zone=b placed inb as $(on_nodes inb), not 0 2 2"
[ "$(on_nodes notb)" = "3 0 0" ] || it_fail "zone!=b placed notb as $(on_nodes notb), not 3 0 0"
it_ok "constraints: zone=b on node2 and node3 only, zone!=b on node1 only"

# --- scale up and down ----------------------------------------------------------------------------
scale sp 9
wait_for 'settled sp 9' 30 "9 instances of sp" || it_fail "sp: $(running_count sp) running, on nodes: $(on_nodes sp)"
[ "$(on_nodes sp)" = "3 3 3" ] || it_fail "spread scaled sp up to $(on_nodes sp), not 3 3 3"
scale sp 2
wait_for 'settled sp 2' 30 "2 instances of sp" || it_fail "sp: $(running_count sp) running, on nodes: $(on_nodes sp)"
agree sp || it_fail "orchd's view of sp ($(running_by_node sp)) differs from the nodes ($(on_nodes sp))"
scale sp 0
wait_for 'settled sp 0' 30 "no instance of sp" || it_fail "sp: $(running_count sp) running, on nodes: $(on_nodes sp)"
scale sp 4
wait_for 'settled sp 4' 30 "4 instances of sp" || it_fail "sp: $(running_count sp) running, on nodes: $(on_nodes sp)"
it_ok "scale: 6 -> 9 (3 3 3) -> 2 -> 0 -> 4, exact on every node"

# --- delete ---------------------------------------------------------------------------------------
total=$((4 + 8 + 4 + 3))
[ "$(testprog_procs)" = "$total" ] || it_fail "$(testprog_procs) test processes run, expected $total"
for s in sp bp inb notb; do
	api DELETE "/v1/services/$s" >/dev/null || it_fail "DELETE /v1/services/$s failed"
done
no_services() { api GET /v1/services | jpy 'len(j) == 0'; }
no_cgroups() { [ "$(node_cgroups 1)$(node_cgroups 2)$(node_cgroups 3)" = 000 ]; }
wait_for 'no_services && [ "$(testprog_procs)" = 0 ] && no_cgroups' 30 "the services to be gone" ||
	it_fail "after delete: services $(api GET /v1/services | jpy '[s["name"] for s in j]'), $(testprog_procs) processes, cgroups $(node_cgroups 1) $(node_cgroups 2) $(node_cgroups 3)"
[ "$(instances | jpy 'len(j)')" = 0 ] || it_fail "instances are left: $(instances)"
it_ok "delete: no service, instance, process or cgroup left"

# --- unplaceable, then placed when a fitting agent joins -------------------------------------------
apply "$(service big 1 'resources: {memory: 2Gi}')
---
$(service far 1 'placement: {constraints: ["zone=c"]}')"
pending_reason() { instances "$1" | jpy '" | ".join(i["state"] + ": " + (i["reason"] or "") for i in j)'; }
wait_for 'pending_reason big | grep -q "pending: .*memory"' 10 "big to be pending for memory" ||
	it_fail "big: $(pending_reason big)"
wait_for 'pending_reason far | grep -q "pending: .*zone=c"' 10 "far to be pending for zone=c" ||
	it_fail "far: $(pending_reason far)"
it_log "big: $(pending_reason big)"
it_log "far: $(pending_reason far)"
[ "$(testprog_procs)" = 0 ] || it_fail "an unplaceable instance runs somewhere"
it_agent_start 4 --label zone=c --memory 4Gi --cpus 2
wait_for '[ "$(running_by_node big)" = node4=1 ] && [ "$(running_by_node far)" = node4=1 ]' 20 \
	"big and far on node4" || it_fail "big: $(pending_reason big); far: $(pending_reason far)"
[ "$(node_count 4)" = 2 ] || it_fail "node4 holds $(node_count 4) instance processes, not 2"
it_ok "unplaceable services report why and run once node4 (4Gi, zone=c) joins"
