#!/bin/bash
# Drain and uncordon (SPEC §4 POST /v1/nodes/{name}/drain; docs/control-plane.md): three agents run
# an HTTP service with a health check (6 replicas, update max_unavailable 0) and a worker service
# (6 replicas, max_unavailable 1). Draining node1 shows it `draining`, moves every instance off it
# under each service's update policy (the web service never has fewer than 6 healthy instances,
# the worker never fewer than 5 running) and loses none: afterwards node1 holds no instance, in
# orchd's view and in its cgroups, and each service has its replicas on node2 and node3. New
# instances avoid the draining node; uncordon makes it ready and it takes instances again.
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
replicas: 6
command: [\"$IT_TESTPROG\", http, \"\${PORT}\"]
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 200ms, timeout: 200ms, grace: 0s}
stop: {timeout: 2s}
update: {max_surge: 1, max_unavailable: 0, min_healthy: 500ms}
---
kind: service
name: worker
replicas: 6
command: [\"$IT_TESTPROG\", sleep]
stop: {timeout: 2s}
update: {max_surge: 0, max_unavailable: 1, min_healthy: 500ms}
"
on_nodes() { echo "$(node_count 1 "$1") $(node_count 2 "$1") $(node_count 3 "$1")"; }
healthy_web() { instances web | jpy 'len([i for i in j if i["state"] == "running" and i["health"] == "passing" and i["desired"] == "run"])'; }
wait_for '[ "$(healthy_web)" = 6 ] && [ "$(running_count worker)" = 6 ] && [ "$(testprog_procs)" = 12 ]' 30 \
	"12 instances" || it_fail "the services did not come up"
{ [ "$(on_nodes web)" = "2 2 2" ] && [ "$(on_nodes worker)" = "2 2 2" ]; } ||
	it_fail "not spread evenly: web $(on_nodes web), worker $(on_nodes worker)"
it_ok "12 instances, 4 on node1"

# --- drain ----------------------------------------------------------------------------------------
# sample: "HEALTHY-WEB RUNNING-WORKER" every 100 ms while the drain runs, from one instance list
sampler() {
	while [ ! -e "$IT_TMP/stop-sampler" ]; do
		instances | jpy '
run = [i for i in j if i["state"] == "running" and i["desired"] == "run"]
"%d %d" % (len([i for i in run if i["service"] == "web" and i["health"] == "passing"]), len([i for i in run if i["service"] == "worker"]))' >>"$IT_TMP/samples" 2>/dev/null
		sleep 0.1
	done
}
sampler &
sampler_pid=$!
it_on_exit "touch $IT_TMP/stop-sampler; kill $sampler_pid"
out=$(api POST /v1/nodes/node1/drain) || it_fail "drain refused: $out"
echo "$out" | jpy 'j["state"] == "draining"' || it_fail "the drain answer does not say draining: $out"
[ "$(node_state node1)" = draining ] || it_fail "node1 is $(node_state node1) after the drain"
drained() {
	instances | jpy '
live = [i for i in j if i["desired"] == "run" and i["state"] not in ("lost", "exited", "failed")]
len(live) == 12 and all(i["node"] != "node1" and i["state"] == "running" for i in live)' &&
		[ "$(node_count 1)" = 0 ] && [ "$(testprog_procs)" = 12 ] && [ "$(healthy_web)" = 6 ]
}
wait_for drained 60 "node1 to be drained" ||
	it_fail "node1 not drained: $(instances | jpy '[(i["id"], i["node"], i["state"], i["desired"]) for i in j]'); node1 holds $(node_count 1)"
touch "$IT_TMP/stop-sampler"
wait "$sampler_pid" 2>/dev/null || true
[ "$(node_state node1)" = draining ] || it_fail "node1 is $(node_state node1) once drained, not draining"
[ "$(node_cgroups 1)" = 0 ] || it_fail "node1 kept $(node_cgroups 1) instance cgroups"
min_web=$(awk '{print $1}' "$IT_TMP/samples" | sort -n | head -n 1)
min_worker=$(awk '{print $2}' "$IT_TMP/samples" | sort -n | head -n 1)
[ "$min_web" -ge 6 ] || it_fail "only $min_web web instances were healthy at one moment of the drain (max_unavailable 0)"
[ "$min_worker" -ge 5 ] || it_fail "only $min_worker workers ran at one moment of the drain (max_unavailable 1)"
wait_for 'instances | jpy "len(j) == 12"' 10 "the drained records to go" ||
	it_fail "records left: $(instances | jpy '[(i["id"], i["node"], i["state"]) for i in j]')"
it_ok "node1 drained: no instance left on it, none lost; during the drain at least $min_web healthy web and $min_worker workers ($(wc -l <"$IT_TMP/samples") samples)"

# a draining node takes nothing new
scale worker 9
wait_for '[ "$(running_count worker)" = 9 ] && [ "$(testprog_procs)" = 15 ]' 20 "9 workers" ||
	it_fail "scaling while node1 drains: $(running_by_node worker)"
[ "$(node_count 1)" = 0 ] || it_fail "a new instance was placed on the draining node1"
it_ok "new instances avoid the draining node ($(running_by_node worker))"

# --- uncordon -------------------------------------------------------------------------------------
out=$(api POST /v1/nodes/node1/uncordon) || it_fail "uncordon refused: $out"
wait_for '[ "$(node_state node1)" = ready ]' 10 "node1 ready" || it_fail "node1 is $(node_state node1) after uncordon"
scale worker 12
wait_for '[ "$(running_count worker)" = 12 ] && [ "$(node_count 1 worker)" -ge 1 ] && [ "$(testprog_procs)" = 18 ]' 20 \
	"a worker on node1" || it_fail "node1 takes no instance after uncordon: $(running_by_node worker)"
it_ok "uncordoned: node1 ready and taking instances again ($(running_by_node worker))"
