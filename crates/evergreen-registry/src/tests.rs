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
