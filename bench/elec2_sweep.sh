#!/usr/bin/env bash
# FTRL settings on the Elec2 stream, window-level progressive validation (BENCHMARKS.md, "Model
# quality of the demo defaults"). Usage: bench/elec2_sweep.sh ALPHA EPOCHS BUCKETIZE_PERIOD(yes|no)
# Prints the mean progressive logloss and AUC over spans 2.. (span 1 meets an untrained model).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
alpha=$1 epochs=$2 buckets=$3
bin=$root/target/release/evergreen
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
mkdir -p "$d/in"
python3 - "$d" "$root/crates/evergreen/assets/elec2.csv" <<'PY'
import sys
d, src = sys.argv[1], sys.argv[2]
lines = open(src).read().splitlines()
h, rows = lines[0], lines[1:]
for i in range(0, len(rows), 2000):
    open(f"{d}/in/s{i // 2000:03d}.csv", "w").write(h + "\n" + "\n".join(rows[i:i + 2000]) + "\n")
PY
period='name = "period"'
[ "$buckets" = yes ] && period='name = "period"
buckets = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]'
cat > "$d/c.toml" <<T
version = 1
[model]
name = "m"
[model.ftrl]
alpha = $alpha
l2 = 1.0
[data]
dir = "in"
[features]
hash_bits = 18
label = { column = "class" }
[[features.numeric]]
name = "nswprice"
[[features.numeric]]
name = "nswdemand"
[[features.numeric]]
name = "vicprice"
[[features.numeric]]
name = "vicdemand"
[[features.numeric]]
name = "transfer"
[[features.numeric]]
$period
[training]
epochs = $epochs
[gate]
max_auc_drop = 1.0
max_logloss_increase = 40.0
[registry]
base_path = "models"
[state]
dir = "state"
T
"$bin" run --config "$d/c.toml" --once 2>/dev/null | python3 -c "
import re, sys
rows = []
for l in sys.stdin:
    m = re.search(r'span (\S+)\s+records (\d+).*logloss ([0-9.]+) auc ([0-9.]+)', l)
    if m and m.group(1) != 's000.csv':
        rows.append((int(m.group(2)), float(m.group(3)), float(m.group(4))))
n = sum(r[0] for r in rows)
print('alpha=$alpha epochs=$epochs period_buckets=$buckets: logloss %.4f auc %.4f' % (
    sum(r[0] * r[1] for r in rows) / n, sum(r[0] * r[2] for r in rows) / n))
"
