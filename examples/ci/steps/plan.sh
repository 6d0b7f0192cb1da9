#!/usr/bin/env bash
# CI step: plan one environment and save the plan for a later job.
#   plan.sh ENVIRONMENT
# Writes ENVIRONMENT.plan.json (the saved plan, for apply.sh); ENVIRONMENT.plan.md, that plan
# as Markdown for the approver (made by the same run, so it shows exactly what was saved), with
# the plan file's SHA-256 at the end; and ENVIRONMENT.plan.env, a dotenv file with
# PLAN_SHA256=<that SHA-256>: the pipeline hands it to the apply job, which applies only the
# file that has it. No changes pending is not a failure.
# DEPLOY selects the `deploy` binary (default: the one on PATH); nothing else is configurable.
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: plan.sh ENVIRONMENT" >&2
  exit 64
fi
env=$1
plan="$env.plan.json"
deploy=${DEPLOY:-deploy}

code=0
"$deploy" plan --target "$env" --out "$plan" --detailed-exitcode --format markdown >"$env.plan.md" ||
  code=$?
case $code in
  0) echo "$env: no changes (apply it anyway: it records the verification the promotion gate reads)" ;;
  2) echo "$env: changes pending" ;;
  *) exit "$code" ;; # 1 error, 3 refused, 64 usage: see README "Exit codes"
esac

sha=$(sha256sum "$plan" | cut -d ' ' -f 1)
printf 'PLAN_SHA256=%s\n' "$sha" >"$env.plan.env"
# shellcheck disable=SC2016 # the backticks are Markdown, not a command substitution
printf '\n\nSaved plan `%s`: sha256 `%s`\n' "$plan" "$sha" >>"$env.plan.md"
cat "$env.plan.md"
