#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The control plane's placement benchmark (docs/benchmarks.md, "Placement"): a real orchd, N nodes
# simulated by bench/sched-sim (the real protocol; every start acked at once and reported running),
# and services totalling M instances applied through the real API. For each M it measures the time
# from the POST /v1/apply to the moment the nodes have acked M starts and orchd reports M instances
# running (placed, persisted, delivered, acknowledged, confirmed), orchd's peak RSS, its CPU time
# and the store's size, and prints them beside Nomad's published C1M figure.
#
#   bench/sched.sh [--build DIR] [--nodes N] [--instances "M ..."] [--services S] [--quick]
#                  [--no-fsync] [--timeout S] [--keep] [--perf] [--orchd-flag ARG]... [--wrap "CMD ARGS"]
#
#   --build DIR    the build tree with orchd/orchd and bench/sched-sim [the current directory]
#   --nodes N      simulated nodes [5000]
#   --instances L  the runs, one per M [100000 1000000]
#   --services S   services per run; replicas M/S each [200]
#   --quick        --nodes 200 --instances 20000 --services 20
#   --no-fsync     orchd --store-no-fsync (commits survive a crash of orchd, not of the machine)
#   --timeout S    give up on a run after S seconds [120 + M/1000]
#   --keep         keep the data dirs and logs (printed at the end)
#   --perf         record orchd with perf record -g during the apply (perf.data in the run's dir)
#   --orchd-flag A one more argument for orchd, repeatable
#   --wrap CMD     run orchd under CMD, e.g. --wrap "valgrind --tool=callgrind" with --quick
#
# Every process and temporary directory goes at exit, also on failure or ^C.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

build=$(pwd)
nodes=5000
instances="100000 1000000"
services=200
fsync=1
keep=0
perf=0
timeout_s=
extra=()
wrap=()
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	--nodes) nodes=$2; shift 2 ;;
	--instances) instances=$2; shift 2 ;;
	--services) services=$2; shift 2 ;;
	--quick) nodes=200; instances=20000; services=20; shift ;;
	--no-fsync) fsync=0; shift ;;
	--timeout) timeout_s=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	--perf) perf=1; shift ;;
	--orchd-flag) extra+=("$2"); shift 2 ;;
	--wrap) read -r -a wrap <<<"$2"; shift 2 ;;
	-h | --help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
	*) echo "sched.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done

orchd=$build/orchd/orchd
sim=$build/bench/sched-sim
for p in "$orchd" "$sim"; do
	[ -x "$p" ] || { echo "sched.sh: $p is not built (run make in the build tree, or give --build)" >&2; exit 1; }
done
for c in curl jq ss; do
	command -v "$c" >/dev/null || { echo "sched.sh: $c is needed (apt-get install curl jq iproute2)" >&2; exit 1; }
done
[ "$perf" = 0 ] || command -v perf >/dev/null || { echo "sched.sh: --perf needs perf (linux-perf)" >&2; exit 1; }

# 5,000 connections on each side, plus the store and the API.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((nodes + 256)) ]; then
	ulimit -Hn $((nodes + 256)) 2>/dev/null || {
		echo "sched.sh: $nodes nodes need $((nodes + 256)) descriptors; the hard limit is $hard" >&2
		exit 1
	}
fi
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d /tmp/orch-sched.XXXXXX)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$keep" = 1 ]; then
		echo "kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "sched.sh: $*" >&2
	exit 1
}

now_ms() {
	date +%s%3N
}

# A port no socket uses, below the ephemeral range (the simulator's 5,000 connections take their
# local ports from there). orchd is started right after; a lost race fails the start, loudly.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		[ -z "$(ss -Htan "sport = :$p")" ] && { echo "$p"; return; }
	done
}

# The services of one run: S services of M/S replicas with five sizes; a quarter pinned to one
# zone, a fifth binpacked. The sizes average 105m and 218Mi: 200 instances on a 32-core, 128Gi
# node fill about two thirds of its CPU.
manifest() {
	local m=$1 s=$2 i cpu mem rep
	local -a cpus=(25m 50m 100m 100m 250m) mems=(64Mi 128Mi 128Mi 256Mi 512Mi)
	for ((i = 0; i < s; i++)); do
		rep=$((m / s + (i < m % s ? 1 : 0)))
		cpu=${cpus[i % 5]}
		mem=${mems[i % 5]}
		printf -- '---\nkind: service\nname: svc-%03d\nreplicas: %d\n' "$i" "$rep"
		printf 'command: ["/bin/sleep", "infinity"]\nresources: {cpu: %s, memory: %s}\n' "$cpu" "$mem"
		printf 'ports: [{name: http}]\n'
		if ((i % 4 == 3 || i % 5 == 4)); then
			printf 'placement:\n'
			((i % 4 == 3)) && printf '  constraints: ["zone=z%d"]\n' $((i / 4 % 4 + 1))
			((i % 5 == 4)) && printf '  strategy: binpack\n'
		fi
	done
}

stop() { # stop PID: SIGTERM, a minute to finish (an orchd in a long pass reads it late), then SIGKILL
	kill -TERM "$1" 2>/dev/null || true
	for _ in $(seq 600); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

metric() { # metric BODY NAME{LABELS}: the value of one sample of /metrics output
	awk -v k="$2" '$1 == k { print $2; exit }' <<<"$1"
}

rss_kib() { # rss_kib PID FIELD: VmHWM or VmRSS in KiB
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

cpu_sec() { # cpu_sec PID: user + system CPU seconds so far
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$1/stat"
}

fmt() { # 1000000 -> 1,000,000 (whatever the locale)
	printf '%d' "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'
}

declare -A R

run() {
	local m=$1 dir=$work/m$1 api agent orchd_pid sim_pid token base t0 t1 t_acked="" t_running=""
	local body running deadline perf_pid="" load sum
	mkdir -p "$dir"
	api=$(free_port)
	agent=$(free_port)
	while [ "$agent" = "$api" ]; do agent=$(free_port); done
	base=http://127.0.0.1:$api

	local -a flags=(--data-dir "$dir/data" --api-listen "127.0.0.1:$api" --agent-listen "127.0.0.1:$agent"
		--log-level warn)
	# the gateway is not part of the measurement
	flags+=(--gateway-listen '')
	[ "$fsync" = 1 ] || flags+=(--store-no-fsync)
	(cd "$dir" && exec "${wrap[@]}" "$orchd" "${flags[@]}" "${extra[@]}") 2>"$dir/orchd.log" &
	orchd_pid=$!
	pids+=("$orchd_pid")
	for _ in $(seq 600); do
		curl -sf "$base/healthz" >/dev/null 2>&1 && break
		kill -0 "$orchd_pid" 2>/dev/null || fail "orchd exited: $(tail -n 5 "$dir/orchd.log")"
		sleep 0.1
	done
	curl -sf "$base/healthz" >/dev/null || fail "orchd does not answer on $base"
	token=$(cat "$dir/data/admin.token")

	"$sim" --server "127.0.0.1:$agent" --token-file "$dir/data/join.token" --nodes "$nodes" --expect "$m" \
		>"$dir/sim.out" 2>"$dir/sim.err" &
	sim_pid=$!
	pids+=("$sim_pid")
	t0=$(now_ms)
	until grep -q '^ready ' "$dir/sim.out"; do
		kill -0 "$sim_pid" 2>/dev/null || fail "sched-sim exited: $(tail -n 5 "$dir/sim.err")"
		kill -0 "$orchd_pid" 2>/dev/null || fail "orchd exited: $(tail -n 5 "$dir/orchd.log")"
		[ $(($(now_ms) - t0)) -lt 300000 ] || fail "the nodes did not all register within 300 s"
		sleep 0.2
	done
	R[$m,join_s]=$(awk -v t0="$t0" '/^ready /{ split($3, a, "="); printf "%.1f", (a[2] - t0) / 1000 }' "$dir/sim.out")
	# let the joins settle (their events are flushed) before the clock starts
	sleep 2

	manifest "$m" "$services" >"$dir/services.yaml"
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	R[$m,load]=$load
	R[$m,cpu0]=$(cpu_sec "$orchd_pid")
	if [ "$perf" = 1 ]; then
		perf record -F 499 -g -o "$dir/perf.data" -p "$orchd_pid" 2>"$dir/perf.log" &
		perf_pid=$!
		pids+=("$perf_pid")
		sleep 0.5
	fi

	echo "M=$(fmt "$m"): applying $services services to $(fmt "$nodes") nodes (load $load)" >&2
	t0=$(now_ms)
	curl -sf -o "$dir/apply.json" -H "Authorization: Bearer $token" -H 'Content-Type: application/yaml' \
		--data-binary "@$dir/services.yaml" "$base/v1/apply" || fail "apply failed: $(cat "$dir/apply.json" 2>/dev/null)"
	t1=$(now_ms)
	R[$m,apply_ms]=$((t1 - t0))

	# done: the nodes acked M starts, and orchd counts M instances running. /metrics counts every
	# instance, so it is asked only once the nodes have acked them all (an instance runs for orchd
	# only after its ack and its event): polled throughout, it took 5% of orchd's CPU at 1M.
	deadline=$((t0 + ${timeout_s:-$((120 + m / 1000))} * 1000))
	while :; do
		if [ -z "$t_acked" ] && grep -q '^acked ' "$dir/sim.out"; then
			t_acked=$(sed -n 's/^acked .* t_ms=\([0-9]*\).*/\1/p' "$dir/sim.out")
		fi
		if [ -z "$t_running" ] && [ -n "$t_acked" ]; then
			body=$(curl -sf -m 10 -H "Authorization: Bearer $token" "$base/metrics" || true)
			running=$(metric "$body" 'orch_instances{state="running"}')
			if [ "${running:-0}" -ge "$m" ]; then
				t_running=$(now_ms)
			fi
		fi
		[ -n "$t_acked" ] && [ -n "$t_running" ] && break
		kill -0 "$orchd_pid" 2>/dev/null || fail "orchd exited: $(tail -n 5 "$dir/orchd.log")"
		kill -0 "$sim_pid" 2>/dev/null || fail "sched-sim exited: $(tail -n 5 "$dir/sim.err")"
		if [ "$(now_ms)" -gt "$deadline" ]; then
			body=$(curl -sf -m 10 -H "Authorization: Bearer $token" "$base/metrics" || true)
			running=$(metric "$body" 'orch_instances{state="running"}')
			echo "sched.sh: M=$m did not finish in $(((deadline - t0) / 1000)) s: ${running:-?} running," \
				"$(tail -n 1 "$dir/sim.err")" >&2
			R[$m,timeout]=1
			t_running=${t_running:-$(now_ms)}
			t_acked=${t_acked:-$(now_ms)}
			break
		fi
		sleep 0.1
	done
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
	fi
	R[$m,ms]=$(( (t_acked > t_running ? t_acked : t_running) - t0 ))
	R[$m,acked_ms]=$((t_acked - t0))
	R[$m,hwm]=$(rss_kib "$orchd_pid" VmHWM)
	R[$m,cpu]=$(awk -v a="$(cpu_sec "$orchd_pid")" -v b="${R[$m,cpu0]}" 'BEGIN { printf "%.1f", a - b }')
	# an orchd inside a long pass answers late, or not at all
	body=$(curl -sf -m 60 -H "Authorization: Bearer $token" "$base/metrics" || true)
	R[$m,placements]=$(metric "$body" orch_placements_total)
	R[$m,running]=$(metric "$body" 'orch_instances{state="running"}')
	R[$m,sched_s]=$(metric "$body" orch_placement_seconds_sum)
	R[$m,failures]=$(metric "$body" orch_placement_failures_total)
	R[$m,down]=$(metric "$body" 'orch_nodes{state="down"}')
	# every service ready == replicas, by the API
	R[$m,ready]=$(curl -sf -m 60 -H "Authorization: Bearer $token" "$base/v1/services" |
		jq '[.[] | select(.ready == .replicas)] | length' || true)
	sum=0
	for f in "$dir"/data/state.db*; do
		[ -f "$f" ] && sum=$((sum + $(stat -c %s "$f")))
	done
	R[$m,store]=$sum

	stop "$sim_pid"
	R[$m,sim]=$(grep '^summary ' "$dir/sim.out" || true)
	stop "$orchd_pid"
	echo "M=$(fmt "$m"): $(awk -v ms="${R[$m,ms]}" 'BEGIN { printf "%.1f", ms / 1000 }') s," \
		"peak RSS $((R[$m,hwm] / 1024)) MiB; logs in $dir" >&2
}

for m in $instances; do
	run "$m"
done

# --- the table -------------------------------------------------------------------------------------

col() { # col KEY FORMAT-FN: one cell per run
	local m
	for m in $instances; do
		printf ' %14s' "$("$2" "$m")"
	done
}
c_nodes() { fmt "$nodes"; }
c_inst() { fmt "$1"; }
c_secs() { awk -v ms="${R[$1,ms]}" -v t="${R[$1,timeout]:-}" 'BEGIN { printf "%s%.1f", t ? ">" : "", ms / 1000 }'; }
c_rate() {
	local r
	r=$(fmt "$(awk -v ms="${R[$1,ms]}" -v m="${R[$1,running]:-0}" -v all="$1" -v t="${R[$1,timeout]:-}" \
		'BEGIN { printf "%d", (t ? m : all) / (ms / 1000) }')")
	[ -z "${R[$1,timeout]:-}" ] && echo "$r" || echo "($r)"
}
c_running() { fmt "${R[$1,running]:-0}"; }
c_acked() { awk -v ms="${R[$1,acked_ms]}" 'BEGIN { printf "%.1f", ms / 1000 }'; }
c_apply() { printf '%s ms' "${R[$1,apply_ms]}"; }
c_rss() { printf '%d MiB' $((R[$1,hwm] / 1024)); }
c_rss_inst() { awk -v k="${R[$1,hwm]}" -v m="$1" 'BEGIN { printf "%.0f B", k * 1024 / m }'; }
c_store() { awk -v b="${R[$1,store]}" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
c_cpu() { printf '%s s' "${R[$1,cpu]}"; }
c_cpu_inst() { awk -v c="${R[$1,cpu]}" -v m="$1" 'BEGIN { printf "%.1f us", c * 1e6 / m }'; }
c_sched() { awk -v s="${R[$1,sched_s]:-0}" 'BEGIN { printf "%.2f s", s }'; }
c_ready() { printf '%s/%s' "${R[$1,ready]:-?}" "$services"; }
c_down() { printf '%s' "${R[$1,down]:-?}"; }
c_load() { printf '%s' "${R[$1,load]%% *}"; }
c_join() { printf '%s s' "${R[$1,join_s]}"; }

echo
printf '%-28s' "Placement (bench/sched)"
for m in $instances; do printf ' %14s' "M=$(fmt "$m")"; done
printf ' %16s\n' "Nomad C1M"
row() { # row LABEL FN NOMAD
	printf '%-28s' "$1"
	col "" "$2"
	printf ' %16s\n' "$3"
}
row "nodes" c_nodes "5,000"
row "instances" c_inst "1,000,000"
row "seconds, apply to running" c_secs "~267"
row "placements/s" c_rate "3,750"
row "running at the end" c_running "1,000,000"
row "seconds to all acked" c_acked ""
row "apply answered in" c_apply ""
row "orchd peak RSS (VmHWM)" c_rss ""
row "  per instance" c_rss_inst ""
row "store size (db + WAL)" c_store ""
row "orchd CPU" c_cpu ""
row "  per instance" c_cpu_inst ""
row "  in the scheduler" c_sched ""
row "services ready" c_ready ""
row "nodes down" c_down ""
row "nodes registered in" c_join ""
row "load at start (1 min)" c_load ""
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
	"$(uname -r); store fsync: $([ "$fsync" = 1 ] && echo 'every commit' || echo off)"
echo "Nomad C1M: 1,000,000 containers on 5,000 hosts at 3,750 placements/s with 5 servers (HashiCorp, 2016)."
for m in $instances; do
	[ -z "${R[$m,timeout]:-}" ] ||
		echo "M=$m: TIMED OUT: the figures are at the deadline; placements/s in () counts what ran by then"
	echo "M=$m sched-sim: ${R[$m,sim]#summary }"
done
