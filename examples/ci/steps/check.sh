#!/usr/bin/env bash
# CI step: `deploy check` as SARIF 2.1.0, for code scanning.
#   check.sh [OUT]          (OUT defaults to envlock.sarif)
# Exits with deploy check's code (0 valid, 1 problems found or check could not run, ...). The
# SARIF file is written whenever check ran, so upload it when this step fails too. When check
# could not run at all, there is no file: an empty log would close every open alert.
# DEPLOY selects the `deploy` binary (default: the one on PATH); nothing else is configurable.
set -euo pipefail
out=${1:-envlock.sarif}
deploy=${DEPLOY:-deploy}

code=0
"$deploy" check --format sarif >"$out" || code=$?
if [ -s "$out" ]; then
  echo "deploy check: exit $code; SARIF written to $out"
else
  rm -f "$out"
  echo "deploy check: exit $code; it could not run, so there is no SARIF log" >&2
fi
exit "$code"
