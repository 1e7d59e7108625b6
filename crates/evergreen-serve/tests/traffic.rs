//! End-to-end tests of server-side traffic policy and the admin API over a temporary registry:
//! sticky canary split, ramp, pin, shadow, promote/rollback through the API, token checks and
//! lineage records.

mod common;

use common::*;
use evergreen_registry::{Shadow, SplitRequest};
use evergreen_serve::{AdminAction, AdminAudit, AdminOptions};
use std::sync::Mutex;

const TOKEN: &str = "0123456789abcdef-admin";

/// Keeps the recorded actions in memory.
#[derive(Default)]
struct Recorded(Mutex<Vec<AdminAction>>);

impl AdminAudit for Recorded {
    fn record(&self, a: &AdminAction) -> Result<(), String> {
        self.0.lock().unwrap().push(a.clone());
        Ok(())
    }
}

fn with_admin(audit: Arc<Recorded>) -> impl FnOnce(&mut ServeOptions) {
    move |o: &mut ServeOptions| {
        o.admin = Some(AdminOptions {
            token: TOKEN.into(),
            audit,
        });
        // Long poll: every change seen below is applied by the admin call itself, or by an
        // explicit reload.
        o.poll_interval = Duration::from_secs(3600);
    }
}

impl Fixture {
    /// POSTs a predict request for `c=a,x=1` with an optional split-key header.
    async fn predict_with_key(&self, key: Option<&str>) -> (u16, Option<u64>, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/models/m:predict", self.url))
            .body(r#"{"instances": [{"c": "a", "x": 1.0}]}"#);
        if let Some(k) = key {
            req = req.header("x-evergreen-key", k);
        }
        let r = req.send().await.unwrap();
        let code = r.status().as_u16();
        let version = r
            .headers()
            .get(VERSION_HEADER)
            .map(|h| h.to_str().unwrap().parse().unwrap());
        (code, version, r.json().await.unwrap())
    }

    async fn admin(&self, token: Option<&str>, verb: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/admin/v1/models/m:{verb}", self.url))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn reload(&self) {
        self.handle.server().reload_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_is_sticky_proportional_and_ramps() {
    let f = start(&[1, 2], |o| o.num_versions = 2).await;
    // No policy: the newest answers (TF Serving's behaviour).
    assert_eq!(f.predict_with_key(Some("u1")).await.1, Some(2));
    f.reg
        .split(
            &SplitRequest {
                canary: 2,
                percent: 10.0,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    f.reload();
    let n = 2000;
    let mut canary = 0;
    let mut side = BTreeMap::new();
    for i in 0..n {
        let key = format!("user-{i}");
        let (code, v, body) = f.predict_with_key(Some(&key)).await;
        assert_eq!(code, 200, "{body}");
        let v = v.unwrap();
        assert!(v == 1 || v == 2);
        let p = body["predictions"][0].as_f64().unwrap();
        assert!(
            (p - expected(v, &rec("a", 1.0))).abs() < 1e-12,
            "answered by {v}"
        );
        canary += (v == 2) as usize;
        side.insert(key, v);
    }
    // 10% of 2000: sd ~13.4; 4 sd.
    assert!(
        (146..=254).contains(&canary),
        "{canary} of {n} to the canary"
    );
    // Sticky: the same keys land on the same side again.
    for i in (0..n).step_by(37) {
        let key = format!("user-{i}");
        assert_eq!(f.predict_with_key(Some(&key)).await.1, Some(side[&key]));
    }
    let routed = |o: &str| {
        f.metrics
            .routed
            .get_or_create(&Metrics::outcome("m", o))
            .get()
    };
    assert_eq!(
        routed("canary") + routed("stable"),
        n as u64 + (n as u64).div_ceil(37)
    );
    // A ramp from 10% to 100%: at its last step every key is on the canary, and every key that
    // was on the canary at 10% stayed there.
    f.reg
        .split(
            &SplitRequest {
                canary: 2,
                ramp: vec![10.0, 100.0],
                ramp_interval_s: 1,
                ..Default::default()
            },
            0, // started long ago: the ramp is at its last step
        )
        .unwrap();
    f.reload();
    for i in (0..n).step_by(53) {
        assert_eq!(
            f.predict_with_key(Some(&format!("user-{i}"))).await.1,
            Some(2)
        );
    }
    // Pinned: everything on 1, whatever the key; a versioned request still gets what it names.
    f.reg.pin(Some(1)).unwrap();
    f.reload();
    for i in 0..50 {
        assert_eq!(
            f.predict_with_key(Some(&format!("user-{i}"))).await.1,
            Some(1)
        );
    }
    let (_, v, _) = f
        .post(
            "/v1/models/m/versions/2:predict",
            r#"{"instances": [{"c": "a", "x": 1.0}]}"#,
        )
        .await;
    assert_eq!(v, Some(2));
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_key_can_be_a_feature_of_the_request() {
    let f = start(&[1, 2], |o| o.num_versions = 2).await;
    f.reg
        .split(
            &SplitRequest {
                canary: 2,
                percent: 50.0,
                key_feature: Some("c".into()),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    f.reload();
    let mut sides = std::collections::BTreeSet::new();
    for i in 0..40 {
        let body = format!(r#"{{"instances": [{{"c": "id{i}", "x": 1.0}}]}}"#);
        let (code, v1, _) = f.post("/v1/models/m:predict", body.clone()).await;
        assert_eq!(code, 200);
        let (_, v2, _) = f.post("/v1/models/m:predict", body).await;
        assert_eq!(v1, v2, "the same feature value stays on one side");
        sides.insert(v1.unwrap());
    }
    assert_eq!(sides.len(), 2, "both sides get traffic at 50%");
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_predictions_are_recorded_and_never_change_the_response() {
    let f = start(&[1, 2], |o| o.num_versions = 2).await;
    f.reg.promote(Some(1)).unwrap();
    f.reload();
    let body = r#"{"instances": [{"c": "a", "x": 1.0}, {"c": "b", "x": 2.0}]}"#;
    let before = f.post("/v1/models/m:predict", body).await;
    f.reg
        .shadow(Some(Shadow {
            version: 2,
            percent: 100.0,
        }))
        .unwrap();
    f.reload();
    for _ in 0..20 {
        let after = f.post("/v1/models/m:predict", body).await;
        assert_eq!(after, before, "same code, version and body with a shadow");
    }
    assert_eq!(before.1, Some(1));
    let shadowed = || {
        f.metrics
            .shadow_predictions
            .get_or_create(&evergreen_metrics::ModelLabels { model: "m".into() })
            .get()
    };
    eventually(10, "40 shadow predictions", async || shadowed() == 40).await;
    // The difference between versions 1 and 2 was measured.
    let text = f.metrics.render();
    assert!(
        text.contains("evergreen_serving_shadow_abs_difference_count{model=\"m\"} 40"),
        "{text}"
    );
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_acts_at_once_and_records_lineage() {
    let audit = Arc::new(Recorded::default());
    let f = start(&[1, 2, 3], with_admin(audit.clone())).await;
    // Refused: no token, wrong token (401 with WWW-Authenticate), and nothing changed.
    for token in [None, Some("wrong"), Some("0123456789abcdef-admiN")] {
        let (code, body) = f.admin(token, "rollback", json!({})).await;
        assert_eq!(code, 401, "{token:?}: {body}");
    }
    let r = f
        .client
        .get(format!("{}/admin/v1/models/m", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(f.reg.labels().unwrap().is_empty());
    assert_eq!(
        f.metrics
            .admin_actions
            .get_or_create(&Metrics::outcome("m", "refused"))
            .get(),
        4
    );
    // Unknown model and unknown action.
    let r = f
        .client
        .post(format!("{}/admin/v1/models/other:rollback", f.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(f.admin(Some(TOKEN), "explode", json!({})).await.0, 404);
    assert_eq!(
        f.admin(Some(TOKEN), "promote", json!({"version": "x"}))
            .await
            .0,
        400
    );

    // Newest (3) serves; roll back: stable becomes 2 at once (no poll in between).
    assert_eq!(f.predict_with_key(None).await.1, Some(3));
    let (code, body) = f
        .admin(
            Some(TOKEN),
            "rollback",
            json!({"actor": "alice", "reason": "v3 looks off"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["labels"]["stable"], 2);
    assert_eq!(f.predict_with_key(None).await.1, Some(2));
    // Canary 3 at 100%, then rollback withdraws it; then promote 3 explicitly.
    let (code, body) = f
        .admin(Some(TOKEN), "split", json!({"canary": 3, "percent": 100.0}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(f.predict_with_key(Some("k")).await.1, Some(3));
    assert_eq!(f.admin(Some(TOKEN), "rollback", json!({})).await.0, 200);
    assert_eq!(f.predict_with_key(Some("k")).await.1, Some(2));
    let (code, body) = f
        .admin(
            Some(TOKEN),
            "promote",
            json!({"version": 3, "reason": "fixed"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(f.predict_with_key(None).await.1, Some(3));
    // Pin, unpin, and the state endpoint.
    assert_eq!(
        f.admin(Some(TOKEN), "pin", json!({"version": 1})).await.0,
        200
    );
    assert_eq!(f.predict_with_key(None).await.1, Some(1));
    assert_eq!(f.admin(Some(TOKEN), "unpin", json!({})).await.0, 200);
    let r = f
        .client
        .get(format!("{}/admin/v1/models/m", f.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let state: Value = r.json().await.unwrap();
    assert_eq!(state["labels"]["stable"], 3);
    assert_eq!(state["on_disk"], json!([1, 2, 3]));
    // A version that does not exist is refused with 400, and changes nothing.
    let (code, body) = f.admin(Some(TOKEN), "pin", json!({"version": 9})).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(f.predict_with_key(None).await.1, Some(3));

    // The audit got every applied action, in order, with who and why.
    let actions = audit.0.lock().unwrap().clone();
    let names: Vec<&str> = actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        names,
        ["rollback", "split", "rollback", "promote", "pin", "unpin"]
    );
    assert_eq!(actions[0].actor, "alice");
    assert_eq!(actions[0].reason, "v3 looks off");
    assert_eq!(actions[1].actor, "admin-api");
    assert!(actions[3].details_json.contains("\"labels_after\""));
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_off_without_a_token() {
    let f = start(&[1], |_| {}).await;
    let (code, body) = f.admin(Some(TOKEN), "rollback", json!({})).await;
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("disabled"), "{body}");
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_policies_all_and_specific_with_config_labels() {
    let f = start(&[1, 2, 3, 4], |o| {
        o.models[0].policy = Some(evergreen_serve::VersionPolicy::Specific(vec![1, 3, 9]));
        o.models[0].labels = BTreeMap::from([("stable".to_string(), 3)]);
    })
    .await;
    let served = f.get("/v1/models/m").await.1["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(served, ["3", "1"], "only the specific versions on disk");
    // The config's label routes unversioned traffic; labels.json overrides it.
    assert_eq!(f.predict_with_key(None).await.1, Some(3));
    f.reg
        .set_labels(&BTreeMap::from([("stable".to_string(), 1)]))
        .unwrap();
    f.reload();
    assert_eq!(f.predict_with_key(None).await.1, Some(1));
    f.handle.shutdown().await;

    let f = start(&[1, 2, 3], |o| {
        o.models[0].policy = Some(evergreen_serve::VersionPolicy::All)
    })
    .await;
    let (code, body) = f.get("/v1/models/m").await;
    assert_eq!(code, 200);
    assert_eq!(body["model_version_status"].as_array().unwrap().len(), 3);
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_warm_up_fails_is_never_served() {
    let f = start(&[1], |o| o.poll_interval = Duration::from_secs(3600)).await;
    // Version 2 with a warm-up request the model cannot answer (a value that is not a number
    // for the numeric input): never swapped in; version 1 keeps answering.
    // Staged beside the registry with its warm-up file, then renamed into place (as a publish
    // does), so the server never sees the version without it.
    let staging = Registry::open(f.dir.path().join("staging"), "m").unwrap();
    publish(&staging, 2);
    std::fs::write(
        staging.version_dir(2).join("warmup.jsonl"),
        "{\"instances\": [{\"c\": \"a\", \"x\": 1.0}]}\n{\"instances\": [{\"x\": \"oops\"}]}\n",
    )
    .unwrap();
    std::fs::rename(staging.version_dir(2), f.reg.version_dir(2)).unwrap();
    let warmup = f.reg.version_dir(2).join("warmup.jsonl");
    f.reload();
    assert_eq!(f.predict_with_key(None).await.1, Some(1));
    assert_eq!(f.loads("failed"), 1);
    // Fixed (the file changed, so it is retried at once): served after its warm-up.
    std::fs::write(&warmup, "{\"instances\": [{\"c\": \"a\", \"x\": 1.0}]}\n").unwrap();
    f.reload();
    assert_eq!(f.predict_with_key(None).await.1, Some(2));
    assert_eq!(f.loads("failed"), 1);
    f.handle.shutdown().await;
}

/// 100 hot swaps under concurrent load: every request answered (200), by a version whose model
/// gave exactly that answer, and never by an older version than the one before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_swaps_under_load_fail_no_request() {
    let f = Arc::new(start(&[1], |o| o.poll_interval = Duration::from_secs(3600)).await);
    let swaps = 100u64;
    let want: BTreeMap<u64, f64> = (1..=swaps + 1)
        .map(|v| (v, expected(v, &rec("a", 1.0))))
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (f, done) = (f.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                seen.push(f.predict_with_key(None).await);
            }
            seen
        }));
    }
    for v in 2..=swaps + 1 {
        let reg = f.reg.clone();
        let server = f.handle.server().clone();
        // Publish, then the watcher's pass (run here, so each swap completes before the next).
        tokio::task::spawn_blocking(move || {
            publish(&reg, v);
            server.reload_now();
        })
        .await
        .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut answered = 0;
    let mut versions = std::collections::BTreeSet::new();
    for c in clients {
        let mut prev = 0;
        for (code, v, body) in c.await.unwrap() {
            assert_eq!(code, 200, "{body}");
            let v = v.expect("version header");
            assert!(v >= prev, "version went backwards: {prev} then {v}");
            prev = v;
            assert_eq!(
                body["predictions"][0].as_f64().unwrap(),
                want[&v],
                "version {v}"
            );
            versions.insert(v);
            answered += 1;
        }
    }
    assert!(answered > 100, "{answered} requests");
    assert!(
        versions.len() > 10,
        "answers came from {} versions",
        versions.len()
    );
    assert_eq!(f.predict_with_key(None).await.1, Some(swaps + 1));
    let f = Arc::into_inner(f).expect("clients finished");
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_readiness_and_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // No version yet: alive, not ready.
    let f = start(&[], |o| o.request_timeout = Duration::from_millis(300)).await;
    let (code, _) = f.get("/livez").await;
    assert_eq!(code, 200);
    let (code, body) = f.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    // A client that announces a body and never sends it is cut off with 408.
    let mut s = tokio::net::TcpStream::connect(f.handle.addr).await.unwrap();
    s.write_all(
        b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inst",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    f.handle.shutdown().await;
    let f = start(&[1], |_| {}).await;
    assert_eq!(f.get("/readyz").await.0, 200);
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_still_times_out() {
    // Parsing and scoring 400,000 instances takes far longer than 100 ms: the request is
    // worked on off the async workers, and the timeout answers 408 instead of waiting for it.
    let f = start(&[1], |o| {
        o.request_timeout = Duration::from_millis(100);
        o.max_body_bytes = 16 << 20;
    })
    .await;
    let instances = vec![r#"{"c":"a","x":1.0}"#; 400_000].join(",");
    let started = Instant::now();
    let r = f
        .client
        .post(format!("{}/v1/models/m:predict", f.url))
        .header("content-type", "application/json")
        .body(format!(r#"{{"instances":[{instances}]}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 408, "after {:?}", started.elapsed());
    // A small request right after is answered.
    let (code, version, _) = f
        .post(
            "/v1/models/m:predict",
            r#"{"instances":[{"c":"a","x":1.0}]}"#,
        )
        .await;
    assert_eq!((code, version), (200, Some(1)));
    f.handle.shutdown().await;
}

/// An Alertmanager webhook notification (version 4) with one alert.
fn notification(status: &str, labels: Value, starts_at: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"x\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "evergreen", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status, "labels": labels,
            "annotations": {"summary": "canary worse than stable"},
            "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c0ffee",
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_webhook_rolls_back_once_and_pauses_publication_while_firing() {
    let audit = Arc::new(Recorded::default());
    let f = start(&[1, 2], with_admin(audit.clone())).await;
    let post = async |token: Option<&str>, body: Value| {
        let mut req = f
            .client
            .post(format!("{}/admin/v1/alertmanager", f.url))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let rollback = json!({"alertname": "EvergreenCanaryWorse", "model": "m",
                          "evergreen_action": "rollback", "severity": "critical"});
    let firing = notification("firing", rollback.clone(), "2026-11-29T13:00:00Z");
    // No token, wrong token: refused, nothing changes.
    assert_eq!(post(None, firing.clone()).await.0, 401);
    assert_eq!(post(Some("wrong"), firing.clone()).await.0, 401);
    assert_eq!(f.predict_with_key(None).await.1, Some(2));
    // Firing: stable goes back to 1, at once; recorded as done by alertmanager.
    let (code, body) = post(Some(TOKEN), firing.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["applied"][0]["action"], "rollback", "{body}");
    assert_eq!(f.predict_with_key(None).await.1, Some(1));
    // Sent again (Alertmanager repeats firing alerts): not applied twice.
    let (_, body) = post(Some(TOKEN), firing).await;
    assert_eq!(body["applied"], json!([]), "{body}");
    assert!(
        body["ignored"][0]["why"]
            .as_str()
            .unwrap()
            .contains("already"),
        "{body}"
    );
    assert_eq!(f.reg.labels().unwrap().get("stable"), Some(&1));
    // Resolved: a rollback is not undone.
    let (_, body) = post(
        Some(TOKEN),
        notification("resolved", rollback, "2026-11-29T13:00:00Z"),
    )
    .await;
    assert_eq!(body["applied"], json!([]), "{body}");
    // Pause while firing, resume when resolved.
    let pause = json!({"alertname": "EvergreenGateRejectionsInARow", "model": "m",
                       "evergreen_action": "pause_publication"});
    let (_, body) = post(
        Some(TOKEN),
        notification("firing", pause.clone(), "2026-11-29T14:00:00Z"),
    )
    .await;
    assert_eq!(body["applied"][0]["action"], "pause", "{body}");
    let paused = f.reg.traffic().unwrap().publication_paused.unwrap();
    assert!(paused.contains("EvergreenGateRejectionsInARow"), "{paused}");
    let (_, body) = post(
        Some(TOKEN),
        notification("resolved", pause, "2026-11-29T14:00:00Z"),
    )
    .await;
    assert_eq!(body["applied"][0]["action"], "resume", "{body}");
    assert_eq!(f.reg.traffic().unwrap().publication_paused, None);
    // Alerts evergreen cannot act on are listed with the reason.
    let (_, body) = post(
        Some(TOKEN),
        notification(
            "firing",
            json!({"alertname": "Other", "model": "m"}),
            "2026-11-29T15:00:00Z",
        ),
    )
    .await;
    assert!(
        body["ignored"][0]["why"]
            .as_str()
            .unwrap()
            .contains("evergreen_action"),
        "{body}"
    );
    let (_, body) = post(
        Some(TOKEN),
        notification(
            "firing",
            json!({"alertname": "X", "model": "../etc", "evergreen_action": "rollback"}),
            "2026-11-29T15:00:00Z",
        ),
    )
    .await;
    assert!(
        body["ignored"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no model"),
        "{body}"
    );
    let (code, _) = post(Some(TOKEN), json!({"not": "a notification"})).await;
    assert_eq!(code, 400);
    // Every applied action was recorded, by alertmanager, with the alert as the reason.
    let recorded = audit.0.lock().unwrap().clone();
    let actions: Vec<&str> = recorded.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["rollback", "pause", "resume"]);
    assert!(recorded.iter().all(|a| a.actor == "alertmanager"));
    assert!(
        recorded[0]
            .reason
            .contains("EvergreenCanaryWorse firing: canary worse than stable")
    );
    f.handle.shutdown().await;
}

/// Predicts `c=a,x=1` with split key `key`: (answering version, prediction, prediction id).
async fn predict_for_feedback(f: &Fixture, key: &str) -> (u64, f64, String) {
    let r = f
        .client
        .post(format!("{}/v1/models/m:predict", f.url))
        .header("x-evergreen-key", key)
        .body(r#"{"instances": [{"c": "a", "x": 1.0}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let version = r.headers()[VERSION_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let id = r.headers()["x-evergreen-prediction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    (version, body["predictions"][0].as_f64().unwrap(), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feedback_judges_the_canary_rolling_it_back_or_promoting_it() {
    let audit = Arc::new(Recorded::default());
    let f = start(&[1, 2], |o| {
        with_admin(audit.clone())(o);
        o.num_versions = 2;
        o.feedback = Some(evergreen_serve::feedback::FeedbackOptions {
            canary: Some(evergreen_serve::feedback::CanaryPolicy {
                min_examples: 40,
                max_logloss_increase: 0.01,
                promote: true,
            }),
            ..Default::default()
        });
    })
    .await;
    let split = SplitRequest {
        canary: 2,
        percent: 50.0,
        ..Default::default()
    };
    f.reg.split(&split, 0).unwrap();
    f.reload();
    // Labels that agree with stable's predictions and contradict the canary's.
    let mut items = Vec::new();
    let mut by_version = BTreeMap::<u64, usize>::new();
    for i in 0..300 {
        let (v, p, id) = predict_for_feedback(&f, &format!("user-{i}")).await;
        *by_version.entry(v).or_default() += 1;
        let agree = p >= 0.5;
        let label = if v == 1 { agree } else { !agree };
        items.push(json!({"prediction_id": id, "label": u8::from(label)}));
    }
    assert!(
        by_version[&1] >= 40 && by_version[&2] >= 40,
        "{by_version:?}"
    );
    // An unknown id and a bad label are reported, not joined.
    items.push(json!({"prediction_id": "nope-1", "label": 1}));
    items.push(json!({"key": "user-0", "label": 3}));
    let (code, body) = f
        .admin(Some(TOKEN), "feedback", json!({"feedback": items}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["report"]["joined"], 300, "{body}");
    assert_eq!(body["report"]["unknown"], 1, "{body}");
    assert_eq!(body["report"]["invalid"], 1, "{body}");
    assert_eq!(body["canary"]["verdict"], "rollback", "{body}");
    assert!(
        body["live"]["2"]["logloss"].as_f64().unwrap()
            > body["live"]["1"]["logloss"].as_f64().unwrap()
    );
    // The canary is withdrawn at once; the decision is recorded with its numbers.
    assert_eq!(f.reg.labels().unwrap().get("canary"), None);
    assert_eq!(f.predict_with_key(Some("user-1")).await.1, Some(1));
    let recorded = audit.0.lock().unwrap().clone();
    assert_eq!(recorded.last().unwrap().action, "rollback");
    assert_eq!(recorded.last().unwrap().actor, "evergreen-canary");
    assert!(
        recorded
            .last()
            .unwrap()
            .reason
            .contains("canary v2 live logloss"),
        "{:?}",
        recorded.last()
    );
    let text = f.metrics.render();
    assert!(
        text.contains("evergreen_serving_feedback_total{model=\"m\",outcome=\"joined\"} 300"),
        "{text}"
    );
    assert!(
        text.contains("evergreen_serving_live_logloss{model=\"m\",version=\"2\"}"),
        "{text}"
    );

    // A new canary as good as stable (labels agree with both; it is the more confident) is
    // promoted.
    publish(&f.reg, 3);
    f.reg
        .split(
            &SplitRequest {
                canary: 3,
                percent: 50.0,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    f.reload();
    let mut items = Vec::new();
    for i in 0..300 {
        let (_, p, id) = predict_for_feedback(&f, &format!("again-{i}")).await;
        items.push(json!({"prediction_id": id, "label": u8::from(p >= 0.5)}));
    }
    let (code, body) = f
        .admin(Some(TOKEN), "feedback", json!({"feedback": items}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["canary"]["verdict"], "promote", "{body}");
    assert_eq!(f.reg.labels().unwrap().get("stable"), Some(&3));
    assert_eq!(audit.0.lock().unwrap().last().unwrap().action, "promote");
    // Feedback needs the token.
    let (code, _) = f.admin(None, "feedback", json!({"feedback": []})).await;
    assert_eq!(code, 401);
    f.handle.shutdown().await;
}
