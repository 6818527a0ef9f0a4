#!/usr/bin/env bash
# Build the docs site into _docs/ (settings.ini's doc_path) without Quarto and without the network:
# nbdev processes the notebooks (show_doc entries, directives), smalldocs renders the same _quarto.yml site,
# and tools/build_docs.py makes the site self-contained (KaTeX from npm, no CDN) and Quarto's page names.
# With Quarto installed, `nbdev-docs` (nbdev 2: `nbdev_docs`) builds the same site from the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
# nbdev's proc-nbs tries to install Quarto when none is on PATH: a stub that says no keeps it offline.
printf '#!/bin/sh\necho "quarto is not installed: tools/build_docs.sh renders with smalldocs" >&2\nexit 1\n' > "$stub/quarto"
chmod +x "$stub/quarto"
rm -rf _proc _docs
# nbdev 3 spells the command nbdev-proc-nbs, nbdev 2 nbdev_proc_nbs: whichever this environment has.
proc=$(command -v nbdev-proc-nbs || command -v nbdev_proc_nbs) || { echo "no nbdev: pip install -e '.[dev]'" >&2; exit 1; }
PATH="$stub:$PATH" "$proc"
python tools/build_docs.py prepare _proc
smalldocs render _proc
python tools/build_docs.py finish _proc/_docs _docs
echo "built $(ls _docs/*.html | wc -l) pages into _docs/"
