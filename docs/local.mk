## docs: rules are added as the module lands.

## The manifest reference (lib/manifest.*): the Markdown reference and its man page.
dist_man_MANS += docs/man/orch-manifest.5
dist_doc_DATA += docs/manifest.md
