"""One River adaptive-random-forest tree against evergreen's, example by example.

Feeds River's ARF base tree (river.forest.adaptive_random_forest.BaseTreeClassifier, every
attribute watched, the ARF defaults otherwise) the rows of a prepared stream with fixed Poisson(6)
weights and writes its prediction before each example; the ignored Rust test
`forest::tests::tree_diff_against_river` does the same with evergreen's tree. The first row where
the two differ points at an algorithmic difference (this is how the naive Bayes constant and
River's max_share_to_split were found). Usage (streams from bench/learn_compare.sh):

  d=$(mktemp -d); tail -n +2 bench/data/learn/elec2.csv > $d/rows.csv
  bench/.venv-learn/bin/python bench/river_tree_diff.py $d 45312          # [CATEGORICAL_COLUMNS]
  EVERGREEN_TREE_DIFF=$d cargo test -p evergreen-model --lib tree_diff -- --ignored
  paste $d/ours.txt $d/river.txt | awk '{d=$1-$2; if (d*d > 1e-12) {print NR": "$0; exit}}'

For covertype100k pass `10,11` (Wilderness, Soil) here and EVERGREEN_TREE_DIFF_CATS=10,11 to the
test; EVERGREEN_TREE_DIFF_ROW=N prints evergreen's path to the leaf for row N. Values go through
float32 on both sides. Divergence after a few thousand rows is expected: float rounding differs
(Welford updates), and a grace-period check or a tie can then go the other way.
"""
import random
import sys

import numpy as np
import pandas as pd
from river.forest.adaptive_random_forest import BaseTreeClassifier

d = sys.argv[1]
n = int(sys.argv[2])
cats = [int(c) for c in sys.argv[3].split(",")] if len(sys.argv) > 3 and sys.argv[3] else []
df = pd.read_csv(f"{d}/rows.csv", header=None)
ncol = df.shape[1] - 1
cols = [f"c{i}" for i in range(ncol)]
w = np.random.default_rng(7).poisson(6, size=len(df))
np.savetxt(f"{d}/weights.txt", w, fmt="%d")
t = BaseTreeClassifier(max_features=ncol, grace_period=50, delta=0.01, tau=0.05,
                       leaf_prediction="nba", nominal_attributes=[cols[c] for c in cats],
                       rng=random.Random(1))
X = df.iloc[:, :ncol].to_numpy(dtype=np.float32).astype(np.float64)
Y = df.iloc[:, ncol].to_numpy()
with open(f"{d}/river.txt", "w") as out:
    for i in range(min(n, len(df))):
        x = {c: (str(int(X[i, j])) if j in cats else X[i, j]) for j, c in enumerate(cols)}
        p = t.predict_proba_one(x)
        out.write(f"{p.get(True, float('nan')) if p else float('nan'):.12g}\n")
        if w[i] > 0:
            t.learn_one(x, bool(Y[i]), w=int(w[i]))
print(t.summary, file=sys.stderr)
