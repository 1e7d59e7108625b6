//! Helpers shared by the server's end-to-end tests: a temporary registry of FTRL versions whose
//! predictions grow with the version number, and a running server with a client.
#![allow(dead_code, unused_imports)]

pub use evergreen_core::{FeatureSpec, RawRecord, RawValue, Transformer};
pub use evergreen_metrics::Metrics;
pub use evergreen_model::{Ftrl, FtrlParams, Model, ModelKind};
pub use evergreen_registry::{MANIFEST_FORMAT_VERSION, Manifest, Registry};
pub use evergreen_serve::{
    ModelMapping, ModelSource, ServeOptions, ServerHandle, VERSION_HEADER, spawn_with_grpc,
};
pub use serde_json::{Value, json};
pub use std::collections::BTreeMap;
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub fn spec() -> FeatureSpec {
    serde_json::from_value(json!({
        "hash_bits": 8,
        "label": {"column": "y"},
        "categorical": [{"name": "c"}],
        "numeric": [{"name": "x"}]
    }))
    .unwrap()
}

pub fn manifest(version: u64, created_ms: i64) -> Manifest {
    manifest_of("m", version, created_ms, spec())
}

/// The manifest of an FTRL `version` of model `name` with feature spec `spec`.
pub fn manifest_of(name: &str, version: u64, created_ms: i64, spec: FeatureSpec) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        model_name: name.into(),
        version,
        parent_version: version.checked_sub(1).filter(|v| *v > 0),
        created_ms,
        model_kind: ModelKind::Ftrl,
        feature_spec: spec,
        training: json!({"alpha": 0.1}),
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

pub fn rec(c: &str, x: f64) -> RawRecord {
    [("c", RawValue::Str(c.into())), ("x", RawValue::Num(x))]
        .into_iter()
        .collect()
}

/// A model whose weights depend on `version`: it learned `3 * version` positive examples of
/// `c=a, x=1`, so its prediction for that input grows with the version.
pub fn model(version: u64) -> Ftrl {
    let s = spec();
    let t = Transformer::new(s.clone()).unwrap();
    let mut m = Ftrl::new(FtrlParams::default(), s.dim());
    let fv = t.features(&rec("a", 1.0)).unwrap();
    for _ in 0..version * 3 {
        m.learn(&fv, 1.0);
    }
    let fv = t.features(&rec("b", 2.0)).unwrap();
    for _ in 0..version {
        m.learn(&fv, 0.0);
    }
    m
}

pub fn model_bytes(version: u64) -> Vec<u8> {
    evergreen_model::save(&model(version), spec().fingerprint())
}

/// What `version` predicts for a record, computed without the server.
pub fn expected(version: u64, r: &RawRecord) -> f64 {
    let t = Transformer::new(spec()).unwrap();
    model(version).predict(&t.features(r).unwrap())
}

pub fn publish(reg: &Registry, version: u64) {
    reg.publish(manifest(version, 0), &model_bytes(version))
        .unwrap();
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub reg: Registry,
    pub handle: ServerHandle,
    pub metrics: Arc<Metrics>,
    pub client: reqwest::Client,
    pub url: String,
}

/// Starts a server for model `m` at `<tmp>/m` with `versions` published (none: the base path
/// does not exist).
pub async fn start(versions: &[u64], tweak: impl FnOnce(&mut ServeOptions)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("m");
    let reg = if versions.is_empty() {
        // Unused by such tests: the model's base path `<tmp>/m` does not exist yet.
        Registry::open_existing(dir.path(), "m").unwrap()
    } else {
        let reg = Registry::open(&base, "m").unwrap();
        for &v in versions {
            publish(&reg, v);
        }
        reg
    };
    let mut opts = ServeOptions {
        models: vec![ModelSource {
            name: "m".into(),
            base_path: base,
            ..ModelSource::default()
        }],
        ..ServeOptions::default()
    };
    tweak(&mut opts);
    let metrics = Arc::new(Metrics::new());
    let handle = spawn_with_grpc(
        opts,
        metrics.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let url = format!("http://{}", handle.addr);
    Fixture {
        dir,
        reg,
        handle,
        metrics,
        client: reqwest::Client::new(),
        url,
    }
}

impl Fixture {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap())
    }

    /// POSTs `body` (raw text, so that non-JSON tokens can be sent); returns code, version
    /// header and JSON body.
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (u16, Option<u64>, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let version = r
            .headers()
            .get(VERSION_HEADER)
            .map(|h| h.to_str().unwrap().parse().unwrap());
        (code, version, r.json().await.unwrap())
    }

    pub async fn served(&self) -> Vec<u64> {
        let (code, body) = self.get("/v1/models/m").await;
        if code != 200 {
            return Vec::new();
        }
        body["model_version_status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["version"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    pub fn loads(&self, outcome: &str) -> u64 {
        self.metrics
            .version_loads
            .get_or_create(&Metrics::outcome("m", outcome))
            .get()
    }
}

/// Polls `cond` every 10 ms until it holds; fails after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

/// A TensorFlow `TensorShapeProto` of these dimensions.
pub fn shape(dims: &[i64]) -> Option<evergreen_serve::grpc::pb::tensorflow::TensorShapeProto> {
    use evergreen_serve::grpc::pb::tensorflow::{TensorShapeProto, tensor_shape_proto};
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dim {
                size: *d,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}
