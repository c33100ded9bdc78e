#!/bin/sh
# `orch validate` end to end: exit status 0 (valid), 1 (invalid), 2 (bad usage); one
# "FILE: N services OK" line per valid file on stdout; every error as
# FILE:LINE:COLUMN: error: MESSAGE on stderr; directories in lexical order; no server needed.
set -eu

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
orch=$top_builddir/cli/orch
[ -x "$orch" ] || { echo "SKIP: $orch is not built"; exit 77; }
orch=$(cd "$(dirname "$orch")" && pwd)/orch
fixtures=$(cd "$top_srcdir/tests/fixtures/manifests" && pwd)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# run EXPECTED-STATUS ARGS...: runs orch with stdout and stderr captured in $tmp/out and $tmp/err.
run() {
	want=$1
	shift
	status=0
	# no server is needed: point the client at a port nothing listens on
	ORCH_ADDR=http://127.0.0.1:9 "$orch" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
	if [ "$status" != "$want" ]; then
		fail "orch $* exited $status, expected $want"
		sed 's/^/  | /' "$tmp/out" "$tmp/err"
	fi
}

expect_line() { # FILE REGEX
	grep -Eq -- "$2" "$1" || { fail "no line matching '$2' in $(basename "$1"):"; sed 's/^/  | /' "$1"; }
}

# Valid fixtures: one summary line per file, in lexical order, nothing on stderr.
run 0 validate -f "$fixtures/valid"
expect_line "$tmp/out" "^$fixtures/valid/anchors.yaml: 2 services OK\$"
expect_line "$tmp/out" "^$fixtures/valid/minimal.yaml: 1 service OK\$"
expect_line "$tmp/out" "^$fixtures/valid/systemd-sandbox.yml: 1 service OK\$"
[ -s "$tmp/err" ] && fail "errors for valid fixtures: $(cat "$tmp/err")"
n_files=$(find "$fixtures/valid" -maxdepth 1 -name '*.y*ml' | wc -l)
[ "$(wc -l <"$tmp/out")" -eq "$n_files" ] || fail "expected $n_files summary lines"
sort -c "$tmp/out" 2>/dev/null || fail "files not in lexical order"

# The examples shipped in manifests/ are valid (they are what users copy).
if ls "$top_srcdir"/manifests/*.yaml >/dev/null 2>&1; then
	run 0 validate -f "$top_srcdir/manifests/"
	expect_line "$tmp/out" ': [0-9]+ services? OK$'
else
	echo "note: manifests/ holds no example manifests yet"
fi

# Every invalid fixture: exit 1 and each expected "# expect: LINE:COL: MESSAGE" printed as
# FILE:LINE:COL: error: MESSAGE.
# (Run from the fixtures' directory: messages name files as given on the command line.)
cd "$fixtures/invalid"
for f in "$fixtures"/invalid/*.yaml; do
	name=$(basename "$f")
	run 1 validate "$name"
	[ -s "$tmp/out" ] && fail "$name: printed a summary for an invalid file"
	sed -n 's/^# expect: //p' "$f" | while IFS= read -r e; do
		printf '%s:%s: error: %s\n' "$name" "${e%%: *}" "${e#*: }"
	done >"$tmp/want"
	if ! cmp -s "$tmp/want" "$tmp/err"; then
		fail "$name: output differs"
		diff "$tmp/want" "$tmp/err" | sed 's/^/  | /'
	fi
done
cd "$tmp"

# A mix: the valid file still gets its summary, the broken one its errors; exit 1.
cat >"$tmp/a.yaml" <<'YAML'
kind: service
name: a
command: [/bin/true]
YAML
cat >"$tmp/b.yaml" <<'YAML'
kind: service
name: b
command: [/bin/true]
resources:
  memory: 12Q
YAML
run 1 validate -f "$tmp/a.yaml" -f "$tmp/b.yaml"
expect_line "$tmp/out" "^$tmp/a.yaml: 1 service OK\$"
expect_line "$tmp/err" "^$tmp/b.yaml:5:11: error: resources.memory: bad size \"12Q\" \\(use a number with Ki, Mi, Gi, K, M or G, or plain bytes\\)\$"

# The same name in two files: the second file gets the error, naming the first.
cp "$tmp/a.yaml" "$tmp/c.yaml"
run 1 validate "$tmp/a.yaml" "$tmp/c.yaml"
expect_line "$tmp/out" "^$tmp/a.yaml: 1 service OK\$"
expect_line "$tmp/err" "^$tmp/c.yaml:2:7: error: name: duplicate service name 'a' \\(first declared at $tmp/a.yaml:2:7\\)\$"
grep -q "c.yaml: 1 service OK" "$tmp/out" && fail "c.yaml reported OK despite the duplicate"

# Standard input.
status=0
"$orch" validate -f - <"$tmp/a.yaml" >"$tmp/out" 2>&1 || status=$?
[ "$status" = 0 ] || fail "validate -f - exited $status"
expect_line "$tmp/out" '^<stdin>: 1 service OK$'

# Unreadable paths and empty directories: exit 1 with the path named.
run 1 validate -f "$tmp/missing.yaml"
expect_line "$tmp/err" "^$tmp/missing.yaml: error: cannot read: No such file or directory\$"
mkdir "$tmp/empty"
run 1 validate -f "$tmp/empty"
expect_line "$tmp/err" "^$tmp/empty: error: no \\*.yaml or \\*.yml files in this directory\$"

# A file of binary garbage is an error with a position, not a crash.
printf 'kind: service\nname: \377\376\n' >"$tmp/bin.yaml"
run 1 validate "$tmp/bin.yaml"
expect_line "$tmp/err" "^$tmp/bin.yaml:2:7: error: invalid UTF-8 \\(byte 0xff\\)\$"

# Bad usage: exit 2 with the usage line.
run 2 validate
expect_line "$tmp/err" '^usage: orch validate -f PATH\.\.\.$'
run 2 validate --bogus x
expect_line "$tmp/err" "unknown option '--bogus'"
run 2 validate -f
expect_line "$tmp/err" 'option -f needs a value'
run 0 validate --help
expect_line "$tmp/out" '^usage: orch validate -f PATH\.\.\.$'

if [ "$failures" -gt 0 ]; then
	echo "$failures failures"
	exit 1
fi
echo "validate: all checks passed"
