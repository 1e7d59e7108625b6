//! Interop with the real other side: TFRecord files written by this crate (plain and gzip) must
//! be read by TensorFlow's reader, or, where TensorFlow is not installed, by the `tfrecord`
//! PyPI package (its framing plus Google's protobuf runtime, with both CRCs of every record
//! checked against the `crc32c` package).
//!
//! Needs `python3` with `tensorflow` or `tfrecord` (`pip install tfrecord`). Without them the
//! tests print why and pass, unless `EVERGREEN_REQUIRE_INTEROP=1`, which makes that a failure.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use evergreen_data::tfrecord::{FeatureValues, TfRecordWriter, encode_example};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_tfrecord.py")
}

/// `true` when python3 and a reader package are usable; otherwise prints the skip reason (or
/// panics when `EVERGREEN_REQUIRE_INTEROP=1`).
fn interop_available(test: &str) -> bool {
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    let reason = match Command::new("python3")
        .arg(script())
        .arg("--check")
        .output()
    {
        Err(e) => format!("python3 could not be run: {e}"),
        Ok(out) if !out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            [stdout.trim(), last]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        }
        Ok(out) => {
            eprintln!(
                "{test}: using {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return true;
        }
    };
    assert!(
        !required,
        "{test}: EVERGREEN_REQUIRE_INTEROP=1 but {reason}"
    );
    // Written to the real stderr (not eprintln!, which libtest captures for passing tests) so
    // the skip is visible in a plain `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 to make this a failure)"
    );
    false
}

/// Known examples covering every kind and the edge cases of each.
fn examples() -> Vec<Vec<(String, FeatureValues)>> {
    let mut out = Vec::new();
    for i in 0..50i64 {
        let mut f = vec![
            ("label".to_string(), FeatureValues::Int64(vec![i % 2])),
            (
                "user_id".to_string(),
                FeatureValues::Bytes(vec![format!("u{i}").into_bytes()]),
            ),
            (
                "price".to_string(),
                FeatureValues::Float(vec![i as f32 * 1.25 + 0.1]),
            ),
            (
                "tags".to_string(),
                FeatureValues::Bytes((0..i % 4).map(|t| format!("t{t}").into_bytes()).collect()),
            ),
        ];
        match i % 10 {
            0 => f.push((
                "extremes".to_string(),
                FeatureValues::Int64(vec![i64::MIN, -1, 0, 1, i64::MAX]),
            )),
            1 => f.push((
                "floats".to_string(),
                FeatureValues::Float(vec![
                    f32::MAX,
                    f32::MIN,
                    f32::MIN_POSITIVE,
                    f32::from_bits(1), // smallest subnormal
                    -0.0,
                    0.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::NAN,
                ]),
            )),
            2 => f.push((
                "binary".to_string(),
                FeatureValues::Bytes(vec![
                    vec![0xff, 0x00, 0xfe],
                    vec![],
                    "é🚀".as_bytes().to_vec(),
                ]),
            )),
            3 => f.extend([
                ("empty_bytes".to_string(), FeatureValues::Bytes(vec![])),
                ("empty_float".to_string(), FeatureValues::Float(vec![])),
                ("empty_int".to_string(), FeatureValues::Int64(vec![])),
                ("no_kind".to_string(), FeatureValues::NoKind),
            ]),
            4 => f.push((
                "long".to_string(),
                FeatureValues::Int64((0..300).map(|x| x * 1_000_003 - 150_000_000).collect()),
            )),
            5 => f.push((
                "名前 with spaces".to_string(),
                FeatureValues::Float(vec![0.5]),
            )),
            6 => f.push((
                "".to_string(),
                FeatureValues::Bytes(vec![b"empty name".to_vec()]),
            )),
            7 => f.clear(),
            _ => {}
        }
        out.push(f);
    }
    out
}

fn expected_json(examples: &[Vec<(String, FeatureValues)>]) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let records: Vec<Value> = examples
        .iter()
        .map(|features| {
            let mut obj = serde_json::Map::new();
            for (name, v) in features {
                let value = match v {
                    FeatureValues::Bytes(v) => {
                        json!({"bytes_b64": v.iter().map(|b| b64(b)).collect::<Vec<_>>()})
                    }
                    FeatureValues::Float(v) => json!({"float": v.iter().map(|&x| {
                        if x.is_nan() {
                            json!("nan")
                        } else if x.is_infinite() {
                            json!(if x > 0.0 { "inf" } else { "-inf" })
                        } else {
                            json!(f64::from(x))
                        }
                    }).collect::<Vec<_>>()}),
                    FeatureValues::Int64(v) => {
                        json!({"int64": v.iter().map(|x| x.to_string()).collect::<Vec<_>>()})
                    }
                    FeatureValues::NoKind => json!({"none": true}),
                };
                obj.insert(name.clone(), value);
            }
            Value::Object(obj)
        })
        .collect();
    json!({ "records": records })
}

fn write_plain(path: &Path, examples: &[Vec<(String, FeatureValues)>]) {
    let mut w = TfRecordWriter::new(BufWriter::new(File::create(path).unwrap()));
    for e in examples {
        w.write_record(&encode_example(e)).unwrap();
    }
    w.flush().unwrap();
}

fn write_gzip(path: &Path, examples: &[Vec<(String, FeatureValues)>]) {
    let file = BufWriter::new(File::create(path).unwrap());
    let mut w = TfRecordWriter::new(GzEncoder::new(file, Compression::default()));
    for e in examples {
        w.write_record(&encode_example(e)).unwrap();
    }
    w.into_inner().finish().unwrap().flush().unwrap();
}

fn run(file: &Path, expected: &Path) -> Output {
    Command::new("python3")
        .arg(script())
        .arg(file)
        .arg(expected)
        .output()
        .expect("run python3")
}

fn assert_reads(file: &Path, expected: &Path, records: usize, gzip: bool) {
    let out = run(file, expected);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "read_tfrecord.py failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    eprintln!("read_tfrecord.py: {stdout}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("summary is JSON");
    assert_eq!(summary["records"], json!(records));
    assert_eq!(summary["crc_checked"], json!(records));
    assert_eq!(summary["gzip"], json!(gzip));
    assert!(summary["values"].as_u64().unwrap() > 500);
}

fn assert_rejected(file: &Path, expected: &Path, what: &str) {
    let out = run(file, expected);
    assert!(
        !out.status.success(),
        "read_tfrecord.py accepted {what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn setup(dir: &Path) -> (Vec<Vec<(String, FeatureValues)>>, PathBuf) {
    let ex = examples();
    let expected = dir.join("expected.json");
    std::fs::write(&expected, expected_json(&ex).to_string()).unwrap();
    (ex, expected)
}

#[test]
fn python_reads_our_plain_tfrecord() {
    if !interop_available("python_reads_our_plain_tfrecord") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ex, expected) = setup(tmp.path());
    let file = tmp.path().join("ours.tfrecord");
    write_plain(&file, &ex);
    assert_reads(&file, &expected, ex.len(), false);

    // The check is real: a changed value, and a corrupted data CRC, are both rejected.
    let mut wrong = expected_json(&ex);
    wrong["records"][0]["label"] = json!({"int64": ["7"]});
    let wrong_path = tmp.path().join("wrong.json");
    std::fs::write(&wrong_path, wrong.to_string()).unwrap();
    assert_rejected(&file, &wrong_path, "a wrong expected value");
    let mut bytes = std::fs::read(&file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[12 + len] ^= 1;
    let corrupt = tmp.path().join("corrupt.tfrecord");
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_rejected(&corrupt, &expected, "a corrupted data CRC");
}

#[test]
fn python_reads_our_gzip_tfrecord() {
    if !interop_available("python_reads_our_gzip_tfrecord") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ex, expected) = setup(tmp.path());
    let file = tmp.path().join("ours.tfrecord.gz");
    write_gzip(&file, &ex);
    assert_reads(&file, &expected, ex.len(), true);
}
