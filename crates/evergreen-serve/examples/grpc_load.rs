//! gRPC load generator for `bench/serve_grpc_load.sh` (wrk speaks HTTP/1 only): `connections`
//! HTTP/2 connections to a TensorFlow-Serving-compatible server, each with one request in
//! flight at a time (wrk's closed loop), sending `PredictionService.Predict` for the Elec2
//! model's six numeric inputs with `instances` instances per request. Prints one JSON line
//! with the same fields as `bench/serve/predict.lua`.
//!
//! ```sh
//! cargo run --release -p evergreen-serve --example grpc_load -- \
//!     --addr 127.0.0.1:8500 --model elec2 --connections 32 --seconds 10 --instances 1
//! ```

use evergreen_serve::grpc::pb::tensorflow::serving as tfs;
use evergreen_serve::grpc::pb::tensorflow::{DataType, TensorProto, TensorShapeProto};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tfs::prediction_service_client::PredictionServiceClient;

struct Args {
    addr: String,
    model: String,
    connections: usize,
    seconds: f64,
    instances: usize,
    threads: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8500".into(),
        model: "elec2".into(),
        connections: 8,
        seconds: 10.0,
        instances: 1,
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--model" => a.model = value,
            "--connections" => a.connections = number(&value)?.max(1),
            "--instances" => a.instances = number(&value)?.max(1),
            "--threads" => a.threads = number(&value)?.max(1),
            "--seconds" => {
                a.seconds = value
                    .parse()
                    .map_err(|e| format!("--seconds {value}: {e}"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// A Predict request with `n` instances of an Elec2 row (the same values as `predict.lua`).
fn request(model: &str, n: usize) -> tfs::PredictRequest {
    let row = [
        ("nswprice", 0.056f32),
        ("nswdemand", 0.44),
        ("vicprice", 0.003),
        ("vicdemand", 0.42),
        ("transfer", 0.41),
        ("period", 0.5),
    ];
    let inputs: HashMap<String, TensorProto> = row
        .iter()
        .map(|(name, v)| {
            (
                name.to_string(),
                TensorProto {
                    dtype: DataType::DtFloat as i32,
                    tensor_shape: Some(TensorShapeProto {
                        dim: vec![
                            evergreen_serve::grpc::pb::tensorflow::tensor_shape_proto::Dim {
                                size: n as i64,
                                name: String::new(),
                            },
                        ],
                        unknown_rank: false,
                    }),
                    float_val: vec![*v; n],
                    ..Default::default()
                },
            )
        })
        .collect();
    tfs::PredictRequest {
        model_spec: Some(tfs::ModelSpec {
            name: model.into(),
            version_choice: None,
            signature_name: String::new(),
        }),
        inputs,
        output_filter: vec![],
    }
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("grpc_load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (latencies, errors, elapsed) = rt.block_on(run(&a));
    let mut l = latencies;
    l.sort_unstable();
    let pct = |p: f64| {
        if l.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (l.len() - 1) as f64).round() as usize;
        l[i] as f64 / 1000.0
    };
    println!(
        "{{\"requests\": {}, \"seconds\": {:.3}, \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"p999_ms\": {:.3}, \"max_ms\": {:.3}, \"errors\": {}, \"instances\": {}}}",
        l.len(),
        elapsed,
        l.len() as f64 / elapsed,
        pct(50.0),
        pct(99.0),
        pct(99.9),
        l.last().map_or(0.0, |m| *m as f64 / 1000.0),
        errors,
        a.instances
    );
}

/// Runs the load; returns the latencies (µs) of the answered requests, the errors and the
/// seconds measured.
async fn run(a: &Args) -> (Vec<u32>, u64, f64) {
    let req = request(&a.model, a.instances);
    let mut clients = Vec::new();
    for _ in 0..a.connections {
        match PredictionServiceClient::connect(format!("http://{}", a.addr)).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("grpc_load: cannot connect to {}: {e}", a.addr);
                std::process::exit(1);
            }
        }
    }
    // Warm-up: one request per connection.
    for c in &mut clients {
        let _ = c.predict(req.clone()).await;
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.seconds);
    let mut tasks = Vec::new();
    for mut c in clients {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let t = Instant::now();
                match c.predict(req.clone()).await {
                    Ok(_) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    (all, errors, started.elapsed().as_secs_f64())
}
