#!/usr/bin/env bash
# Prints the point estimate (slope, else mean, with its 95% confidence interval) of every criterion benchmark
# under target/criterion, in ns per iteration. cqrs-es's MemStore prints two lines per command, so
# the benches run with stdout sent to /dev/null and the figures are read back from here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/target/criterion"
find "$root" -path '*/new/estimates.json' | sort | while read -r f; do
  name="${f#"$root"/}"; name="${name%/new/estimates.json}"
  # The slope (linear sampling) is what criterion prints as "time"; flat sampling has only a mean.
  jq -r --arg n "$name" '(.slope // .mean) as $e |
    "\($n)\t\($e.point_estimate|.*10|round/10) ns\t[\($e.confidence_interval.lower_bound|.*10|round/10) .. \($e.confidence_interval.upper_bound|.*10|round/10)]"' "$f"
done | column -t -s $'\t'
