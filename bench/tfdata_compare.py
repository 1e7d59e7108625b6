#!/usr/bin/env python3
"""Input pipeline: evergreen vs tf.data on the same TFRecord shards, in the same run.

1. Converts covertype (581,012 rows) and nycflights13 (327,346 rows) into 8 TFRecord shards of
   tf.train.Example each, with TensorFlow's own writer, following the preparations in
   ../shared/datasets/README.md (label `label`).
2. Measures two tf.data pipelines over the shards:
   - per-example: list_files -> interleave(TFRecordDataset, cycle_length=8, AUTOTUNE)
     -> map(parse_single_example, AUTOTUNE) -> batch(128) -> prefetch(AUTOTUNE)
   - vectorized:  list_files -> interleave(...) -> batch(128) -> map(parse_example, AUTOTUNE)
     -> prefetch(AUTOTUNE)
3. Runs `evergreen bench data` (parse only, parse + transform, full pipeline into batches of
   128) on the same shards.
Prints a table of examples/s (median of --repeat runs) and peak memory, and writes
bench/results/tfdata_compare.json.

Usage: python bench/tfdata_compare.py [--repeat 3] [--evergreen target/release/evergreen]
"""

import argparse
import csv
import gzip
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zipfile
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "datasets")
DATA = os.path.join(HERE, "data")
SHARDS = 8


def covertype_rows():
    path = os.path.join(SHARED, "covertype", "covtype.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    numeric = header[:10]
    cols = [[float(r[i]) for r in rows] for i in range(10)]
    lo = [min(c) for c in cols]
    hi = [max(c) for c in cols]
    for r in rows:
        feats = {}
        for i, name in enumerate(numeric):
            span = hi[i] - lo[i]
            feats[name] = ("float", (float(r[i]) - lo[i]) / span if span else 0.0)
        wild = next(k for k in range(4) if r[10 + k] == "1") + 1
        soil = next(k for k in range(40) if r[14 + k] == "1") + 1
        feats["Wilderness"] = ("int64", wild)
        feats["Soil"] = ("int64", soil)
        feats["label"] = ("int64", 1 if r[54] == "2" else 0)
        yield feats


def flights_rows():
    path = os.path.join(SHARED, "nycflights13", "flights.csv.zip")
    with zipfile.ZipFile(path) as z, z.open("flights.csv") as f:
        rows = list(csv.DictReader(io.TextIOWrapper(f)))
    rows = [r for r in rows if r["arr_delay"] not in ("", "NA")]
    rows.sort(key=lambda r: r["time_hour"])  # stable
    edges = [0, 250, 500, 750, 1000, 1500, 2000, 2500, 3000]
    for r in rows:
        dist = float(r["distance"])
        bucket = max(e for e in edges if dist >= e)
        dow = datetime(int(r["year"]), int(r["month"]), int(r["day"])).weekday()
        yield {
            "carrier": ("bytes", r["carrier"]),
            "origin": ("bytes", r["origin"]),
            "dest": ("bytes", r["dest"]),
            "hour": ("int64", int(r["hour"])),
            "month": ("int64", int(r["month"])),
            "dow": ("int64", dow),
            "distance": ("int64", bucket),
            "tailnum": ("bytes", r["tailnum"] or "NA"),
            "label": ("int64", 1 if float(r["arr_delay"]) > 15 else 0),
        }


DATASETS = {"covertype": covertype_rows, "nycflights13": flights_rows}


def convert(tf, name):
    out = os.path.join(DATA, name)
    done = os.path.join(out, "_DONE")
    if os.path.exists(done):
        return out
    os.makedirs(out, exist_ok=True)
    writers = [
        tf.io.TFRecordWriter(os.path.join(out, f"part-{i:05d}-of-{SHARDS:05d}.tfrecord"))
        for i in range(SHARDS)
    ]
    n = 0
    for feats in DATASETS[name]():
        f = {}
        for k, (kind, v) in feats.items():
            if kind == "float":
                f[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
            elif kind == "int64":
                f[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
            else:
                f[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
        ex = tf.train.Example(features=tf.train.Features(feature=f))
        writers[n % SHARDS].write(ex.SerializeToString())  # contiguous-ish round robin
        n += 1
    for w in writers:
        w.close()
    open(done, "w").write(str(n))
    return out


def feature_spec(tf, name):
    if name == "covertype":
        names = ["Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology",
                 "Vertical_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways",
                 "Hillshade_9am", "Hillshade_Noon", "Hillshade_3pm",
                 "Horizontal_Distance_To_Fire_Points"]
        spec = {n: tf.io.FixedLenFeature([], tf.float32) for n in names}
        spec["Wilderness"] = tf.io.FixedLenFeature([], tf.int64)
        spec["Soil"] = tf.io.FixedLenFeature([], tf.int64)
    else:
        spec = {n: tf.io.FixedLenFeature([], tf.string) for n in ["carrier", "origin", "dest", "tailnum"]}
        for n in ["hour", "month", "dow", "distance"]:
            spec[n] = tf.io.FixedLenFeature([], tf.int64)
    spec["label"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def tfdata_run(tf, pattern, spec, vectorized):
    AUTOTUNE = tf.data.AUTOTUNE
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=AUTOTUNE)
    if vectorized:
        ds = ds.batch(128).map(lambda b: tf.io.parse_example(b, spec), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda r: tf.io.parse_single_example(r, spec), num_parallel_calls=AUTOTUNE).batch(128)
    ds = ds.prefetch(AUTOTUNE)
    n = 0
    start = time.perf_counter()
    for batch in ds:
        n += int(batch["label"].shape[0])
    return n, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--evergreen", default=os.path.join(ROOT, "target", "release", "evergreen"))
    ap.add_argument("--datasets", default="covertype,nycflights13")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    results = {"machine": {"cores": os.cpu_count(), "tensorflow": tf.__version__}, "datasets": {}}
    for name in args.datasets.split(","):
        out = convert(tf, name)
        shards = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tfrecord"))
        size = sum(os.path.getsize(s) for s in shards)
        spec = feature_spec(tf, name)
        pattern = os.path.join(out, "*.tfrecord")
        row = {"bytes": size}
        for label, vec in [("tf.data per-example", False), ("tf.data vectorized", True)]:
            times = []
            for _ in range(args.repeat):
                n, t = tfdata_run(tf, pattern, spec, vec)
                times.append(t)
            med = statistics.median(times)
            row[label] = {"examples": n, "median_seconds": med, "examples_per_s": n / med,
                          "mb_per_s": size / 1e6 / med}
        row["tf.data peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cmd = [args.evergreen, "bench", "data", "--label", "label", "--repeat", str(args.repeat), out]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            if "mode" in rec:
                row[f"evergreen {rec['mode']}"] = rec
            else:
                row["evergreen peak_rss_mib"] = rec["peak_rss_mib"]
        results["datasets"][name] = row
        best_tf = max(row["tf.data per-example"]["examples_per_s"], row["tf.data vectorized"]["examples_per_s"])
        print(f"\n{name}: {len(shards)} shards, {size / 1e6:.1f} MB, {row['tf.data per-example']['examples']} examples")
        print(f"  {'pipeline':<28} {'examples/s':>12} {'MB/s':>8} {'vs best tf.data':>16}")
        for key in ["tf.data per-example", "tf.data vectorized", "evergreen parse", "evergreen transform", "evergreen pipeline"]:
            r = row[key]
            print(f"  {key:<28} {r['examples_per_s']:>12,.0f} {r['mb_per_s']:>8.1f} {r['examples_per_s'] / best_tf:>15.2f}x")
        print(f"  peak RSS: tf.data process {row['tf.data peak_rss_mib']:.0f} MiB, evergreen {row.get('evergreen peak_rss_mib', 0):.0f} MiB")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "tfdata_compare.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
