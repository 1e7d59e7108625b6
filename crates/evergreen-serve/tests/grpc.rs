//! gRPC end to end with tonic's client over the generated TensorFlow Serving stubs: Predict
//! (values and raw tensor_content), Classify, Regress, GetModelMetadata, GetModelStatus, labels
//! and the traffic policy, error codes. (`tests/python/tfserving_grpc_client.py` in the binary
//! crate checks the same against TensorFlow Serving's own Python client.)

mod common;

use common::*;
use evergreen_serve::grpc::pb::tensorflow::serving as tfs;
use evergreen_serve::grpc::pb::tensorflow::{
    BytesList, DataType, Example, Feature, Features, FloatList, TensorProto, feature,
};
use std::collections::HashMap;
use tfs::model_service_client::ModelServiceClient;
use tfs::model_spec::VersionChoice;
use tfs::prediction_service_client::PredictionServiceClient;

fn spec_of(version: Option<VersionChoice>) -> Option<tfs::ModelSpec> {
    Some(tfs::ModelSpec {
        name: "m".into(),
        version_choice: version,
        signature_name: String::new(),
    })
}

/// `c` and `x` for two instances, `x` sent as raw little-endian bytes as
/// `tf.make_tensor_proto` does.
fn inputs() -> HashMap<String, TensorProto> {
    HashMap::from([
        (
            "c".to_string(),
            TensorProto {
                dtype: DataType::DtString as i32,
                tensor_shape: shape(&[2]),
                string_val: vec![b"a".to_vec(), b"b".to_vec()],
                ..Default::default()
            },
        ),
        (
            "x".to_string(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: shape(&[2, 1]),
                tensor_content: [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            },
        ),
    ])
}

fn example(c: &str, x: f32) -> Example {
    Example {
        features: Some(Features {
            feature: HashMap::from([
                (
                    "c".to_string(),
                    Feature {
                        kind: Some(feature::Kind::BytesList(BytesList {
                            value: vec![c.as_bytes().to_vec()],
                        })),
                    },
                ),
                (
                    "x".to_string(),
                    Feature {
                        kind: Some(feature::Kind::FloatList(FloatList { value: vec![x] })),
                    },
                ),
            ]),
        }),
    }
}

fn answered(spec: &Option<tfs::ModelSpec>) -> u64 {
    match spec.as_ref().and_then(|s| s.version_choice.clone()) {
        Some(VersionChoice::Version(v)) => v as u64,
        other => panic!("no version in the answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_grpc_api_answers_like_rest() {
    let f = start(&[1, 2], |o| o.num_versions = 2).await;
    let url = format!("http://{}", f.handle.grpc_addr.unwrap());
    let mut p = PredictionServiceClient::connect(url.clone()).await.unwrap();
    let mut m = ModelServiceClient::connect(url).await.unwrap();

    // Predict, newest version, values exactly as the model computes them.
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap();
    let header = r
        .metadata()
        .get(VERSION_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let r = r.into_inner();
    assert_eq!(answered(&r.model_spec), 2);
    assert_eq!(header, "2");
    let out = &r.outputs["probabilities"];
    assert_eq!(out.dtype, DataType::DtFloat as i32);
    assert_eq!(out.tensor_shape, shape(&[2]));
    let want = [expected(2, &rec("a", 1.0)), expected(2, &rec("b", 2.0))];
    for (got, want) in out.float_val.iter().zip(want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    // A specific version, and a label.
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(Some(VersionChoice::Version(1))),
            inputs: inputs(),
            output_filter: vec!["probabilities".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered(&r.model_spec), 1);
    assert!(
        (r.outputs["probabilities"].float_val[0] as f64 - expected(1, &rec("a", 1.0))).abs() < 1e-6
    );
    f.reg
        .set_labels(&BTreeMap::from([("stable".to_string(), 1)]))
        .unwrap();
    f.handle.server().reload_now();
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(Some(VersionChoice::VersionLabel("stable".into()))),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered(&r.model_spec), 1);
    // Unversioned requests follow the traffic policy (stable = 1 now), as over REST.
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered(&r.model_spec), 1);

    // Classify and Regress on tf.Examples.
    let input = Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: vec![example("a", 1.0), example("b", 2.0)],
        })),
    });
    let r = p
        .classify(tfs::ClassificationRequest {
            model_spec: spec_of(Some(VersionChoice::Version(2))),
            input: input.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let c = &r.result.unwrap().classifications;
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].classes[1].label, "1");
    assert!((c[0].classes[1].score as f64 - want[0]).abs() < 1e-6);
    assert!((c[0].classes[0].score as f64 - (1.0 - want[0])).abs() < 1e-6);
    let r = p
        .regress(tfs::RegressionRequest {
            model_spec: spec_of(Some(VersionChoice::Version(2))),
            input,
        })
        .await
        .unwrap()
        .into_inner();
    let reg = r.result.unwrap().regressions;
    assert!((reg[1].value as f64 - want[1]).abs() < 1e-6);

    // Metadata: the signature as a packed SignatureDefMap.
    let r = p
        .get_model_metadata(tfs::GetModelMetadataRequest {
            model_spec: spec_of(Some(VersionChoice::Version(2))),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let any = &r.metadata["signature_def"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    let map: tfs::SignatureDefMap = prost::Message::decode(any.value.as_slice()).unwrap();
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.inputs["c"].dtype, DataType::DtString as i32);
    assert_eq!(sig.inputs["x"].dtype, DataType::DtFloat as i32);
    assert!(sig.outputs.contains_key("probabilities"));

    // Status of every served version, newest first.
    let r = m
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec_of(None),
        })
        .await
        .unwrap()
        .into_inner();
    let vs: Vec<(i64, i32)> = r
        .model_version_status
        .iter()
        .map(|s| (s.version, s.state))
        .collect();
    assert_eq!(vs, [(2, 30), (1, 30)]);

    // Errors: gRPC codes with TF Serving's messages.
    let err = |s: tonic::Status| (s.code(), s.message().to_string());
    let (code, msg) = err(p
        .predict(tfs::PredictRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "nope".into(),
                ..Default::default()
            }),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::NotFound, "{msg}");
    let (code, _) = err(p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(Some(VersionChoice::Version(9))),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::NotFound);
    let mut bad = inputs();
    bad.get_mut("x").unwrap().tensor_content.pop();
    let (code, msg) = err(p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: bad,
            output_filter: vec![],
        })
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(msg.contains("tensor_content"), "{msg}");
    let (code, _) = err(p
        .get_model_metadata(tfs::GetModelMetadataRequest {
            model_spec: spec_of(None),
            metadata_field: vec!["other".into()],
        })
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    let (code, _) = err(m
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec_of(Some(VersionChoice::Version(7))),
        })
        .await
        .unwrap_err());
    assert_eq!(code, tonic::Code::NotFound);
    let text = f.metrics.render();
    assert!(text.contains("api=\"grpc_predict\",code=\"OK\""), "{text}");
    f.handle.shutdown().await;
}

/// TF Serving's warm-up file (`assets.extra/tf_serving_warmup_requests`, TFRecord of
/// `PredictionLog`): a version warms up on its predict, classify and regress logs; one whose
/// logs the model cannot answer is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_warm_up_files_are_replayed_before_a_version_is_served() {
    use evergreen_serve::grpc::pb::tensorflow::serving::{
        ClassifyLog, PredictLog, PredictionLog, RegressLog, prediction_log::LogType,
    };
    use prost::Message;
    let f = start(&[1], |o| o.poll_interval = Duration::from_secs(3600)).await;
    let input = |c: &str| {
        Some(tfs::Input {
            kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
                examples: vec![example(c, 1.0)],
            })),
        })
    };
    let good = vec![
        LogType::PredictLog(PredictLog {
            request: Some(tfs::PredictRequest {
                model_spec: spec_of(None),
                inputs: inputs(),
                output_filter: vec![],
            }),
            response: None,
        }),
        LogType::ClassifyLog(ClassifyLog {
            request: Some(tfs::ClassificationRequest {
                model_spec: spec_of(None),
                input: input("a"),
            }),
            response: None,
        }),
        LogType::RegressLog(RegressLog {
            request: Some(tfs::RegressionRequest {
                model_spec: spec_of(None),
                input: input("b"),
            }),
            response: None,
        }),
    ];
    let mut bad_inputs = inputs();
    bad_inputs.insert(
        "x".into(),
        TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: shape(&[2]),
            string_val: vec![b"not".to_vec(), b"numbers".to_vec()],
            ..Default::default()
        },
    );
    let bad = vec![LogType::PredictLog(PredictLog {
        request: Some(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: bad_inputs,
            output_filter: vec![],
        }),
        response: None,
    })];
    // Each version staged beside the registry with its warm-up file, then renamed into place.
    let stage = |version: u64, logs: &[LogType]| {
        let staging = Registry::open(f.dir.path().join(format!("staging{version}")), "m").unwrap();
        publish(&staging, version);
        let dir = staging.version_dir(version).join("assets.extra");
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join("tf_serving_warmup_requests")).unwrap();
        let mut w = evergreen_data::tfrecord::TfRecordWriter::new(std::io::BufWriter::new(file));
        for log in logs {
            let record = PredictionLog {
                log_type: Some(log.clone()),
            };
            w.write_record(&record.encode_to_vec()).unwrap();
        }
        w.flush().unwrap();
        std::fs::rename(staging.version_dir(version), f.reg.version_dir(version)).unwrap();
    };
    stage(2, &bad);
    f.handle.server().reload_now();
    assert_eq!(
        f.loads("failed"),
        1,
        "the version whose warm-up fails is not loaded"
    );
    let (code, status) = f.get("/v1/models/m").await;
    assert_eq!(code, 200);
    assert_eq!(
        status["model_version_status"][0]["version"], "1",
        "{status}"
    );
    stage(3, &good);
    f.handle.server().reload_now();
    assert_eq!(f.loads("failed"), 1);
    let (_, status) = f.get("/v1/models/m").await;
    assert_eq!(
        status["model_version_status"][0]["version"], "3",
        "{status}"
    );
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_is_batched_when_batching_is_on() {
    let f = start(&[1], |o| {
        o.batching = Some(evergreen_serve::Batching {
            params: evergreen_serve::BatchingParameters {
                max_batch_size: 8,
                batch_timeout: Duration::ZERO,
                max_enqueued_batches: 10,
                num_batch_threads: 1,
            },
            per_model: false,
        })
    })
    .await;
    let url = format!("http://{}", f.handle.grpc_addr.unwrap());
    let mut p = PredictionServiceClient::connect(url).await.unwrap();
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let want = [expected(1, &rec("a", 1.0)), expected(1, &rec("b", 2.0))];
    let got = &r.outputs["probabilities"].float_val;
    assert_eq!(got.len(), 2);
    for (got, want) in got.iter().zip(want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }
    let text = f.metrics.render();
    assert!(
        text.contains("evergreen_serving_batch_size_sum{model=\"m\"} 2.0"),
        "{text}"
    );
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_grpc_deadline_gets_deadline_exceeded() {
    // The largest request (10,000 instances) takes several milliseconds; with a 1 ms deadline
    // (`grpc-timeout`) the server answers DEADLINE_EXCEEDED (tonic's timeout: CANCELLED, or
    // the work stopping at the deadline) and goes on answering.
    let f = start(&[1], |o| o.max_body_bytes = 16 << 20).await;
    let n = evergreen_serve::MAX_BATCH as i64;
    let large = || {
        HashMap::from([
            (
                "c".to_string(),
                TensorProto {
                    dtype: DataType::DtString as i32,
                    tensor_shape: shape(&[n]),
                    string_val: vec![b"a".to_vec(); n as usize],
                    ..Default::default()
                },
            ),
            (
                "x".to_string(),
                TensorProto {
                    dtype: DataType::DtFloat as i32,
                    tensor_shape: shape(&[n, 1]),
                    float_val: vec![1.0; n as usize],
                    ..Default::default()
                },
            ),
        ])
    };
    let url = format!("http://{}", f.handle.grpc_addr.unwrap());
    let mut p = PredictionServiceClient::connect(url).await.unwrap();
    let request = || tfs::PredictRequest {
        model_spec: spec_of(None),
        inputs: large(),
        output_filter: vec![],
    };
    let started = Instant::now();
    let r = p.predict(request()).await.unwrap().into_inner();
    assert_eq!(r.outputs["probabilities"].float_val.len(), n as usize);
    println!(
        "10,000 instances without a deadline: {:?}",
        started.elapsed()
    );
    // The header alone (as a client in another language sends it), so that the server, not
    // this client, enforces it.
    let mut req = tonic::Request::new(request());
    req.metadata_mut()
        .insert("grpc-timeout", "1m".parse().unwrap());
    let err = p.predict(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs["probabilities"].float_val.len(), 2);
    f.handle.shutdown().await;
}

/// Records nothing (the admin API needs an audit).
struct NoAudit;
impl evergreen_serve::AdminAudit for NoAudit {
    fn record(&self, _: &evergreen_serve::AdminAction) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_carry_a_prediction_id_that_feedback_joins() {
    let token = "feedback-token-0123456789";
    let f = start(&[1], |o| {
        o.admin = Some(evergreen_serve::AdminOptions {
            token: token.into(),
            audit: Arc::new(NoAudit),
        });
        o.feedback = Some(evergreen_serve::feedback::FeedbackOptions::default());
    })
    .await;
    let url = format!("http://{}", f.handle.grpc_addr.unwrap());
    let mut p = PredictionServiceClient::connect(url).await.unwrap();
    let r = p
        .predict(tfs::PredictRequest {
            model_spec: spec_of(None),
            inputs: inputs(),
            output_filter: vec![],
        })
        .await
        .unwrap();
    let id = r
        .metadata()
        .get("x-evergreen-prediction-id")
        .expect("a prediction id")
        .to_str()
        .unwrap()
        .to_string();
    // Both instances labelled through the REST admin API.
    let resp: Value = f
        .client
        .post(format!("{}/admin/v1/models/m:feedback", f.url))
        .bearer_auth(token)
        .json(&json!({"feedback": [
            {"prediction_id": id, "label": 1},
            {"prediction_id": format!("{id}/1"), "label": 0},
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["report"]["joined"], 2, "{resp}");
    assert_eq!(resp["live"]["1"]["examples"], 2, "{resp}");
    f.handle.shutdown().await;
}
