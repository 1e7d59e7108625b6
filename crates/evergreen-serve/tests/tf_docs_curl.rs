//! The curl examples of TensorFlow Serving's REST documentation (api_rest.md and the Docker
//! guide), run unchanged with the real `curl` against evergreen serving a one-input model under
//! the docs' model names (only host and port differ). Skipped with a printed reason when `curl`
//! is missing, unless `EVERGREEN_REQUIRE_INTEROP=1`.

mod common;

use common::*;
use evergreen_serve::spawn;
use std::io::Write as _;
use std::process::Command;

fn curl_available() -> bool {
    match Command::new("curl").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        other => {
            let reason = format!("curl cannot be run: {other:?}");
            let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
            assert!(!required, "EVERGREEN_REQUIRE_INTEROP=1 but {reason}");
            let _ = writeln!(std::io::stderr(), "SKIPPED tf_docs_curl: {reason}");
            false
        }
    }
}

/// Publishes version 123 of `name`: one numeric input `x`, as the docs' half_plus_* models.
fn publish(base: &std::path::Path, name: &str) {
    let spec: FeatureSpec = serde_json::from_value(json!({
        "hash_bits": 4, "label": {"column": "y"}, "numeric": [{"name": "x"}]
    }))
    .unwrap();
    let t = Transformer::new(spec.clone()).unwrap();
    let mut m = Ftrl::new(FtrlParams::default(), spec.dim());
    for i in 0..50 {
        let x = (i % 5) as f64;
        let r = [("x", evergreen_core::RawValue::Num(x))]
            .into_iter()
            .collect();
        m.learn(&t.features(&r).unwrap(), (x > 2.0) as u8 as f32);
    }
    let reg = Registry::open(base.join(name), name).unwrap();
    let manifest = manifest_of(name, 123, 0, spec.clone());
    reg.publish(manifest, &evergreen_model::save(&m, spec.fingerprint()))
        .unwrap();
}

/// Runs `curl` with the docs' arguments, the docs' `http://localhost:8501` replaced by the
/// server's address; returns the parsed JSON body.
fn curl(args: &[&str], addr: &str) -> Value {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("http://localhost:8501", &format!("http://{addr}")))
        .collect();
    let out = Command::new("curl")
        .arg("--silent")
        .arg("--show-error")
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {:?}", out);
    let body = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("curl {args:?}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tf_serving_docs_curl_examples_work_unchanged() {
    if !curl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let names = ["saved_model_half_plus_three", "half_plus_two"];
    for n in names {
        publish(dir.path(), n);
    }
    let opts = ServeOptions {
        models: names
            .iter()
            .map(|n| ModelSource {
                name: n.to_string(),
                base_path: dir.path().join(n),
                ..ModelSource::default()
            })
            .collect(),
        ..ServeOptions::default()
    };
    let h = spawn(
        opts,
        Arc::new(Metrics::new()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = h.addr.to_string();
    let run = |args: Vec<&'static str>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || curl(&args, &addr))
    };

    // api_rest.md, "Example": status, metadata, predict, regress.
    let v = run(vec![
        "http://localhost:8501/v1/models/saved_model_half_plus_three",
    ])
    .await
    .unwrap();
    assert_eq!(
        v,
        json!({"model_version_status": [{"version": "123", "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]})
    );
    let v = run(vec![
        "http://localhost:8501/v1/models/saved_model_half_plus_three/metadata",
    ])
    .await
    .unwrap();
    assert_eq!(v["model_spec"]["version"], "123");
    assert!(
        v["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
            .is_object()
    );
    let v = run(vec![
        "-d",
        r#"{"instances": [1.0,2.0,5.0]}"#,
        "-X",
        "POST",
        "http://localhost:8501/v1/models/saved_model_half_plus_three:predict",
    ])
    .await
    .unwrap();
    let p = v["predictions"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(p.len(), 3);
    assert!(p[2].as_f64().unwrap() > p[0].as_f64().unwrap(), "{v}");
    let v = run(vec![
        "-d",
        r#"{"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}"#,
        "-X",
        "POST",
        "http://localhost:8501/v1/models/saved_model_half_plus_three:regress",
    ])
    .await
    .unwrap();
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2), "{v}");
    let v = run(vec![
        "-d",
        r#"{"signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": 2.0}]}"#,
        "-X",
        "POST",
        "http://localhost:8501/v1/models/saved_model_half_plus_three:classify",
    ])
    .await
    .unwrap();
    assert_eq!(v["results"][0][1][0], "1", "{v}");
    // The Docker guide's example.
    let v = run(vec![
        "-d",
        r#"{"instances": [1.0, 2.0, 5.0]}"#,
        "-X",
        "POST",
        "http://localhost:8501/v1/models/half_plus_two:predict",
    ])
    .await
    .unwrap();
    assert_eq!(v["predictions"].as_array().map(Vec::len), Some(3), "{v}");
    // An unknown model gets TF's error shape.
    let v = run(vec![
        "-d",
        r#"{"instances": [1.0]}"#,
        "-X",
        "POST",
        "http://localhost:8501/v1/models/half:predict",
    ])
    .await
    .unwrap();
    assert_eq!(
        v,
        json!({"error": "Servable not found for request: Latest(half)"})
    );
    h.shutdown().await;
}
