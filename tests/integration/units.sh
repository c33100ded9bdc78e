#!/bin/bash
# The systemd units as built (orch-agent.service, orchd.service, with this installation's paths)
# pass `systemd-analyze verify`.
#
# verify insists that ExecStart= names an executable, and the programs are not installed where the
# built units say (the test runs before `make install`). So the built unit itself is checked for
# its installed path, and a temporary copy whose ExecStart= points at the build tree's binary is
# what verify reads. --man=no: verify would run `man` for Documentation=, and no page is installed.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

top_builddir=${top_builddir:-$(cd "$(dirname "$0")/../.." && pwd)}

command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze is not installed"; exit 77; }

tmp=$(mktemp -d)
# verify leaves a timestamp file there (it loads units as a manager would); it goes again when the
# test made it
units_load=/run/systemd/systemd-units-load
had_units_load=
[ -e "$units_load" ] && had_units_load=1
cleanup() {
	rm -rf "$tmp"
	[ -n "$had_units_load" ] || rm -f "$units_load"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# Can verify run here at all? A unit that cannot be wrong says.
printf '[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n' >"$tmp/orch-probe.service"
if ! out=$(systemd-analyze verify --man=no "$tmp/orch-probe.service" 2>&1); then
	echo "SKIP: systemd-analyze verify does not work here: $out"
	exit 77
fi
rm -f "$tmp/orch-probe.service"

verified=0
# check UNIT PROGRAM: UNIT (in the build tree) runs PROGRAM (a path in the build tree).
check() {
	local unit=$top_builddir/$1 prog=$top_builddir/$2 name exec out
	name=$(basename "$unit")
	[ -f "$unit" ] || fail "$unit is not built (make builds it)"
	! grep -n '@[a-z_]*@' "$unit" || fail "$name has placeholders left"
	exec=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
	case "$exec" in
	/*/"$(basename "$prog")") ;;
	*) fail "$name: ExecStart= runs '$exec', not an installed $(basename "$prog")" ;;
	esac
	if [ ! -x "$prog" ]; then
		echo "skip - $name: $prog is not built"
		return 0
	fi
	sed "s|^ExecStart=$exec|ExecStart=$prog|" "$unit" >"$tmp/$name"
	out=$(systemd-analyze verify --man=no "$tmp/$name" 2>&1) || fail "systemd-analyze verify $name: $out"
	# verify exits 0 on some problems it only warns about; a unit of ours has none
	[ -z "$out" ] || fail "systemd-analyze verify $name warns: $out"
	echo "ok - $name passes systemd-analyze verify (ExecStart=$exec)"
	verified=$((verified + 1))
}

check agent/orch-agent.service agent/orch-agent
check orchd/orchd.service orchd/orchd

[ "$verified" -gt 0 ] || { echo "SKIP: no program is built to verify a unit against"; exit 77; }
