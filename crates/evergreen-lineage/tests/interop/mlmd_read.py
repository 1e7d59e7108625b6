#!/usr/bin/env python3
"""Reads an Evergreen lineage database with Google's ML Metadata Python client.

Usage:
  mlmd_read.py DB [--expect-models N] [--expect-trains N] [--require-readonly | --readwrite]
      Opens DB with ml_metadata's MetadataStore (sqlite, connection_mode READONLY=1, falling
      back to READWRITE_OPENCREATE=3 unless --require-readonly), walks the lineage graph through
      the MLMD API, asserts it has the shape evergreen-lineage writes, and prints a one-line
      JSON summary. Exit status 0 on success, 1 on a failed assertion.
  mlmd_read.py --make-fixture DB
      Creates DB with the Python client itself (schema 10, one tfx.Examples artifact), used to
      check that evergreen-lineage accepts an MLMD-created file. `sqlite3 DB .dump` of such a
      file is tests/fixtures/mlmd_1_17_created.sql.

Exit status 3 when the ml_metadata module is not installed (the Rust test turns that into a
skip unless EVERGREEN_REQUIRE_INTEROP=1).
"""

import argparse
import json
import math
import sys

try:
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb
except ImportError as e:  # pragma: no cover - exercised only where the client is missing
    print(f"SKIP: ml_metadata is not importable: {e}", file=sys.stderr)
    sys.exit(3)

READONLY = 1
READWRITE_OPENCREATE = 3


def connect(path, mode):
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = mode
    return metadata_store.MetadataStore(config)


def make_fixture(path):
    store = connect(path, READWRITE_OPENCREATE)
    t = pb.ArtifactType(name="tfx.Examples")
    t.properties["split_names"] = pb.STRING
    type_id = store.put_artifact_type(t)
    a = pb.Artifact(type_id=type_id, uri="/pipelines/x/examples/1", name="examples-1")
    a.properties["split_names"].string_value = '["train","eval"]'
    store.put_artifacts([a])
    print(json.dumps({"created": path}))


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def read(args):
    mode_used = None
    errors = []
    if args.readwrite:
        modes = [READWRITE_OPENCREATE]
    elif args.require_readonly:
        modes = [READONLY]
    else:
        modes = [READONLY, READWRITE_OPENCREATE]
    store = None
    for mode in modes:
        try:
            store = connect(args.db, mode)
            mode_used = mode
            break
        except Exception as e:  # noqa: BLE001 - report every failure mode
            errors.append(f"mode {mode}: {type(e).__name__}: {e}")
    check(store is not None, "could not open the database: " + "; ".join(errors))

    types = {t.name: t for t in store.get_artifact_types()}
    for name, base in [
        ("evergreen.DataSpan", pb.ArtifactType.DATASET),
        ("evergreen.Model", pb.ArtifactType.MODEL),
        ("evergreen.Metrics", pb.ArtifactType.METRICS),
    ]:
        check(name in types, f"artifact type {name} missing; have {sorted(types)}")
        check(types[name].base_type == base, f"{name} base_type {types[name].base_type} != {base}")
    check(types["evergreen.Model"].properties["version"] == pb.INT, "Model.version is not INT")
    etypes = {t.name: t for t in store.get_execution_types()}
    for name in ["evergreen.Train", "evergreen.Evaluate", "evergreen.Publish", "evergreen.AdminAction"]:
        check(name in etypes, f"execution type {name} missing; have {sorted(etypes)}")
    check(etypes["evergreen.Train"].base_type == pb.ExecutionType.TRAIN, "Train base_type")
    check(etypes["evergreen.Evaluate"].properties["passed"] == pb.BOOLEAN, "Evaluate.passed type")

    models = store.get_artifacts_by_type("evergreen.Model")
    for m in models:
        check(m.state == pb.Artifact.LIVE or m.state == pb.Artifact.ABANDONED, f"model {m.name} state {m.state}")
        check(m.properties["version"].int_value > 0, f"model {m.name} has no version")
        check(m.name == f'{m.properties["model_name"].string_value}/{m.properties["version"].int_value}',
              f"model artifact name {m.name}")
        check(m.uri, f"model {m.name} has no uri")
    spans = store.get_artifacts_by_type("evergreen.DataSpan")
    metrics = store.get_artifacts_by_type("evergreen.Metrics")
    trains = store.get_executions_by_type("evergreen.Train")
    evaluates = store.get_executions_by_type("evergreen.Evaluate")
    executions = store.get_executions()
    check(len(executions) >= len(trains) + len(evaluates), "executions listing")
    events = store.get_events_by_execution_ids([e.id for e in executions])

    by_id = {a.id: a for a in store.get_artifacts()}
    type_of = {a.id: a.type for a in by_id.values()}
    for t in trains:
        ins = [e for e in events if e.execution_id == t.id and e.type == pb.Event.INPUT]
        outs = [e for e in events if e.execution_id == t.id and e.type == pb.Event.OUTPUT]
        check(any(type_of[e.artifact_id] == "evergreen.DataSpan" for e in ins), f"{t.name}: no span input")
        check(any(type_of[e.artifact_id] == "evergreen.Metrics" for e in outs), f"{t.name}: no metrics output")
        for e in ins + outs:
            check(len(e.path.steps) == 1 and e.path.steps[0].key, f"{t.name}: event path {e.path}")
        check(t.last_known_state == pb.Execution.COMPLETE, f"{t.name} state {t.last_known_state}")
        check(t.properties["hyperparameters"].string_value, f"{t.name}: no hyperparameters")
        published = t.custom_properties.get("published_version")
        if published is not None:
            model_outs = [e for e in outs if type_of[e.artifact_id] == "evergreen.Model"]
            check(len(model_outs) == 1, f"{t.name}: published but no model output")
    for e in evaluates:
        passed = e.properties["passed"].bool_value
        want = pb.Execution.COMPLETE if passed else pb.Execution.FAILED
        check(e.last_known_state == want, f"{e.name}: state {e.last_known_state} passed={passed}")

    # Upstream lineage of every model through MLMD's own event graph.
    lineage = {}
    for m in models:
        producers = [e.execution_id for e in store.get_events_by_artifact_ids([m.id])
                     if e.type == pb.Event.OUTPUT]
        check(len(producers) == 1, f"{m.name}: {len(producers)} producers")
        inputs = [by_id[e.artifact_id].name for e in store.get_events_by_execution_ids(producers)
                  if e.type == pb.Event.INPUT]
        lineage[m.name] = sorted(inputs)

    nan_metrics = 0
    for a in metrics:
        for key in ["logloss", "auc", "accuracy", "calibration"]:
            if key not in a.properties:
                nan_metrics += 1  # NaN is stored as an absent property
            else:
                v = a.properties[key].double_value
                check(isinstance(v, float) and not math.isnan(v), f"{a.name}.{key}={v}")

    contexts = store.get_contexts_by_type("evergreen.Pipeline")
    for c in contexts:
        arts = store.get_artifacts_by_context(c.id)
        execs = store.get_executions_by_context(c.id)
        check(arts and execs, f"context {c.name} is empty")

    if args.expect_models is not None:
        check(len(models) == args.expect_models, f"{len(models)} models, expected {args.expect_models}")
    if args.expect_trains is not None:
        check(len(trains) == args.expect_trains, f"{len(trains)} trains, expected {args.expect_trains}")

    print(json.dumps({
        "ok": True,
        "connection_mode": {READONLY: "READONLY", READWRITE_OPENCREATE: "READWRITE_OPENCREATE"}[mode_used],
        "fallback_errors": errors,
        "artifact_types": len(types),
        "models": sorted(m.name for m in models),
        "spans": len(spans),
        "metrics": len(metrics),
        "absent_nan_metric_values": nan_metrics,
        "executions": len(executions),
        "trains": len(trains),
        "evaluates": len(evaluates),
        "events": len(events),
        "contexts": sorted(c.name for c in contexts),
        "model_inputs": lineage,
    }, sort_keys=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("--make-fixture", action="store_true")
    p.add_argument("--expect-models", type=int)
    p.add_argument("--expect-trains", type=int)
    p.add_argument("--require-readonly", action="store_true")
    p.add_argument("--readwrite", action="store_true",
                   help="connect with READWRITE_OPENCREATE only (MLMD then runs its own init/upgrade checks with write access)")
    args = p.parse_args()
    try:
        if args.make_fixture:
            make_fixture(args.db)
        else:
            read(args)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
