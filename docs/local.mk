## docs: rules are added as the module lands.

## The manifest reference (lib/manifest.*): the Markdown reference and its man page.
dist_man_MANS += docs/man/orch-manifest.5
dist_doc_DATA += docs/manifest.md

## HTTP: the parser's strictness rules, limits, the API server and the client (lib/http.c, orchd/httpd.c).
dist_doc_DATA += docs/http.md
