//! Server-side request batching end to end (REST and gRPC): concurrent requests answered
//! from shared batches with their own predictions, and per-model batching parameters read from
//! a version's `batching_params.pbtxt` (a bad one keeps the version from being served).

mod common;

use common::*;
use evergreen_serve::{BATCHING_PARAMS_FILE, Batching, BatchingParameters};

fn batching(per_model: bool, max_batch_size: usize, timeout: Duration) -> Batching {
    Batching {
        params: BatchingParameters {
            max_batch_size,
            batch_timeout: timeout,
            max_enqueued_batches: 100,
            num_batch_threads: 1,
        },
        per_model,
    }
}

/// `(count, sum)` of the batch-size histogram of model `m`.
fn batch_sizes(metrics: &Metrics) -> (u64, f64) {
    let text = metrics.render();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{model=\"m\"}} ")))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    (
        value("evergreen_serving_batch_size_count") as u64,
        value("evergreen_serving_batch_size_sum"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_get_their_own_predictions() {
    // Batches of up to 8 instances; the first request of a batch waits up to 5 s for the
    // others, so 8 requests sent together make one batch (or a few).
    let f = Arc::new(
        start(&[3], |o| {
            o.batching = Some(batching(false, 8, Duration::from_secs(5)))
        })
        .await,
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let x = i as f64;
            let (code, version, body) = f
                .post(
                    "/v1/models/m:predict",
                    format!(r#"{{"instances": [{{"c": "a", "x": {x}}}]}}"#),
                )
                .await;
            (x, code, version, body)
        }));
    }
    for t in tasks {
        let (x, code, version, body) = t.await.unwrap();
        assert_eq!((code, version), (200, Some(3)), "{body}");
        let got = body["predictions"][0].as_f64().unwrap();
        assert_eq!(got, expected(3, &rec("a", x)), "x = {x}");
    }
    let (count, sum) = batch_sizes(&f.metrics);
    assert_eq!(sum, 8.0, "every instance scored in a batch");
    assert!(count < 8, "{count} batches for 8 requests: none shared");
    let f = Arc::into_inner(f).expect("requests finished");
    f.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_model_parameters_come_from_the_version_directory() {
    let f = start(&[1], |o| {
        o.batching = Some(batching(true, 1000, Duration::ZERO));
        o.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let predict = async || {
        f.post(
            "/v1/models/m:predict",
            r#"{"instances": [{"c": "a", "x": 1.0}, {"c": "b", "x": 2.0}]}"#,
        )
        .await
    };
    // Version 1 has no batching_params.pbtxt: not batched.
    let (code, version, _) = predict().await;
    assert_eq!((code, version), (200, Some(1)));
    assert_eq!(batch_sizes(&f.metrics), (0, 0.0));
    // Version 2 has one: batched with its parameters. Staged, then renamed into place (as a
    // publish does).
    let stage = |v: u64, params: &str| {
        let staging = Registry::open(f.dir.path().join("staging"), "m").unwrap();
        publish(&staging, v);
        std::fs::write(staging.version_dir(v).join(BATCHING_PARAMS_FILE), params).unwrap();
        std::fs::rename(staging.version_dir(v), f.reg.version_dir(v)).unwrap();
        f.handle.server().reload_now();
    };
    stage(
        2,
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 0 }\n",
    );
    let (code, version, body) = predict().await;
    assert_eq!((code, version), (200, Some(2)));
    assert_eq!(
        body["predictions"][1].as_f64().unwrap(),
        expected(2, &rec("b", 2.0))
    );
    assert_eq!(batch_sizes(&f.metrics), (1, 2.0));
    // Version 3's file does not parse: never served, version 2 keeps answering.
    stage(3, "max_batch_size { value: \"many\" }\n");
    assert_eq!(f.loads("failed"), 1);
    let (code, version, _) = predict().await;
    assert_eq!((code, version), (200, Some(2)));
    f.handle.shutdown().await;
}
