#!/usr/bin/env bash
# Server-side request batching: `evergreen serve` on a published deep (Wide&Deep) model trained on
# Elec2, without batching and with it (TF Serving's --enable_batching and a batching parameters
# file), driven by wrk over loopback with one instance per request; throughput and latency
# percentiles at several connection counts, each configuration in the same run.
#   bench/serve_batching.sh [seconds per run (default 10)]
# TRAIN_SET adds `--set` overrides to the model's training, e.g. a larger deep tower:
#   TRAIN_SET="model.deep.hidden=[512,256,128]" bench/serve_batching.sh
# Needs wrk (Debian package `wrk`) and `cargo build --release -p evergreen`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/target/release/evergreen
secs=${1:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
[ -x "$bin" ] || { echo "build first: cargo build --release -p evergreen"; exit 1; }
work=$(mktemp -d /tmp/evergreen-batching-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" config example > "$work/evergreen.toml"
"$bin" train --config "$work/evergreen.toml" --data "$root/crates/evergreen/assets/elec2.csv" \
  --publish last --quiet --set model.kind=deep --set registry.base_path="$work/models" \
  --set state.dir="$work/state" --set model.name=elec2 \
  ${TRAIN_SET:+--set "$TRAIN_SET"} > /dev/null

serve() { # port extra-flags... -> starts a server in the background
  local port=$1; shift
  "$bin" serve --rest_api_port="$port" --model_name=elec2 --model_base_path="$work/models/elec2" \
    "$@" > "$work/serve-$port.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v1/models/elec2" > /dev/null && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$work/serve-$port.log"; exit 1
}

load() { # url connections seconds -> one JSON line
  wrk -t1 -c"$2" -d"$3"s -s "$here/serve/predict.lua" "$1" | tail -1
}

params() { # max_batch_size timeout_micros threads -> a parameters file
  local f=$work/batching-$1-$2-$3.txt
  printf 'max_batch_size { value: %s }\nbatch_timeout_micros { value: %s }\nmax_enqueued_batches { value: 1000 }\nnum_batch_threads { value: %s }\n' "$1" "$2" "$3" > "$f"
  echo "$f"
}

echo "{\"date\": \"$(date -u +%FT%TZ)\", \"seconds_per_run\": $secs, \"model\": \"deep wide_deep\", \"train_set\": \"${TRAIN_SET:-}\"}"
port=18700
for config in off "64 0 1" "64 200 1" "64 0 2"; do
  port=$((port + 1))
  if [ "$config" = off ]; then
    serve $port
    label='"batching": "off"'
  else
    set -- $config
    serve $port --enable_batching --batching_parameters_file="$(params "$1" "$2" "$3")"
    label="\"batching\": {\"max_batch_size\": $1, \"batch_timeout_micros\": $2, \"num_batch_threads\": $3}"
  fi
  url="http://127.0.0.1:$port/v1/models/elec2:predict"
  load "$url" 8 2 > /dev/null # warm
  for c in 1 8 32 64; do
    echo "{$label, \"connections\": $c, \"result\": $(load "$url" $c "$secs")}"
  done
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
done
