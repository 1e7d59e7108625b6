#!/usr/bin/env bash
# Latency of one prediction from a published forest (10 trees, the default) and, for scale, an
# FTRL model, as the server computes it (`evergreen bench predict`: the version loaded the
# server's way, its stored transform, then the model; one example at a time). Each model is
# trained on a prepared stream by `evergreen train` into a temporary registry first.
#   bench/forest_predict.sh [stream]   (default covertype100k; streams from bench/learn_compare.sh)
# Needs `cargo build --release -p evergreen` and the stream prepared (bench/data/learn/<stream>.csv).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stream=${1:-covertype100k}
bin=$here/../target/release/evergreen
data=$here/data/learn/$stream.csv
config=$here/learn/$stream.toml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for kind in forest ftrl; do
    # A holdout so that the gate can pass (the stream configs hold none out).
    sets=(--set "model.kind=$kind" --set "registry.base_path=$tmp/models-$kind" --set "state.dir=$tmp/state-$kind"
          --set training.holdout_fraction=0.1)
    if [ "$kind" = forest ]; then sets+=(--set features.representation=raw); fi
    "$bin" train --config "$config" --data "$data" --window-rows 5000 --quiet "${sets[@]}" 2>/dev/null | tail -1
    # `bench predict` reads the config for the registry: the same overrides in a copy.
    cfg=$tmp/$kind.toml
    sed -e "s|^kind = .*|kind = \"$kind\"|" -e "s|^base_path = .*|base_path = \"$tmp/models-$kind\"|" \
        -e "s|^dir = \"state\".*|dir = \"$tmp/state-$kind\"|" "$config" > "$cfg"
    if [ "$kind" = forest ]; then sed -i 's|^\[features\]|[features]\nrepresentation = "raw"|' "$cfg"; fi
    "$bin" bench predict --config "$cfg" --examples 20000 --repeat 5 "$data"
done
