# Shared harness of the cluster and chaos tests (tests/integration/cluster*.sh, chaos*.sh) and of
# bench/failover: a real orchd and real agents on free ports with temporary data dirs, the HTTP API
# through curl, JSON checks through python3, polling with deadlines, and one EXIT trap that removes
# everything the script started (processes, cgroups, temporary files, network namespaces), also
# when it fails half-way. Source it from bash:
#
#   . "$(dirname "$0")/lib.sh"
#   it_init                    # or: it_init --netns 3 (partitions: see it_netns_init)
#   it_orchd_start
#   it_agent_start 1; it_agent_start 2 --label zone=b
#   api POST /v1/apply "$yaml" >/dev/null
#   wait_for 'running_count web = 3' 20
#
# Processes: orchd and every agent are children of the script; instances run as `nobody` a copy of
# orch-testprog ($IT_TESTPROG) in a temporary directory nobody can read (the build tree may be
# under /root). Nodes are node1..nodeN, with cgroups under the absolute parent /orch-it-$$-K and
# disjoint port ranges. Variables a test may set before starting daemons: IT_ORCHD_EXTRA and
# IT_AGENT_EXTRA (arrays of extra flags).

[ -n "${BASH_VERSION:-}" ] || { echo "lib.sh needs bash" >&2; exit 99; }
set -euo pipefail

top_builddir=${top_builddir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
top_srcdir=${top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
IT_ORCHD_BIN=${IT_ORCHD_BIN:-$top_builddir/orchd/orchd}
IT_AGENT_BIN=${IT_AGENT_BIN:-$top_builddir/agent/orch-agent}
IT_TESTPROG_SRC=${IT_TESTPROG_SRC:-$top_builddir/tests/fixtures/orch-testprog}
# python3 from the system: a pyenv shim costs 100 ms per call, and the tests call it in polls
IT_PY=python3
[ -x /usr/bin/python3 ] && IT_PY=/usr/bin/python3

IT_ID=$$
IT_TMP=
IT_ORCHD_PID=
declare -a IT_ORCHD_EXTRA=()
declare -a IT_AGENT_EXTRA=()
declare -A IT_AGENT_PID=()
declare -a IT_EXIT_HOOKS=()
IT_NETNS=0
IT_NS_PREFIX=orch-it-$IT_ID
IT_T0=$(date +%s%N)

it_skip() {
	echo "SKIP: $*"
	exit 77
}

# it_log MESSAGE: a line with the seconds since the start of the script.
it_log() {
	local now
	now=$(date +%s%N)
	printf '[%6.2fs] %s\n' "$(awk -v a="$now" -v b="$IT_T0" 'BEGIN {print (a - b) / 1e9}')" "$*"
}

it_ok() { it_log "ok - $*"; }

# it_fail MESSAGE: print the reason and the end of every daemon log, then exit 1 (the trap cleans up).
it_fail() {
	local f
	it_log "FAIL: $*" >&2
	if [ -n "$IT_TMP" ]; then
		for f in "$IT_TMP"/orchd.log "$IT_TMP"/agent-*.log; do
			[ -f "$f" ] || continue
			echo "--- $f (last 25 lines)" >&2
			tail -n 25 "$f" >&2
		done
	fi
	exit 1
}

# --- set-up and the trap --------------------------------------------------------------------------

# it_init [--netns N]: checks what the tests need (skipping with a reason otherwise), makes the
# temporary directory and installs the trap. --netns N also builds the namespaces of N nodes.
it_init() {
	local netns=0 p
	if [ "${1:-}" = --netns ]; then netns=$2; fi
	[ "$(id -u)" = 0 ] || it_skip "needs root (instance cgroups, users, network namespaces)"
	for p in "$IT_ORCHD_BIN" "$IT_AGENT_BIN" "$IT_TESTPROG_SRC"; do
		[ -x "$p" ] || it_skip "$p is not built (make check builds it)"
	done
	for p in curl "$IT_PY" setsid; do
		command -v "$p" >/dev/null || it_skip "$p is not installed"
	done
	id nobody >/dev/null 2>&1 || it_skip "there is no user nobody to run instances as"
	[ -d /sys/fs/cgroup ] || it_skip "no cgroup file system at /sys/fs/cgroup"

	IT_TMP=$(mktemp -d /tmp/orch-it.XXXXXX)
	trap it_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	# nobody runs the instances: it must reach the program and the work directories below
	chmod 755 "$IT_TMP"
	mkdir -p "$IT_TMP/bin"
	install -m 0755 "$IT_TESTPROG_SRC" "$IT_TMP/bin/orch-testprog"
	IT_TESTPROG=$IT_TMP/bin/orch-testprog
	# the daemons' own ports: free ones on loopback, or fixed ones inside the namespaces
	if [ "$netns" -gt 0 ]; then
		it_netns_init "$netns"
	else
		IT_API_PORT=$(it_free_port)
		IT_AGENT_PORT=$(it_free_port)
		IT_API_ADDR=127.0.0.1:$IT_API_PORT
		IT_AGENT_ADDR=127.0.0.1:$IT_AGENT_PORT
	fi
	IT_URL=http://$IT_API_ADDR
	IT_ORCHD_DATA=$IT_TMP/orchd
	# instance ports: 100 per node from a block chosen by pid, below the ephemeral range
	IT_PORT_BASE=$((20000 + (IT_ID % 12) * 1000))
}

# it_on_exit COMMAND: run COMMAND (a string) first when the script exits.
it_on_exit() { IT_EXIT_HOOKS+=("$1"); }

# Everything the script started goes, in an order that leaves nothing behind: hooks, agents with
# SIGTERM (they stop their instances), SIGKILL for what is left, orchd, whatever is still in the
# test's cgroups, stray copies of the test program, the namespaces, the temporary directory.
it_cleanup() {
	local status=$? h k pid deadline f
	# every wait below is bounded: a second ^C must not leave half of the clean-up undone
	trap - EXIT
	trap '' INT TERM
	set +e
	for h in "${IT_EXIT_HOOKS[@]}"; do eval "$h" >/dev/null 2>&1; done
	# a partitioned agent cannot reach orchd but still stops its instances on SIGTERM
	for k in "${!IT_AGENT_PID[@]}"; do kill -TERM "${IT_AGENT_PID[$k]}" 2>/dev/null; done
	deadline=$(($(date +%s) + 15))
	for k in "${!IT_AGENT_PID[@]}"; do
		pid=${IT_AGENT_PID[$k]}
		while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
	done
	[ -n "$IT_ORCHD_PID" ] && kill -KILL "$IT_ORCHD_PID" 2>/dev/null
	# and every other background job of the script (pollers, a forgotten agent)
	for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null; done
	wait 2>/dev/null
	it_kill_cgroups
	if [ -n "${IT_TESTPROG:-}" ]; then
		pkill -KILL -f "^$IT_TESTPROG( |\$)" 2>/dev/null
	fi
	[ "$IT_NETNS" -gt 0 ] && it_netns_destroy
	# a sanitizer build's daemons report what they found in their logs (and a leak only at exit,
	# which the agents' SIGTERM above gave them): any report fails the test
	if [ -n "$IT_TMP" ] && grep -l -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' \
		"$IT_TMP"/*.log >/dev/null 2>&1; then
		for f in $(grep -l -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$IT_TMP"/*.log); do
			echo "--- sanitizer report in $f" >&2
			grep -A 30 -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: ' "$f" | head -n 60 >&2
		done
		[ "$status" = 0 ] && status=1
	fi
	if [ -n "$IT_TMP" ]; then
		if [ "$status" != 0 ] && [ "$status" != 77 ] && [ -n "${IT_KEEP:-}" ]; then
			echo "IT_KEEP: logs and data left in $IT_TMP" >&2
		else
			rm -rf "$IT_TMP"
		fi
	fi
	exit "$status"
}

# The cgroup directories of the test (every hierarchy), deepest first.
it_cgroup_dirs() {
	local d
	for d in /sys/fs/cgroup/orch-it-"$IT_ID"-* /sys/fs/cgroup/*/orch-it-"$IT_ID"-*; do
		[ -d "$d" ] && find "$d" -depth -type d
	done
	return 0
}

# Kills every process in the test's cgroups and removes them (an agent killed with -9 leaves both).
it_kill_cgroups() {
	local c p left
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		left=
		while read -r c; do
			[ -n "$c" ] || continue
			left=1
			[ -w "$c/cgroup.kill" ] && echo 1 >"$c/cgroup.kill" 2>/dev/null
			while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$c/cgroup.procs" 2>/dev/null
			rmdir "$c" 2>/dev/null
		done < <(it_cgroup_dirs)
		[ -z "$left" ] && return 0
		sleep 0.2
	done
	echo "lib.sh: cgroups of the test are left: $(it_cgroup_dirs | tr '\n' ' ')" >&2
}

# it_free_port: a TCP port that is free on loopback now (the kernel's choice).
it_free_port() {
	"$IT_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- network namespaces ---------------------------------------------------------------------------
# A "switch" namespace holds a bridge; orchd runs in a "hub" namespace (192.0.2.1) and node K in
# its own (192.0.2.(10+K)), each linked to the bridge by a veth pair whose bridge end, nK in the
# switch, is the node's port: `it_partition K` sets it down (a silent two-way partition), `it_heal
# K` up again. Nothing is added to the root namespace, so tests of several engineers do not meet.
# The daemons are started with nsenter --net (only the network namespace: `ip netns exec` would
# remount /sys and hide the cgroup file systems from the agent).

it_ns() { echo "$IT_NS_PREFIX-$1"; }

# it_nsrun NAME COMMAND...: COMMAND in the network namespace NAME (sw, hub, n1, n2, ...).
it_nsrun() {
	local ns=$1
	shift
	nsenter --net="/run/netns/$(it_ns "$ns")" "$@"
}

it_netns_init() {
	local n=$1 k sw
	command -v ip >/dev/null || it_skip "ip (iproute2) is not installed"
	command -v nsenter >/dev/null || it_skip "nsenter (util-linux) is not installed"
	IT_NETNS=$n
	sw=$(it_ns sw)
	ip netns add "$sw" || it_skip "cannot create network namespaces"
	ip -n "$sw" link add br0 type bridge || it_skip "cannot create a bridge (no bridge module?)"
	ip -n "$sw" link set br0 up
	ip -n "$sw" link set lo up
	it_netns_port hub 192.0.2.1
	for k in $(seq 1 "$n"); do it_netns_port "n$k" "192.0.2.$((10 + k))"; done
	IT_API_ADDR=127.0.0.1:7070
	IT_AGENT_ADDR=192.0.2.1:7071
	# the gateway (when orchd has one) is reached from the hub namespace too
}

# it_netns_port NAME ADDRESS: the namespace NAME with eth0 at ADDRESS, its bridge port NAME in sw.
it_netns_port() {
	local name=$1 addr=$2 ns sw
	ns=$(it_ns "$name")
	sw=$(it_ns sw)
	ip netns add "$ns"
	ip -n "$sw" link add "$name" type veth peer name eth0 netns "$ns"
	ip -n "$sw" link set "$name" master br0
	ip -n "$sw" link set "$name" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
}

it_partition() { ip -n "$(it_ns sw)" link set "n$1" down; }
it_heal() { ip -n "$(it_ns sw)" link set "n$1" up; }

it_netns_destroy() {
	local k ns
	for k in hub sw $(seq 1 "$IT_NETNS" | sed 's/^/n/'); do
		ns=$(it_ns "$k")
		[ -e "/run/netns/$ns" ] || continue
		for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		ip netns del "$ns" 2>/dev/null
	done
}

# --- daemons --------------------------------------------------------------------------------------

# The command prefix that runs a program where orchd (or its API) lives.
it_hub() {
	if [ "$IT_NETNS" -gt 0 ]; then it_nsrun hub "$@"; else "$@"; fi
}

# it_orchd_start [FLAGS...]: starts orchd (again, on the same data dir and ports) and waits until
# its API answers. Flags: IT_ORCHD_EXTRA, then these.
it_orchd_start() {
	local -a gw=()
	local a
	[ -z "$IT_ORCHD_PID" ] || it_fail "orchd is already running (pid $IT_ORCHD_PID)"
	# the gateway defaults to 127.0.0.1:8080, which other tests may hold: off unless asked for
	# (matched in the shell: "cmd | grep -q" under pipefail fails when grep exits before cmd is done)
	gw=(--gateway-listen '')
	for a in "$@" "${IT_ORCHD_EXTRA[@]}"; do
		[ "$a" != --gateway-listen ] || gw=()
	done
	# never a shell function in the background: $! would be a subshell, not orchd (nsenter execs)
	local -a pre=()
	[ "$IT_NETNS" -gt 0 ] && pre=(nsenter --net="/run/netns/$(it_ns hub)")
	"${pre[@]}" "$IT_ORCHD_BIN" --data-dir "$IT_ORCHD_DATA" --api-listen "$IT_API_ADDR" \
		--agent-listen "$IT_AGENT_ADDR" "${gw[@]}" "${IT_ORCHD_EXTRA[@]}" "$@" >>"$IT_TMP/orchd.log" 2>&1 &
	IT_ORCHD_PID=$!
	wait_for 'it_orchd_up' 20 "orchd to answer on $IT_URL" ||
		it_fail "orchd (pid $IT_ORCHD_PID, $(ps -o stat=,time= -p "$IT_ORCHD_PID" | tr -s ' ') of CPU) did not answer on $IT_URL within 20 s"
	kill -0 "$IT_ORCHD_PID" 2>/dev/null || it_fail "orchd exited at start"
	IT_TOKEN=$(cat "$IT_ORCHD_DATA/admin.token")
}

# true once orchd answers, or when it died (the caller tells which)
it_orchd_up() {
	kill -0 "$IT_ORCHD_PID" 2>/dev/null || return 0
	[ -s "$IT_ORCHD_DATA/admin.token" ] && [ -s "$IT_ORCHD_DATA/join.token" ] &&
		[ "$(it_hub curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$IT_URL/healthz")" = 200 ]
}

# it_orchd_kill [SIGNAL]: signals orchd (default TERM) and waits until it is gone; its exit status
# is left in IT_ORCHD_STATUS.
# shellcheck disable=SC2034 # IT_ORCHD_STATUS is for the caller
it_orchd_kill() {
	local sig=${1:-TERM}
	IT_ORCHD_STATUS=
	[ -n "$IT_ORCHD_PID" ] || return 0
	kill -"$sig" "$IT_ORCHD_PID"
	it_wait_exit "$IT_ORCHD_PID" 20 || it_fail "orchd (pid $IT_ORCHD_PID) did not exit within 20 s of SIG$sig"
	IT_ORCHD_STATUS=0
	wait "$IT_ORCHD_PID" 2>/dev/null || IT_ORCHD_STATUS=$?
	IT_ORCHD_PID=
}

# it_agent_start K [FLAGS...]: starts (or restarts) the agent of node K. Flags: IT_AGENT_EXTRA,
# then these (a later --label replaces none: labels add up).
it_agent_start() {
	local k=$1 lo
	shift
	[ -z "${IT_AGENT_PID[$k]:-}" ] || it_fail "agent $k is already running (pid ${IT_AGENT_PID[$k]})"
	lo=$((IT_PORT_BASE + (k - 1) * 100))
	local -a pre=()
	[ "$IT_NETNS" -gt 0 ] && pre=(nsenter --net="/run/netns/$(it_ns "n$k")")
	"${pre[@]}" "$IT_AGENT_BIN" --server "$IT_AGENT_ADDR" \
		--name "node$k" --data-dir "$IT_TMP/agent-$k" --port-range "$lo-$((lo + 99))" \
		--cgroup-parent "/orch-it-$IT_ID-$k" --join-token-file "$IT_ORCHD_DATA/join.token" \
		"${IT_AGENT_EXTRA[@]}" "$@" >>"$IT_TMP/agent-$k.log" 2>&1 &
	IT_AGENT_PID[$k]=$!
}

# it_agent_kill K [SIGNAL]: signals the agent of node K (default TERM) and waits until it is gone.
it_agent_kill() {
	local k=$1 sig=${2:-TERM} pid=${IT_AGENT_PID[$1]:-}
	[ -n "$pid" ] || return 0
	kill -"$sig" "$pid" 2>/dev/null || true
	it_wait_exit "$pid" 20 || it_fail "agent $k (pid $pid) did not exit within 20 s of SIG$sig"
	wait "$pid" 2>/dev/null || true
	unset "IT_AGENT_PID[$k]"
}

# it_wait_exit PID SECONDS: waits for PID (a child) to end.
it_wait_exit() {
	wait_for "it_gone $1" "$2" "pid $1 to exit"
}

# it_gone PID: the process has ended (a zombie counts as ended).
it_gone() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
	[ "${state#Z}" != "$state" ]
}

# --- polling --------------------------------------------------------------------------------------

# wait_for CONDITION SECONDS [WHAT]: evaluates the shell command CONDITION every 0.1 s until it
# succeeds (0) or SECONDS (may have a fraction) have passed (1, after a message naming WHAT).
wait_for() {
	local cond=$1 secs=$2 what=${3:-$1} deadline
	# milliseconds from awk (mawk's %d stops at 2^31), nanoseconds in the shell
	deadline=$(($(date +%s%N) + $(awk -v s="$secs" 'BEGIN {printf "%d", s * 1000}') * 1000000))
	while :; do
		if (eval "$cond") >/dev/null 2>&1; then return 0; fi
		if [ "$(date +%s%N)" -ge "$deadline" ]; then
			it_log "timed out after ${secs}s waiting for $what" >&2
			return 1
		fi
		sleep 0.1
	done
}

# it_now_ms: milliseconds since the start of the script.
it_now_ms() { echo $((($(date +%s%N) - IT_T0) / 1000000)); }

# --- the API --------------------------------------------------------------------------------------

# A request that takes longer fails (a stuck orchd must fail the test, not hang it).
IT_CURL_TIMEOUT=${IT_CURL_TIMEOUT:-30}

# api METHOD PATH [BODY]: prints the answer's body; fails (status 1) unless it is 2xx. BODY is a
# string, or @FILE.
api() {
	local method=$1 path=$2
	shift 2
	local -a data=()
	[ $# -gt 0 ] && data=(--data-binary "$1")
	it_hub curl -sS --fail-with-body --max-time "$IT_CURL_TIMEOUT" -X "$method" -H "Authorization: Bearer $IT_TOKEN" \
		-H 'Content-Type: application/yaml' "${data[@]}" "$IT_URL$path"
}

# api_code METHOD PATH [BODY [CURL-ARGS...]]: prints the status code; the body goes to
# $IT_TMP/last-body.
api_code() {
	local method=$1 path=$2
	shift 2
	local -a data=()
	if [ $# -gt 0 ]; then
		data=(--data-binary "$1")
		shift
	fi
	it_hub curl -sS -o "$IT_TMP/last-body" --max-time "$IT_CURL_TIMEOUT" -w '%{http_code}' -X "$method" \
		-H "Authorization: Bearer $IT_TOKEN" "${data[@]}" "$@" "$IT_URL$path"
}

# apply YAML: applies a manifest (a string) and fails the test if orchd refuses it.
apply() {
	local out
	out=$(api POST /v1/apply "$1") || it_fail "apply refused: $out"
}

# scale SERVICE N
scale() {
	local out
	out=$(api POST "/v1/services/$1/scale" "{\"replicas\": $2}") || it_fail "scale $1 $2 refused: $out"
}

# jpy CODE: evaluates Python with j bound to the JSON on stdin: the last line of CODE is an
# expression, the lines before it statements. Prints a string result as is, anything else as JSON;
# exit status 0 unless the result is False or None.
jpy() {
	"$IT_PY" -c '
import json, sys, collections
j = json.load(sys.stdin)
lines = sys.argv[1].strip().split("\n")
exec("\n".join(lines[:-1]))
r = eval(lines[-1])
if r is False or r is None:
    sys.exit(1)
if r is not True:
    print(r if isinstance(r, str) else json.dumps(r, sort_keys=True))
' "$1"
}

# instances [SERVICE]: orchd's instances (JSON array), of one service or all.
instances() {
	if [ -n "${1:-}" ]; then api GET "/v1/instances?service=$1"; else api GET /v1/instances; fi
}

# The live instances of SERVICE that run: "desired run, state running".
PY_RUNNING='[i for i in j if i["state"] == "running" and i.get("desired", "run") == "run"]'

# running_count SERVICE: how many instances of SERVICE orchd sees running.
running_count() { instances "$1" | jpy "len($PY_RUNNING)"; }

# running_by_node SERVICE: "node1=N node2=M ..." of the running instances (nodes in name order).
running_by_node() {
	instances "$1" | jpy "' '.join('%s=%d' % kv for kv in sorted(collections.Counter(i['node'] for i in $PY_RUNNING).items()))"
}

# node_state NODE: ready, down or draining, as orchd sees it.
node_state() { api GET "/v1/nodes/$1" | jpy 'j["state"]'; }

# ready_nodes: how many nodes are ready with their agent connected.
ready_nodes() { api GET /v1/nodes | jpy 'len([n for n in j if n["state"] == "ready" and n.get("connected", True)])'; }

# it_wait_nodes N [SECONDS]: waits until N nodes are ready (before an apply that should use them all).
it_wait_nodes() {
	wait_for "[ \"\$(ready_nodes)\" = $1 ]" "${2:-20}" "$1 ready nodes" ||
		it_fail "not $1 ready nodes: $(IT_CURL_TIMEOUT=3 api GET /v1/nodes | jpy '[(n["name"], n["state"]) for n in j]' 2>&1 | tail -n 1)"
}

# --- the truth on the nodes -----------------------------------------------------------------------
# orchd's view can be wrong; these look at the cgroups and processes themselves.

# it_cgroup_hier: the hierarchy in which instances are counted, one that every instance has a
# directory in: the v1 pids controller, else the cgroup2 tree (hybrid or pure v2).
it_cgroup_hier() {
	local d
	for d in /sys/fs/cgroup/pids /sys/fs/cgroup/unified; do
		[ -d "$d" ] && { echo "$d"; return 0; }
	done
	echo /sys/fs/cgroup
}

# The directory of node K's cgroup parent in that hierarchy (it need not exist yet).
it_cgroup_base() { echo "$(it_cgroup_hier)/orch-it-$IT_ID-$1"; }

# node_procs K: one line "INSTANCE PID..." per instance cgroup of node K holding a process.
node_procs() {
	local base c procs
	base=$(it_cgroup_base "$1")
	[ -d "$base" ] || return 0
	for c in "$base"/*/*/; do
		[ -f "$c/cgroup.procs" ] || continue
		procs=$(tr '\n' ' ' <"$c/cgroup.procs")
		[ -n "$procs" ] && echo "$(basename "$c") $procs"
	done
	return 0
}

# node_count K [SERVICE]: how many instances (of SERVICE) have a process on node K.
node_count() {
	node_procs "$1" | awk -v s="${2:-}" 's == "" || index($1, s "-") == 1' | wc -l
}

# node_cgroups K: how many instance cgroup directories node K has (with a process or not).
node_cgroups() {
	local base
	base=$(it_cgroup_base "$1")
	[ -d "$base" ] || { echo 0; return 0; }
	find "$base" -mindepth 2 -maxdepth 2 -type d | wc -l
}

# testprog_procs: how many processes run the test program, anywhere on the machine.
testprog_procs() { pgrep -c -f "^$IT_TESTPROG( |\$)" || true; }
