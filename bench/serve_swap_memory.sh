#!/usr/bin/env bash
# Peak memory of `evergreen serve` during hot swaps of a large model: an FTRL model over 2^24
# buckets (the learner benchmark's size) is served, then a copy is published under the next
# version number every 2 s (5 swaps) while a sampler reads the server's resident set every 20 ms.
# Prints steady-state RSS, peak RSS (VmHWM) and their ratio as JSON.
#   bench/serve_swap_memory.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/target/release/evergreen
[ -x "$bin" ] || { echo "build first: cargo build --release -p evergreen"; exit 1; }
work=$(mktemp -d /tmp/evergreen-swap-mem.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" config example > "$work/evergreen.toml"
"$bin" train --config "$work/evergreen.toml" --data "$root/crates/evergreen/assets/elec2.csv" \
  --publish last --quiet --set features.hash_bits=24 --set registry.base_path="$work/models" \
  --set state.dir="$work/state" > /dev/null
base=$work/models/elec2
port=18711
"$bin" serve --rest_api_port=$port --model_name=elec2 --model_base_path="$base" \
  --file_system_poll_wait_seconds=0.1 > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/models/elec2" > /dev/null && break; sleep 0.1; done
body='{"instances": [{"nswprice": 0.056, "nswdemand": 0.44, "vicprice": 0.003, "vicdemand": 0.42, "transfer": 0.41, "period": 0.5}]}'
for _ in $(seq 200); do curl -s -d "$body" "http://127.0.0.1:$port/v1/models/elec2:predict" > /dev/null; done
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
steady=$(rss)
model_bytes=$(stat -c %s "$base"/1/model.bin)
n=1
for _ in 1 2 3 4 5; do
  next=$((n + 1))
  cp -r "$base/$n" "$base/.tmp-copy-$next"
  sed -i "s/\"version\": $n,/\"version\": $next,/" "$base/.tmp-copy-$next/manifest.json"
  mv "$base/.tmp-copy-$next" "$base/$next"
  n=$next
  end=$((SECONDS + 2))
  while [ $SECONDS -lt $end ]; do rss > /dev/null; sleep 0.02; done
done
after=$(rss)
peak=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
loaded=$(grep -c 'loaded version' "$work/serve.log")
echo "{\"model_file_mb\": $(( model_bytes / 1048576 )), \"steady_rss_mb\": $(( steady / 1024 )), \"peak_rss_mb\": $(( peak / 1024 )), \"after_rss_mb\": $(( after / 1024 )), \"peak_over_steady\": $(awk "BEGIN {printf \"%.2f\", $peak / $steady}"), \"versions_loaded\": $loaded}"
