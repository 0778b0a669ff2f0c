#!/usr/bin/env bash
# Consumer and store CPU per event of two commits, measured alternately in one run:
#   bench/cpu_ab.sh BASE_REV [ROUNDS] [USERS] [EVENTS]
# Runs `python -m bench.cpu_profile` in a worktree of BASE_REV and in this tree, in turn,
# ROUNDS times each (default 2; USERS users, default 20000; EVENTS events, default USERS),
# and prints each run's figures and the ratio of the means (this tree / base). Uses the
# servers named by PASS_STATUS_KAFKA_BOOTSTRAP_SERVERS and PASS_STATUS_MONGODB_URI
# (`scripts/services env`).
set -euo pipefail
base=${1:?usage: bench/cpu_ab.sh BASE_REV [ROUNDS] [USERS] [EVENTS]}
rounds=${2:-2}
users=${3:-20000}
events=${4:-$users}
here=$(git rev-parse --show-toplevel)
out=$(mktemp -d)
tree=$out/base
git -C "$here" worktree add -q --detach "$tree" "$base"
trap 'git -C "$here" worktree remove --force "$tree"; rm -rf "$out"' EXIT
# One measuring tool for both: this tree's bench/ and environment; only the service under
# test (the `consumer` package, run from each tree's root) differs.
rm -rf "$tree/bench" && cp -a "$here/bench" "$tree/bench"
python=$here/.venv/bin/python
for round in $(seq "$rounds"); do
  for side in base this; do
    dir=$here; [ "$side" = base ] && dir=$tree
    # cpu_profile writes its files under its tree's bench/results: the tree's own (even
    # uncommitted) are kept aside and put back.
    (cd "$dir" && rm -rf "$out/keep" && cp -a bench/results "$out/keep" \
      && "$python" -m bench.cpu_profile --users "$users" --events "$events" >/dev/null \
      && cp bench/results/cpu_profile.json "$out/$side-$round.json" \
      && rm -rf bench/results && mv "$out/keep" bench/results)
    echo "$side $round: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(d['consumer_cpu_ms_per_event'], 'ms consumer,', d['store_cpu_ms_per_event'], 'ms store per event,', \
d['events_per_second'], 'ev/s')" \
      "$out/$side-$round.json")"
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def mean(side, key):
    return sum(json.load(open(f"{out}/{side}-{r}.json"))[key] for r in range(1, rounds + 1)) / rounds
for key in ("consumer_cpu_ms_per_event", "store_cpu_ms_per_event", "events_per_second"):
    print(f"{key}: this/base = {mean('this', key) / mean('base', key):.3f}")
PY
