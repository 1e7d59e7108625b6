#!/usr/bin/env bash
# Progressive logloss and accuracy of the forest over several seeds (the forest is randomized:
# one seed's figure moves by about +-0.005 logloss), through `evergreen train` as
# bench/learn_compare.sh runs it. Usage: bench/forest_seeds.sh STREAM TREES [SEEDS...]
# (streams prepared by bench/learn_compare.sh under bench/data/learn/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stream=$1; trees=$2; shift 2
seeds=${*:-0 1 2 3 4}
window=5000; [ "$stream" = elec2 ] && window=1000
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for s in $seeds; do
    "$here/../target/release/evergreen" train --config "$here/learn/$stream.toml" \
        --data "$here/data/learn/$stream.csv" --window-rows $window --publish none --quiet \
        --report "$tmp/r.json" --set model.kind=forest --set features.representation=raw \
        --set training.threads=2 --set "model.forest.trees=$trees" --set "model.forest.seed=$s" \
        --set "registry.base_path=$tmp/models" --set "state.dir=$tmp/state" > /dev/null 2>&1
    python3 -c "import json,sys; r=json.load(open('$tmp/r.json')); o=r['online']; print('$stream', 'trees $trees', 'seed $s', round(o['logloss'],4), round(o['accuracy'],4), round(r['examples_per_second']))"
done | awk '{print; ll+=$6; acc+=$7; n++} END {printf "mean of %d seeds: logloss %.4f accuracy %.4f\n", n, ll/n, acc/n}'
