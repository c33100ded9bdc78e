#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Spawning and restarting on one node (docs/benchmarks.md, "Spawning and restarting"): N instances
# of a trivial long-running program (bench/stamp, which records its exec time on CLOCK_MONOTONIC)
# started by each of these, one after the other in the same run, and printed side by side:
#
#   exec        orch-agent --standalone, driver exec (the default)
#   systemd     orch-agent --standalone --driver systemd, against a systemd user manager
#   sdbus       systemd transient units, StartTransientUnit with 64 calls in flight over the
#               manager's private socket (bench/spawn-sdstart: systemd-run's best case)
#   sdbus-acct  the same with CPU, memory and tasks accounting, as orch's systemd driver asks for
#               (its cost is the manager's: more cgroups per unit)
#   systemd-run a plain `systemd-run --user --no-block` loop
#   supervisord supervisord (Debian's), its own instance and config, one program with N processes
#   bare        bench/spawn-bare: fork+exec, three new v1 cgroups per child (cgroup.procs), the floor
#
# For each: the time until all N were exec'd (their stamps) and until the supervisor itself
# reports all N running (orch: its events; systemd: the start jobs done, or ActiveState=active
# for the loop; supervisord: RUNNING), cross-checked by counting the live processes; then ROUNDS
# times SIGKILL of one instance's current process, PAUSE ms apart, and the time from the kill() to
# the replacement's exec (p50, p99, max); the supervisor's RSS (VmRSS, VmHWM) with N instances;
# the processes that are neither the supervisor nor an instance (helpers). For orch, also an
# agent kill -9 and a new agent: the time until it reports all N re-adopted, same pids.
# systemd uses Restart=always, RestartSec=0, StartLimitIntervalSec=0 (and one extra unit measures
# the default RestartSec); supervisord autorestart=true, startsecs=0 (no 1 s wait for RUNNING).
#
#   bench/spawn.sh [--build DIR] [-n N] [--rounds R] [--pause MS] [--only "ROW ..."] [--dir DIR]
#                  [--runs K] [--keep]
#
#   --build DIR  the build tree with agent/orch-agent and bench/{stamp,spawn-probe,...} [.]
#   -n N         instances per row [1000]
#   --rounds R   SIGKILLs per row [100]
#   --pause MS   idle time before each SIGKILL [200]
#   --only ROWS  the rows to run, from: exec systemd sdbus sdbus-acct systemd-run supervisord bare
#                [all]
#   --dir DIR    where the run's directory goes: the agents' data dirs (a log file, a state file
#                and a work directory per instance), supervisord's log files, the stamps [/tmp]
#   --runs K     repeat the whole run K times, each with its own table, the rows in a rotated
#                order (a row is not always the first, or the one after supervisord); then the
#                range of each figure over the runs [1]
#   --keep       keep the run's directory (logs, stamps, every restart delta)
#
# Needs root (cgroups, a systemd user manager). The machine's load is printed with the results:
# the figures move with it. Every process, cgroup and directory the run makes goes at exit, also
# on failure or ^C; /run/systemd/system only if the run made it. (A SIGTERM to the script alone
# is acted on when the step in progress ends; ^C ends that step at once.)
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -Eeuo pipefail

build=$(pwd)
n=1000
rounds=100
pause=200
only="exec systemd sdbus sdbus-acct systemd-run supervisord bare"
keep=0
runs=1
base=/tmp
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift 2 ;;
	-n) n=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--pause) pause=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	--dir) base=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
	*) echo "spawn.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
	esac
done
for r in $only; do
	case $r in
	exec | systemd | sdbus | sdbus-acct | systemd-run | supervisord | bare) ;;
	*) echo "spawn.sh: unknown row '$r'" >&2; exit 2 ;;
	esac
done
want() { [[ " $only " == *" $1 "* ]]; }

agent=$build/agent/orch-agent
stamp=$build/bench/stamp
probe=$build/bench/spawn-probe
bare=$build/bench/spawn-bare
sdstart=$build/bench/spawn-sdstart
for p in "$agent" "$stamp" "$probe" "$bare" "$sdstart"; do
	[ -x "$p" ] || { echo "spawn.sh: $p is not built (run make in the build tree, or give --build)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "spawn.sh: needs root (instance cgroups, a systemd user manager)" >&2; exit 1; }
if want systemd || want sdbus || want sdbus-acct || want systemd-run; then
	if [ ! -x /lib/systemd/systemd ] || ! command -v systemd-run >/dev/null || ! command -v systemctl >/dev/null; then
		echo "spawn.sh: the systemd rows need systemd (apt-get install systemd)" >&2
		exit 1
	fi
fi
if want supervisord; then
	if ! command -v supervisord >/dev/null || ! command -v supervisorctl >/dev/null; then
		echo "spawn.sh: the supervisord row needs supervisor (scripts/deps --bench)" >&2
		exit 1
	fi
fi
# a pidfd or a pipe per instance, several per supervisord process
ulimit -n "$(ulimit -Hn)"

# not orch-*: other tests' cleanups sweep /tmp/orch-* and orch-* cgroups
tag=bench-spawn-$$
tmp=$(mktemp -d "$base/bench-spawn.XXXXXX")
chmod 755 "$tmp"
pids=()          # supervisors: agents, supervisord, spawn-bare
managers=()      # systemd user managers
made_sysdir=0
manager_dirs=(/run/systemd/unit-root /run/systemd/dynamic-uid /run/systemd/propagate /run/systemd/systemd-units-load)
declare -A had_dir
for d in "${manager_dirs[@]}"; do [ -e "$d" ] && had_dir[$d]=1; done

# Every process any row's stamps recorded, if it still runs this run's stamp (pids are checked,
# not guessed from names).
kill_stamped() {
	local f p
	while read -r f; do
		while read -r p; do
			grep -qF "$f" "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		done < <(awk '{ print $2 }' "$f" | sort -un)
	done < <(find "$tmp" -name stamps)
	return 0
}

# Everything in the run's cgroups dies, and the cgroups go.
kill_cgroups() {
	local d c p found
	for _ in 1 2 3 4 5; do
		found=
		for d in /sys/fs/cgroup/"$tag"-* /sys/fs/cgroup/*/"$tag"-*; do
			[ -d "$d" ] || continue
			found=1
			while read -r c; do
				[ -w "$c/cgroup.kill" ] && echo 1 >"$c/cgroup.kill" 2>/dev/null
				for p in $(cat "$c/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
				rmdir "$c" 2>/dev/null || true # not yet empty: the next round
			done < <(find "$d" -depth -type d)
		done
		[ -z "$found" ] && return 0
		sleep 0.2
	done
	echo "spawn.sh: cgroups under /$tag-* were not all removed" >&2
}

# forget PID: a child that has been waited for; its pid may now be anyone's.
forget() {
	local -a rest=() restm=()
	local p
	for p in "${pids[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
	for p in "${managers[@]}"; do [ "$p" = "$1" ] || restm+=("$p"); done
	pids=("${rest[@]}")
	managers=("${restm[@]}")
}

# stop_pid PID SECONDS: SIGTERM to a child of this script, then SIGKILL when it outlives SECONDS.
stop_pid() {
	local p=$1 i
	if kill -TERM "$p" 2>/dev/null; then
		for ((i = 0; i < $2 * 10; i++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
	fi
	wait "$p" 2>/dev/null || true
	forget "$p"
}

cleanup() {
	local p d
	set +e
	for p in "${pids[@]}"; do stop_pid "$p" 30; done
	for p in "${managers[@]}"; do stop_pid "$p" 30; done
	kill_stamped
	kill_cgroups
	for d in "${manager_dirs[@]}"; do
		[ -n "${had_dir[$d]:-}" ] || { rmdir "$d" 2>/dev/null || rm -f "$d" 2>/dev/null; }
	done
	[ "$made_sysdir" = 1 ] && rmdir /run/systemd/system
	if [ "$keep" = 1 ]; then
		echo "kept: $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'echo "spawn.sh: interrupted" >&2; exit 1' INT TERM
trap 'echo "spawn.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

fail() {
	echo "spawn.sh: $*" >&2
	exit 1
}

now() { "$probe" now; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
cpu_sec() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# exec_time STAMPS: "NAMES NSEC", the distinct instances recorded and the moment the last of them
# was first exec'd.
exec_time() {
	awk '!($1 in t) { t[$1] = $3; n++ } END { m = 0; for (k in t) if (t[k] + 0 > m) m = t[k] + 0; printf "%d %.0f\n", n, m }' "$1"
}

# live STAMPS: live (not zombie) processes "stamp STAMPS ...", and how many instances' last
# recorded pids are among them.
live() {
	ps -eo pid=,stat=,args= | awk -v f="$1" '
		FILENAME == f { last[$1] = $2; next }
		$2 !~ /^Z/ && $4 == f { n++; alive[$1] = 1 }
		END { k = 0; for (x in last) if (last[x] in alive) k++; printf "%d %d\n", n, k }' "$1" -
}

# helpers ROOT CGROUP_DIR...: processes below ROOT (descendants) or in those cgroup trees that are
# neither ROOT nor an instance (bench/stamp). Prints the count, then their names.
helpers() {
	local root=$1 list
	shift
	list=$({
		ps -eo pid=,ppid= | awk -v root="$root" '{ par[$1] = $2 }
			END { for (p in par) { q = p; for (i = 0; i < 64 && (q in par); i++) { if (par[q] == root) { print p; break }; q = par[q] } } }'
		# (a unit's cgroup can go while it is walked)
		for d in "$@"; do
			if [ -d "$d" ]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
		done
	} | awk -v root="$root" '$1 != root' | sort -un | paste -sd, -)
	[ -n "$list" ] || { echo 0; return; }
	{ ps -o comm= -p "$list" || true; } | awk '$1 != "stamp" { n++; c[$1]++ } END { printf "%d", n; for (k in c) printf " %s:%d", k, c[k]; print "" }'
}

# unified_dir NAME: where a cgroup of that name sits in the cgroup2 tree (pure v2 or hybrid).
unified_dir() {
	if [ -d /sys/fs/cgroup/unified ]; then echo "/sys/fs/cgroup/unified/$1"; else echo "/sys/fs/cgroup/$1"; fi
}

# wait_file FILE N TIMEOUT_S SUBSTRING...: the monotonic moment N matching lines were there.
wait_file() {
	local f=$1 k=$2 t=$3 out
	shift 3
	out=$("$probe" wait "$f" "$k" $((t * 1000)) "$@") || fail "$f: $out lines of $k within ${t}s (${*:-any line})"
	echo "${out%% *}"
}

# --- a systemd user manager (../shared/TESTING.md) --------------------------------------------

# start_manager NAME: a fresh user manager in cgroups of its own; sets mgr_pid, mgr_rt, mgr_addr, mgr_cg.
start_manager() {
	local name=$1 home i
	mgr_rt=$rdir/$name/rt
	home=$rdir/$name/home
	mkdir -p "$mgr_rt" "$home"
	chmod 700 "$mgr_rt"
	# made only if absent (another test's manager may rely on it), and then removed at the end
	if [ "$made_sysdir" = 0 ] && mkdir /run/systemd/system 2>/dev/null; then
		made_sysdir=1
	fi
	mgr_cg=$tag-$name-mgr
	(
		# its own cgroup in every hierarchy, so that it does not move the host's processes around
		# (cpuset refuses a process before it is configured: skipped)
		for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
			if [ -f "$h/cgroup.procs" ] && [ "${h%/}" != /sys/fs/cgroup/cpuset ] && mkdir -p "$h$mgr_cg"; then
				echo "$BASHPID" >"$h$mgr_cg/cgroup.procs" 2>/dev/null || true
			fi
		done
		XDG_RUNTIME_DIR=$mgr_rt HOME=$home exec /lib/systemd/systemd --user
	) >"$rdir/$name/manager.log" 2>&1 &
	mgr_pid=$!
	managers+=("$mgr_pid")
	mgr_addr=unix:path=$mgr_rt/systemd/private
	for ((i = 0; i < 100; i++)); do
		kill -0 "$mgr_pid" 2>/dev/null || fail "the systemd user manager exited: $(tail -n 5 "$rdir/$name/manager.log")"
		case $(XDG_RUNTIME_DIR=$mgr_rt systemctl --user is-system-running 2>/dev/null || true) in
		running | degraded) return 0 ;;
		esac
		sleep 0.1
	done
	fail "the systemd user manager did not come up within 10 s"
}

stop_manager() {
	stop_pid "$mgr_pid" 60
	kill_cgroups
}

# --- results -----------------------------------------------------------------------------------

declare -A R

# restart ROW STAMPS NAME [ROUNDS]: the SIGKILL loop on one instance.
restart() {
	local row=$1 out
	out=$("$probe" restart "$2" "$3" "${4:-$rounds}" "$pause" 10000 --out "$rdir/$row-restarts.txt") ||
		fail "$row: restart loop failed"
	R[$row,p50]=$(awk '{ print $2 }' <<<"$out")
	R[$row,p99]=$(awk '{ print $4 }' <<<"$out")
	R[$row,max]=$(awk '{ print $6 }' <<<"$out")
	R[$row,rounds]=$(awk '{ print $10 }' <<<"$out")
}

# started ROW STAMPS T0 T_RUNNING CPU: records the start figures and cross-checks the processes.
started() {
	local row=$1 st live_n names
	read -r names st <<<"$(exec_time "$2")"
	[ "$names" = "$n" ] || fail "$row: $names of $n instances recorded an exec"
	R[$row,exec]=$(secs "$3" "$st")
	R[$row,running]=$(secs "$3" "$4")
	R[$row,cpu]=$5
	read -r live_n names <<<"$(live "$2")"
	if [ "$live_n" != "$n" ] || [ "$names" != "$n" ]; then
		fail "$row: $live_n processes of $names instances alive, not $n"
	fi
	R[$row,live]=$live_n
	echo "  $row: $n exec'd in ${R[$row,exec]} s, reported running in ${R[$row,running]} s ($live_n live processes; load $(load))"
}

memory() { # memory ROW PID [PID]: VmRSS and VmHWM of the supervisor (and of a second process)
	local row=$1 rss hwm
	rss=$(status_kib "$2" VmRSS)
	hwm=$(status_kib "$2" VmHWM)
	R[$row,rss]=$(kib_mib "$rss")
	R[$row,hwm]=$(kib_mib "$hwm")
	R[$row,threads]=$(status_kib "$2" Threads)
	if [ $# -ge 3 ]; then
		R[$row,rss2]=$(kib_mib "$(status_kib "$3" VmRSS)")
		R[$row,hwm2]=$(kib_mib "$(status_kib "$3" VmHWM)")
	fi
}

# --- orch-agent ----------------------------------------------------------------------------------

manifest() { # manifest DRIVER STAMPS
	cat <<EOF
kind: service
name: spawn
replicas: $n
user: root
driver: $1
command: ["$stamp", "$2"]
restart: {policy: always, backoff: 0s}
EOF
}

# run_agent ROW DRIVER [AGENT FLAGS...]
run_agent() {
	local row=$1 driver=$2 dir=$rdir/$1 t0 t1 apid victim h before after t_adopt t_rep mcpu0
	shift 2
	local parent=/$tag-$row
	local -a flags=(--standalone -f "$dir/spawn.yaml" --data-dir "$dir/data" --cgroup-parent "$parent"
		--port-range 46000-46099 --name "$tag" --allow-root "$@")
	mkdir -p "$dir"
	chmod 755 "$dir"
	manifest "$driver" "$dir/stamps" >"$dir/spawn.yaml"
	: >"$dir/stamps"
	: >"$dir/agent-1.log"
	[ -n "${mgr_pid:-}" ] && mcpu0=$(cpu_sec "$mgr_pid")
	t0=$(now)
	"$agent" "${flags[@]}" >"$dir/agent-1.log" 2>&1 &
	apid=$!
	pids+=("$apid")
	t1=$(wait_file "$dir/agent-1.log" "$n" 300 'msg="instance event"' 'state=running')
	started "$row" "$dir/stamps" "$t0" "$t1" "$(cpu_sec "$apid")"
	[ -n "${mgr_pid:-}" ] && R[$row,cpu2]=$(awk -v a="$mcpu0" -v b="$(cpu_sec "$mgr_pid")" 'BEGIN { printf "%.2f", b - a }')

	victim=spawn-$((n / 2))
	restart "$row" "$dir/stamps" "$victim"
	memory "$row" "$apid" ${mgr_pid:+"$mgr_pid"}
	h=$(helpers "$apid" "$(unified_dir "${parent#/}")")
	# with systemd the instances are the manager's children, in its cgroup
	[ -n "${mgr_pid:-}" ] && h="$h / manager: $(helpers "$mgr_pid" "$(unified_dir "$mgr_cg")")"
	R[$row,helpers]=$(awk -F' / manager: ' '{ split($1, a, " "); split($2, b, " "); print a[1] + b[1] }' <<<"$h")
	echo "  $row: restart p50 ${R[$row,p50]} ms, p99 ${R[$row,p99]} ms; agent VmRSS ${R[$row,rss]} MiB, VmHWM ${R[$row,hwm]} MiB, ${R[$row,threads]} threads; helpers: agent $h"

	# re-adoption: kill -9, a new agent; the same pids, nothing exec'd again
	before=$(awk '{ last[$1] = $2 } END { for (k in last) print k, last[k] }' "$dir/stamps" | sort)
	local lines
	lines=$(wc -l <"$dir/stamps")
	kill -KILL "$apid"
	wait "$apid" 2>/dev/null || true
	forget "$apid"
	: >"$dir/agent-2.log"
	t0=$(now)
	"$agent" "${flags[@]}" >"$dir/agent-2.log" 2>&1 &
	apid=$!
	pids+=("$apid")
	t_adopt=$(wait_file "$dir/agent-2.log" 1 120 'instances of a previous agent')
	t_rep=$(wait_file "$dir/agent-2.log" "$n" 120 'msg="instance event"' 'state=running')
	R[$row,adopt]=$(secs "$t0" "$t_adopt")
	R[$row,adopt_rep]=$(secs "$t0" "$t_rep")
	grep -q "re-adopted $n instances" "$dir/agent-2.log" ||
		fail "$row: $(grep -o 're-adopted [0-9]* instances' "$dir/agent-2.log" || echo none) re-adopted, not $n"
	after=$(grep 'msg="instance event"' "$dir/agent-2.log" | grep 'state=running' |
		sed -n 's/.* instance=\([^ ]*\) .* pid=\([0-9]*\) .*/\1 \2/p' | sort -u)
	[ "$before" = "$after" ] || fail "$row: pids changed across the agent restart: $(diff <(echo "$before") <(echo "$after") | head -5)"
	[ "$(wc -l <"$dir/stamps")" = "$lines" ] || fail "$row: instances were exec'd again during the re-adoption"
	R[$row,adopt_rss]=$(kib_mib "$(status_kib "$apid" VmRSS)")
	echo "  $row: agent kill -9 and restart: $n re-adopted in ${R[$row,adopt]} s, reported in ${R[$row,adopt_rep]} s, same pids (load $(load))"

	# the agent stops them all (no --keep-instances)
	t0=$(now)
	kill -TERM "$apid"
	wait "$apid" || fail "$row: the agent exited with status $? on SIGTERM"
	forget "$apid"
	R[$row,stop]=$(secs "$t0" "$(now)")
	[ "$(live "$dir/stamps" | cut -d' ' -f1)" = 0 ] || fail "$row: instances survived the agent's stop"
}

row_exec() {
	echo "orch-agent, driver exec"
	mgr_pid='' mgr_cg=''
	run_agent exec exec
	kill_cgroups
}

row_systemd() {
	echo "orch-agent, driver systemd (a systemd user manager)"
	start_manager systemd
	run_agent systemd systemd --driver systemd --systemd-address "$mgr_addr"
	stop_manager
	mgr_pid='' mgr_cg=''
}

# --- systemd transient units -------------------------------------------------------------------

# sdbus_row ROW [--accounting]
sdbus_row() {
	local row=$1 dir=$rdir/$1 t0 out cpu0 h
	shift
	mkdir -p "$dir"
	start_manager "$row"
	: >"$dir/stamps"
	cpu0=$(cpu_sec "$mgr_pid")
	t0=$(now)
	out=$("$sdstart" "$mgr_addr" "$n" 64 sp "$@" "$stamp" "$dir/stamps" {}) || fail "$row: $out"
	# spawn-sdstart tells the moment the last start job was removed
	started "$row" "$dir/stamps" "$t0" "${out##* }" \
		"$(awk -v a="$cpu0" -v b="$(cpu_sec "$mgr_pid")" 'BEGIN { printf "%.2f", b - a }')"
	restart "$row" "$dir/stamps" sp-$((n / 2))
	if [ $# = 0 ]; then
		# the manager's default RestartSec, on one more unit
		"$sdstart" "$mgr_addr" 1 1 spd --default-restart-sec "$stamp" "$dir/stamps" {} >/dev/null ||
			fail "$row: the unit with the default RestartSec did not start"
		restart "$row-default" "$dir/stamps" spd-0 $((rounds < 20 ? rounds : 20))
	fi
	memory "$row" "$mgr_pid"
	h=$(helpers "$mgr_pid" "$(unified_dir "$mgr_cg")")
	R[$row,helpers]=${h%% *}
	echo "  $row: restart p50 ${R[$row,p50]} ms${R[$row-default,p50]:+ (default RestartSec: ${R[$row-default,p50]} ms)}; manager VmRSS ${R[$row,rss]} MiB; helpers $h"
	stop_manager
}

row_sdbus() {
	echo "systemd transient units: StartTransientUnit, 64 in flight (bench/spawn-sdstart)"
	sdbus_row sdbus
}

row_sdbus_acct() {
	echo "the same with CPU, memory and tasks accounting (the properties orch's systemd driver sets)"
	sdbus_row sdbus-acct --accounting
}

row_systemd_run() {
	local row=systemd-run dir=$rdir/systemd-run t0 t1 i cpu0 k
	echo "systemd transient units: a systemd-run --user --no-block loop"
	mkdir -p "$dir"
	start_manager systemd-run
	: >"$dir/stamps"
	cpu0=$(cpu_sec "$mgr_pid")
	t0=$(now)
	for ((i = 0; i < n; i++)); do
		XDG_RUNTIME_DIR=$mgr_rt systemd-run --user --no-block --quiet --unit="sr-$i" -p Type=exec \
			-p Restart=always -p RestartSec=0 -p StartLimitIntervalSec=0 "$stamp" "$dir/stamps" "sr-$i" ||
			fail "systemd-run $i failed"
	done
	# ActiveState=active of every unit, asked no more than every 250 ms (each ask costs the manager)
	for ((k = 0; ; k++)); do
		[ "$(XDG_RUNTIME_DIR=$mgr_rt systemctl --user list-units 'sr-*' --state=active --no-legend | wc -l)" = "$n" ] && break
		[ $k -lt 1200 ] || fail "systemd-run: not all $n units active within 300 s"
		sleep 0.25
	done
	t1=$(now)
	started "$row" "$dir/stamps" "$t0" "$t1" \
		"$(awk -v a="$cpu0" -v b="$(cpu_sec "$mgr_pid")" 'BEGIN { printf "%.2f", b - a }')"
	memory "$row" "$mgr_pid"
	R[$row,helpers]=$(helpers "$mgr_pid" "$(unified_dir "$mgr_cg")" | cut -d' ' -f1)
	stop_manager
}

# --- supervisord ---------------------------------------------------------------------------------

row_supervisord() {
	local row=supervisord dir=$rdir/supervisord t0 t1 spid k running h
	echo "supervisord $(supervisord --version)"
	mkdir -p "$dir/logs"
	cat >"$dir/supervisord.conf" <<EOF
[unix_http_server]
file=$dir/supervisor.sock

[supervisord]
logfile=$dir/supervisord.log
pidfile=$dir/supervisord.pid
childlogdir=$dir/logs
nodaemon=true
; above the descriptors it holds (five per child: three pipes, two log files), or the children
; inherit stray ones; no higher: each child closes every descriptor below minfds, one by one
minfds=$((5 * n + 64))
minprocs=$((n + 256))

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$dir/supervisor.sock

[program:s]
command=$stamp $dir/stamps s-%(process_num)d
process_name=%(program_name)s-%(process_num)d
numprocs=$n
autostart=true
autorestart=true
; RUNNING at once (the default waits 1 s), and a restart is not a "start retry"
startsecs=0
user=root
EOF
	: >"$dir/stamps"
	t0=$(now)
	supervisord -c "$dir/supervisord.conf" >"$dir/stdout.log" 2>&1 &
	spid=$!
	pids+=("$spid")
	wait_file "$dir/stamps" "$n" 300 >/dev/null
	# RUNNING as supervisord sees it: the same call supervisorctl status makes, no more than every 200 ms
	for ((k = 0; ; k++)); do
		running=$(curl -s --unix-socket "$dir/supervisor.sock" http://localhost/RPC2 -H 'Content-Type: text/xml' \
			--data '<?xml version="1.0"?><methodCall><methodName>supervisor.getAllProcessInfo</methodName></methodCall>' |
			grep -c '<string>RUNNING</string>' || true)
		[ "$running" = "$n" ] && break
		[ $k -lt 1500 ] || fail "supervisord: $running of $n RUNNING after 300 s"
		sleep 0.2
	done
	t1=$(now)
	started "$row" "$dir/stamps" "$t0" "$t1" "$(cpu_sec "$spid")"
	[ "$(supervisorctl -c "$dir/supervisord.conf" status | grep -c RUNNING)" = "$n" ] ||
		fail "supervisord: supervisorctl status does not show $n RUNNING"
	restart "$row" "$dir/stamps" s-$((n / 2))
	memory "$row" "$spid"
	R[$row,fds]=$(find "/proc/$spid/fd" -mindepth 1 | wc -l)
	[ "${R[$row,fds]}" -lt $((5 * n + 64)) ] || echo "  supervisord holds ${R[$row,fds]} descriptors, minfds is $((5 * n + 64))" >&2
	h=$(helpers "$spid")
	R[$row,helpers]=${h%% *}
	echo "  $row: restart p50 ${R[$row,p50]} ms; VmRSS ${R[$row,rss]} MiB; ${R[$row,fds]} descriptors; helpers $h"
	stop_pid "$spid" 120
	kill_stamped
}

# --- the floor -----------------------------------------------------------------------------------

row_bare() {
	local row=bare dir=$rdir/bare t0 bpid h
	echo "bare fork+exec, three new v1 cgroups per child (bench/spawn-bare)"
	mkdir -p "$dir"
	: >"$dir/stamps"
	t0=$(now)
	"$bare" "$n" "$tag-bare" "$stamp" "$dir/stamps" {} >"$dir/bare.log" 2>&1 &
	bpid=$!
	pids+=("$bpid")
	wait_file "$dir/stamps" "$n" 300 >/dev/null
	# no notion of "running" but the exec: the same moment
	started "$row" "$dir/stamps" "$t0" "$(exec_time "$dir/stamps" | cut -d' ' -f2)" "$(cpu_sec "$bpid")"
	restart "$row" "$dir/stamps" bare-$((n / 2))
	memory "$row" "$bpid"
	h=$(helpers "$bpid")
	R[$row,helpers]=${h%% *}
	echo "  $row: restart p50 ${R[$row,p50]} ms; helpers $h"
	stop_pid "$bpid" 60
	kill_cgroups
}

# --- the run -------------------------------------------------------------------------------------

# fs_note DIR: the file system the instances' files go to. On ext4 without a journal, creating a
# file skips, one by one, every free inode released in the last minute (six while its inode table
# block is dirty): recently_deleted() in ext4's inode allocator. On a machine that churns files,
# this benchmark's own rows included, each create then costs up to a millisecond.
fs_note() {
	local src type dev
	read -r src type <<<"$(df --output=source,fstype "$1" | tail -n 1)"
	dev=${src##*/}
	local -a journal=(/proc/fs/jbd2/"$dev"-*)
	if [ "$type" = ext4 ] && [ -d "/proc/fs/ext4/$dev" ] && [ ! -e "${journal[0]}" ]; then
		echo "$type on $src, without a journal"
	else
		echo "$type on $src"
	fi
}

val() { echo "${R[$1,$2]:-${3--}}"; }
fmt='%-34s %8s %8s %6s %7s %7s %7s %7s %7s %7s %8s %8s\n'
keys=(exec running cpu p50 p99 max rss hwm helpers adopt adopt_rep)
header() { # uses $fmt
	# shellcheck disable=SC2059
	printf "$fmt" "" "$n start" "(s)" "CPU" "restart" "(ms)" "" "RSS" "(MiB)" "helper" "re-adopt" "$n (s)"
	# shellcheck disable=SC2059
	printf "$fmt" "" "exec'd" "running" "(s)" "p50" "p99" "max" "VmRSS" "VmHWM" "procs" "adopted" "reported"
}
line() { # line ROW LABEL [PLACEHOLDER]: PLACEHOLDER for what was not measured ["-"]
	local k
	local -a v=()
	for k in "${keys[@]}"; do v+=("$(val "$1" "$k" "${3--}")"); done
	# shellcheck disable=SC2059
	printf "$fmt" "$2" "${v[@]}" | sed 's/ *$//'
}
declare -A label=(
	[exec]="orch, driver exec"
	[systemd]="orch, driver systemd"
	[systemd-manager]="  + its systemd user manager"
	[sdbus]="systemd, 64 StartTransientUnit"
	[sdbus-default]="  RestartSec default"
	[sdbus-acct]="  + CPU, memory, tasks accounting"
	[systemd-run]="systemd, systemd-run loop"
	[supervisord]="supervisord $(supervisord --version 2>/dev/null || true)"
	[bare]="bare fork+exec+3 v1 cgroups"
)
table_rows() { # the rows of the table, in a fixed order, with their sub-rows
	local r
	for r in exec systemd sdbus sdbus-acct systemd-run supervisord bare; do
		want "$r" || continue
		echo "$r"
		[ "$r" = systemd ] && echo systemd-manager
		[ "$r" = sdbus ] && echo sdbus-default
	done
	return 0
}
table() {
	local r
	R[systemd-manager,cpu]=${R[systemd,cpu2]:-}
	R[systemd-manager,rss]=${R[systemd,rss2]:-}
	R[systemd-manager,hwm]=${R[systemd,hwm2]:-}
	header
	for r in $(table_rows); do
		case $r in
		systemd-manager) line "$r" "${label[$r]}" "" ;;
		sdbus-default) line "$r" "${label[$r]} (${R[sdbus-default,rounds]:-0} kills)" "" ;;
		*) line "$r" "${label[$r]}" ;;
		esac
	done
	echo
	echo "exec'd: the last instance's own exec time; running: the supervisor's own report (orch: its"
	echo "events; systemd: start jobs done, or ActiveState=active polled every 250 ms for the loop;"
	echo "supervisord: RUNNING polled every 200 ms). CPU: the supervisor's CPU time until all ran (for"
	echo "systemd the manager's during the start). restart: SIGKILL to the replacement's exec, $rounds kills"
	echo "of one instance, $pause ms apart, with $n running. RSS: the agent, systemd --user, supervisord,"
	echo "spawn-bare with $n instances. helper procs: neither the supervisor nor an instance."
	if want exec || want systemd; then
		echo "orch stop of $n (SIGTERM to the agent): exec $(val exec stop) s, systemd $(val systemd stop) s;"
		echo "agent VmRSS after re-adopting $n: exec $(val exec adopt_rss) MiB, systemd $(val systemd adopt_rss) MiB."
	fi
}

declare -A ALL
order=(exec systemd sdbus sdbus-acct systemd-run supervisord bare)
echo "bench/spawn: $n instances of bench/stamp per row; $rounds SIGKILLs $pause ms apart; $runs run(s);" \
	"$(nproc) CPUs, kernel $(uname -r)"
echo "files in $tmp ($(fs_note "$tmp"))"
for ((run = 1; run <= runs; run++)); do
	rdir=$tmp/run$run
	mkdir -p "$rdir"
	chmod 755 "$rdir"
	R=()
	load0=$(load)
	echo
	echo "--- run $run of $runs, load $load0"
	for ((i = 0; i < ${#order[@]}; i++)); do
		r=${order[(i + run - 1) % ${#order[@]}]}
		want "$r" || continue
		case $r in
		exec) row_exec ;;
		systemd) row_systemd ;;
		sdbus) row_sdbus ;;
		sdbus-acct) row_sdbus_acct ;;
		systemd-run) row_systemd_run ;;
		supervisord) row_supervisord ;;
		bare) row_bare ;;
		esac
	done
	load1=$(load)
	echo
	printf 'run %d of %d: load average at the start %s, at the end %s (%d CPUs, shared); files on %s\n' \
		"$run" "$runs" "$load0" "$load1" "$(nproc)" "$(fs_note "$tmp")"
	table
	for key in "${!R[@]}"; do ALL[$run,$key]=${R[$key]}; done
	ALL[$run,load]="$load0 / $load1"
done

if [ "$runs" -gt 1 ]; then
	echo
	echo "=== ranges over $runs runs (min-max); load average at the start / end of each run:"
	for ((run = 1; run <= runs; run++)); do echo "  run $run: ${ALL[$run,load]}"; done
	fmt='%-34s %11s %11s %9s %13s %13s %13s %11s %11s %6s %10s %10s\n'
	header
	for r in $(table_rows); do
		R=()
		for k in "${keys[@]}"; do
			R[$r,$k]=$(for ((run = 1; run <= runs; run++)); do echo "${ALL[$run,$r,$k]:-}"; done |
				awk 'NF { v = $1 + 0; n++; if (n == 1 || v < lo) { lo = v; los = $1 }; if (n == 1 || v > hi) { hi = v; his = $1 } }
					END { if (n == 0) exit; if (lo == hi) print los; else printf "%s-%s\n", los, his }')
			[ -n "${R[$r,$k]}" ] || unset "R[$r,$k]"
		done
		line "$r" "${label[$r]}" "$( [ "$r" = systemd-manager ] || [ "$r" = sdbus-default ] || echo -)"
	done
fi
