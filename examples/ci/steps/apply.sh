#!/usr/bin/env bash
# CI step: apply the saved plan of one environment, then verify its deployment log.
#   PLAN_SHA256=<hash printed by plan.sh> apply.sh ENVIRONMENT
# Applies ENVIRONMENT.plan.json (from the plan job's artifact) only when its SHA-256 is
# PLAN_SHA256, the hash of the plan that was shown for approval; without it, or with another
# file, it refuses (exit 3) and deploys nothing. `deploy apply --plan` then refuses (exit 3)
# anything that no longer holds: a stale plan, another environment's plan, the promotion gate...
# DEPLOY selects the `deploy` binary (default: the one on PATH); nothing else is configurable.
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: PLAN_SHA256=HASH apply.sh ENVIRONMENT" >&2
  exit 64
fi
env=$1
plan="$env.plan.json"
deploy=${DEPLOY:-deploy}

refuse() {
  echo "error: $1; nothing was deployed" >&2
  echo "hint: $2" >&2
  exit 3
}
[ -n "${PLAN_SHA256:-}" ] ||
  refuse "PLAN_SHA256 is not set: the hash of the approved plan of \`$env\` is missing" \
    "pass the plan job's PLAN_SHA256 (from $env.plan.env) to this job"
[ -f "$plan" ] ||
  refuse "$plan does not exist" "download the plan job's artifact into the working directory"
sha=$(sha256sum "$plan" | cut -d ' ' -f 1)
[ "$sha" = "$PLAN_SHA256" ] ||
  refuse "$plan has sha256 $sha, not $PLAN_SHA256: it is not the plan that was approved" \
    "run the pipeline again; it plans, and asks for approval, again"

"$deploy" apply --target "$env" --plan "$plan" --yes
"$deploy" log verify --target "$env"
