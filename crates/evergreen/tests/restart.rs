//! Restart: the process is killed (SIGKILL, or an abort at a failpoint inside the cycle) between
//! cycles and mid-cycle; after a restart no span is skipped or trained twice and the newest
//! version is intact and servable.

mod common;

use common::*;
use evergreen_lineage::LineageStore;
use evergreen_registry::Registry;
use std::collections::BTreeSet;
use std::path::Path;

const SPANS: usize = 5;

fn setup(root: &Path, rows_per_span: usize, extra: &str) -> std::path::PathBuf {
    let config = write_config(root, false, extra);
    let (header, rows) = elec2();
    for (i, chunk) in rows.chunks(rows_per_span).take(SPANS).enumerate() {
        write_span(
            &root.join("in"),
            &format!("s{:02}.csv", i + 1),
            &header,
            chunk,
        );
    }
    config
}

/// Every span consumed exactly once; versions contiguous, each from a distinct span, each with
/// its parent the previous one; the newest loads.
fn check_exactly_once(root: &Path) {
    let registry = Registry::open(root.join("models/m"), "m").unwrap();
    let versions = registry.versions().unwrap();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    let mut trained = BTreeSet::new();
    for v in &versions {
        let m = registry.manifest(*v).unwrap();
        for s in &m.spans {
            assert!(
                trained.insert(s.clone()),
                "span {s} trained into two versions"
            );
        }
        assert_eq!(m.parent_version, if *v == 1 { None } else { Some(v - 1) });
        // The source position committed with the version: every record of its span.
        let rows = std::fs::read_to_string(root.join("in").join(&m.spans[0]))
            .unwrap()
            .lines()
            .count() as u64
            - 1;
        assert_eq!(m.positions.len(), 1);
        assert_eq!(m.positions[0].records, rows, "version {v}");
    }
    registry
        .load(*versions.last().unwrap())
        .expect("newest version intact");
    let store = LineageStore::open(&root.join("state/lineage.sqlite")).unwrap();
    let cycles = store.cycles("m").unwrap();
    let names: Vec<&str> = cycles.iter().map(|c| c.span.name.as_str()).collect();
    let expected: Vec<String> = (1..=SPANS).map(|i| format!("s{i:02}.csv")).collect();
    assert_eq!(names, expected, "each span consumed once, in order");
    for c in &cycles {
        if let Some(v) = c.published_version {
            let m = registry.manifest(v).unwrap();
            assert_eq!(m.spans, vec![c.span.name.clone()]);
        }
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("state/trainer-state.json")).unwrap())
            .unwrap();
    assert_eq!(state["watermark"], "s05.csv");
    assert!(
        std::fs::read_dir(root.join("models/m")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")),
        "no temporary directory left"
    );
}

fn run_once(config: &Path, env: &[(&str, &str)]) -> Proc {
    let mut p = Proc::spawn(
        &["run", "--config", config.to_str().unwrap(), "--once"],
        env,
    );
    p.wait_exit();
    p
}

#[test]
fn abort_at_every_point_of_a_cycle_then_restart() {
    for point in [
        "after_read",
        "after_publish",
        "after_lineage",
        "after_state",
    ] {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let config = setup(root, 600, "");
        // Crash inside the second cycle (mid_read: in the middle of its shard; each 600-row
        // span is 5 batches of 128, so the 7th batch is the second span's second).
        let fp = if point == "mid_read" {
            "mid_read:7".to_string()
        } else {
            format!("{point}:2")
        };
        let mut p = Proc::spawn(
            &["run", "--config", config.to_str().unwrap(), "--once"],
            &[("EVERGREEN_FAILPOINT", &fp)],
        );
        let status = p.wait_exit();
        assert!(
            !status.success(),
            "{point}: the failpoint must kill the process"
        );
        assert!(
            p.seen_err
                .iter()
                .any(|l| l.contains(&format!("failpoint {point}"))),
            "{point}: {:?}",
            p.seen_err
        );
        let first_run: Vec<String> = p
            .seen_out
            .iter()
            .filter(|l| l.starts_with("span "))
            .cloned()
            .collect();
        assert_eq!(
            first_run.len(),
            1,
            "{point}: one full cycle before the crash"
        );
        let mut p = run_once(&config, &[]);
        let second_run: Vec<String> = p
            .seen_out
            .drain(..)
            .filter(|l| l.starts_with("span "))
            .collect();
        // Cycle 2 publishes (lenient gate), so from `after_publish` on it is committed (the
        // version's manifest carries the watermark) and the restart starts at s03; a crash
        // after reading commits nothing and s02 is redone.
        let first_after = if point == "after_read" {
            "s02.csv"
        } else {
            "s03.csv"
        };
        assert!(
            second_run[0].starts_with(&format!("span {first_after}")),
            "{point}: restart resumed at {:?}",
            second_run.first()
        );
        check_exactly_once(root);
    }
}

#[test]
fn sigkill_between_cycles_and_mid_cycle() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Larger spans and several epochs so that a cycle takes long enough to be interrupted.
    let config = setup(root, 9000, "epochs = 100");
    // Between cycles: kill right after the first cycle line.
    let mut p = Proc::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    p.wait_out("first cycle", |l| l.starts_with("span s01.csv"));
    p.child.kill().unwrap();
    p.wait_exit();
    // Mid-cycle: kill as soon as the next cycle has started.
    let mut p = Proc::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    p.wait_err("a cycle start", |l| l.contains("cycle started"));
    p.child.kill().unwrap();
    p.wait_exit();
    let out = p.seen_out.join("\n");
    assert!(
        !out.contains("span "),
        "the kill landed mid-cycle, so no cycle completed: {out}"
    );
    assert!(
        p.seen_err
            .iter()
            .any(|l| l.contains("cycle started") && l.contains("s02.csv")),
        "the restarted trainer resumed at s02, not s01: {:?}",
        p.seen_err
    );
    // Finish.
    let p = run_once(&config, &[]);
    assert!(!p.seen_out.iter().any(|l| l.starts_with("span s01.csv")));
    check_exactly_once(root);

    // The newest version is servable by a fresh server.
    let registry = Registry::open(root.join("models/m"), "m").unwrap();
    let newest = registry.latest().unwrap().unwrap();
    let base_path = root.join("models/m");
    let mut s = Proc::spawn(
        &[
            "serve",
            "--rest_api_port=0",
            "--model_name=m",
            &format!("--model_base_path={}", base_path.display()),
        ],
        &[],
    );
    let base = s.rest_addr();
    let body: serde_json::Value = eventually("status", || {
        let r = reqwest::blocking::get(format!("{base}/v1/models/m")).ok()?;
        r.status().is_success().then(|| r.json().unwrap())
    });
    assert_eq!(
        body["model_version_status"][0]["version"],
        newest.to_string()
    );
    assert_eq!(body["model_version_status"][0]["state"], "AVAILABLE");
}

/// Spans read in windows (`data.window_records`): a process killed anywhere inside a span
/// resumes inside it, from the committed source position; the windows committed are the same
/// as an uninterrupted run's, each once, and the newest model is bit-identical.
#[test]
fn abort_inside_a_span_read_in_windows_then_resume_inside_it() {
    let setup = |root: &Path| {
        let config = setup(root, 900, "");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "poll_interval_ms = 50\n",
            "poll_interval_ms = 50\nwindow_records = 300\n",
        ) + "[pipeline]\nchunk = 64\n";
        std::fs::write(&config, text).unwrap();
        config
    };
    let outcome = |root: &Path| {
        let store = LineageStore::open(&root.join("state/lineage.sqlite")).unwrap();
        let names: Vec<String> = store
            .cycles("m")
            .unwrap()
            .into_iter()
            .map(|c| c.span.name)
            .collect();
        let registry = Registry::open(root.join("models/m"), "m").unwrap();
        let v = registry.latest().unwrap().unwrap();
        let model = std::fs::read(registry.version_dir(v).join("model.bin")).unwrap();
        (names, model)
    };
    let d = tempfile::tempdir().unwrap();
    let config = setup(d.path());
    let p = run_once(&config, &[]);
    assert!(
        p.seen_out
            .iter()
            .any(|l| l.starts_with("span s01.csv.part00001"))
    );
    let (names, model) = outcome(d.path());
    assert!(
        names.len() >= 9,
        "900-row spans in windows of ~300: {names:?}"
    );
    assert!(
        names.contains(&"s05.csv.part00003".to_string()),
        "{names:?}"
    );

    // Hits in the second window of the second span (3 windows of ~320 records per span, 3
    // batches per window).
    for fp in [
        "mid_read:14",
        "mid_window:5",
        "after_read:5",
        "after_publish:5",
        "after_lineage:5",
        "after_state:5",
    ] {
        let d = tempfile::tempdir().unwrap();
        let config = setup(d.path());
        let mut p = Proc::spawn(
            &["run", "--config", config.to_str().unwrap(), "--once"],
            &[("EVERGREEN_FAILPOINT", fp)],
        );
        assert!(
            !p.wait_exit().success(),
            "{fp}: the failpoint must kill the process"
        );
        let point = fp.split(':').next().unwrap();
        assert!(
            p.seen_err
                .iter()
                .any(|l| l.contains(&format!("failpoint {point}"))),
            "{fp}: {:?}",
            p.seen_err
        );
        let p = run_once(&config, &[]);
        assert!(
            p.seen_err
                .iter()
                .any(|l| l.contains("resuming inside the span")),
            "{fp}: the restart resumes inside span s02"
        );
        let (got_names, got_model) = outcome(d.path());
        assert_eq!(got_names, names, "{fp}: each window once, in order");
        assert!(
            got_model == model,
            "{fp}: the newest model is bit-identical"
        );
    }
}
