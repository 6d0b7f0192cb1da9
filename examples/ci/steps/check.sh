#!/usr/bin/env bash
# CI step: `deploy check` as SARIF 2.1.0, for code scanning.
#   check.sh [OUT]          (OUT defaults to envlock.sarif)
# Exits with deploy check's code (0 valid, 1 problems found, 3 the environment lock is broken,
# ...). The SARIF file is written in every case, so upload it even when this step fails.
# DEPLOY selects the `deploy` binary (default: the one on PATH); nothing else is configurable.
set -euo pipefail
out=${1:-envlock.sarif}
deploy=${DEPLOY:-deploy}

code=0
"$deploy" check --format sarif >"$out" || code=$?
echo "deploy check: exit $code; SARIF written to $out"
exit "$code"
