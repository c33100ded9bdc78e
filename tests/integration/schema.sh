#!/bin/sh
# manifests/schema.json (for editors) and the parser (`orch validate`) must agree: every valid
# fixture and every example in manifests/ is accepted by both; each invalid fixture is rejected by
# the parser, and by the schema too when its "# schema: reject" line says the schema can express
# the rule ("# schema: accept (why)" marks the rules only the parser checks, "# schema: skip (why)"
# the inputs a Python loader cannot take).
set -eu

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
orch=$top_builddir/cli/orch
[ -x "$orch" ] || { echo "SKIP: $orch is not built"; exit 77; }

python=
for p in /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import jsonschema, yaml' 2>/dev/null; then
		python=$p
		break
	fi
done
[ -n "$python" ] || { echo "SKIP: python3 with jsonschema and yaml is missing (apt-get install python3-jsonschema python3-yaml)"; exit 77; }

exec "$python" - "$orch" "$top_srcdir" <<'PYEOF'
import glob, json, os, re, subprocess, sys

import jsonschema
import yaml

orch, top = sys.argv[1], sys.argv[2]


class Core12Loader(yaml.SafeLoader):
    """YAML 1.2 core schema, as lib/yaml-tree.c resolves plain scalars: 'yes' and dates stay strings."""


Core12Loader.yaml_implicit_resolvers = {}
Core12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
Core12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
Core12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
Core12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def construct_int(loader, node):
    v = loader.construct_scalar(node)
    sign = -1 if v.startswith("-") else 1
    v = v.lstrip("+-")
    base = 16 if v.startswith("0x") else 8 if v.startswith("0o") else 10
    return sign * int(v[2:] if base != 10 else v, base)


Core12Loader.add_constructor("tag:yaml.org,2002:int", construct_int)

schema = json.load(open(os.path.join(top, "manifests", "schema.json")))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL: " + msg)


def schema_errors(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.load_all(f, Loader=Core12Loader) if d is not None]
    return [f"{e.json_path}: {e.message}" for d in docs for e in validator.iter_errors(d)]


def orch_validate(path):
    return subprocess.run([orch, "validate", "-f", path], capture_output=True, text=True)


valid = sorted(glob.glob(os.path.join(top, "tests/fixtures/manifests/valid/*.y*ml")))
examples = sorted(glob.glob(os.path.join(top, "manifests/*.yaml")) + glob.glob(os.path.join(top, "manifests/*.yml")))
if not examples:
    print("note: manifests/ holds no example manifests yet")
for path in valid + examples:
    r = orch_validate(path)
    if r.returncode != 0:
        fail(f"{path}: rejected by orch validate:\n{r.stderr}")
    errs = schema_errors(path)
    if errs:
        fail(f"{path}: rejected by the schema: {errs[:3]}")
    print(f"ok: {os.path.relpath(path, top)} valid under both")

invalid = sorted(glob.glob(os.path.join(top, "tests/fixtures/manifests/invalid/*.y*ml")))
for path in invalid:
    rel = os.path.relpath(path, top)
    text = open(path, encoding="utf-8", errors="replace").read()
    m = re.search(r"^# schema: (reject|accept|skip)\b", text, re.M)
    if not m:
        fail(f"{rel}: no '# schema: reject|accept|skip' line")
        continue
    r = orch_validate(path)
    if r.returncode != 1:
        fail(f"{rel}: orch validate exited {r.returncode}, expected 1")
    mark = m.group(1)
    if mark == "skip":
        print(f"ok: {rel} rejected by the parser (schema: skipped)")
        continue
    errs = schema_errors(path)
    if mark == "reject" and not errs:
        fail(f"{rel}: marked 'schema: reject' but the schema accepts it")
    elif mark == "accept" and errs:
        fail(f"{rel}: marked 'schema: accept' but the schema rejects it ({errs[0]}): mark it 'reject'")
    else:
        print(f"ok: {rel} rejected by the parser, schema {mark}s it")

print(f"{len(valid) + len(examples)} valid, {len(invalid)} invalid files checked; {failures} failures")
sys.exit(1 if failures else 0)
PYEOF
