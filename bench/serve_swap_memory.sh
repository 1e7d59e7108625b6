#!/usr/bin/env bash
# Memory of `evergreen serve` during hot swaps of a large model, FTRL models mapped from private
# copies (the default) against read into memory (--map_models=false), in the same run.
#
# The model: FTRL over 2^24 buckets (a 128 MiB model.bin) trained on 400k random user ids, so
# that every page of its tables holds state. Load: wrk sends :predict requests of 100 random user
# ids each (bench/serve/random_uids.lua), touching every page of the model. Steady state is the
# resident set after 6 s of that load; then the peak counter (VmHWM) is reset and a copy of the
# model is published under the next version every 2 s (5 swaps) while the load continues. Prints
# one JSON line per mode: steady, peak and after RSS (MiB), the anonymous and file-backed parts,
# peak / steady, versions loaded, and the load's requests, errors and p99.
#   bench/serve_swap_memory.sh            (needs wrk: apt-get install wrk)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/target/release/evergreen
[ -x "$bin" ] || { echo "build first: cargo build --release -p evergreen"; exit 1; }
command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/evergreen-swap-mem.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat > "$work/evergreen.toml" <<'TOML'
version = 1
[model]
name = "users"
kind = "ftrl"
[data]
dir = "incoming"
[features]
hash_bits = 24
label = { column = "y" }
bias = true
[[features.categorical]]
name = "uid"
[training]
epochs = 1
[gate]
min_auc = 0.0
max_logloss = 100.0
max_auc_drop = 1.0
max_logloss_increase = 100.0
[registry]
base_path = "models"
[state]
dir = "state"
TOML
awk 'BEGIN { srand(7); print "uid,y"; for (i = 0; i < 400000; i++) printf "u%d,%d\n", int(rand() * 1e9), rand() < 0.3 }' > "$work/train.csv"
"$bin" train --config "$work/evergreen.toml" --data "$work/train.csv" --quiet > /dev/null
model_bytes=$(stat -c %s "$work/models/users/1/model.bin")

field() { awk -v f="$1:" '$1 == f {print $2}' /proc/$2/status; }
mib() { echo $(( $1 / 1024 )); }

measure() { # mode flag
  local mode=$1 flag=$2 port=18711
  local base=$work/$mode/users
  mkdir -p "$work/$mode" && cp -r "$work/models/users" "$base"
  "$bin" serve --rest_api_port=$port --model_name=users --model_base_path="$base" \
    --file_system_poll_wait_seconds=0.1 "$flag" > "$work/$mode.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/models/users" > /dev/null && break; sleep 0.1; done
  wrk -t1 -c4 -d6s -s "$here/serve/random_uids.lua" "http://127.0.0.1:$port/v1/models/users:predict" > /dev/null
  local steady anon file
  steady=$(field VmRSS $pid); anon=$(field RssAnon $pid); file=$(field RssFile $pid)
  echo 5 > /proc/$pid/clear_refs   # resets VmHWM to the current RSS
  wrk -t1 -c4 -d12s -s "$here/serve/random_uids.lua" "http://127.0.0.1:$port/v1/models/users:predict" \
    2>&1 | tail -1 > "$work/$mode.wrk" &
  local load=$! n=1
  sleep 1
  for _ in 1 2 3 4 5; do
    local next=$((n + 1))
    cp -r "$base/$n" "$base/.tmp-copy-$next"
    sed -i "s/\"version\": $n,/\"version\": $next,/" "$base/.tmp-copy-$next/manifest.json"
    mv "$base/.tmp-copy-$next" "$base/$next"
    n=$next
    sleep 2
  done
  wait $load
  local peak after after_anon after_file loaded
  peak=$(field VmHWM $pid); after=$(field VmRSS $pid)
  after_anon=$(field RssAnon $pid); after_file=$(field RssFile $pid)
  loaded=$(grep -c 'loaded version' "$work/$mode.log")
  kill $pid; wait $pid 2>/dev/null || true
  echo "{\"mode\": \"$mode\", \"model_file_mb\": $(( model_bytes / 1048576 )), \"steady_rss_mb\": $(mib $steady), \"steady_anon_mb\": $(mib $anon), \"steady_file_mb\": $(mib $file), \"peak_rss_mb\": $(mib $peak), \"peak_over_steady\": $(awk "BEGIN {printf \"%.2f\", $peak / $steady}"), \"after_rss_mb\": $(mib $after), \"after_anon_mb\": $(mib $after_anon), \"after_file_mb\": $(mib $after_file), \"versions_loaded\": $loaded, \"load\": $(cat "$work/$mode.wrk")}"
  rm -rf "$work/$mode"
}

measure mapped --map_models=true
measure in_memory --map_models=false
