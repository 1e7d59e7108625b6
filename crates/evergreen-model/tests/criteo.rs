//! The Criteo LibFFM sample shipped with xLearn (`shared/datasets/criteo_xlearn_sample`, 200
//! training and 200 test rows): FTRL, FM and FFM must beat the constant predictor. Skipped, with
//! a message, when the dataset directory is missing. Also an ignored throughput measurement:
//! `cargo test --release -p evergreen-model --test criteo -- --ignored --nocapture`.
//!
//! Measured (default hyperparameters, 2^16 buckets): constant predictor logloss 0.5396; FTRL 5
//! epochs 0.5359 / AUC 0.605; FM 5 epochs 0.536 / 0.610; FFM 2 epochs 0.529 / 0.601 (FFM
//! overfits after 3 epochs on 200 rows). `epoch_survey` prints the curves.

use evergreen_core::FeatureVector;
use evergreen_model::{Ffm, FfmParams, Fm, FmParams, Ftrl, FtrlParams, Model};
use std::path::PathBuf;
use std::time::Instant;

const DIM: usize = 1 << 16;
/// Fields 0..=17 of the data, plus field 18 for a bias feature.
const FIELDS: usize = 19;

fn dataset_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets/criteo_xlearn_sample");
    if dir.join("small_train.txt").is_file() && dir.join("small_test.txt").is_file() {
        Some(dir)
    } else {
        println!("skipped: Criteo sample not found at {}", dir.display());
        None
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `label field:index:value ...` → (features, label). `(field, index)` is hashed into `DIM`
/// buckets; every row also gets a bias feature (field 18).
fn parse(text: &str) -> Vec<(FeatureVector, f32)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut it = line.split_ascii_whitespace();
            let label: f32 = it.next().and_then(|t| t.parse().ok()).expect("label");
            let mut x = FeatureVector::default();
            x.push_field(18, (mix(u64::MAX) % DIM as u64) as u32, 1.0);
            for tok in it {
                let mut p = tok.split(':');
                let (Some(f), Some(i), Some(v)) = (p.next(), p.next(), p.next()) else {
                    panic!("bad token {tok:?}");
                };
                let (f, i, v): (u16, u64, f32) = (
                    f.parse().expect("field"),
                    i.parse().expect("index"),
                    v.parse().expect("value"),
                );
                let bucket = mix((u64::from(f) << 40) ^ i) % DIM as u64;
                x.push_field(f, bucket as u32, v);
            }
            (x, if label > 0.5 { 1.0 } else { 0.0 })
        })
        .collect()
}

fn load_split(dir: &std::path::Path, name: &str) -> Vec<(FeatureVector, f32)> {
    parse(&std::fs::read_to_string(dir.join(name)).expect("read dataset"))
}

fn logloss(ps: &[f64], ys: &[f32]) -> f64 {
    ps.iter()
        .zip(ys)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            if y > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum::<f64>()
        / ps.len() as f64
}

/// Area under the ROC curve (Mann-Whitney, ties count half).
fn auc(ps: &[f64], ys: &[f32]) -> f64 {
    let mut idx: Vec<usize> = (0..ps.len()).collect();
    idx.sort_by(|&a, &b| ps[a].total_cmp(&ps[b]));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && ps[idx[j + 1]] == ps[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += (i..=j).filter(|&k| ys[idx[k]] > 0.5).count() as f64 * avg;
        i = j + 1;
    }
    let pos = ys.iter().filter(|&&y| y > 0.5).count() as f64;
    let neg = ys.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn evaluate(m: &dyn Model, test: &[(FeatureVector, f32)]) -> (f64, f64) {
    let ps: Vec<f64> = test.iter().map(|(x, _)| m.predict(x)).collect();
    let ys: Vec<f32> = test.iter().map(|(_, y)| *y).collect();
    (logloss(&ps, &ys), auc(&ps, &ys))
}

fn models() -> Vec<(&'static str, Box<dyn Model>, usize)> {
    vec![
        ("ftrl", Box::new(Ftrl::new(FtrlParams::default(), DIM)), 5),
        ("fm", Box::new(Fm::new(FmParams::default(), DIM, FIELDS)), 5),
        (
            "ffm",
            Box::new(Ffm::new(FfmParams::default(), DIM, FIELDS)),
            2,
        ),
    ]
}

#[test]
fn every_kind_beats_the_constant_predictor_on_criteo() {
    let Some(dir) = dataset_dir() else { return };
    let train = load_split(&dir, "small_train.txt");
    let test = load_split(&dir, "small_test.txt");
    assert_eq!((train.len(), test.len()), (200, 200));
    let base = train.iter().map(|(_, y)| f64::from(*y)).sum::<f64>() / train.len() as f64;
    let ys: Vec<f32> = test.iter().map(|(_, y)| *y).collect();
    let constant = logloss(&vec![base; test.len()], &ys);
    println!("constant predictor (train rate {base:.3}): logloss {constant:.4}");
    for (name, mut m, epochs) in models() {
        for _ in 0..epochs {
            for (x, y) in &train {
                m.learn(x, *y);
            }
        }
        let (ll, a) = evaluate(m.as_ref(), &test);
        println!("{name}: {epochs} epochs, test logloss {ll:.4}, AUC {a:.4}");
        assert!(m.is_finite());
        // 200 test rows: the standard error of an AUC near 0.6 is about 0.045, so the bars sit
        // below what was measured (see the module doc) rather than at "AUC > 0.6".
        assert!(
            ll < constant - 0.002,
            "{name}: logloss {ll} vs constant {constant}"
        );
        assert!(a > 0.57, "{name}: AUC {a}");
    }
}

#[test]
#[ignore = "throughput measurement; run in release"]
fn throughput() {
    let Some(dir) = dataset_dir() else { return };
    let train = load_split(&dir, "small_train.txt");
    let nnz = train.iter().map(|(x, _)| x.len()).sum::<usize>() as f64 / train.len() as f64;
    println!(
        "{} rows, {nnz:.1} entries per row (bias included)",
        train.len()
    );
    for (name, mut m, _) in models() {
        let rounds = 500;
        let t = Instant::now();
        for _ in 0..rounds {
            for (x, y) in &train {
                m.learn(x, *y);
            }
        }
        let learn = (rounds * train.len()) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut s = 0.0;
        for _ in 0..rounds {
            for (x, _) in &train {
                s += m.predict(x);
            }
        }
        let predict = (rounds * train.len()) as f64 / t.elapsed().as_secs_f64();
        println!("{name}: learn {learn:.0} examples/s, predict {predict:.0} examples/s ({s:.1})");
    }
}

#[test]
#[ignore = "prints test logloss/AUC after each of 12 epochs for a few settings"]
fn epoch_survey() {
    let Some(dir) = dataset_dir() else { return };
    let train = load_split(&dir, "small_train.txt");
    let test = load_split(&dir, "small_test.txt");
    let mut extra: Vec<(&str, Box<dyn Model>, usize)> = models();
    extra.push((
        "ftrl a=0.05",
        Box::new(Ftrl::new(
            FtrlParams {
                alpha: 0.05,
                ..FtrlParams::default()
            },
            DIM,
        )),
        0,
    ));
    extra.push((
        "ftrl a=0.02",
        Box::new(Ftrl::new(
            FtrlParams {
                alpha: 0.02,
                ..FtrlParams::default()
            },
            DIM,
        )),
        0,
    ));
    extra.push((
        "fm lr=0.02",
        Box::new(Fm::new(
            FmParams {
                lr: 0.02,
                ..FmParams::default()
            },
            DIM,
            FIELDS,
        )),
        0,
    ));
    extra.push((
        "ffm lr=0.1",
        Box::new(Ffm::new(
            FfmParams {
                lr: 0.1,
                ..FfmParams::default()
            },
            DIM,
            FIELDS,
        )),
        0,
    ));
    extra.push((
        "ffm lr=0.05",
        Box::new(Ffm::new(
            FfmParams {
                lr: 0.05,
                ..FfmParams::default()
            },
            DIM,
            FIELDS,
        )),
        0,
    ));
    for (name, mut m, _) in extra {
        let mut line = format!("{name:12}");
        for _ in 0..12 {
            for (x, y) in &train {
                m.learn(x, *y);
            }
            let (ll, a) = evaluate(m.as_ref(), &test);
            line += &format!(" {ll:.3}/{a:.3}");
        }
        println!("{line}");
    }
}
