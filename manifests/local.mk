## The example manifests and the JSON Schema for editors, installed side by side as in the
## source tree ($(pkgdatadir)/manifests/), so a `$schema=./schema.json` reference keeps working.
## Each example manifest is listed here; tests/integration/validate.sh and schema.sh check them.
manifestsdir = $(pkgdatadir)/manifests
dist_manifests_DATA = manifests/schema.json
## The demo (examples/orch-demo): a web frontend, an API and two workers.
dist_manifests_DATA += manifests/web.yaml manifests/api.yaml manifests/worker.yaml
