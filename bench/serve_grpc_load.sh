#!/usr/bin/env bash
# gRPC and batched-request load: `evergreen serve` on a published FTRL and a deep (Wide&Deep)
# model trained on Elec2, driven over loopback by the gRPC load generator
# (crates/evergreen-serve/examples/grpc_load.rs: Predict, one request in flight per
# connection) and, for the same requests over REST, by wrk; one instance per request, then 64.
#   bench/serve_grpc_load.sh [seconds per run (default 10)]
# Needs wrk (Debian package `wrk`), `cargo build --release -p evergreen` and
# `cargo build --release -p evergreen-serve --example grpc_load`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/target/release/evergreen
gen=$root/target/release/examples/grpc_load
secs=${1:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
[ -x "$bin" ] || { echo "build first: cargo build --release -p evergreen"; exit 1; }
[ -x "$gen" ] || { echo "build first: cargo build --release -p evergreen-serve --example grpc_load"; exit 1; }
work=$(mktemp -d /tmp/evergreen-grpc-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" config example > "$work/evergreen.toml"
for kind in ftrl deep; do
  "$bin" train --config "$work/evergreen.toml" --data "$root/crates/evergreen/assets/elec2.csv" \
    --publish last --quiet --set model.kind=$kind --set registry.base_path="$work/models-$kind" \
    --set state.dir="$work/state-$kind" --set model.name=elec2 > /dev/null
done

row='{"nswprice": 0.056, "nswdemand": 0.44, "vicprice": 0.003, "vicdemand": 0.42, "transfer": 0.41, "period": 0.5}'
rows=$row
for _ in $(seq 63); do rows="$rows,$row"; done
body64="{\"instances\": [$rows]}"

echo "{\"date\": \"$(date -u +%FT%TZ)\", \"seconds_per_run\": $secs}"
port=18800
for kind in ftrl deep; do
  port=$((port + 2))
  "$bin" serve --rest_api_port=$port --port=$((port + 1)) --model_name=elec2 \
    --model_base_path="$work/models-$kind/elec2" > "$work/serve-$kind.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v1/models/elec2" > /dev/null && break
    sleep 0.1
  done
  grpc() { "$gen" --addr 127.0.0.1:$((port + 1)) --model elec2 --seconds "$secs" "$@"; }
  rest() { BODY="$2" wrk -t1 -c"$1" -d"$secs"s -s "$here/serve/predict.lua" \
    "http://127.0.0.1:$port/v1/models/elec2:predict" | tail -1; }
  grpc --connections 4 --seconds 2 > /dev/null # warm
  for c in 1 8 32 64; do
    echo "{\"model\": \"$kind\", \"api\": \"grpc\", \"connections\": $c, \"instances\": 1, \"result\": $(grpc --connections $c)}"
  done
  echo "{\"model\": \"$kind\", \"api\": \"grpc\", \"connections\": 8, \"instances\": 64, \"result\": $(grpc --connections 8 --instances 64)}"
  echo "{\"model\": \"$kind\", \"api\": \"rest\", \"connections\": 8, \"instances\": 64, \"result\": $(rest 8 "$body64")}"
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
done
