## docs: rules are added as the module lands.

## The manifest reference (lib/manifest.*): the Markdown reference and its man page.
dist_man_MANS += docs/man/orch-manifest.5
dist_doc_DATA += docs/manifest.md

## HTTP: the parser's strictness rules, limits, the API server and the client (lib/http.c, orchd/httpd.c).
dist_doc_DATA += docs/http.md

## The daemons' man pages and the design notes.
dist_man_MANS += docs/man/orchd.8 docs/man/orch-agent.8
dist_doc_DATA += docs/architecture.md docs/control-plane.md docs/protocol.md docs/operations.md \
	docs/agent.md docs/scheduler.md docs/development.md docs/benchmarks.md

## The orch CLI (cli/): its reference and man page.
dist_man_MANS += docs/man/orch.1
dist_doc_DATA += docs/cli.md

## The API gateway (orchd/gateway) and the service registry it follows.
dist_doc_DATA += docs/gateway.md docs/registry.md
