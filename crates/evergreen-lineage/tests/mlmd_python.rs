//! Interop with Google's ML Metadata Python client: a database written by this crate must be
//! readable by `ml_metadata.metadata_store.MetadataStore`, and a database created by that
//! client must be accepted and extended by this crate.
//!
//! Needs `python3` with the `ml-metadata` package (`pip install ml-metadata`). Without them the
//! tests print why and pass, unless `EVERGREEN_REQUIRE_INTEROP=1`, which makes that a failure.

mod common;

use common::{cycle, history};
use evergreen_lineage::{AdminActionRecord, LineageStore};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mlmd_read.py")
}

/// `true` when python3 and `ml_metadata` are usable; otherwise prints the skip reason (or panics
/// when `EVERGREEN_REQUIRE_INTEROP=1`).
fn interop_available(test: &str) -> bool {
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    let reason = match Command::new("python3")
        .args(["-c", "import ml_metadata; print(ml_metadata.__version__)"])
        .output()
    {
        Err(e) => format!("python3 could not be run: {e}"),
        Ok(out) if !out.status.success() => format!(
            "python3 cannot import ml_metadata (pip install ml-metadata): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        ),
        Ok(out) => {
            eprintln!(
                "{test}: using ml-metadata {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return true;
        }
    };
    assert!(
        !required,
        "{test}: EVERGREEN_REQUIRE_INTEROP=1 but {reason}"
    );
    // Written to the real stderr (not eprintln!, which libtest captures for passing tests) so
    // the skip is visible in a plain `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 to make this a failure)"
    );
    false
}

/// Runs the reader script and returns its JSON summary.
fn python_read(db: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(script())
        .arg(db)
        .args(extra)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mlmd_read.py failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    eprintln!("mlmd_read.py: {stdout}");
    serde_json::from_str(stdout.trim()).expect("summary is JSON")
}

fn write_sample(db: &Path) -> LineageStore {
    let mut store = LineageStore::open(db).expect("open");
    for c in history("ctr") {
        store.record_cycle(&c).expect("record");
    }
    let mut nan = cycle("cvr", 2, None, Some(1));
    nan.progressive.auc = f64::NAN;
    nan.evaluation.calibration = f64::NAN;
    store.record_cycle(&nan).expect("record nan");
    store
        .record_admin_action(&AdminActionRecord {
            model_name: "ctr".into(),
            action: "rollback".into(),
            actor: "alice".into(),
            reason: "test".into(),
            details_json: r#"{"to":2}"#.into(),
            at_ms: 1_700_000_900_000,
        })
        .expect("admin");
    store
}

#[test]
fn python_client_reads_our_database() {
    if !interop_available("python_client_reads_our_database") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("lineage.sqlite");
    let store = write_sample(&db);

    // While the trainer still holds the file open (WAL files present) …
    let live = python_read(
        &db,
        &[
            "--expect-models",
            "4",
            "--expect-trains",
            "6",
            "--require-readonly",
        ],
    );
    // … and after it closed it.
    drop(store);
    let closed = python_read(
        &db,
        &[
            "--expect-models",
            "4",
            "--expect-trains",
            "6",
            "--require-readonly",
        ],
    );
    for s in [&live, &closed] {
        assert_eq!(s["ok"], true);
        assert_eq!(s["connection_mode"], "READONLY");
        assert_eq!(
            s["models"],
            serde_json::json!(["ctr/1", "ctr/2", "ctr/3", "cvr/1"])
        );
        assert_eq!(s["evaluates"], 6);
        assert_eq!(s["absent_nan_metric_values"], 2);
        assert_eq!(s["contexts"], serde_json::json!(["ctr", "cvr"]));
        assert_eq!(
            s["model_inputs"]["ctr/2"],
            serde_json::json!(["/data/spans/span-2.csv", "ctr/1"])
        );
    }
    // With write access MLMD runs its init/upgrade path on connect; it must find nothing to
    // create, upsert or migrate.
    let before = common::row_counts(&db);
    let rw = python_read(&db, &["--expect-models", "4", "--readwrite"]);
    assert_eq!(rw["connection_mode"], "READWRITE_OPENCREATE");
    assert_eq!(common::row_counts(&db), before, "MLMD changed nothing");
    let store = LineageStore::open(&db).expect("reopen");
    assert_eq!(store.cycles("ctr").expect("cycles").len(), 5);
}

#[test]
fn we_accept_and_extend_a_database_the_python_client_created() {
    if !interop_available("we_accept_and_extend_a_database_the_python_client_created") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("mlmd.sqlite");
    let out = Command::new("python3")
        .arg(script())
        .arg(&db)
        .arg("--make-fixture")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "--make-fixture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let mut store = LineageStore::open(&db).expect("open MLMD-created db");
        for c in history("ctr") {
            store.record_cycle(&c).expect("record");
        }
    }
    let s = python_read(&db, &["--expect-models", "3", "--expect-trains", "5"]);
    assert_eq!(s["ok"], true);
    assert_eq!(s["models"], serde_json::json!(["ctr/1", "ctr/2", "ctr/3"]));
}
