//! TensorBoard's own reader reads the event files evergreen writes: `evergreen train` with
//! `state.tensorboard_dir` over three windows, then `tests/interop/tensorboard_read.py` loads
//! the directory with the `tensorboard` package's EventAccumulator (what `tensorboard --logdir`
//! uses), and every window's metrics and gate decision must come back as the report has them.
//!
//! The performance trace of the same run is checked here too (no Python needed).
//!
//! The interpreter is `$EVERGREEN_TFS_PYTHON` (default `python3`; `.ci/run` installs tensorboard
//! in that venv). Without tensorboard the test prints why and passes, unless
//! `EVERGREEN_REQUIRE_INTEROP=1`.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

fn python() -> String {
    std::env::var("EVERGREEN_TFS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn available() -> bool {
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    let reason = match Command::new(python())
        .args(["-c", "import tensorboard; print(tensorboard.__version__)"])
        .output()
    {
        Err(e) => format!("{} could not be run: {e}", python()),
        Ok(out) if !out.status.success() => format!(
            "{} cannot import tensorboard (pip install tensorboard)",
            python()
        ),
        Ok(out) => {
            eprintln!(
                "using tensorboard {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return true;
        }
    };
    assert!(!required, "EVERGREEN_REQUIRE_INTEROP=1 but {reason}");
    eprintln!(
        "SKIPPED tensorboard_reads_our_event_files: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 \
         to make this a failure)"
    );
    false
}

/// `evergreen train` over three windows of 1000 Elec2 rows with the event files in `<d>/tb`
/// (`extra`: more `--set` overrides); returns the report's windows and what TensorBoard read.
fn train_and_read(d: &std::path::Path, extra: &[&str]) -> (Vec<Value>, Value) {
    train_and_read_edited(d, extra, |text| text)
}

/// [`train_and_read`] with the config's text first passed through `edit`.
fn train_and_read_edited(
    d: &std::path::Path,
    extra: &[&str],
    edit: fn(String) -> String,
) -> (Vec<Value>, Value) {
    let config = write_config(d, false, "");
    let text = edit(std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, text).unwrap();
    let (header, rows) = elec2();
    write_span(&d.join("in"), "s.csv", &header, &rows[..3000]);
    let tb = d.join("tb");
    let mut sets = vec![format!("state.tensorboard_dir={}", tb.display())];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let windows = train_windows(d, &config, &d.join("in/s.csv"), 1000, &sets);
    assert_eq!(windows.len(), 3);
    let read = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/tensorboard_read.py"
        ))
        .arg(&tb)
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    (windows, serde_json::from_slice(&read.stdout).unwrap())
}

/// The per-step training loss: a point per 1024 examples and per epoch end (800 examples a
/// window here: one per window), steps (examples seen) increasing,
/// values plausible logloss.
fn check_train_loss(seen: &Value) {
    let loss = seen["scalars"]["train/loss"]
        .as_array()
        .unwrap_or_else(|| panic!("no train/loss: {seen}"));
    assert!(loss.len() >= 3, "{loss:?}");
    for pair in loss.windows(2) {
        assert!(pair[0][0].as_u64() < pair[1][0].as_u64(), "{loss:?}");
    }
    for p in loss {
        let v = p[1].as_f64().unwrap();
        assert!(v > 0.0 && v < 2.0, "{loss:?}");
    }
}

/// Histogram `tag`: one per window at steps 1..3, over `num > 0` finite values that its
/// buckets account for.
fn check_histogram(seen: &Value, tag: &str) {
    let h = seen["histograms"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no histogram {tag}: {}", seen["histograms"]));
    assert_eq!(h.len(), 3, "{tag}: {h:?}");
    for (i, e) in h.iter().enumerate() {
        let [step, num, min, max, _sum, total] = std::array::from_fn(|k| e[k].as_f64().unwrap());
        assert_eq!(step, (i + 1) as f64, "{tag}");
        assert!(num > 0.0 && total == num, "{tag}: {e:?}");
        assert!(
            min <= max && min.is_finite() && max.is_finite(),
            "{tag}: {e:?}"
        );
    }
}

#[test]
fn tensorboard_reads_deep_model_histograms_and_per_step_loss() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, seen) = train_and_read(d.path(), &["model.kind=deep"]);
    check_train_loss(&seen);
    for tag in [
        "weights/layer_0/kernel",
        "weights/layer_0/bias",
        "gradients/layer_0/kernel",
        "gradients/layer_0/bias",
        "weights/layer_2/kernel",
        "gradients/layer_2/kernel",
        "embeddings/row_norms",
    ] {
        check_histogram(&seen, tag);
    }
    let lr = seen["scalars"]["train/learning_rate"].as_array().unwrap();
    assert_eq!(lr.len(), 3);
}

/// A forest's size and history (`Model::gauges`) as `model/...` scalars, and its leaf depths
/// as a histogram.
#[test]
fn tensorboard_reads_a_forests_tree_counts_replacements_and_memory() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (_, seen) = train_and_read_edited(d.path(), &["model.kind=forest"], |text| {
        text.replace("buckets = [0.25, 0.5, 0.75]\n", "")
            .replace("[features]\n", "[features]\nrepresentation = \"raw\"\n")
    });
    check_train_loss(&seen);
    check_histogram(&seen, "forest/leaf_depth");
    for tag in [
        "model/trees",
        "model/background_trees",
        "model/nodes",
        "model/leaves",
        "model/max_depth",
        "model/bytes",
        "model/warnings",
        "model/replacements",
    ] {
        let points = seen["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}: {}", seen["scalars"]));
        assert_eq!(points.len(), 3, "{tag}");
    }
    assert_eq!(seen["scalars"]["model/trees"][2][1].as_f64(), Some(10.0));
    assert!(seen["scalars"]["model/bytes"][2][1].as_f64().unwrap() > 1000.0);
    assert!(seen["scalars"]["model/nodes"][2][1].as_f64().unwrap() > 10.0);
}

#[test]
fn tensorboard_reads_our_event_files() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (windows, seen) = train_and_read(d.path(), &[]);
    check_train_loss(&seen);
    check_histogram(&seen, "weights");
    check_histogram(&seen, "accumulators/sqrt_n");
    let lr = seen["scalars"]["train/learning_rate"].as_array().unwrap();
    assert_eq!(lr.len(), 3);
    assert!(lr.iter().all(|p| p[1].as_f64().unwrap() > 0.0), "{lr:?}");
    // TensorBoard parses "brain.Event:2" into its version number.
    assert_eq!(seen["file_version"], 2.0);
    for (tag, path) in [
        ("progressive/logloss", ["progressive", "logloss"]),
        ("progressive/auc", ["progressive", "auc"]),
        ("online/logloss", ["online", "logloss"]),
        ("evaluation/auc", ["evaluation", "auc"]),
    ] {
        let points = seen["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no scalar {tag}: {seen}"));
        assert_eq!(points.len(), 3, "{tag}: {points:?}");
        for (i, (p, w)) in points.iter().zip(&windows).enumerate() {
            assert_eq!(p[0], (i + 1) as u64, "{tag} step");
            let want = w[path[0]][path[1]].as_f64().unwrap();
            let got = p[1].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{tag} window {i}: {got} vs {want}"
            );
        }
    }
    let passed = seen["scalars"]["gate/passed"].as_array().unwrap();
    let texts = seen["text"]["gate/decision"].as_array().unwrap();
    assert_eq!((passed.len(), texts.len()), (3, 3));
    for ((p, t), w) in passed.iter().zip(texts).zip(&windows) {
        let gate_passed = w["gate"]["passed"].as_bool().unwrap();
        assert_eq!(p[1].as_f64().unwrap(), if gate_passed { 1.0 } else { 0.0 });
        let text = t[1].as_str().unwrap();
        assert!(
            text.starts_with(if gate_passed { "PASS" } else { "FAIL" }),
            "{text}"
        );
    }
}

/// `evergreen train` with `state.trace_dir` over three windows: the trace file is a valid Chrome
/// trace (JSON array) with the process metadata, one complete event per window whose stages
/// nest inside it, durations as in the report, and the utilisation counter.
#[test]
fn the_performance_trace_has_every_window_and_its_stages() {
    let d = tempfile::tempdir().unwrap();
    let config = write_config(d.path(), false, "");
    let (header, rows) = elec2();
    write_span(&d.path().join("in"), "s.csv", &header, &rows[..3000]);
    let traces = d.path().join("traces");
    let windows = train_windows(
        d.path(),
        &config,
        &d.path().join("in/s.csv"),
        1000,
        &[format!("state.trace_dir={}", traces.display())],
    );
    let files: Vec<_> = std::fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("evergreen-m-") && name.ends_with(".trace.json"),
        "{name}"
    );
    let events: Vec<Value> = serde_json::from_slice(&std::fs::read(&files[0]).unwrap())
        .expect("the trace is valid JSON after the run");
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "process_name")
    );
    let cycles: Vec<&Value> = events.iter().filter(|e| e["cat"] == "cycle").collect();
    assert_eq!(cycles.len(), 3);
    let stages: Vec<&Value> = events.iter().filter(|e| e["cat"] == "stage").collect();
    let f = |v: &Value| v.as_f64().unwrap();
    for (c, w) in cycles.iter().zip(&windows) {
        assert_eq!(c["ph"], "X");
        assert_eq!(c["args"]["span"], w["span"]);
        assert_eq!(c["args"]["outcome"], w["outcome"]);
        let (start, end) = (f(&c["ts"]), f(&c["ts"]) + f(&c["dur"]));
        assert!((f(&c["dur"]) - f(&w["seconds"]) * 1e6).abs() < 1.0, "{c}");
        let want = w["stages"].as_array().unwrap();
        let names: Vec<&str> = want.iter().map(|s| s["stage"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["progressive", "train", "evaluate"],
            "backfill windows"
        );
        let mine: Vec<&&Value> = stages
            .iter()
            .filter(|s| f(&s["ts"]) >= start - 1.0 && f(&s["ts"]) + f(&s["dur"]) <= end + 1.0)
            .collect();
        assert_eq!(mine.len(), want.len(), "stages nested in {c}");
        for (s, ws) in mine.iter().zip(want) {
            assert_eq!(s["name"], ws["stage"]);
            assert!((f(&s["dur"]) - f(&ws["seconds"]) * 1e6).abs() < 1.0, "{s}");
        }
        let train = f(&want[1]["seconds"]);
        let u = f(&c["args"]["utilization"]);
        assert!((u - train / f(&w["seconds"])).abs() < 1e-9, "{c}");
    }
    let counters = events.iter().filter(|e| e["ph"] == "C").count();
    assert_eq!(counters, 3);
    // The pipeline's CPU time behind the reading, per stage: CSV is decoded and transformed in
    // one pass.
    let fused: f64 = windows
        .iter()
        .map(|w| w["read_cpu"]["decode_transform_seconds"].as_f64().unwrap())
        .sum();
    assert!(fused > 0.0, "{windows:?}");
    assert!(
        windows
            .iter()
            .all(|w| w["read_cpu"]["transform_seconds"] == 0.0)
    );
}
