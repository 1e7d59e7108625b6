//! Registry tests: atomic publish, verification, retention, labels.

use super::*;
use evergreen_core::FeatureSpec;
use evergreen_model::{Ftrl, FtrlParams, ModelKind};

fn spec() -> FeatureSpec {
    serde_json::from_value(serde_json::json!({
        "hash_bits": 8, "label": {"column": "y"}, "numeric": [{"name": "x"}]
    }))
    .unwrap()
}

fn manifest(version: u64) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        model_name: "m".into(),
        version,
        parent_version: version.checked_sub(1).filter(|v| *v > 0),
        created_ms: 0,
        model_kind: ModelKind::Ftrl,
        feature_spec: spec(),
        training: serde_json::json!({"alpha": 0.1}),
        spans: vec![format!("span-{version}.csv")],
        watermark: Some(format!("span-{version}.csv")),
        progressive: None,
        evaluation: None,
        baseline: None,
        gate: None,
        code_version: "test".into(),
        files: Default::default(),
        positions: Vec::new(),
        partial: None,
    }
}

fn publish(r: &Registry, v: u64) -> PathBuf {
    let m = Ftrl::new(FtrlParams::default(), spec().dim());
    let bytes = evergreen_model::save(&m, spec().fingerprint());
    r.publish(manifest(v), &bytes).unwrap()
}

#[test]
fn publish_then_load_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path().join("m"), "m").unwrap();
    assert_eq!(r.latest().unwrap(), None);
    let dir = publish(&r, 1);
    assert_eq!(dir, d.path().join("m/1"));
    publish(&r, 2);
    assert_eq!(r.versions().unwrap(), vec![1, 2]);
    let v = r.load(2).unwrap();
    assert_eq!(v.manifest.version, 2);
    assert_eq!(v.manifest.parent_version, Some(1));
    assert_eq!(v.transformer.spec(), &spec());
    assert!(matches!(
        r.publish(manifest(2), b"x"),
        Err(RegistryError::Exists { .. })
    ));
}

#[test]
fn incomplete_and_foreign_directories_are_invisible() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    fs::create_dir(d.path().join("2")).unwrap(); // no manifest: half-copied
    fs::create_dir(d.path().join(".tmp-3-99")).unwrap();
    fs::create_dir(d.path().join("assets")).unwrap();
    assert_eq!(r.versions().unwrap(), vec![1]);
    publish(&r, 4);
    assert!(!d.path().join(".tmp-3-99").exists(), "stale temp removed");
}

#[test]
fn corrupt_model_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    let dir = publish(&r, 1);
    let path = dir.join(MODEL_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let e = r.load(1).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(e.to_string().contains("model.bin"), "{e}");
}

#[test]
fn spec_mismatch_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    let m = Ftrl::new(FtrlParams::default(), spec().dim());
    let bytes = evergreen_model::save(&m, 12345);
    r.publish(manifest(1), &bytes).unwrap();
    assert!(r.load(1).unwrap_err().to_string().contains("feature spec"));
}

#[test]
fn retention_keeps_newest_protected_and_labelled() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    for v in 1..=6 {
        publish(&r, v);
    }
    r.set_labels(&BTreeMap::from([("stable".to_string(), 2)]))
        .unwrap();
    let removed = r.apply_retention(2, &[3]).unwrap();
    assert_eq!(removed, vec![1, 4]);
    assert_eq!(r.versions().unwrap(), vec![2, 3, 5, 6]);
    assert_eq!(r.labels().unwrap()["stable"], 2);
}

/// Writes a copy of version `from`'s files into a directory named `name`, with the manifest
/// changed by `edit`.
fn copy_version(r: &Registry, from: u64, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let src = r.version_dir(from);
    let dst = r.base().join(name);
    fs::create_dir(&dst).unwrap();
    fs::copy(src.join(MODEL_FILE), dst.join(MODEL_FILE)).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join(MANIFEST_FILE)).unwrap()).unwrap();
    edit(&mut m);
    fs::write(dst.join(MANIFEST_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
}

#[test]
fn only_canonical_version_names_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    for name in ["0", "00", "01", "007", "+2", "2 "] {
        copy_version(&r, 1, name, |_| {});
    }
    assert_eq!(r.versions().unwrap(), vec![1]);
    for v in r.versions().unwrap() {
        assert_eq!(r.load(v).unwrap().manifest.version, v);
    }
}

#[test]
fn version_zero_cannot_be_published() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    let m = Ftrl::new(FtrlParams::default(), spec().dim());
    let bytes = evergreen_model::save(&m, spec().fingerprint());
    let e = r.publish(manifest(0), &bytes).unwrap_err();
    assert!(matches!(e, RegistryError::Manifest { .. }), "{e}");
    assert!(!d.path().join("0").exists());
}

#[test]
fn manifest_version_must_match_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    copy_version(&r, 1, "3", |_| {}); // manifest still says 1
    assert_eq!(r.versions().unwrap(), vec![1, 3]);
    for e in [r.manifest(3).unwrap_err(), r.load(3).unwrap_err()] {
        assert!(matches!(e, RegistryError::Manifest { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&r.version_dir(3).join(MANIFEST_FILE).display().to_string()),
            "{text}"
        );
        assert!(text.contains("version 1"), "{text}");
    }
}

#[test]
fn manifest_format_version_must_be_readable() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    for (v, format) in [(2u64, MANIFEST_FORMAT_VERSION + 1), (3, 0)] {
        copy_version(&r, 1, &v.to_string(), |m| {
            m["version"] = v.into();
            m["format_version"] = format.into();
            // A newer format may change fields: the version check must come first.
            if format > MANIFEST_FORMAT_VERSION {
                m.as_object_mut().unwrap().remove("spans");
            }
        });
        for e in [r.manifest(v).unwrap_err(), r.load(v).unwrap_err()] {
            assert!(matches!(e, RegistryError::Manifest { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("manifest.json"), "{text}");
            assert!(
                text.contains(&format!("manifest format version {format}")),
                "{text}"
            );
        }
    }
    r.load(1).unwrap();
}

#[test]
fn model_dimension_must_match_the_spec() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    // Right fingerprint, valid checksums, but fewer buckets than the spec's 2^8.
    let m = Ftrl::new(FtrlParams::default(), 16);
    let bytes = evergreen_model::save(&m, spec().fingerprint());
    r.publish(manifest(1), &bytes).unwrap();
    let e = r.load(1).unwrap_err();
    match &e {
        RegistryError::Dimension {
            path,
            model_dim,
            spec_dim,
        } => {
            assert_eq!(path, &r.version_dir(1).join(MODEL_FILE));
            assert_eq!((*model_dim, *spec_dim), (16, 256));
        }
        other => panic!("expected Dimension, got {other}"),
    }
    assert!(e.to_string().contains("model.bin"), "{e}");
}

#[test]
fn malformed_labels_file_is_reported_as_labels() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    for text in ["{\"stable\": \"one\"}", "[1]", "{"] {
        fs::write(d.path().join(LABELS_FILE), text).unwrap();
        let e = r.labels().unwrap_err();
        assert!(matches!(e, RegistryError::Labels { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("invalid labels file"), "{msg}");
        assert!(!msg.contains("manifest"), "{msg}");
        assert!(msg.contains(LABELS_FILE), "{msg}");
        assert!(r.apply_retention(1, &[]).is_err());
    }
}

#[test]
fn promote_split_rollback_and_pin_move_labels_and_policy() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    for v in 1..=4 {
        publish(&r, v);
    }
    // No labels: unversioned traffic is on the newest version; promoting 2 records 4 → 2.
    let c = r.promote(Some(2)).unwrap();
    assert_eq!(c.labels_after.get(STABLE), Some(&2));
    assert_eq!(c.traffic_after.history, vec![4, 2]);
    // Canary 3 at 10%, then promoted: stable 3, canary gone, share 0.
    let c = r
        .split(
            &SplitRequest {
                canary: 3,
                percent: 10.0,
                key_feature: Some("user".into()),
                ..Default::default()
            },
            1_000,
        )
        .unwrap();
    assert_eq!(c.labels_after.get(CANARY), Some(&3));
    assert_eq!(r.traffic().unwrap().canary_percent, 10.0);
    assert_eq!(r.traffic().unwrap().key_feature.as_deref(), Some("user"));
    // While the canary gets traffic, rollback withdraws it (stable stays).
    let c = r.rollback().unwrap();
    assert_eq!(c.labels_after.get(CANARY), None);
    assert_eq!(c.labels_after.get(STABLE), Some(&2));
    assert_eq!(r.traffic().unwrap().canary_percent, 0.0);
    r.split(
        &SplitRequest {
            canary: 3,
            percent: 50.0,
            ..Default::default()
        },
        2_000,
    )
    .unwrap();
    let c = r.promote(None).unwrap();
    assert_eq!(c.labels_after.get(STABLE), Some(&3));
    assert_eq!(c.labels_after.get(CANARY), None);
    assert_eq!(r.traffic().unwrap().canary_percent, 0.0);
    assert_eq!(r.traffic().unwrap().history, vec![4, 2, 3]);
    // Rollback of a stable: back along the history (3 → 2 → 4), then to an older version.
    assert_eq!(r.rollback().unwrap().labels_after.get(STABLE), Some(&2));
    assert_eq!(r.rollback().unwrap().labels_after.get(STABLE), Some(&4));
    assert_eq!(r.rollback().unwrap().labels_after.get(STABLE), Some(&3));
    // Pin and unpin; a version that is not on disk is refused.
    assert_eq!(r.pin(Some(1)).unwrap().traffic_after.pinned, Some(1));
    assert!(matches!(r.pin(Some(9)), Err(AdminError::Invalid(_))));
    assert_eq!(r.pin(None).unwrap().traffic_after.pinned, None);
    assert!(matches!(r.promote(None), Err(AdminError::Invalid(_))));
    // Retention keeps what the policy needs.
    r.shadow(Some(Shadow {
        version: 1,
        percent: 20.0,
    }))
    .unwrap();
    publish(&r, 5);
    publish(&r, 6);
    let removed = r.apply_retention(1, &[]).unwrap();
    assert!(!removed.contains(&1), "shadow version kept: {removed:?}");
    assert!(!removed.contains(&3), "stable kept: {removed:?}");
}

#[test]
fn split_validation_and_ramp_steps() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    publish(&r, 1);
    let bad = |s: SplitRequest| r.split(&s, 0).unwrap_err().to_string();
    assert!(
        bad(SplitRequest {
            canary: 1,
            percent: 5.0,
            ..Default::default()
        })
        .contains("only version")
    );
    publish(&r, 2);
    assert!(
        bad(SplitRequest {
            canary: 1,
            percent: 120.0,
            ..Default::default()
        })
        .contains("between 0 and 100")
    );
    assert!(
        bad(SplitRequest {
            canary: 1,
            ramp: vec![50.0, 10.0],
            ramp_interval_s: 5,
            ..Default::default()
        })
        .contains("must not decrease")
    );
    assert!(
        bad(SplitRequest {
            canary: 1,
            ramp: vec![10.0],
            ..Default::default()
        })
        .contains("ramp_interval_s")
    );
    assert!(
        bad(SplitRequest {
            canary: 7,
            percent: 1.0,
            ..Default::default()
        })
        .contains("version 7")
    );
    r.split(
        &SplitRequest {
            canary: 2,
            ramp: vec![10.0, 50.0, 100.0],
            ramp_interval_s: 60,
            ..Default::default()
        },
        1_000_000,
    )
    .unwrap();
    assert_eq!(
        r.labels().unwrap().get(STABLE),
        Some(&1),
        "the rest stays on 1"
    );
    let t = r.traffic().unwrap();
    assert_eq!(t.canary_percent_at(1_000_000), 10.0);
    assert_eq!(t.canary_percent_at(1_059_999), 10.0);
    assert_eq!(t.canary_percent_at(1_060_000), 50.0);
    assert_eq!(t.canary_percent_at(9_000_000), 100.0);
    assert_eq!(
        t.canary_percent_at(0),
        10.0,
        "clock before the start: first step"
    );
    // A hand-edited policy out of range is reported, not served.
    fs::write(d.path().join(TRAFFIC_FILE), r#"{"canary_percent": -1}"#).unwrap();
    assert!(matches!(r.traffic(), Err(RegistryError::Traffic { .. })));
    fs::write(d.path().join(TRAFFIC_FILE), r#"{"canary": 1}"#).unwrap();
    assert!(matches!(r.traffic(), Err(RegistryError::Traffic { .. })));
}

#[test]
fn key_buckets_are_sticky_and_uniform() {
    let n = 20_000;
    let in_canary = |pct: f64| {
        (0..n)
            .filter(|i| key_bucket(format!("user-{i}").as_bytes()) < pct)
            .count()
    };
    for pct in [1.0, 10.0, 50.0] {
        let got = in_canary(pct) as f64 / n as f64 * 100.0;
        // Binomial: 4 standard deviations.
        let sd = (pct * (100.0 - pct) / n as f64).sqrt();
        assert!((got - pct).abs() < 4.0 * sd + 1e-9, "{pct}%: {got}%");
    }
    // Growing the share keeps every key already in the canary there.
    for i in 0..1000 {
        let b = key_bucket(format!("user-{i}").as_bytes());
        assert_eq!(b, key_bucket(format!("user-{i}").as_bytes()));
        assert!((0.0..100.0).contains(&b));
    }
}

#[test]
fn publication_pauses_and_resumes_and_an_alert_rolls_back_once() {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(d.path(), "m").unwrap();
    for v in 1..=3 {
        publish(&r, v);
    }
    assert_eq!(r.traffic().unwrap().publication_paused, None);
    let c = r.pause_publication("canary worse than stable").unwrap();
    assert_eq!(c.action, "pause");
    assert_eq!(
        r.traffic().unwrap().publication_paused.as_deref(),
        Some("canary worse than stable")
    );
    let c = r.resume_publication().unwrap();
    assert!(
        c.summary.contains("canary worse than stable"),
        "{}",
        c.summary
    );
    assert_eq!(r.traffic().unwrap().publication_paused, None);
    // An alert's rollback happens once, however often the alert is sent, and survives a
    // reopened registry (it is remembered in traffic.json).
    let key = "4f2a@2026-11-29T13:00:00Z";
    let c = r.rollback_for_alert(key).unwrap().expect("rolled back");
    assert_eq!(c.labels_after.get(STABLE), Some(&2));
    assert!(r.rollback_for_alert(key).unwrap().is_none());
    let again = Registry::open_existing(d.path(), "m").unwrap();
    assert!(again.rollback_for_alert(key).unwrap().is_none());
    assert_eq!(again.labels().unwrap().get(STABLE), Some(&2));
    // The same alert firing again later (a new startsAt) is a new event.
    let c = again
        .rollback_for_alert("4f2a@2026-11-29T15:00:00Z")
        .unwrap()
        .expect("rolled back");
    assert_eq!(c.labels_after.get(STABLE), Some(&1));
    // The memory is bounded: the newest keys are kept.
    let n = crate::traffic::HANDLED_ALERTS + 3;
    for i in 0..n {
        // A canary each time, withdrawn by the alert's rollback.
        let split = SplitRequest {
            canary: 3,
            percent: 10.0,
            ..Default::default()
        };
        again.split(&split, 1_000).unwrap();
        assert!(
            again
                .rollback_for_alert(&format!("k{i}"))
                .unwrap()
                .is_some()
        );
    }
    let handled = again.traffic().unwrap().handled_alerts;
    assert_eq!(handled.len(), crate::traffic::HANDLED_ALERTS);
    assert_eq!(
        handled.last().map(String::as_str),
        Some(&*format!("k{}", n - 1))
    );
}
