//! The whole loop on TFRecord input: spans are directories of tf.Example shards (plain and
//! gzip) found by a TFX-style pattern; a stale version of a span is ignored; a corrupt record is
//! quarantined; every example of every shard is trained or held out exactly once.

mod common;

use common::*;
use evergreen_data::tfrecord::{FeatureValues, TfRecordWriter, encode_example};
use evergreen_registry::Registry;
use std::io::Write;
use std::path::Path;

fn example(header: &[&str], row: &str) -> Vec<u8> {
    let mut f: Vec<(String, FeatureValues)> = Vec::new();
    for (k, v) in header.iter().zip(row.split(',')) {
        let x: f64 = v.parse().unwrap();
        f.push(if *k == "class" {
            (k.to_string(), FeatureValues::Int64(vec![x as i64]))
        } else {
            (k.to_string(), FeatureValues::Float(vec![x as f32]))
        });
    }
    encode_example(&f)
}

fn write_shard(path: &Path, header: &[&str], rows: &[String], gzip: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("partial");
    let file = std::fs::File::create(&tmp).unwrap();
    if gzip {
        let mut w = TfRecordWriter::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        for r in rows {
            w.write_record(&example(header, r)).unwrap();
        }
        w.into_inner().finish().unwrap().flush().unwrap();
    } else {
        let mut w = TfRecordWriter::new(file);
        for r in rows {
            w.write_record(&example(header, r)).unwrap();
        }
        w.into_inner().flush().unwrap();
    }
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn tfrecord_shard_directories_train_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let config = write_config(root, false, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "dir = \"in\"",
        "dir = \"in\"\npattern = \"span-{SPAN}/v{VERSION}/*.tfrecord*\"",
    );
    std::fs::write(&config, text).unwrap();
    let (header, rows) = elec2();
    let cols: Vec<&str> = header.split(',').collect();
    let inbox = root.join("in");
    // span 1: a stale v1 (one shard) and v2 (two shards, one gzip)
    write_shard(
        &inbox.join("span-1/v1/part-0.tfrecord"),
        &cols,
        &rows[..100],
        false,
    );
    write_shard(
        &inbox.join("span-1/v2/part-0.tfrecord"),
        &cols,
        &rows[..1000],
        false,
    );
    write_shard(
        &inbox.join("span-1/v2/part-1.tfrecord.gz"),
        &cols,
        &rows[1000..2000],
        true,
    );
    // span 2: one shard whose last record's payload is corrupt (bad CRC: framing intact)
    let p = inbox.join("span-2/v1/part-0.tfrecord");
    write_shard(&p, &cols, &rows[2000..3000], false);
    let mut bytes = std::fs::read(&p).unwrap();
    let last_payload_byte = bytes.len() - 5;
    bytes[last_payload_byte] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    // span 3: a shard cut short (the rest cannot be framed): the span is held back
    let p = inbox.join("span-3/v1/part-0.tfrecord");
    write_shard(&p, &cols, &rows[3000..3500], false);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2 + 3]).unwrap(); // inside a record

    let out = std::process::Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("span ")).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("span span-00000000000000000001  records 2000  bad 0"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("span span-00000000000000000002  records 999  bad 1"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("HELD_BACK") && lines[2].contains("not published"),
        "{}",
        lines[2]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corrupt shard part-0.tfrecord") && stderr.contains("truncated_record"),
        "{stderr}"
    );
    let q = std::fs::read_to_string(root.join("state/quarantine/span-00000000000000000002.jsonl"))
        .unwrap();
    assert!(q.contains("\"reason\":\"bad_crc\""), "{q}");
    // Positions committed with version 1: both shards of v2 read to their end.
    let m = Registry::open(root.join("models/m"), "m")
        .unwrap()
        .manifest(1)
        .unwrap();
    let mut pos: Vec<(String, u64)> = m
        .positions
        .iter()
        .map(|p| {
            (
                Path::new(&p.shard)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                p.records,
            )
        })
        .collect();
    pos.sort();
    assert_eq!(
        pos,
        vec![
            ("part-0.tfrecord".to_string(), 1000),
            ("part-1.tfrecord.gz".to_string(), 1000)
        ]
    );
}

#[test]
fn checksum_verification_can_be_turned_off() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let config = write_config(root, false, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("dir = \"in\"", "dir = \"in\"\nverify_checksums = false");
    std::fs::write(&config, text).unwrap();
    let (header, rows) = elec2();
    let cols: Vec<&str> = header.split(',').collect();
    let p = root.join("in/a.tfrecord");
    write_shard(&p, &cols, &rows[..500], false);
    // Corrupt only the last data CRC: the payload is intact, so unchecked the record is good.
    let mut bytes = std::fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("span a.tfrecord  records 500  bad 0"),
        "{stdout}"
    );
    // With the default (checked), the same file quarantines that record.
    std::fs::create_dir_all(root.join("checked/in")).unwrap();
    let config2 = write_config(&root.join("checked"), false, "");
    std::fs::copy(&p, root.join("checked/in/a.tfrecord")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config", config2.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("span a.tfrecord  records 499  bad 1"),
        "{stdout}"
    );
}
