#!/usr/bin/env bash
# Prints criterion's median estimate of every benchmark under target/criterion, in ns per
# iteration, with its 95% confidence interval, from the newest run of each (`new/estimates.json`).
# A filter (a substring of the benchmark's path, e.g. `command/`) limits the listing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/target/criterion"
filter="${1:-}"
find "$root" -path '*/new/estimates.json' | sort | while read -r f; do
  name="${f#"$root"/}"; name="${name%/new/estimates.json}"
  [[ -z "$filter" || "$name" == *"$filter"* ]] || continue
  jq -r --arg n "$name" '.median as $e |
    "\($n)\t\($e.point_estimate|.*10|round/10) ns\t[\($e.confidence_interval.lower_bound|.*10|round/10) .. \($e.confidence_interval.upper_bound|.*10|round/10)]"' "$f"
done | column -t -s $'\t'
