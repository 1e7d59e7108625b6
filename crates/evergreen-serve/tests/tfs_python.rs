//! Interop with TensorFlow Serving's own Python gRPC client (`tensorflow-serving-api`, which
//! needs `tensorflow`): `tests/interop/tfs_client.py` calls Predict (with
//! `tf.make_tensor_proto` inputs), Classify, Regress (with a context example),
//! GetModelMetadata and GetModelStatus on a server started here, and the answers are checked
//! against the published models.
//!
//! The Python interpreter is `$EVERGREEN_TFS_PYTHON` (default `python3`): tensorflow wants a
//! protobuf release that ml-metadata does not, so `.ci/run` installs it in a venv of its own.
//! Without it the test prints why and passes, unless `EVERGREEN_REQUIRE_INTEROP=1`.

mod common;

use common::*;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("EVERGREEN_TFS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn available() -> bool {
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    let reason = match Command::new(python())
        .args([
            "-c",
            "import tensorflow_serving.apis.prediction_service_pb2_grpc, tensorflow; \
             print(tensorflow.__version__)",
        ])
        .output()
    {
        Err(e) => format!("{} could not be run: {e}", python()),
        Ok(out) if !out.status.success() => format!(
            "{} cannot import tensorflow_serving (pip install tensorflow-cpu \
             tensorflow-serving-api): {}",
            python(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        ),
        Ok(out) => {
            eprintln!(
                "using tensorflow {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return true;
        }
    };
    assert!(!required, "EVERGREEN_REQUIRE_INTEROP=1 but {reason}");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED tf_serving_python_client: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 to make \
         this a failure)"
    );
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_python_client_talks_to_evergreen() {
    if !available() {
        return;
    }
    let f = start(&[1, 2], |o| o.num_versions = 2).await;
    let grpc = f.handle.grpc_addr.unwrap().to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tfs_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(grpc)
            .arg("m")
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .expect("run the client")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tfs_client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("tfs_client.py: {stdout}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let close = |got: &Value, want: f64| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    };
    let (a2, b2) = (expected(2, &rec("a", 1.0)), expected(2, &rec("b", 2.0)));
    assert_eq!(v["predict"]["version"], 2);
    close(&v["predict"]["probabilities"][0], a2);
    close(&v["predict"]["probabilities"][1], b2);
    assert_eq!(v["predict_v1"]["version"], 1);
    close(
        &v["predict_v1"]["probabilities"][0],
        expected(1, &rec("a", 1.0)),
    );
    assert_eq!(v["label_error"], "NOT_FOUND", "no label `stable` yet");
    close(&v["classify"][0]["1"], a2);
    close(&v["classify"][0]["0"], 1.0 - a2);
    close(&v["classify"][1]["1"], b2);
    // The context example's x = 2.0 merged into the example (which has only c = a).
    close(&v["regress"][0], expected(2, &rec("a", 2.0)));
    assert_eq!(v["metadata"]["inputs"]["c"], "string");
    assert_eq!(v["metadata"]["inputs"]["x"], "float32");
    assert_eq!(v["metadata"]["outputs"], json!(["probabilities"]));
    assert_eq!(v["metadata"]["method_name"], "tensorflow/serving/predict");
    assert_eq!(
        v["status"],
        json!([
            {"version": 2, "state": "AVAILABLE", "error_code": 0},
            {"version": 1, "state": "AVAILABLE", "error_code": 0}
        ])
    );
    assert_eq!(v["missing_model"], "NOT_FOUND");
    f.handle.shutdown().await;
}

/// A warm-up file written by TensorFlow itself, as TF Serving documents it: a version warms up
/// on it before it is served, and one whose warm-up requests the model cannot answer is never
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_written_warm_up_files_are_replayed() {
    if !available() {
        return;
    }
    let f = start(&[1], |o| o.poll_interval = Duration::from_secs(3600)).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tfs_warmup.py");
    let stage = |version: u64, mode: &str| {
        let staging = Registry::open(f.dir.path().join(format!("staging{version}")), "m").unwrap();
        publish(&staging, version);
        let dir = staging.version_dir(version).join("assets.extra");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(python())
            .arg(&script)
            .arg(dir.join("tf_serving_warmup_requests"))
            .arg(mode)
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .output()
            .expect("run tfs_warmup.py");
        assert!(
            out.status.success(),
            "tfs_warmup.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(staging.version_dir(version), f.reg.version_dir(version)).unwrap();
    };
    stage(2, "bad");
    f.handle.server().reload_now();
    assert_eq!(
        f.loads("failed"),
        1,
        "the version whose warm-up fails is not loaded"
    );
    let (_, status) = f.get("/v1/models/m").await;
    assert_eq!(
        status["model_version_status"][0]["version"], "1",
        "{status}"
    );
    stage(3, "good");
    f.handle.server().reload_now();
    assert_eq!(f.loads("failed"), 1);
    let (_, status) = f.get("/v1/models/m").await;
    assert_eq!(
        status["model_version_status"][0]["version"], "3",
        "{status}"
    );
    f.handle.shutdown().await;
}
