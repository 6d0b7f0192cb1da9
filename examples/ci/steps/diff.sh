#!/usr/bin/env bash
# CI step: what merging changes, per environment, as a Markdown comment body.
#   diff.sh BASE [OUT]      (BASE: the target branch or the merge base, e.g. origin/main;
#                            OUT defaults to envlock-diff.md)
# Compares the resolved configuration of every environment at BASE with HEAD. Secrets are
# masked and the body stays below GitHub's comment limit (deploy cuts it and says so).
# DEPLOY selects the `deploy` binary (default: the one on PATH); nothing else is configurable.
set -euo pipefail
if [ $# -lt 1 ] || [ -z "$1" ]; then
  echo "usage: diff.sh BASE [OUT]: BASE is the commit the change is merged into" >&2
  exit 64
fi
base=$1
out=${2:-envlock-diff.md}
deploy=${DEPLOY:-deploy}

"$deploy" diff "$base" HEAD --format markdown >"$out"
echo "deploy diff $base HEAD: written to $out"
