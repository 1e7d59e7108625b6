#!/usr/bin/env bash
# Replay against forgetting on Elec2 (recurring daily/weekly/seasonal price patterns): the same
# ordered stream trained window by window (1000 rows, the example config: FTRL, 3 epochs per
# window), without replay and with replay stores of several sizes, ratios and half-lives.
# Prints one line per setting: window-level progressive metrics (the model before each window
# predicts it) and online progressive metrics (each example predicted before it is learned).
#   cargo build --release -p evergreen && bench/replay_effect.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${EVERGREEN:-$root/target/release/evergreen}
data=$root/crates/evergreen/assets/elec2.csv
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" config example > "$tmp/c.toml"
printf '| replay capacity | ratio | half-life (windows) | window logloss | window AUC | online logloss | online AUC | examples/s |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for setting in "0 0 0" "2000 0.5 0" "5000 0.5 0" "5000 1.0 0" "5000 0.5 10" "20000 0.5 0"; do
    set -- $setting
    rm -rf "$tmp/models" "$tmp/state"
    "$bin" train -c "$tmp/c.toml" --data "$data" --window-rows 1000 --publish none --quiet \
        --report "$tmp/r.json" --set training.holdout_fraction=0 \
        --set training.replay.capacity="$1" --set training.replay.ratio="$2" \
        --set training.replay.half_life_windows="$3" > /dev/null
    python3 - "$tmp/r.json" "$1" "$2" "$3" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
p, o = r["progressive"], r["online"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {p['logloss']:.4f} | {p['auc']:.4f} | "
      f"{o['logloss']:.4f} | {o['auc']:.4f} | {r['examples_per_second']:.0f} |")
PY
done
