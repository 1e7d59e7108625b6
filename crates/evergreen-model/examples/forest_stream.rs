//! Progressive validation of the adaptive random forest on a CSV stream, without the rest of
//! the pipeline (a development tool; the benchmark runs `evergreen train`):
//! `cargo run --release -p evergreen-model --example forest_stream -- FILE.csv [cat,cols] [threads] [batch]`
//! The label column is `label` (0/1); columns named in the second argument are categorical,
//! the others numeric.

use evergreen_core::{FeatureVector, FieldKind};
use evergreen_model::{Forest, ForestParams, Model, logloss};
use std::io::BufRead;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let cats: Vec<&str> = args.get(2).map_or(vec![], |s| s.split(',').collect());
    let threads: usize = args.get(3).map_or(1, |s| s.parse().unwrap());
    let batch: usize = args.get(4).map_or(1000, |s| s.parse().unwrap());
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut lines = file.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let label = header.iter().position(|h| h == "label").unwrap();
    let mut kinds = vec![FieldKind::Unused];
    let mut cols = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if i == label {
            continue;
        }
        cols.push((i, cats.contains(&h.as_str())));
        kinds.push(if cats.contains(&h.as_str()) {
            FieldKind::Categorical
        } else {
            FieldKind::Numeric
        });
    }
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for line in lines {
        let line = line.unwrap();
        let cells: Vec<&str> = line.split(',').collect();
        let mut x = FeatureVector::default();
        for (f, &(i, cat)) in cols.iter().enumerate() {
            let c = cells[i];
            if cat {
                x.push_field(
                    f as u16 + 1,
                    xxhash_rust::xxh3::xxh3_64(c.as_bytes()) as u32,
                    1.0,
                );
            } else if let Ok(v) = c.parse::<f32>() {
                x.push_field(f as u16 + 1, 0, v);
            }
        }
        xs.push(x);
        ys.push(cells[label].parse::<f32>().unwrap());
    }
    let mut params = ForestParams::default();
    if let Ok(s) = std::env::var("FOREST") {
        params = serde_json::from_str(&s).unwrap();
    }
    let mut f = Forest::try_new(params, kinds, 1 << 18).unwrap();
    let start = std::time::Instant::now();
    let mut preds = Vec::with_capacity(xs.len());
    for (cx, cy) in xs.chunks(batch).zip(ys.chunks(batch)) {
        f.learn_parallel(cx, cy, threads, &mut preds);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = preds.len() as f64;
    let ll: f64 = preds
        .iter()
        .zip(&ys)
        .map(|(&p, &y)| logloss(p, y))
        .sum::<f64>()
        / n;
    let acc = preds
        .iter()
        .zip(&ys)
        .filter(|(p, y)| (**p > 0.5) == (**y > 0.5))
        .count() as f64
        / n;
    let s = f.summary();
    println!(
        "n {} logloss {ll:.4} accuracy {acc:.4} examples/s {:.0} ({secs:.2} s) warnings {} replacements {} bytes {} depth {:?}",
        preds.len(),
        n / secs,
        s.warnings,
        s.replacements,
        s.bytes,
        s.trees.iter().map(|t| t.depth).collect::<Vec<_>>()
    );
    let start = std::time::Instant::now();
    let mut sum = 0.0;
    for x in xs.iter().take(20000) {
        sum += f.predict(x);
    }
    println!(
        "predict {:.2} us/example ({sum:.1})",
        start.elapsed().as_secs_f64() * 1e6 / xs.len().min(20000) as f64
    );
}
