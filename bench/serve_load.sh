#!/usr/bin/env bash
# Serving load test: `evergreen serve` on a published FTRL and a deep (Wide&Deep) model, driven
# by wrk over loopback; throughput and p50/p99/p99.9 latency at several connection counts, then
# the same while a new version is swapped in every 5 s (errors must stay at zero).
#   bench/serve_load.sh [seconds per run (default 10)]
# Needs wrk (Debian package `wrk`) and `cargo build --release -p evergreen`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/target/release/evergreen
secs=${1:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
[ -x "$bin" ] || { echo "build first: cargo build --release -p evergreen"; exit 1; }
work=$(mktemp -d /tmp/evergreen-serve-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" config example > "$work/evergreen.toml"
data=$root/crates/evergreen/assets/elec2.csv
for kind in ftrl deep; do
  "$bin" train --config "$work/evergreen.toml" --data "$data" --publish last --quiet \
    --set model.kind=$kind --set registry.base_path="$work/models-$kind" \
    --set state.dir="$work/state-$kind" --set model.name=elec2 > /dev/null
done

serve() { # kind port -> starts a server in the background
  "$bin" serve --rest_api_port="$2" --model_name=elec2 \
    --model_base_path="$work/models-$1/elec2" --file_system_poll_wait_seconds=0.2 \
    > "$work/serve-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$2/v1/models/elec2" > /dev/null && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$work/serve-$1.log"; exit 1
}

load() { # url connections seconds -> one JSON line
  local t=2
  [ "$2" -lt 2 ] && t=1
  wrk -t$t -c"$2" -d"$3"s -s "$here/serve/predict.lua" "$1" | tail -1
}

swaps() { # base_dir seconds: a copy of the newest version published under the next number
  # every 5 s (the server hot-swaps to it)
  local base=$1 end=$((SECONDS + $2)) n next
  n=$(ls "$base" | grep -E '^[0-9]+$' | sort -n | tail -1)
  while [ $SECONDS -lt $((end - 1)) ]; do
    sleep 5
    next=$((n + 1))
    cp -r "$base/$n" "$base/.tmp-copy-$next"
    sed -i "s/\"version\": $n,/\"version\": $next,/" "$base/.tmp-copy-$next/manifest.json"
    mv "$base/.tmp-copy-$next" "$base/$next"
    n=$next
  done
}

row() { # kind label result
  echo "{\"model\": \"$1\", $2, \"result\": $3}"
}

echo "{\"date\": \"$(date -u +%FT%TZ)\", \"seconds_per_run\": $secs}"
port=18600
for kind in ftrl deep; do
  port=$((port + 1))
  serve $kind $port
  url="http://127.0.0.1:$port/v1/models/elec2:predict"
  base=$work/models-$kind/elec2
  load "$url" 8 2 > /dev/null # warm
  for c in 1 8 32 64; do
    row $kind "\"connections\": $c, \"swaps\": false" "$(load "$url" $c "$secs")"
  done
  # Paced: 40 connections, each waiting 1 ms before each request (wrk's delay() has millisecond
  # steps), which lands at about half the saturated throughput.
  row $kind "\"connections\": 40, \"paced\": true, \"swaps\": false" \
    "$(DELAY_MS=1 load "$url" 40 "$secs")"
  swaps "$base" "$secs" & swapper=$!
  r=$(DELAY_MS=1 load "$url" 40 "$secs"); wait $swapper
  row $kind "\"connections\": 40, \"paced\": true, \"swaps\": true" "$r"
  swaps "$base" "$secs" & swapper=$!
  r=$(load "$url" 32 "$secs"); wait $swapper
  row $kind "\"connections\": 32, \"swaps\": true" "$r"
  echo "{\"model\": \"$kind\", \"versions_loaded\": $(grep -c 'loaded version' "$work/serve-$kind.log")}"
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
done
