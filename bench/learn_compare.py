#!/usr/bin/env python3
"""Online learners on the same ordered streams: evergreen vs Vowpal Wabbit, River and Keras.

1. Prepares the benchmark streams of ../shared/datasets/README.md ("Benchmark streams"), once,
   deterministically, under bench/data/learn/ (gitignored):
     <stream>.csv  header, features then `label` (0/1): the input of evergreen and of River/Keras
     <stream>.vw   the same rows as VW text (`1 |n f:0.3 ... |c carrier=UA ...`, label -1/1)
   and writes one evergreen config per stream to bench/learn/<stream>.toml (same featurization).
   Streams: elec2 (45,312 rows), covertype100k (first 100,000 rows), covertype (581,012 rows),
   nycflights13 (327,346 rows with a known arr_delay, stable-sorted by time_hour).
2. Runs each learner on each stream with progressive validation (every example is predicted
   before it is learned): logloss (p clipped to [1e-15, 1-1e-15]), exact AUC (average ranks for
   ties), accuracy at 0.5, calibration (sum p / sum y), examples/s.
     vw            VW 9 default learner (adaptive, normalized, invariant SGD), --loss_function
                   logistic -b 24, its own text reader, one pass, in process
     vw --ftrl     the same with --ftrl
     river ftrl    river LogisticRegression(optimizer=FTRLProximal()), predict_proba_one then
                   learn_one per example
     river arf     river.forest.ARFClassifier, all defaults (10 trees, max_features "sqrt",
                   ADWIN warning/drift detectors, grace_period 50, adaptive naive Bayes leaves)
                   but seed=--river-seed (42); numerics as floats, categoricals (covertype's
                   Wilderness and Soil, all of nycflights13's) as plain strings under their
                   column name (x["Soil"] = "29", not one-hot: nominal attributes of the trees);
                   predict_proba_one then learn_one per example (p = 0.5 for the first example,
                   where the empty forest returns {})
     keras mlp     per categorical Embedding(16384 hash buckets, 8) + numerics -> Dense(64, relu)
                   -> Dense(32, relu) -> Dense(1, sigmoid), Adam; window by window: predict the
                   window with the current model, then fit on it (1 epoch, batch 256), warm start
     evergreen *   `evergreen train` (see run_evergreen) with models ftrl, fm, ffm, deep
                   (wide_deep, deepfm), forest (features.representation=raw: the columns as
                   they are, not hashed; 1 and 2 training threads), the same window size as
                   Keras; --evergreen-runs picks a subset of them by name
3. Prints one Markdown table (stream x learner) and writes bench/results/learn-<date>.json
   (merged by stream and learner with an existing file of the same name), with the exact
   command lines.

Usage: bench/learn_compare.sh [--peers-only] [--streams elec2,covertype100k,covertype,nycflights13]
                              [--learners vw,vw_ftrl,river_ftrl,river_arf,keras,evergreen]
                              [--keras-streams ...] [--river-streams ...] [--river-seed 42]
                              [--evergreen-runs forest,ftrl] [--repeat 3] [--datasets DIR]
                              [--evergreen BIN]
   e.g. River's forest alone:      bench/learn_compare.sh --streams elec2 --learners river_arf
        evergreen's forests alone: bench/learn_compare.sh --learners evergreen --evergreen-runs forest
   --evergreen-runs: comma list; an evergreen run (a row name of EVERGREEN_RUNS) is kept when its
   name contains one of the items, or when an item prefixed with "re:" matches it as a Python
   regular expression (re.search), e.g. --evergreen-runs 're:^evergreen forest$' (1 thread only).
"""

import argparse
import gzip
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data", "learn")
CONFIGS = os.path.join(HERE, "learn")
RESULTS = os.path.join(HERE, "results")
PREP_VERSION = 1  # bump when the featurization changes: cached streams are rebuilt
FLOAT_FORMAT = "%.6g"  # CSV and VW text carry the same decimal strings
EPS = 1e-15

ELEC2_NUMERIC = ["period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"]
COVTYPE_NUMERIC = [
    "Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology",
    "Vertical_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways", "Hillshade_9am",
    "Hillshade_Noon", "Hillshade_3pm", "Horizontal_Distance_To_Fire_Points",
]
FLIGHTS_CATEGORICAL = ["carrier", "origin", "dest", "hour", "month", "dow", "distance", "tailnum"]
DISTANCE_EDGES = [0, 250, 500, 750, 1000, 1500, 2000, 2500, 3000]

# name -> numeric columns, categorical columns, window rows (Keras and evergreen)
STREAMS = {
    "elec2": {"numeric": ELEC2_NUMERIC, "categorical": [], "window": 1000},
    "covertype100k": {"numeric": COVTYPE_NUMERIC, "categorical": ["Wilderness", "Soil"], "window": 5000},
    "covertype": {"numeric": COVTYPE_NUMERIC, "categorical": ["Wilderness", "Soil"], "window": 5000},
    "nycflights13": {"numeric": [], "categorical": FLIGHTS_CATEGORICAL, "window": 5000},
}

VW_RUNS = {
    "vw": "--loss_function logistic --link logistic -b 24",
    "vw --ftrl": "--ftrl --loss_function logistic --link logistic -b 24",
}

# Evergreen learners: table name -> model kind, extra --set overrides, input (csv | tfrecord).
# FM and FFM keep dense per-bucket state (FM: 2(k+1) floats per bucket, FFM: 2·fields·k), so they
# run with fewer hash bits than the sparse learners' 24 (VW's -b 24).
EVERGREEN_REPEAT = 3  # set from --repeat

EVERGREEN_RUNS = {
    "evergreen ftrl": ("ftrl", [], "csv"),
    "evergreen ftrl (tfrecord)": ("ftrl", [], "tfrecord"),
    "evergreen ftrl (evgx binary)": ("ftrl", [], "evgx"),
    "evergreen fm": ("fm", ["features.hash_bits=20"], "csv"),
    "evergreen ffm": ("ffm", ["features.hash_bits=18"], "csv"),
    "evergreen deep wide_deep": ("deep", ["model.deep.variant=wide_deep"], "csv"),
    "evergreen deep wide_deep (evgx binary)": ("deep", ["model.deep.variant=wide_deep"], "evgx"),
    "evergreen deep deepfm": ("deep", ["model.deep.variant=deepfm"], "csv"),
    "evergreen deep deepfm (evgx binary)": ("deep", ["model.deep.variant=deepfm"], "evgx"),
    "evergreen deep deepfm, batch 256": ("deep", ["model.deep.variant=deepfm",
                                                  "training.batch_size=256"], "csv"),
    "evergreen deep deepfm, 2 threads": ("deep", ["model.deep.variant=deepfm",
                                                  "training.threads=2"], "csv"),
    "evergreen deep deepfm, batch 256, 2 threads": ("deep", ["model.deep.variant=deepfm",
                                                             "training.batch_size=256",
                                                             "training.threads=2"], "csv"),
    # Online random forest (the peer: river arf): the raw columns (numerics as numbers,
    # categoricals as nominal values), not the hashed features of the linear and deep models.
    "evergreen forest": ("forest", ["features.representation=raw"], "csv"),
    "evergreen forest, 2 threads": ("forest", ["features.representation=raw",
                                               "training.threads=2"], "csv"),
    "evergreen forest, 50 trees, 2 threads": ("forest", ["features.representation=raw",
                                                         "training.threads=2",
                                                         "model.forest.trees=50"], "csv"),
}


# ---------------------------------------------------------------------------------------------
# Stream preparation


def datasets_dir(arg):
    if arg:
        return arg
    default = os.path.join(ROOT, "..", "shared", "datasets")
    return default if os.path.isdir(default) else "/work/shared/datasets"


def load_elec2(src):
    df = pd.read_csv(os.path.join(src, "elec2", "elec.csv"))
    df.columns = ELEC2_NUMERIC + ["label"]
    df["label"] = df["label"].astype(int)
    return df


def load_covertype(src, rows=None):
    with gzip.open(os.path.join(src, "covertype", "covtype.csv.gz"), "rt") as f:
        raw = pd.read_csv(f)
    out = pd.DataFrame()
    for c in COVTYPE_NUMERIC:
        col = raw[c].astype(float)
        lo, hi = col.min(), col.max()  # whole-file min and max, also for the 100k prefix
        out[c] = (col - lo) / (hi - lo) if hi > lo else 0.0
    wild = raw[[f"Wilderness_Area{k}" for k in range(1, 5)]].to_numpy()
    soil = raw[[f"Soil_Type{k}" for k in range(1, 41)]].to_numpy()
    assert (wild.sum(axis=1) == 1).all() and (soil.sum(axis=1) == 1).all()
    out["Wilderness"] = wild.argmax(axis=1) + 1
    out["Soil"] = soil.argmax(axis=1) + 1
    out["label"] = (raw["Cover_Type"] == 2).astype(int)
    return out.iloc[:rows] if rows else out


def load_flights(src):
    with zipfile.ZipFile(os.path.join(src, "nycflights13", "flights.csv.zip")) as z, z.open("flights.csv") as f:
        raw = pd.read_csv(io.TextIOWrapper(f), dtype={"tailnum": str}, keep_default_na=False,
                          na_values={"arr_delay": ["", "NA"]})
    raw = raw[raw["arr_delay"].notna()]
    raw = raw.sort_values("time_hour", kind="stable").reset_index(drop=True)
    out = pd.DataFrame()
    out["carrier"] = raw["carrier"]
    out["origin"] = raw["origin"]
    out["dest"] = raw["dest"]
    out["hour"] = raw["hour"].astype(int)
    out["month"] = raw["month"].astype(int)
    out["dow"] = pd.to_datetime(dict(year=raw["year"], month=raw["month"], day=raw["day"])).dt.day_of_week
    dist = raw["distance"].astype(float).to_numpy()
    edges = np.array(DISTANCE_EDGES)
    out["distance"] = edges[np.searchsorted(edges, dist, side="right") - 1]
    out["tailnum"] = raw["tailnum"].replace("", "NA")
    out["label"] = (raw["arr_delay"].astype(float) > 15).astype(int)
    return out


LOADERS = {
    "elec2": load_elec2,
    "covertype100k": lambda src: load_covertype(src, 100_000),
    "covertype": load_covertype,
    "nycflights13": load_flights,
}


def stream_paths(name):
    return {"csv": os.path.join(DATA, f"{name}.csv"), "vw": os.path.join(DATA, f"{name}.vw"),
            "tfrecord": os.path.join(DATA, f"{name}.tfrecord"),
            "evgx": os.path.join(DATA, f"{name}.evgx"), "done": os.path.join(DATA, f"{name}.done")}


def prepare_evgx(binary, name):
    """<stream>.evgx: the stream transformed once by `evergreen data cache` with the stream's
    config (evergreen's binary input: hashed features, no parsing at training time). Rewritten
    on every run, since it depends on the binary's hashing and the config's spec."""
    paths = stream_paths(name)
    cmd = [binary, "data", "cache", "--config", os.path.join(CONFIGS, f"{name}.toml"),
           "--out", paths["evgx"], paths["csv"]]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def read_stream(name):
    """The prepared CSV, categoricals as strings (every learner sees the same values)."""
    spec = STREAMS[name]
    dtypes = {c: str for c in spec["categorical"]}
    dtypes.update({c: np.float64 for c in spec["numeric"]})
    dtypes["label"] = np.int64
    return pd.read_csv(stream_paths(name)["csv"], dtype=dtypes, keep_default_na=False)


def vw_lines(df, spec):
    n = len(df)
    parts = [np.where(df["label"].to_numpy() == 1, "1", "-1").astype(object)]
    if spec["numeric"]:
        ns = np.full(n, " |n", dtype=object)
        for c in spec["numeric"]:
            ns = ns + f" {c}:" + df[c].map(lambda v: FLOAT_FORMAT % v).to_numpy(dtype=object)
        parts.append(ns)
    if spec["categorical"]:
        ns = np.full(n, " |c", dtype=object)
        for c in spec["categorical"]:
            ns = ns + f" {c}=" + df[c].to_numpy(dtype=object)
        parts.append(ns)
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def prepare(name, src):
    paths = stream_paths(name)
    if os.path.exists(paths["done"]) and open(paths["done"]).read().strip() == str(PREP_VERSION):
        return paths
    os.makedirs(DATA, exist_ok=True)
    spec = STREAMS[name]
    df = LOADERS[name](src)
    df = df[spec["numeric"] + spec["categorical"] + ["label"]]
    df.to_csv(paths["csv"], index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    back = read_stream(name)  # VW text from the CSV as written, so both carry the same values
    with open(paths["vw"], "w") as f:
        f.write("\n".join(vw_lines(back, spec)))
        f.write("\n")
    with open(paths["done"], "w") as f:
        f.write(str(PREP_VERSION))
    return paths


def prepare_tfrecord(name):
    """<stream>.tfrecord: the same rows as tf.train.Example (numerics float, categoricals bytes,
    label int64), uncompressed, one file, for evergreen's binary-input throughput goal. Written
    with TensorFlow's own writer; only when evergreen runs (peers read CSV and VW text)."""
    paths = stream_paths(name)
    out = os.path.join(DATA, f"{name}.tfrecord")
    done = out + ".done"
    if os.path.exists(done) and open(done).read().strip() == str(PREP_VERSION):
        return out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    spec = STREAMS[name]
    df = read_stream(name)
    num = df[spec["numeric"]].to_numpy(dtype=np.float32)
    cat = df[spec["categorical"]].to_numpy(dtype=object)
    lab = df["label"].to_numpy()
    F = tf.train.Feature
    with tf.io.TFRecordWriter(out) as w:
        for i in range(len(df)):
            f = {c: F(float_list=tf.train.FloatList(value=[num[i, j]])) for j, c in enumerate(spec["numeric"])}
            for j, c in enumerate(spec["categorical"]):
                f[c] = F(bytes_list=tf.train.BytesList(value=[cat[i, j].encode()]))
            f["label"] = F(int64_list=tf.train.Int64List(value=[int(lab[i])]))
            w.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
    with open(done, "w") as f:
        f.write(str(PREP_VERSION))
    return out


def write_config(name):
    """bench/learn/<stream>.toml: evergreen's featurization of the stream (as the peers')."""
    spec = STREAMS[name]
    lines = [
        f"# Generated by bench/learn_compare.py: the {name} stream of bench/data/learn/{name}.csv.",
        "# The model kind and its parameters are overridden per run (--set model.kind=...).",
        "version = 1", "", "[model]", f'name = "{name}"', 'kind = "ftrl"', "",
        "# One setting for every stream: the example config's alpha (chosen on Elec2 alone,",
        "# bench/elec2_sweep.sh); every other hyperparameter at its default. Peers run at theirs.",
        "[model.ftrl]", "alpha = 1.0", "", "[model.deep.wide]", "alpha = 1.0", "",
        "[data]", 'dir = "../data/learn"   # unused by `evergreen train` (--data names the file)',
        "", "[features]", "hash_bits = 24          # as VW's -b 24", 'label = { column = "label" }',
        "bias = true", "",
    ]
    for c in spec["numeric"]:
        lines += ["[[features.numeric]]", f'name = "{c}"']
    for c in spec["categorical"]:
        lines += ["[[features.categorical]]", f'name = "{c}"']
    lines += [
        "", "[training]", "epochs = 1              # one pass, as every peer",
        "holdout_fraction = 0.0  # every example predicted, then learned, once (as the peers)",
        "seed = 0", "", "[gate]                  # effectively off: the benchmark measures learning",
        "min_auc = 0.0", "max_logloss = 100.0", "max_auc_drop = 1.0", "max_logloss_increase = 100.0",
        "", "[registry]", 'base_path = "models"    # overridden per run (temporary directory)', "",
        "[state]", 'dir = "state"           # overridden per run (temporary directory)', "",
    ]
    os.makedirs(CONFIGS, exist_ok=True)
    path = os.path.join(CONFIGS, f"{name}.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# Metrics


def metrics(y, p):
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    pc = np.clip(p, EPS, 1 - EPS)
    logloss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    npos = y.sum()
    nneg = len(y) - npos
    auc = float("nan")
    if npos and nneg:
        from scipy.stats import rankdata  # average ranks for ties: the exact Mann-Whitney AUC
        ranks = rankdata(p)
        auc = float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))
    return {
        "examples": int(len(y)),
        "logloss": logloss,
        "auc": auc,
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "calibration": float(p.sum() / npos) if npos else float("nan"),
    }


# ---------------------------------------------------------------------------------------------
# Peers


def run_vw(name, learner, repeat):
    from vowpalwabbit import Workspace

    paths = stream_paths(name)
    labels = read_stream(name)["label"].to_numpy()
    flags = VW_RUNS[learner]
    with tempfile.TemporaryDirectory() as tmp:
        # Quality: -p writes the prediction made for each example before VW learns it (single
        # pass, no holdout), so the predictions file is the progressive validation.
        pred = os.path.join(tmp, "pred.txt")
        quality_args = f"--data {paths['vw']} {flags} -p {pred} --quiet"
        ws = Workspace(quality_args)
        ws.finish()
        p = np.loadtxt(pred, usecols=0)
    assert len(p) == len(labels), (len(p), len(labels))
    row = metrics(labels, p)
    # Throughput: the same single pass without writing predictions (reader + learner).
    speed_args = f"--data {paths['vw']} {flags} --quiet"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ws = Workspace(speed_args)
        ws.finish()
        times.append(time.perf_counter() - start)
    sec = float(np.median(times))
    row.update(seconds=sec, examples_per_second=len(labels) / sec, seconds_all=times,
               command=[f"vowpalwabbit.Workspace({a!r})  # {what}".replace(ROOT + os.sep, "")
                        .replace(os.path.dirname(pred), "$TMP") for a, what in
                        [(quality_args, "progressive predictions"), (speed_args, f"timed, median of {repeat}")]],
               notes="VW text reader + learner, one pass in process; loss from -p")
    return row


def run_river(name):
    from river import linear_model, optim

    spec = STREAMS[name]
    df = read_stream(name)
    num = df[spec["numeric"]].to_numpy().tolist() if spec["numeric"] else [[]] * len(df)
    cat = df[spec["categorical"]].to_numpy().tolist() if spec["categorical"] else [[]] * len(df)
    xs = []
    for nr, cr in zip(num, cat):
        x = dict(zip(spec["numeric"], nr))
        for c, v in zip(spec["categorical"], cr):
            x[f"{c}={v}"] = 1.0
        xs.append(x)
    ys = df["label"].to_numpy().astype(bool).tolist()
    model = linear_model.LogisticRegression(optimizer=optim.FTRLProximal())
    p = np.empty(len(xs))
    start = time.perf_counter()
    for i, (x, y) in enumerate(zip(xs, ys)):
        p[i] = model.predict_proba_one(x).get(True, 0.0)
        model.learn_one(x, y)
    sec = time.perf_counter() - start
    row = metrics(df["label"].to_numpy(), p)
    row.update(seconds=sec, examples_per_second=len(xs) / sec,
               command=["river.linear_model.LogisticRegression(optimizer=river.optim.FTRLProximal())"
                        " ; per example predict_proba_one then learn_one"],
               notes="feature dicts built before timing; one-hot categoricals; FTRL defaults "
                     "(alpha 0.05, beta 1, l1 0, l2 1)")
    return row


RIVER_SEED = 42  # set from --river-seed
RIVER_ARF_PROGRESS = 50_000  # examples between progress lines on stderr


def run_river_arf(name, seed=None):
    """River's adaptive random forest at its defaults (but the seed), per example
    predict_proba_one then learn_one. Numerics are floats; categoricals are plain strings under
    their column name, so the trees treat them as nominal attributes (not one-hot)."""
    from river import forest

    seed = RIVER_SEED if seed is None else seed
    spec = STREAMS[name]
    df = read_stream(name)
    num = df[spec["numeric"]].to_numpy().tolist() if spec["numeric"] else [[]] * len(df)
    cat = df[spec["categorical"]].to_numpy().tolist() if spec["categorical"] else [[]] * len(df)
    xs = []
    for nr, cr in zip(num, cat):
        x = dict(zip(spec["numeric"], (float(v) for v in nr)))
        x.update(zip(spec["categorical"], (str(v) for v in cr)))
        xs.append(x)
    ys = df["label"].to_numpy().astype(bool).tolist()
    model = forest.ARFClassifier(seed=seed)
    p = np.empty(len(xs))
    empty = 0  # predictions where the forest returned {} (no class seen yet): p = 0.5
    start = time.perf_counter()
    for i, (x, y) in enumerate(zip(xs, ys)):
        proba = model.predict_proba_one(x)
        if proba:
            p[i] = proba.get(True, 0.0)
        else:
            p[i] = 0.5
            empty += 1
        model.learn_one(x, y)
        if (i + 1) % RIVER_ARF_PROGRESS == 0:  # slow learner: a progress line now and then
            t = time.perf_counter() - start
            print(f"[run] {name} / river arf: {i + 1:,} of {len(xs):,} examples, {t:.0f}s, "
                  f"{(i + 1) / t:,.0f} ex/s", file=sys.stderr, flush=True)
    sec = time.perf_counter() - start
    row = metrics(df["label"].to_numpy(), p)
    m = model
    params = (f"n_models {m.n_models}, max_features {m.max_features} of {len(xs[0])} (\"sqrt\", "
              f"rounded), lambda_value {m.lambda_value}, warning ADWIN delta "
              f"{m.warning_detector.delta}, drift ADWIN delta {m.drift_detector.delta}, "
              f"grace_period {m.grace_period}, delta {m.delta}, tau {m.tau}, leaf_prediction "
              f"{m.leaf_prediction}, split_criterion {m.split_criterion}")
    row.update(seconds=sec, examples_per_second=len(xs) / sec, seed=seed, empty_predictions=empty,
               hard_predictions=int(np.sum((p == 0.0) | (p == 1.0))),
               warnings_detected=m.n_warnings_detected(), drifts_detected=m.n_drifts_detected(),
               command=[f"river.forest.ARFClassifier(seed={seed}) ; per example predict_proba_one "
                        "then learn_one"],
               notes="feature dicts built before timing; numerics as floats, categoricals as "
                     "nominal string values under their column name (not one-hot); ARF defaults "
                     f"but the seed ({params}); predict_proba_one returned {{}} for {empty} "
                     "example(s) (the first: the forest is built then): p = 0.5 there; "
                     "hard_predictions: p exactly 0 or 1 (clipped to 1e-15 in logloss)")
    return row


KERAS_BUCKETS = 16384
KERAS_EMBED = 8
KERAS_BATCH = 256


def hash_ids(col, values):
    """Stable per-column hashing of category strings into KERAS_BUCKETS ids."""
    uniq, inv = np.unique(values, return_inverse=True)
    ids = np.array([zlib.crc32(f"{col}={u}".encode()) % KERAS_BUCKETS for u in uniq], dtype=np.int64)
    return ids[inv]


def run_keras(name, seed=0):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    spec = STREAMS[name]
    window = spec["window"]
    df = read_stream(name)
    inputs, feats, arrays = [], [], []
    if spec["numeric"]:
        inp = keras.Input(shape=(len(spec["numeric"]),), name="numeric")
        inputs.append(inp)
        feats.append(inp)
        arrays.append(df[spec["numeric"]].to_numpy(dtype=np.float32))
    for c in spec["categorical"]:
        inp = keras.Input(shape=(1,), dtype="int64", name=c)
        inputs.append(inp)
        emb = keras.layers.Embedding(KERAS_BUCKETS, KERAS_EMBED, name=f"emb_{c}")(inp)
        feats.append(keras.layers.Flatten()(emb))
        arrays.append(hash_ids(c, df[c].to_numpy())[:, None])
    h = feats[0] if len(feats) == 1 else keras.layers.Concatenate()(feats)
    h = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.Adam(), loss="binary_crossentropy")
    y = df["label"].to_numpy(dtype=np.float32)
    n = len(y)
    p = np.empty(n)
    start = time.perf_counter()
    for lo in range(0, n, window):
        hi = min(lo + window, n)
        xw = [a[lo:hi] for a in arrays]
        p[lo:hi] = model.predict_on_batch(xw).reshape(-1)  # before learning the window
        model.fit(xw, y[lo:hi], epochs=1, batch_size=KERAS_BATCH, shuffle=False, verbose=0)
    sec = time.perf_counter() - start
    row = metrics(y, p)
    row.update(seconds=sec, examples_per_second=n / sec, window=window,
               command=[f"keras {keras.__version__} (tf {tf.__version__}): per window predict_on_batch, "
                        f"then fit(epochs=1, batch_size={KERAS_BATCH}, shuffle=False)"],
               notes=f"Embedding({KERAS_BUCKETS} crc32 buckets, {KERAS_EMBED}) per categorical + "
                     "numerics -> Dense64 relu -> Dense32 relu -> sigmoid, Adam 1e-3; seed 0; "
                     "timed: predict+fit of all windows")
    return row


# ---------------------------------------------------------------------------------------------
# Evergreen


def run_evergreen(binary, stream, model_kind, sets=(), window=None, config=None, data=None):
    """Runs `evergreen train` on one prepared stream and returns its row for the table.

    Contract of the CLI (being written beside this script):
        evergreen train --config CONFIG.toml --data STREAM.csv --window-rows N --report REPORT.json
                        --publish none --quiet [--set key=value ...]
    trains window by window on the ordered stream, each window predicted before it is learned,
    and writes REPORT.json:
        {"windows": int, "examples": int, "seconds": float, "examples_per_second": float,
         "progressive": {"examples": int, "logloss": float, "auc": float, "accuracy": float,
                         "calibration": float}}
    `--set` overrides any config key (dotted path); registry and state go to a temporary directory.
    """
    config = config or os.path.join(CONFIGS, f"{stream}.toml")
    data = data or stream_paths(stream)["csv"]
    window = window or STREAMS[stream]["window"]
    with tempfile.TemporaryDirectory(prefix="evergreen-learn-") as tmp:
        report = os.path.join(tmp, "report.json")
        overrides = [f"model.kind={model_kind}", f"registry.base_path={tmp}/models",
                     f"state.dir={tmp}/state", *sets]
        cmd = [binary, "train", "--config", config, "--data", data, "--window-rows", str(window),
               "--report", report, "--publish", "none", "--quiet"]
        for s in overrides:
            cmd += ["--set", s]
        # Median of --repeat runs, as for VW (the metrics are identical run to run: training is
        # deterministic with one thread).
        runs = []
        for _ in range(max(1, EVERGREEN_REPEAT)):
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
                raise RuntimeError(f"exit {proc.returncode}: {lines[-1] if lines else ''} "
                                   f"(command: {shlex.join(cmd)}; stderr tail: {proc.stderr[-2000:]!r})")
            with open(report) as f:
                runs.append((json.load(f), wall))
        runs.sort(key=lambda r: r[0]["examples_per_second"])
        rep, wall = runs[len(runs) // 2]
    # `online`: every example predicted before it is learned (per example for FTRL/FM/FFM, per
    # mini-batch of training.batch_size for the deep model): the peers' progressive validation.
    # `progressive`: the model as it was before each window predicts the whole window (what a
    # model published per window would have served; the Keras-style window metric).
    row = dict(rep["online"])
    row.update(seconds=rep["seconds"], examples_per_second=rep["examples_per_second"],
               wall_seconds=wall, windows=rep["windows"], window=window,
               window_progressive=rep["progressive"],
               command=[shlex.join(cmd).replace(tmp, "$TMP").replace(ROOT + os.sep, "")],
               notes="evergreen online progressive (predict before learn); ex/s = examples / "
                     "wall time of the whole run, reading and parsing included")
    return row


# ---------------------------------------------------------------------------------------------
# Driver


def fmt_table(rows):
    out = ["| stream | learner | window | examples | logloss | AUC | accuracy | examples/s |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            err = " ".join(r["error"].split("(command:")[0].split()).replace("|", "/")[:100]
            out.append(f"| {r['stream']} | {r['learner']} | | | not run: {err} | | | |")
            continue
        out.append(
            f"| {r['stream']} | {r['learner']} | {r.get('window', '') or '-'} | {r['examples']:,} | "
            f"{r['logloss']:.4f} | {r['auc']:.4f} | {r['accuracy']:.4f} | "
            f"{r['examples_per_second']:,.0f} |")
    return "\n".join(out)


def goals(rows):
    """The issue's goals, per stream, where both sides were measured."""
    ok_rows = [r for r in rows if "error" not in r]
    out = []
    for s in STREAMS:
        peers = [r for r in ok_rows if r["stream"] == s and not r["learner"].startswith("evergreen")]
        ever = [r for r in ok_rows if r["stream"] == s and r["learner"].startswith("evergreen")]
        if not peers or not ever:
            continue
        bp = min(peers, key=lambda r: r["logloss"])
        be = min(ever, key=lambda r: r["logloss"])
        mark = lambda c: "yes" if c else "NO"
        out.append(f"- {s}: best evergreen ({be['learner']}) logloss {be['logloss']:.4f} <= best peer "
                   f"({bp['learner']}) {bp['logloss']:.4f}: {mark(be['logloss'] <= bp['logloss'])}; "
                   f"AUC {be['auc']:.4f} >= {bp['auc']:.4f}: {mark(be['auc'] >= bp['auc'])}")
        vw = [r for r in peers if r["learner"].startswith("vw")]
        ftrl = [r for r in ever if r["learner"] == "evergreen ftrl"]
        if vw and ftrl:
            v = max(vw, key=lambda r: r["examples_per_second"])
            e = ftrl[0]["examples_per_second"]
            out.append(f"  - FTRL throughput {e:,.0f} ex/s >= VW ({v['learner']}, same text stream) "
                       f"{v['examples_per_second']:,.0f}: {mark(e >= v['examples_per_second'])} "
                       f"({e / v['examples_per_second']:.2f}x)")
            tfr = [r for r in ever if r["learner"] == "evergreen ftrl (tfrecord)"]
            if tfr:
                e = tfr[0]["examples_per_second"]
                x = e / v["examples_per_second"]
                out.append(f"  - FTRL reading TFRecord {e:,.0f} ex/s >= 2x VW text: {mark(x >= 2)} ({x:.2f}x)")
            evgx = [r for r in ever if r["learner"] == "evergreen ftrl (evgx binary)"]
            if evgx:
                e = evgx[0]["examples_per_second"]
                x = e / v["examples_per_second"]
                out.append(f"  - FTRL reading evergreen's binary example file {e:,.0f} ex/s >= 2x VW "
                           f"text: {mark(x >= 2)} ({x:.2f}x)")
        arf = [r for r in peers if r["learner"] == "river arf"]
        for f in [r for r in ever if r["learner"].startswith("evergreen forest")]:
            if arf:
                a = arf[0]
                x = f["examples_per_second"] / a["examples_per_second"]
                out.append(f"  - {f['learner']}: logloss {f['logloss']:.4f} <= river arf "
                           f"{a['logloss']:.4f}: {mark(f['logloss'] <= a['logloss'])}; AUC "
                           f"{f['auc']:.4f} >= {a['auc']:.4f}: {mark(f['auc'] >= a['auc'])}; "
                           f"{x:.1f}x river arf ex/s")
        keras = [r for r in peers if r["learner"] == "keras mlp"]
        for d in [r for r in ever if r["learner"].startswith("evergreen deep")]:
            if keras:
                k = keras[0]
                x = d["examples_per_second"] / k["examples_per_second"]
                out.append(f"  - {d['learner']}: {x:.1f}x Keras ex/s (goal >= 10x): {mark(x >= 10)}; "
                           f"AUC {d['auc']:.4f} >= Keras {k['auc']:.4f}: {mark(d['auc'] >= k['auc'])}")
    return "\n".join(out)


NOTES = """Progressive validation: every example is predicted before it is learned (Keras: each
window is predicted with the model trained on the windows before it; evergreen: its online
metric, each example (deep: each mini-batch of 32) predicted before it is learned). vw: VW's own text
reader and learner, one pass in process, ex/s = median of --repeat passes without -p, loss from a
separate pass with -p (predictions made before each update). river: predict_proba_one +
learn_one, feature dicts built before timing (river arf: categoricals as nominal values).
keras: predict_on_batch + fit(1 epoch, batch 256) per window. evergreen: REPORT.json of
`evergreen train` (its own ex/s)."""


def run_selected(name, items):
    """--evergreen-runs: a run is kept when its name contains one of the items, or matches an
    item written re:REGEX (re.search)."""
    return any(re.search(i[3:], name) if i.startswith("re:") else i in name for i in items)


def main():
    global EVERGREEN_REPEAT, RIVER_SEED
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--learners", default="vw,vw_ftrl,river_ftrl,keras,evergreen",
                    help="comma list of vw, vw_ftrl, river_ftrl, river_arf, keras, evergreen "
                         "(river_arf is not in the default list: it is slow, ~2,000 ex/s)")
    ap.add_argument("--keras-streams", default=None,
                    help="streams Keras runs on (default: all of --streams)")
    ap.add_argument("--river-streams", default=None,
                    help="streams River runs on (default: all of --streams)")
    ap.add_argument("--river-seed", type=int, default=RIVER_SEED,
                    help="seed of river arf (ARFClassifier(seed=...)); default %(default)s")
    ap.add_argument("--peers-only", action="store_true", help="skip evergreen")
    ap.add_argument("--evergreen-runs", default=None,
                    help="comma list: only the evergreen runs (EVERGREEN_RUNS row names) whose "
                         "name contains one of the items, or matches an item written re:REGEX "
                         "(re.search), e.g. forest or 're:^evergreen forest$'")
    ap.add_argument("--repeat", type=int, default=3, help="timed VW passes (median)")
    ap.add_argument("--datasets", default=None,
                    help="default: <repo>/../shared/datasets, else /work/shared/datasets")
    ap.add_argument("--evergreen", default=os.path.join(ROOT, "target", "release", "evergreen"))
    ap.add_argument("--evergreen-set", action="append", default=[],
                    help="extra --set key=value passed to every evergreen run")
    ap.add_argument("--out", default=None, help="default: bench/results/learn-<UTC date>.json")
    ap.add_argument("--prepare-only", action="store_true")
    args = ap.parse_args()
    EVERGREEN_REPEAT = args.repeat
    RIVER_SEED = args.river_seed
    known = {"vw", "vw_ftrl", "river_ftrl", "river_arf", "keras", "evergreen"}

    src = datasets_dir(args.datasets)
    streams = args.streams.split(",")
    learners = set(args.learners.split(","))
    if learners - known:
        sys.exit(f"unknown learner(s) {', '.join(sorted(learners - known))}; known: "
                 f"{', '.join(sorted(known))}")
    evergreen_runs = [r for r in (args.evergreen_runs or "").split(",") if r]
    for r in evergreen_runs:
        if r.startswith("re:"):
            try:
                re.compile(r[3:])
            except re.error as e:
                sys.exit(f"--evergreen-runs: bad regular expression {r[3:]!r}: {e}")
    if evergreen_runs and "evergreen" in learners and not any(
            run_selected(n, evergreen_runs) for n in EVERGREEN_RUNS):
        sys.exit(f"--evergreen-runs {args.evergreen_runs} selects none of: {', '.join(EVERGREEN_RUNS)}")
    keras_streams = set((args.keras_streams or args.streams).split(","))
    river_streams = set((args.river_streams or args.streams).split(","))
    if args.peers_only:
        learners.discard("evergreen")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = args.out or os.path.join(RESULTS, f"learn-{date}.json")
    command = shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])

    plan = []  # (stream, learner name, thunk)
    for s in streams:
        if s not in STREAMS:
            sys.exit(f"unknown stream {s}; known: {', '.join(STREAMS)}")
        t = time.perf_counter()
        paths = prepare(s, src)
        cfg = write_config(s)
        print(f"[prep] {s}: {paths['csv']} ({time.perf_counter() - t:.1f}s), config {cfg}", file=sys.stderr)
        if "vw" in learners:
            plan.append((s, "vw", lambda s=s: run_vw(s, "vw", args.repeat)))
        if "vw_ftrl" in learners:
            plan.append((s, "vw --ftrl", lambda s=s: run_vw(s, "vw --ftrl", args.repeat)))
        if "river_ftrl" in learners and s in river_streams:
            plan.append((s, "river ftrl", lambda s=s: run_river(s)))
        if "river_arf" in learners and s in river_streams:
            plan.append((s, "river arf", lambda s=s: run_river_arf(s)))
        if "keras" in learners and s in keras_streams:
            plan.append((s, "keras mlp", lambda s=s: run_keras(s)))
        if "evergreen" in learners:
            for name, (kind, sets, fmt) in EVERGREEN_RUNS.items():
                if evergreen_runs and not run_selected(name, evergreen_runs):
                    continue
                if fmt == "tfrecord":
                    t = time.perf_counter()
                    prepare_tfrecord(s)
                    print(f"[prep] {s}: tfrecord ({time.perf_counter() - t:.1f}s)", file=sys.stderr)
                if fmt == "evgx" and not args.prepare_only:
                    t = time.perf_counter()
                    prepare_evgx(args.evergreen, s)
                    print(f"[prep] {s}: evgx ({time.perf_counter() - t:.1f}s)", file=sys.stderr)
                plan.append((s, name, lambda s=s, kind=kind, sets=sets, fmt=fmt:
                             run_evergreen(args.evergreen, s, kind, list(sets) + args.evergreen_set,
                                           data=stream_paths(s)[fmt])))
    if args.prepare_only:
        return

    load_start = os.getloadavg()
    prev = {}
    if os.path.exists(out):
        with open(out) as f:
            for r in json.load(f).get("results", []):
                prev[(r["stream"], r["learner"])] = r
    new = []
    for s, learner, thunk in plan:
        t = time.perf_counter()
        print(f"[run] {s} / {learner} ...", file=sys.stderr, flush=True)
        try:
            row = thunk()
        except Exception as e:  # one failing learner must not lose the others' results
            row = {"error": f"{type(e).__name__}: {e}"}
        row = {"stream": s, "learner": learner, **row, "run_command": command,
               "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(f"[run] {s} / {learner}: " + (row["error"] if "error" in row else
              f"logloss {row['logloss']:.4f} auc {row['auc']:.4f} accuracy {row['accuracy']:.4f} "
              f"{row['examples_per_second']:,.0f} ex/s")
              + f" ({time.perf_counter() - t:.1f}s)", file=sys.stderr, flush=True)
        prev[(s, learner)] = row
        new.append(row)

    order = {s: i for i, s in enumerate(STREAMS)}
    lorder = {n: i for i, n in enumerate(["vw", "vw --ftrl", "river ftrl", "river arf", "keras mlp",
                                                *EVERGREEN_RUNS])}
    rows = sorted(prev.values(), key=lambda r: (order.get(r["stream"], 99), lorder.get(r["learner"], 99)))
    versions = {"python": platform.python_version()}
    for mod in ["vowpalwabbit", "river", "numpy", "pandas", "tensorflow", "keras"]:
        try:
            from importlib.metadata import version
            versions[mod] = version("tensorflow-cpu" if mod == "tensorflow" else mod)
        except Exception:
            pass
    streams_meta = {}
    for s in sorted({r["stream"] for r in rows}, key=lambda s: order.get(s, 99)):
        p = stream_paths(s)
        if os.path.exists(p["csv"]):
            lab = read_stream(s)["label"].to_numpy()
            streams_meta[s] = {"rows": int(len(lab)), "positives": int(lab.sum()),
                               "window": STREAMS[s]["window"], "numeric": STREAMS[s]["numeric"],
                               "categorical": STREAMS[s]["categorical"],
                               "csv_bytes": os.path.getsize(p["csv"]), "vw_bytes": os.path.getsize(p["vw"])}
    result = {
        "benchmark": "bench/learn_compare.py: progressive validation of online learners on ordered streams",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1_5_15_at_start": load_start, "loadavg_1_5_15_at_end": os.getloadavg(),
                    "note": "other work may share the cores: throughput is noisy; quality is deterministic"},
        "versions": versions,
        "streams": streams_meta,
        "last_command": command,
        "notes": NOTES.replace("\n", " "),
        "results": rows,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2, default=float)
    print(fmt_table(rows))
    g = goals(rows)
    if g:
        print("\nGoals (issue):\n" + g)
    print("\n" + NOTES)
    print(f"\nresults: {os.path.relpath(out, ROOT)}  (command: {command})")


if __name__ == "__main__":
    main()
