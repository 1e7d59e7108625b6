//! End-to-end tests of the REST server over a temporary registry: TF Serving shapes, errors,
//! hot reload under load, corrupt versions, retention and labels.

mod common;

use common::*;
use evergreen_registry::MODEL_FILE;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metadata_have_tf_shapes() {
    let fx = start(&[1, 2], |o| o.num_versions = 2).await;
    let (code, body) = fx.get("/v1/models/m").await;
    assert_eq!(code, 200);
    let status = |v: &str| json!({"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}});
    assert_eq!(
        body,
        json!({"model_version_status": [status("2"), status("1")]})
    );
    let (code, body) = fx.get("/v1/models/m/versions/1").await;
    assert_eq!(code, 200);
    assert_eq!(body, json!({"model_version_status": [status("1")]}));

    for path in ["/v1/models/m/metadata", "/v1/models/m/versions/2/metadata"] {
        let (code, body) = fx.get(path).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            body["model_spec"],
            json!({"name": "m", "signature_name": "", "version": "2"})
        );
        let sig = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(sig["method_name"], "tensorflow/serving/predict");
        let shape = json!({"dim": [{"size": "-1", "name": ""}], "unknown_rank": false});
        assert_eq!(
            sig["inputs"],
            json!({
                "c": {"dtype": "DT_STRING", "tensor_shape": shape, "name": "c"},
                "x": {"dtype": "DT_FLOAT", "tensor_shape": shape, "name": "x"}
            })
        );
        assert_eq!(sig["outputs"]["probabilities"]["dtype"], "DT_FLOAT");
        let m = &body["metadata"]["evergreen"]["manifest"];
        assert_eq!(m["version"], 2);
        assert_eq!(m["feature_spec"], serde_json::to_value(spec()).unwrap());
    }
    let (code, body) = fx.get("/v1/models/m/versions/1/metadata").await;
    assert_eq!(code, 200);
    assert_eq!(body["model_spec"]["version"], "1");

    let (code, body) = fx.get("/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(body["models"]["m"]["versions"], json!(["2", "1"]));
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_row_and_columnar_match_the_model() {
    let fx = start(&[1, 2], |o| o.num_versions = 2).await;
    let (e2a, e2b) = (expected(2, &rec("a", 1.0)), expected(2, &rec("b", 2.0)));
    let close = |v: &Value, e: f64| (v.as_f64().unwrap() - e).abs() < 1e-12;

    let (code, version, body) = fx
        .post(
            "/v1/models/m:predict",
            r#"{"instances": [{"c": "a", "x": 1}, {"c": ["b"], "x": [2.0]}]}"#,
        )
        .await;
    assert_eq!((code, version), (200, Some(2)), "{body}");
    let p = body["predictions"].as_array().unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "no extra field: {body}");
    assert_eq!(p.len(), 2);
    assert!(
        close(&p[0], e2a) && close(&p[1], e2b),
        "{body} vs {e2a} {e2b}"
    );
    assert_ne!(p[0], p[1]);

    let (code, version, body) = fx
        .post(
            "/v1/models/m:predict",
            r#"{"signature_name": "serving_default", "inputs": {"c": ["a", "b"], "x": [[1], [2]]}}"#,
        )
        .await;
    assert_eq!((code, version), (200, Some(2)), "{body}");
    let p = body["outputs"].as_array().unwrap();
    assert!(close(&p[0], e2a) && close(&p[1], e2b), "{body}");

    // A specific version, b64 strings, booleans, null and missing columns.
    let (code, version, body) = fx
        .post(
            "/v1/models/m/versions/1:predict",
            r#"{"instances": [{"c": {"b64": "YQ=="}, "x": 1}, {"c": true, "x": null}, {}]}"#,
        )
        .await;
    assert_eq!((code, version), (200, Some(1)), "{body}");
    let p = body["predictions"].as_array().unwrap();
    assert!(close(&p[0], expected(1, &rec("a", 1.0))), "{body}");
    let t = Transformer::new(spec()).unwrap();
    let only_true: RawRecord = [("c", RawValue::Str("true".into()))].into_iter().collect();
    let e = model(1).predict(&t.features(&only_true).unwrap());
    assert!(close(&p[1], e), "{body}");
    let e = model(1).predict(&t.features(&RawRecord::new()).unwrap());
    assert!(close(&p[2], e), "{body}");

    // classify and regress over the same model.
    let (code, _, body) = fx
        .post(
            "/v1/models/m:classify",
            r#"{"context": {"x": 1}, "examples": [{"c": "a"}]}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let r = &body["results"][0];
    assert_eq!(r[0][0], "0");
    assert_eq!(r[1][0], "1");
    assert!(close(&r[1][1], e2a) && close(&r[0][1], 1.0 - e2a), "{body}");
    let (code, _, body) = fx
        .post(
            "/v1/models/m:regress",
            r#"{"examples": [{"c": "b", "x": 2}]}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(close(&body["results"][0], e2b), "{body}");
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let fx = start(&[1], |_| {}).await;
    let p = "/v1/models/m:predict";

    for (token, shown) in [("NaN", "NaN"), ("Infinity", "inf"), ("-Infinity", "-inf")] {
        let body =
            format!(r#"{{"instances": [{{"c": "a", "x": 1}}, {{"c": "a", "x": {token}}}]}}"#);
        let (code, version, body) = fx.post(p, body).await;
        assert_eq!((code, version), (400, Some(1)), "{body}");
        let e = error_of(&body);
        assert!(
            e.contains("instance 1") && e.contains("\"x\"") && e.contains("not finite"),
            "{e}"
        );
        assert!(e.contains(shown), "{e}");
    }
    let (code, _, body) = fx
        .post(p, r#"{"inputs": {"c": ["a", "b"], "x": [1, NaN]}}"#)
        .await;
    assert_eq!(code, 400);
    assert!(
        error_of(&body).contains("instance 1: column \"x\""),
        "{body}"
    );

    let cases = [
        (r#"{"instances": [{"c": "a"}"#, "JSON parse error"),
        ("", "JSON parse error"),
        (r#"{"instances": [{"x": 1}], "inputs": {"x": [1]}}"#, "both"),
        (
            r#"{"signature_name": "nope", "instances": [{"x": 1}]}"#,
            "\"nope\" not found",
        ),
        (
            r#"{"instances": [{"x": "cheap"}]}"#,
            "instance 0: column \"x\": value \"cheap\" is not a number",
        ),
        (
            r#"{"instances": [{"x": [1, 2]}]}"#,
            "instance 0: column \"x\"",
        ),
        (r#"{"instances": [{"c": {"b64": "***"}}]}"#, "base64"),
        (
            r#"{"inputs": {"x": [1, 2], "c": ["a"]}}"#,
            "different lengths",
        ),
        (r#"{"instances": {"x": 1}}"#, "must be a list"),
        (r#"{"examples": []}"#, "Missing 'inputs' or 'instances'"),
    ];
    for (body, needle) in cases {
        let (code, _, resp) = fx.post(p, body).await;
        assert_eq!(code, 400, "{body} -> {resp}");
        assert!(error_of(&resp).contains(needle), "{body} -> {resp}");
    }

    let big = json!({"instances": vec![json!({"x": 1}); evergreen_serve::MAX_BATCH + 1]});
    let (code, _, resp) = fx.post(p, big.to_string()).await;
    assert_eq!(code, 400);
    assert!(
        error_of(&resp).contains("exceeds the maximum of 10000"),
        "{resp}"
    );
    let ok = json!({"instances": vec![json!({"x": 1}); evergreen_serve::MAX_BATCH]});
    let (code, _, resp) = fx.post(p, ok.to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(resp["predictions"].as_array().unwrap().len(), 10_000);
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_versions_labels_and_routes() {
    let fx = start(&[1], |_| {}).await;
    let body = r#"{"instances": [{"x": 1}]}"#;
    let (code, version, resp) = fx.post("/v1/models/nope:predict", body).await;
    assert_eq!((code, version), (404, None));
    assert_eq!(
        error_of(&resp),
        "Servable not found for request: Latest(nope)"
    );
    let (code, _, resp) = fx.post("/v1/models/m/versions/7:predict", body).await;
    assert_eq!(code, 404);
    assert_eq!(
        error_of(&resp),
        "Servable not found for request: Specific(m, 7)"
    );
    let (code, _, resp) = fx.post("/v1/models/m/labels/stable:predict", body).await;
    assert_eq!(code, 404);
    assert_eq!(
        error_of(&resp),
        "Unrecognized servable version label: stable"
    );
    let (code, resp) = fx.get("/v1/models/nope/metadata").await;
    assert_eq!(code, 404);
    assert_eq!(
        error_of(&resp),
        "Servable not found for request: Latest(nope)"
    );
    let (code, resp) = fx.get("/v1/models/m/versions/7/metadata").await;
    assert_eq!(code, 404);
    assert_eq!(
        error_of(&resp),
        "Servable not found for request: Specific(m, 7)"
    );
    let (code, resp) = fx.get("/v1/models/nope").await;
    assert_eq!(code, 404);
    assert_eq!(error_of(&resp), "Could not find any versions of model nope");
    let (code, resp) = fx.get("/v1/models/m/versions/7").await;
    assert_eq!(code, 404);
    assert_eq!(error_of(&resp), "Could not find version 7 of model m");

    // Routes and methods.
    let (code, resp) = fx.get("/v1/models/m:predict").await;
    assert_eq!(code, 405);
    assert!(error_of(&resp).contains("POST"), "{resp}");
    let (code, _, resp) = fx.post("/v1/models/m", "{}").await;
    assert_eq!(code, 405);
    error_of(&resp);
    let (code, _, resp) = fx.post("/metrics", "{}").await;
    assert_eq!(code, 405);
    error_of(&resp);
    for path in [
        "/nope",
        "/v1/models/m/versions/x",
        "/v1/models/m:explain",
        "/v1/models",
    ] {
        let (code, resp) = fx.get(path).await;
        assert_eq!(code, 404, "{path}");
        error_of(&resp);
    }

    // Metrics on both paths, counting requests with their answering version and code.
    for path in ["/metrics", "/monitoring/prometheus/metrics"] {
        let r = fx
            .client
            .get(format!("{}{path}", fx.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], evergreen_metrics::CONTENT_TYPE);
        let text = r.text().await.unwrap();
        for needle in [
            // `nope:predict` and the unparseable `m:explain`
            r#"evergreen_serving_requests_total{model="",version="",api="predict",code="404"} 2"#,
            r#"evergreen_serving_requests_total{model="m",version="",api="predict",code="404"} 2"#,
            r#"evergreen_serving_requests_total{model="m",version="",api="status",code="404"} 1"#,
            r#"evergreen_serving_model_version{model="m"} 1"#,
            r#"evergreen_serving_version_loads_total{model="m",outcome="loaded"} 1"#,
            "evergreen_serving_request_duration_seconds_count{model=\"m\",api=\"predict\"}",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
    let (code, _, _) = fx.post("/v1/models/m:predict", body).await;
    assert_eq!(code, 200);
    let ok = fx
        .metrics
        .requests
        .get_or_create(&evergreen_metrics::RequestLabels {
            model: "m".into(),
            version: "1".into(),
            api: "predict".into(),
            code: "200".into(),
        })
        .get();
    assert_eq!(ok, 1);
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_json() {
    let fx = start(&[1], |o| o.max_body_bytes = 1024).await;
    let small = json!({"instances": [{"c": "a".repeat(900)}]}).to_string();
    assert!(small.len() <= 1024);
    let (code, _, resp) = fx.post("/v1/models/m:predict", small).await;
    assert_eq!(code, 200, "{resp}");
    let (code, resp) = post_declaring(&fx, "/v1/models/m:predict", 4000).await;
    assert_eq!(code, 413);
    assert!(error_of(&resp).contains("1024 bytes"), "{resp}");
    fx.handle.shutdown().await;

    // The default limit (4 MiB), with a body well over it.
    let fx = start(&[1], |_| {}).await;
    let (code, resp) = post_declaring(&fx, "/v1/models/m:predict", 6 << 20).await;
    assert_eq!(code, 413);
    assert!(error_of(&resp).contains("4194304 bytes"), "{resp}");
    fx.handle.shutdown().await;
}

/// Sends only the head of a POST whose `Content-Length` declares `length` bytes, and reads the
/// answer: the server must refuse an oversized body from its declared length, without reading
/// it. (Sending the body too would race: a client still writing when the server answers and
/// closes gets a broken pipe, or a reset that discards the answer.)
async fn post_declaring(fx: &Fixture, path: &str, length: usize) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = fx.url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        code,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_version_is_not_served_and_old_one_keeps_answering() {
    let fx = start(&[1], |o| o.poll_interval = Duration::from_millis(50)).await;
    assert_eq!(fx.loads("loaded"), 1);
    assert_eq!(fx.loads("failed"), 0);

    // Publish version 2 elsewhere, flip one byte of its model, move it into the registry.
    let staging = Registry::open(fx.dir.path().join("staging"), "m").unwrap();
    let staged = staging.publish(manifest(2, 0), &model_bytes(2)).unwrap();
    let path = staged.join(MODEL_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    std::fs::rename(&staged, fx.reg.version_dir(2)).unwrap();

    eventually(10, "a failed load", async || fx.loads("failed") >= 1).await;
    assert_eq!(fx.served().await, vec![1]);
    let body = r#"{"instances": [{"c": "a", "x": 1}]}"#;
    let (code, version, resp) = fx.post("/v1/models/m:predict", body).await;
    assert_eq!((code, version), (200, Some(1)), "{resp}");
    assert_eq!(
        resp["predictions"][0].as_f64().unwrap(),
        expected(1, &rec("a", 1.0))
    );

    // Not retried in a tight loop: more passes do not load it again.
    for _ in 0..5 {
        fx.handle.server().reload_now();
    }
    assert_eq!(fx.loads("failed"), 1);
    assert_eq!(fx.loads("loaded"), 1);
    let text = fx.metrics.render();
    assert!(
        text.contains(r#"evergreen_serving_version_loads_total{model="m",outcome="failed"} 1"#),
        "{text}"
    );
    assert_eq!(fx.served().await, vec![1]);

    // Repairing the file (it changes on disk) gets it loaded without waiting for a back-off.
    evergreen_registry::write_atomic(&fx.reg.version_dir(2).join(MODEL_FILE), &good).unwrap();
    eventually(10, "version 2 served", async || {
        fx.served().await == vec![2]
    })
    .await;
    assert_eq!(fx.loads("loaded"), 2);
    let (code, version, _) = fx.post("/v1/models/m:predict", body).await;
    assert_eq!((code, version), (200, Some(2)));
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removed_version_disappears_and_labels_resolve() {
    let fx = start(&[1, 2, 3], |o| {
        o.num_versions = 3;
        o.poll_interval = Duration::from_millis(50);
    })
    .await;
    assert_eq!(fx.served().await, vec![3, 2, 1]);
    assert_eq!(fx.reg.apply_retention(2, &[]).unwrap(), vec![1]);
    eventually(10, "version 1 dropped", async || {
        fx.served().await == vec![3, 2]
    })
    .await;
    let (code, _, resp) = fx
        .post("/v1/models/m/versions/1:predict", r#"{"instances": [{}]}"#)
        .await;
    assert_eq!(code, 404, "{resp}");
    fx.handle.shutdown().await;

    // Latest 1, plus a labelled older version.
    let fx = start(&[1, 2], |o| o.poll_interval = Duration::from_millis(50)).await;
    assert_eq!(fx.served().await, vec![2]);
    fx.reg
        .set_labels(&BTreeMap::from([("stable".to_string(), 1)]))
        .unwrap();
    eventually(10, "labelled version 1 loaded", async || {
        fx.served().await == vec![2, 1]
    })
    .await;
    let (code, body) = fx.get("/v1/models/m/labels/stable").await;
    assert_eq!(code, 200);
    assert_eq!(body["model_version_status"][0]["version"], "1");
    let (code, body) = fx.get("/v1/models/m/labels/stable/metadata").await;
    assert_eq!(code, 200);
    assert_eq!(body["model_spec"]["version"], "1");
    let b = r#"{"instances": [{"c": "a", "x": 1}]}"#;
    let (code, version, _) = fx.post("/v1/models/m/labels/stable:predict", b).await;
    assert_eq!((code, version), (200, Some(1)));
    // Unversioned requests follow `stable` (the server-side traffic policy), not the newest.
    let (code, version, _) = fx.post("/v1/models/m:predict", b).await;
    assert_eq!((code, version), (200, Some(1)));
    let (code, version, _) = fx.post("/v1/models/m/versions/2:predict", b).await;
    assert_eq!((code, version), (200, Some(2)));
    fx.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_base_path_is_not_fatal() {
    let fx = start(&[], |o| o.poll_interval = Duration::from_millis(50)).await;
    let (code, body) = fx.get("/v1/models/m").await;
    assert_eq!(code, 404);
    assert_eq!(error_of(&body), "Could not find any versions of model m");
    let (code, version, body) = fx
        .post("/v1/models/m:predict", r#"{"instances": [{}]}"#)
        .await;
    assert_eq!((code, version), (503, None));
    assert!(error_of(&body).contains("Latest(m)"), "{body}");
    let (code, _) = fx.get("/healthz").await;
    assert_eq!(code, 503);

    let reg = Registry::open(fx.dir.path().join("m"), "m").unwrap();
    publish(&reg, 4);
    eventually(10, "version 4 served", async || {
        fx.served().await == vec![4]
    })
    .await;
    let (code, body) = fx.get("/healthz").await;
    assert_eq!(code, 200, "{body}");
    fx.handle.shutdown().await;
}

/// Clients predict in a loop while versions 2..=6 are published: no request fails, every answer
/// is exactly the prediction of the version named in its header, versions never go backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swap_under_load() {
    let fx = Arc::new(start(&[1], |_| {}).await);
    let input = rec("a", 1.0);
    let want: BTreeMap<u64, f64> = (1..=6).map(|v| (v, expected(v, &input))).collect();
    assert_ne!(want[&1], want[&6]);
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut clients = Vec::new();
    for _ in 0..4 {
        let fx = fx.clone();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(u16, Option<u64>, Value)> = Vec::new();
            loop {
                let r = fx
                    .post(
                        "/v1/models/m:predict",
                        r#"{"instances": [{"c": "a", "x": 1.0}]}"#,
                    )
                    .await;
                let last = r.1;
                seen.push(r);
                if (done.load(Ordering::SeqCst) && last == Some(6)) || Instant::now() > deadline {
                    return seen;
                }
            }
        }));
    }

    let mut latencies = Vec::new();
    for v in 2..=6 {
        let reg = fx.reg.clone();
        tokio::task::spawn_blocking(move || publish(&reg, v))
            .await
            .unwrap();
        let published = Instant::now();
        eventually(10, "new version served", async || {
            fx.served().await.first() == Some(&v)
        })
        .await;
        latencies.push(published.elapsed());
    }
    done.store(true, Ordering::SeqCst);

    let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
    for c in clients {
        let seen = c.await.unwrap();
        assert!(!seen.is_empty());
        let mut prev = 0;
        for (code, version, body) in &seen {
            assert_eq!(*code, 200, "{body}");
            let v = version.expect("version header on every predict");
            assert!(v >= prev, "version went backwards: {prev} then {v}");
            prev = v;
            let p = body["predictions"][0].as_f64().unwrap();
            assert_eq!(
                p, want[&v],
                "answer of version {v} does not match its model"
            );
            *by_version.entry(v).or_default() += 1;
        }
        assert_eq!(prev, 6, "client never saw version 6");
    }
    eprintln!("answers per version: {by_version:?}; publish-to-served latencies: {latencies:?}");
    assert!(by_version.contains_key(&1), "{by_version:?}");
    let slowest = latencies.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(1),
        "a version took {slowest:?} to be served: {latencies:?}"
    );
    let fx = Arc::into_inner(fx).expect("clients finished");
    fx.handle.shutdown().await;
}

/// A model config read again: models added, removed and changed; an unchanged model keeps its
/// loaded version (no new load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_adds_removes_and_keeps_unchanged_models() {
    let fx = start(&[1], |_| {}).await;
    let server = fx.handle.server().clone();
    let apply = |sources: Vec<ModelSource>| {
        let s = server.clone();
        async move {
            tokio::task::spawn_blocking(move || s.reconfigure(&sources))
                .await
                .unwrap()
        }
    };
    let m = ModelSource {
        name: "m".into(),
        base_path: fx.dir.path().join("m"),
        ..ModelSource::default()
    };
    let n = ModelSource {
        name: "n".into(),
        ..m.clone()
    };
    let loaded = fx.loads("loaded");
    let change = apply(vec![m.clone(), n.clone()]).await;
    assert_eq!(change.added, ["n"]);
    assert!(
        change.removed.is_empty() && change.changed.is_empty(),
        "{change:?}"
    );
    assert_eq!(fx.loads("loaded"), loaded, "m was loaded again");
    let (code, status) = fx.get("/v1/models/n").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(fx.get("/v1/models/m").await.0, 200);
    // The same list again changes nothing.
    assert!(apply(vec![m.clone(), n.clone()]).await.is_empty());
    // n under another policy, m gone.
    let n_all = ModelSource {
        policy: Some(evergreen_serve::VersionPolicy::All),
        ..n.clone()
    };
    let change = apply(vec![n_all]).await;
    assert_eq!(
        (change.removed, change.changed),
        (vec!["m".to_string()], vec!["n".to_string()])
    );
    assert_eq!(fx.get("/v1/models/m").await.0, 404);
    assert_eq!(fx.get("/v1/models/n").await.0, 200);
    fx.handle.shutdown().await;
}

/// A list of values for one feature, as a `tf.Example` list holds: multi-hot for a categorical
/// column (row and columnar formats alike), refused with the column's name for a numeric one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_values_are_multi_hot_categoricals() {
    let fx = start(&[1], |_| {}).await;
    let multi: RawRecord = [
        (
            "c",
            RawValue::List(vec![RawValue::Str("a".into()), RawValue::Str("b".into())]),
        ),
        ("x", RawValue::Num(1.0)),
    ]
    .into_iter()
    .collect();
    let want = expected(1, &multi);
    assert!(
        (want - expected(1, &rec("a", 1.0))).abs() > 1e-9,
        "the second value counts"
    );
    for body in [
        json!({"instances": [{"c": ["a", "b"], "x": 1.0}]}),
        json!({"inputs": {"c": [["a", "b"]], "x": [1.0]}}),
    ] {
        let (code, _, resp) = fx.post("/v1/models/m:predict", body.to_string()).await;
        assert_eq!(code, 200, "{resp}");
        let got = match resp.get("predictions") {
            Some(rows) => rows[0].as_f64(),
            None => resp["outputs"][0].as_f64(),
        }
        .unwrap_or_else(|| panic!("{resp}"));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}: {resp}");
    }
    let body = json!({"instances": [{"c": "a", "x": [1.0, 2.0]}]}).to_string();
    let (code, _, resp) = fx.post("/v1/models/m:predict", body).await;
    assert_eq!(code, 400, "{resp}");
    assert!(error_of(&resp).contains("\"x\""), "{resp}");
    fx.handle.shutdown().await;
}

/// The version directories of this fixture that the process maps files from (`(deleted)`:
/// the unnamed private copies of served FTRL models).
fn mapped_versions(fx: &Fixture) -> Vec<u64> {
    let base = fx.reg.base().to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut versions: Vec<u64> = maps
        .lines()
        .filter_map(|l| l.split_once(&format!("{base}/"))?.1.split_once('/'))
        .filter(|(_, rest)| rest.ends_with("(deleted)"))
        .filter_map(|(v, _)| v.parse().ok())
        .collect();
    versions.dedup();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_ftrl_versions_are_mapped_private_copies_released_when_swapped_out() {
    if !std::path::Path::new("/proc/self/maps").exists() {
        println!("skipped: no /proc/self/maps on this system");
        return;
    }
    let fx = start(&[1], |o| o.poll_interval = Duration::from_millis(50)).await;
    assert_eq!(mapped_versions(&fx), vec![1]);
    let body = r#"{"instances": [{"c": "a", "x": 1}, {"c": "b", "x": 2}]}"#;
    let check = async |v: u64| {
        let (code, version, resp) = fx.post("/v1/models/m:predict", body).await;
        assert_eq!((code, version), (200, Some(v)), "{resp}");
        for (i, r) in [rec("a", 1.0), rec("b", 2.0)].iter().enumerate() {
            assert_eq!(resp["predictions"][i].as_f64().unwrap(), expected(v, r));
        }
    };
    check(1).await;
    // The served file rewritten in place, then emptied (as `cp` over it would): the private
    // copy serves on, unaffected (a mapping of the file itself would read garbage, then fault).
    let file = fx.reg.version_dir(1).join(MODEL_FILE);
    std::fs::write(&file, vec![0u8; 64]).unwrap();
    std::fs::File::create(&file).unwrap();
    check(1).await;
    // Swapped out: the old version's copy is unmapped (its memory and disk space released).
    publish(&fx.reg, 2);
    eventually(10, "version 2 served", async || {
        fx.served().await == vec![2]
    })
    .await;
    check(2).await;
    assert_eq!(mapped_versions(&fx), vec![2]);
    fx.handle.shutdown().await;

    // Mapping off: read into memory, nothing mapped.
    let fx = start(&[1], |o| o.model_mapping = ModelMapping::Off).await;
    check_off(&fx).await;
    assert_eq!(mapped_versions(&fx), Vec::<u64>::new());
    fx.handle.shutdown().await;
}

async fn check_off(fx: &Fixture) {
    let (code, version, resp) = fx
        .post(
            "/v1/models/m:predict",
            r#"{"instances": [{"c": "a", "x": 1}]}"#,
        )
        .await;
    assert_eq!((code, version), (200, Some(1)), "{resp}");
    assert_eq!(
        resp["predictions"][0].as_f64().unwrap(),
        expected(1, &rec("a", 1.0))
    );
}
