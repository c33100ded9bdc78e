#!/bin/bash
# Re-adoption (docs/agent.md, "Re-adoption"): a standalone orch-agent runs 50 exec instances of
# orch-testprog (40 writing their log, 10 HTTP servers with a health check). The agent is killed
# with SIGKILL and a new one started: within 1 s it must have re-adopted and reported all 50 with
# the same pids and no restart; logs keep growing; a re-adopted instance that is killed is seen
# and restarted, and one whose health check starts failing is restarted. Then SIGTERM with
# --keep-instances leaves them running for a third agent, which re-adopts them again and, without
# --keep-instances, stops them all on SIGTERM.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

top_builddir=${top_builddir:-$(cd "$(dirname "$0")/../.." && pwd)}
agent=$top_builddir/agent/orch-agent
testprog=$top_builddir/tests/fixtures/orch-testprog

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (instance cgroups)"; exit 77; }
for p in "$agent" "$testprog"; do
	[ -x "$p" ] || { echo "SKIP: $p is not built (make check builds it)"; exit 77; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed (reads the state files)"; exit 77; }

N_LOG=40
N_WEB=10
N=$((N_LOG + N_WEB))
parent=orch-test-readopt-$$
data=$(mktemp -d /tmp/orch-readopt.XXXXXX)
chmod 755 "$data"
agent_pid=
# a copy of its own, so that the clean-up can kill every process of it without touching another
# test's (make check runs several at once)
mkdir "$data/bin"
install -m 0755 "$testprog" "$data/bin/orch-testprog"
testprog=$data/bin/orch-testprog

# Everything in the test's cgroups dies, and the cgroups go (also after a failure half-way).
kill_cgroups() {
	local round d c p
	for round in 1 2 3 4 5; do
		local found=
		for d in /sys/fs/cgroup/"$parent" /sys/fs/cgroup/*/"$parent"; do
			[ -d "$d" ] || continue
			found=1
			find "$d" -depth -type d | while read -r c; do
				[ -w "$c/cgroup.kill" ] && echo 1 >"$c/cgroup.kill" 2>/dev/null
				for p in $(cat "$c/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
				rmdir "$c" 2>/dev/null
			done
		done
		[ -z "$found" ] && return 0
		sleep 0.2
	done
	echo "cgroups under $parent were not all removed" >&2
}

cleanup() {
	[ -n "$agent_pid" ] && kill -KILL "$agent_pid" 2>/dev/null
	wait 2>/dev/null || true
	kill_cgroups
	# and a copy that escaped its cgroup (what section 6b guards against)
	pkill -KILL -f "^$testprog( |\$)" 2>/dev/null || true
	rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*" >&2
	for f in "$data"/agent-*.log; do
		[ -f "$f" ] && { echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2; }
	done
	exit 1
}

cat >"$data/services.yaml" <<EOF
kind: service
name: ra-log
replicas: $N_LOG
user: root
command: ["$testprog", chatty, "400", --line-size, "40"]
restart: {policy: always, backoff: 100ms}
---
kind: service
name: ra-web
replicas: $N_WEB
user: root
command: ["$testprog", http, "\${PORT}", --health-file, "$data/sick-\${ORCH_INSTANCE}"]
ports: [{name: http}]
health: {type: http, port: http, path: /healthz, interval: 200ms, timeout: 200ms, grace: 2s, unhealthy_threshold: 2}
restart: {policy: always, backoff: 100ms}
EOF

# start_agent NAME [FLAGS...]: a standalone agent, its log in $data/agent-NAME.log.
start_agent() {
	local name=$1
	shift
	"$agent" --standalone --file "$data/services.yaml" --data-dir "$data/agent" --cgroup-parent "$parent" \
		--port-range 34000-34999 --name readopt-node --allow-root "$@" >"$data/agent-$name.log" 2>&1 &
	agent_pid=$!
}

# snapshot: "id pid restarts state" per instance, from the agent's state files.
snapshot() {
	python3 - "$data/agent/instances" <<'PY'
import json, os, sys
d = sys.argv[1]
for f in sorted(os.listdir(d)):
    if f.endswith(".json"):
        try:
            j = json.load(open(os.path.join(d, f)))
        except (OSError, ValueError):
            continue
        print(j["id"], j.get("pid", 0), j.get("restarts", 0), j.get("state", "?"))
PY
}

running_count() {
	snapshot | awk '$4 == "running" && $2 > 0' | wc -l
}

# wait_for SECONDS COMMAND...: polls COMMAND every 50 ms.
wait_for() {
	local deadline=$(($(date +%s%N) + $1 * 1000000000))
	shift
	until "$@"; do
		[ "$(date +%s%N)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

all_running() { [ "$(running_count)" = "$N" ]; }

# alive PID: the process runs (an exited instance may linger as a zombie of PID 1, which is not).
alive() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ "${state#Z}" = "$state" ]
}

pid_of() { snapshot | awk -v id="$1" '$1 == id {print $2}'; }

# --- 0. manifests it cannot run: exit 1 with the reason, before anything is made --------------------
# refused NAME CONTENT EXPECTED-OUTPUT
refused() {
	local status=0 d
	printf '%b' "$2" >"$data/$1.yaml"
	"$agent" --standalone --file "$data/$1.yaml" --data-dir "$data/agent" --cgroup-parent "$parent" \
		--allow-root >"$data/agent-$1.out" 2>&1 || status=$?
	[ "$status" = 1 ] || fail "standalone manifest $1: exit $status, expected 1"
	grep -qF -- "$3" "$data/agent-$1.out" || fail "standalone manifest $1: no '$3' in: $(cat "$data/agent-$1.out")"
	for d in /sys/fs/cgroup/"$parent" /sys/fs/cgroup/*/"$parent" "$data/agent"; do
		[ ! -e "$d" ] || fail "an agent refused for its manifest $1 made $d"
	done
}
refused broken 'kind: service\nname: broken\ncommand: []\n' 'broken.yaml:3:10: error: command'
refused empty '# no service here\n' 'hold no services'
echo "ok - an invalid standalone manifest, or one without services: exit 1 with the reason, nothing made"

# --- 1. the first agent starts 50 instances ------------------------------------------------------
start_agent a
wait_for 30 all_running || fail "the first agent did not get $N instances running: $(running_count) are"
before=$(snapshot)
echo "ok - $N instances running"

# --- 2. kill -9, a new agent: re-adopted and reported within 1 s, nothing restarted -----------
kill -KILL "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
for p in $(echo "$before" | awk '{print $2}'); do
	alive "$p" || fail "instance pid $p died with the agent"
done
declare -A size
for f in "$data"/agent/logs/ra-log-*.log; do size[$f]=$(stat -c %s "$f"); done

t0=$(date +%s%N)
start_agent b --keep-instances
readopted() { [ "$(grep -c 're-adopted pid' "$data/agent-b.log")" = "$N" ]; }
# "reported": the supervisor's event for each (a standalone agent logs them as "instance event")
reported() {
	[ "$(grep 'msg="instance event"' "$data/agent-b.log" | grep -c 'state=\(running\|starting\)')" -ge "$N" ]
}
wait_for 5 readopted || fail "$(grep -c 're-adopted pid' "$data/agent-b.log") of $N instances re-adopted"
wait_for 5 reported || fail "not every re-adopted instance was reported"
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
[ "$elapsed_ms" -le 1000 ] || fail "re-adopting and reporting $N instances took ${elapsed_ms} ms (limit 1000 ms)"
echo "ok - $N instances re-adopted and reported ${elapsed_ms} ms after the new agent started"

after=$(snapshot)
[ "$(echo "$before" | awk '{print $1, $2}')" = "$(echo "$after" | awk '{print $1, $2}')" ] ||
	fail "pids changed across the agent restart: $(diff <(echo "$before") <(echo "$after") || true)"
# restart counts as before the kill (a slow first start may have cost a restart before it, not since)
[ "$(echo "$before" | awk '{print $1, $3}')" = "$(echo "$after" | awk '{print $1, $3}')" ] ||
	fail "instances were restarted: $(diff <(echo "$before") <(echo "$after") || true)"
! grep -q 'exited while the agent was away' "$data/agent-b.log" || fail "the new agent saw an instance as dead"
echo "ok - same pids, zero restarts"

# --- 3. logs are still captured -----------------------------------------------------------------
grown() {
	local f
	for f in "${!size[@]}"; do [ "$(stat -c %s "$f")" -gt "${size[$f]}" ] || return 1; done
}
wait_for 5 grown || fail "the logs of re-adopted instances stopped growing"
echo "ok - the logs of all $N_LOG writers keep growing"

# --- 4. a re-adopted instance that dies is restarted ------------------------------------------------
victim=$(pid_of ra-log-7)
kill -KILL "$victim"
restarted() {
	local line
	line=$(snapshot | awk '$1 == "ra-log-7"')
	[ -n "$line" ] || return 1
	set -- $line
	[ "$4" = running ] && [ "$2" != "$victim" ] && [ "$2" -gt 0 ] && [ "$3" = 1 ]
}
wait_for 5 restarted || fail "ra-log-7 was not restarted after its process died: $(snapshot | grep ra-log-7)"
grep -F 'instance=ra-log-7' "$data/agent-b.log" | grep -F 'status unknown: re-adopted after an agent restart' >/dev/null ||
	fail "no exit was reported for ra-log-7"
echo "ok - the death of a re-adopted instance was seen and it was restarted"

# --- 5. health checks resumed: a re-adopted instance turning unhealthy is restarted ---------------
sick=$(pid_of ra-web-3)
sick_restarts=$(snapshot | awk '$1 == "ra-web-3" {print $3}')
touch "$data/sick-ra-web-3"
unhealthy_restarted() {
	local line
	line=$(snapshot | awk '$1 == "ra-web-3"')
	[ -n "$line" ] || return 1
	set -- $line
	[ "$2" != "$sick" ] && [ "$2" -gt 0 ] && [ "$3" -gt "$sick_restarts" ]
}
wait_for 10 unhealthy_restarted || fail "ra-web-3 was not restarted while its health check failed"
grep -F 'instance=ra-web-3' "$data/agent-b.log" | grep -F 'unhealthy: GET /healthz: 503' >/dev/null ||
	fail "ra-web-3 was not restarted for its failing health check"
rm -f "$data/sick-ra-web-3"
wait_for 10 all_running || fail "not all instances are running again: $(running_count)"
echo "ok - health checks resumed after re-adoption"

# --- 6. SIGTERM with --keep-instances leaves them for the next agent ------------------------------
before=$(snapshot)
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the agent exited with status $? after SIGTERM"
for p in $(echo "$before" | awk '{print $2}'); do
	alive "$p" || fail "instance pid $p was stopped although the agent had --keep-instances"
done
start_agent c
readopted_c() { [ "$(grep -c 're-adopted pid' "$data/agent-c.log")" = "$N" ]; }
wait_for 5 readopted_c || fail "$(grep -c 're-adopted pid' "$data/agent-c.log") of $N re-adopted after SIGTERM"
[ "$(echo "$before" | awk '{print $1, $2}')" = "$(snapshot | awk '{print $1, $2}')" ] ||
	fail "pids changed across a SIGTERM with --keep-instances"
echo "ok - SIGTERM with --keep-instances: all $N re-adopted by the next agent"

# --- 6b. an instance whose process and cgroup went while no agent ran is confined again ---------------
# (scripts/demo stop kills the instances and removes their cgroups; the next agent once restarted
# them without any cgroup, outside every limit). ra-log-3 loses its cgroup in every hierarchy,
# ra-log-4 in one only (an rmdir that failed elsewhere): both must start again, in whole cgroups.
kill -KILL "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
declare -A victims
for id in ra-log-3 ra-log-4; do
	victims[$id]=$(pid_of "$id")
	case "${victims[$id]}" in '' | 0) fail "no pid recorded for $id: $(snapshot | grep "$id")" ;; esac
	kill -KILL "${victims[$id]}"
done
for d in /sys/fs/cgroup/"$parent"/ra-log/ra-log-3 /sys/fs/cgroup/*/"$parent"/ra-log/ra-log-3 \
	/sys/fs/cgroup/memory/"$parent"/ra-log/ra-log-4; do
	[ -d "$d" ] || continue
	wait_for 5 rmdir "$d" 2>/dev/null || fail "cannot remove $d"
done
start_agent d
for id in ra-log-3 ra-log-4; do
	back() { p=$(pid_of "$id"); [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "${victims[$id]}" ] && alive "$p"; }
	wait_for 5 back || fail "$id was not started again: $(snapshot | grep "$id")"
	p=$(pid_of "$id")
	# every hierarchy the agent uses holds it in the instance's own cgroup
	grep -E '^[0-9]+:(pids|memory|cpu|cpuacct|cpu,cpuacct|cpuacct,cpu|):' "/proc/$p/cgroup" |
		while IFS=: read -r _ ctl path; do
			[ "${path#*"$parent"/ra-log/"$id"}" != "$path" ] || fail "restarted $id (pid $p) is outside its cgroup in '$ctl': $path"
		done || exit 1
done
echo "ok - instances whose cgroups were removed (wholly, or in one hierarchy) while no agent ran start again inside whole ones"

# --- 7. without --keep-instances, SIGTERM stops them -----------------------------------------------
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the agent exited with status $? after SIGTERM"
agent_pid=
for p in $(echo "$before" | awk '{print $2}'); do
	if alive "$p"; then fail "instance pid $p survived SIGTERM of an agent without --keep-instances"; fi
done
[ -z "$(ls "$data/agent/instances"/*.json 2>/dev/null)" ] || fail "state files are left after the stop"
echo "ok - SIGTERM without --keep-instances stopped all $N"

# --- a sanitizer build's agents report what they found (leaks at exit) in their logs -----------------
for f in "$data"/agent-*.log; do
	! grep -q -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$f" ||
		fail "sanitizer report in $f: $(grep -A 30 -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$f" | head -n 40)"
done
