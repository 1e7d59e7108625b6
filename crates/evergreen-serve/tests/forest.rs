//! A forest (raw features) and an FTRL model (hashed features) trained on the same records are
//! served side by side by one server and answer the same REST and gRPC requests, each exactly
//! as the model predicts in process from the spec stored in its version; a version whose model
//! and spec disagree on the representation is refused.

mod common;

use common::*;
use evergreen_core::Representation;
use evergreen_model::{Forest, ForestParams};
use evergreen_serve::grpc::pb::tensorflow::serving as tfs;
use evergreen_serve::grpc::pb::tensorflow::{DataType, TensorProto};
use std::collections::HashMap;
use tfs::prediction_service_client::PredictionServiceClient;

fn raw_spec() -> FeatureSpec {
    FeatureSpec {
        representation: Representation::Raw,
        ..spec()
    }
}

/// Records of a concept both models can learn: positive when `x > 1.5` or `c == "a"`.
fn records(n: usize) -> Vec<(RawRecord, f32)> {
    let mut s = 17u64;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = (s >> 33) as f64 / (1u64 << 31) as f64 * 3.0;
            let c = ["a", "b", "c", "d"][(s >> 20) as usize % 4];
            (rec(c, x), f32::from(u8::from(x > 1.5 || c == "a")))
        })
        .collect()
}

fn train(model: &mut dyn Model, spec: &FeatureSpec) {
    let t = Transformer::new(spec.clone()).unwrap();
    for (r, y) in records(4000) {
        model.learn(&t.features(&r).unwrap(), y);
    }
}

fn publish(reg: &Registry, name: &str, spec: FeatureSpec, model: &dyn Model) {
    let mut m = manifest_of(name, 1, 0, spec.clone());
    m.model_kind = model.kind();
    reg.publish(m, &evergreen_model::save(model, spec.fingerprint()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forest_and_an_ftrl_model_answer_the_same_rest_and_grpc_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut ftrl = Ftrl::new(FtrlParams::default(), spec().dim());
    train(&mut ftrl, &spec());
    let mut forest = Forest::try_new(
        ForestParams::default(),
        raw_spec().field_kinds(),
        raw_spec().dim(),
    )
    .unwrap();
    train(&mut forest, &raw_spec());
    for (name, spec, model) in [
        ("ftrl", spec(), &ftrl as &dyn Model),
        ("forest", raw_spec(), &forest as &dyn Model),
    ] {
        let reg = Registry::open(dir.path().join(name), name).unwrap();
        publish(&reg, name, spec, model);
    }
    let opts = ServeOptions {
        models: ["ftrl", "forest"]
            .into_iter()
            .map(|name| ModelSource {
                name: name.into(),
                base_path: dir.path().join(name),
                ..ModelSource::default()
            })
            .collect(),
        ..ServeOptions::default()
    };
    let handle = spawn_with_grpc(
        opts,
        Arc::new(Metrics::new()),
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let probes = [("a", 0.5), ("b", 2.5), ("c", 0.2), ("zz-unseen", 1.0)];
    let expected = |model: &dyn Model, spec: &FeatureSpec| -> Vec<f64> {
        let t = Transformer::new(spec.clone()).unwrap();
        probes
            .iter()
            .map(|(c, x)| model.predict(&t.features(&rec(c, *x)).unwrap()))
            .collect()
    };
    let want = [
        ("ftrl", expected(&ftrl, &spec())),
        ("forest", expected(&forest, &raw_spec())),
    ];
    // The forest learned the concept: positive for c=a and for x=2.5, negative for c=c, x=0.2.
    let f = &want[1].1;
    assert!(f[0] > 0.8 && f[1] > 0.8 && f[2] < 0.2, "{f:?}");
    let instances: Vec<Value> = probes
        .iter()
        .map(|(c, x)| json!({"c": c, "x": x}))
        .collect();
    for (name, want) in &want {
        let r = client
            .post(format!("http://{}/v1/models/{name}:predict", handle.addr))
            .json(&json!({ "instances": instances }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let body: Value = r.json().await.unwrap();
        let got: Vec<f64> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().or_else(|| p[0].as_f64()).unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: {body}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{name} REST: {g} vs {w}");
        }
    }
    let url = format!("http://{}", handle.grpc_addr.unwrap());
    let mut p = PredictionServiceClient::connect(url).await.unwrap();
    let inputs = HashMap::from([
        (
            "c".to_string(),
            TensorProto {
                dtype: DataType::DtString as i32,
                tensor_shape: shape(&[4]),
                string_val: probes.iter().map(|(c, _)| c.as_bytes().to_vec()).collect(),
                ..Default::default()
            },
        ),
        (
            "x".to_string(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: shape(&[4]),
                float_val: probes.iter().map(|(_, x)| *x as f32).collect(),
                ..Default::default()
            },
        ),
    ]);
    for (name, want) in &want {
        let r = p
            .predict(tfs::PredictRequest {
                model_spec: Some(tfs::ModelSpec {
                    name: name.to_string(),
                    version_choice: None,
                    signature_name: String::new(),
                }),
                inputs: inputs.clone(),
                output_filter: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        let got = &r.outputs["probabilities"].float_val;
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{name} gRPC: {g} vs {w}");
        }
    }
}

#[test]
fn a_version_whose_model_and_spec_disagree_on_the_representation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut forest = Forest::try_new(
        ForestParams::default(),
        raw_spec().field_kinds(),
        raw_spec().dim(),
    )
    .unwrap();
    train(&mut forest, &raw_spec());
    let reg = Registry::open(dir.path().join("m"), "m").unwrap();
    // A forest published with the hashed spec, and an FTRL model with the raw one.
    publish(&reg, "m", spec(), &forest);
    let e = reg.load(1).unwrap_err().to_string();
    assert!(e.contains("consumes raw features"), "{e}");
    let ftrl = Ftrl::new(FtrlParams::default(), raw_spec().dim());
    let mut m = manifest_of("m", 2, 0, raw_spec());
    m.model_kind = ModelKind::Ftrl;
    reg.publish(m, &evergreen_model::save(&ftrl, raw_spec().fingerprint()))
        .unwrap();
    let e = reg.load(2).unwrap_err().to_string();
    assert!(e.contains("consumes hashed features"), "{e}");
}
