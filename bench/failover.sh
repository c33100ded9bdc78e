#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Failover time (docs/operations.md, "Failure detection and failover"): three nodes, 100 instances
# on the victim node1 (it joins first and takes them all), node2 and node3 empty. The victim's
# agent is killed with SIGKILL, or the node is partitioned (its port on the bridge of the
# network-namespace setup of tests/integration/lib.sh set down, silently, both ways). Measured
# from that moment: when orchd marks node1 down, when the 100 replacement processes exist in
# node2's and node3's cgroups, and when orchd reports all 100 replacements running. Each with
# orchd's defaults (--heartbeat-interval 1s, TTL 3 intervals) and with --heartbeat-interval 500ms;
# printed beside Kubernetes' and Nomad's defaults.
#
#   bench/failover.sh [--build DIR] [--runs N] [--instances N] [--quick]
#
#   --build DIR      the build tree with orchd/orchd, agent/orch-agent and
#                    tests/fixtures/orch-testprog (make check TESTS= builds it) [the current directory]
#   --runs N         runs per scenario; the table shows the median and the slowest [3]
#   --instances N    instances on the victim [100]
#   --quick          one run per scenario
#
# Needs root (cgroups, network namespaces). Every process, cgroup, namespace and temporary directory
# goes at exit (tests/integration/lib.sh's trap), also on failure or ^C.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lib=$here/../tests/integration/lib.sh

# --- one run (a child of the table's loop): prints "RESULT DOWN_MS PROCS_MS RUNNING_MS" ---------
if [ "${1:-}" = --one ]; then
	mode=$2 hb=$3 n=$4
	# shellcheck source=tests/integration/lib.sh
	. "$lib"
	if [ "$mode" = partition ]; then it_init --netns 3; else it_init; fi
	[ "$hb" = default ] || IT_ORCHD_EXTRA=(--heartbeat-interval "$hb")
	it_orchd_start
	it_agent_start 1
	it_wait_nodes 1
	apply "kind: service
name: victim
replicas: $n
command: [\"$IT_TESTPROG\", sleep]
stop: {timeout: 1s}
"
	wait_for "[ \"\$(node_count 1)\" = $n ] && [ \"\$(running_count victim)\" = $n ]" 60 "$n instances on node1" ||
		it_fail "$(node_count 1) instances run on node1"
	it_agent_start 2
	it_agent_start 3
	it_wait_nodes 3
	# a few heartbeats of the new nodes before the failure
	sleep 1
	if [ "$mode" = partition ]; then
		cmd="ip -n $(it_ns sw) link set n1 down"
	else
		cmd="kill -KILL ${IT_AGENT_PID[1]}"
	fi
	it_hub "$IT_PY" - "$IT_URL" "$IT_TOKEN" "$n" "$cmd" "$(it_cgroup_base 2)" "$(it_cgroup_base 3)" <<'PY'
import glob, http.client, json, os, subprocess, sys, time
url, token, n, cmd, cg2, cg3 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
host, port = url.split("//")[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=5)

def get(path):
    global conn
    for attempt in (1, 2):
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            return json.loads(conn.getresponse().read())
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
    raise SystemExit("orchd does not answer")

def procs_elsewhere():
    k = 0
    for base in (cg2, cg3):
        for f in glob.glob(base + "/*/*/cgroup.procs"):
            try:
                with open(f) as fh:
                    if fh.read().strip():
                        k += 1
            except OSError:
                pass
    return k

down = procs = running = None
t0 = time.monotonic()
subprocess.run(cmd, shell=True, check=True)
while time.monotonic() - t0 < 120 and None in (down, procs, running):
    now = lambda: round((time.monotonic() - t0) * 1000)
    if procs is None and procs_elsewhere() >= n:
        procs = now()
    if down is None and get("/v1/nodes/node1")["state"] == "down":
        down = now()
    if running is None:
        inst = get("/v1/instances?service=victim")
        if len([i for i in inst if i["state"] == "running" and i["node"] != "node1" and i["desired"] == "run"]) >= n:
            running = now()
    time.sleep(0.01)
print("RESULT", down if down is not None else -1, procs if procs is not None else -1, running if running is not None else -1)
PY
	# node1's orphans (its agent is gone or cut off) go with the trap
	exit 0
fi

# --- the table ------------------------------------------------------------------------------------
build=$(pwd)
runs=3
n=100
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--instances) n=$2; shift 2 ;;
	--quick) runs=1; shift ;;
	-h | --help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
	*) echo "failover.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
build=$(cd "$build" && pwd)
for p in orchd/orchd agent/orch-agent tests/fixtures/orch-testprog; do
	[ -x "$build/$p" ] || { echo "failover.sh: $build/$p is not built (make && make check TESTS= in the build tree, or --build DIR)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "failover.sh: needs root (cgroups, network namespaces)" >&2; exit 1; }

# stats "MS MS ...": "median max" in seconds
stats() {
	echo "$@" | tr ' ' '\n' | sort -n | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f %.2f", m / 1000, v[NR] / 1000}'
}

echo "failover of $n instances from node1 to node2 and node3, $runs run(s) per scenario ($(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg))"
rows=()
for scenario in "kill default" "kill 500ms" "partition default" "partition 500ms"; do
	read -r mode hb <<<"$scenario"
	downs=() procs=() runnings=()
	for r in $(seq 1 "$runs"); do
		out=$(top_builddir=$build bash "$0" --one "$mode" "$hb" "$n" 2>&1) || {
			echo "$out" | tail -n 30 >&2
			echo "failover.sh: the $mode run with heartbeat $hb failed" >&2
			exit 1
		}
		read -r _ d p ru <<<"$(echo "$out" | grep '^RESULT')"
		[ "$d" -ge 0 ] && [ "$p" -ge 0 ] && [ "$ru" -ge 0 ] || { echo "$out" | tail -n 30 >&2; echo "failover.sh: no failover within 120 s" >&2; exit 1; }
		echo "  $mode, heartbeat $hb, run $r: node down ${d} ms, replacements' processes ${p} ms, all running in orchd ${ru} ms" >&2
		downs+=("$d") procs+=("$p") runnings+=("$ru")
	done
	if [ "$hb" = default ]; then hbl="1s (TTL 3s)"; target="<= 5 s"; tgt=5; else hbl="500ms (TTL 1.5s)"; target="<= 2 s"; tgt=2; fi
	read -r rm rx <<<"$(stats "${runnings[@]}")"
	verdict=$(awk -v x="$rx" -v t="$tgt" 'BEGIN {print (x <= t) ? "met" : "MISSED"}')
	[ "$mode" = kill ] && what="agent SIGKILL" || what="partition"
	rows+=("$(printf '%-14s %-17s %-13s %-15s %-17s %-8s %s' "$what" "$hbl" "$(stats "${downs[@]}" | awk '{printf "%.2f [%.2f]", $1, $2}')" \
		"$(stats "${procs[@]}" | awk '{printf "%.2f [%.2f]", $1, $2}')" "$(printf '%.2f [%.2f]' "$rm" "$rx")" "$target" "$verdict")")
done

echo
echo "seconds from the failure, median [slowest] of $runs"
printf '%-14s %-17s %-13s %-15s %-17s %-8s %s\n' "failure" "heartbeat" "node down" "processes up" "orchd: running" "target" ""
for r in "${rows[@]}"; do echo "$r"; done
echo
echo "for comparison, the same failure with each system's defaults:"
echo "  Kubernetes  ~340 s   (5 min 40 s) node-monitor-grace-period 40 s, then the not-ready/unreachable taint's"
echo "                       tolerationSeconds 300 (the former pod-eviction-timeout) before pods are evicted"
echo "  Nomad       20-30 s  on a small cluster: heartbeat TTL (min_heartbeat_ttl 10 s) + heartbeat_grace 10 s,"
echo "                       then the allocations are rescheduled"
