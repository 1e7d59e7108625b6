//! Parquet spans: files written by the `parquet` crate's own writer (every supported type,
//! nulls, lists, several row groups, each compression), corrupt files (errors and bad records,
//! never a panic), the transform (same feature vectors as the equivalent CSV), and interop with
//! files written by pyarrow.
//!
//! The pyarrow test needs `python3` with `pyarrow`; without them it prints why and passes, unless
//! `EVERGREEN_REQUIRE_INTEROP=1`, which makes that a failure.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use evergreen_core::{FeatureSpec, RawRecord, RawValue, Transformer};
use evergreen_data::{BadRecord, DataError, Format, SourceRecord, SpanFile, open_span, reason};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use proptest::prelude::*;

const SCHEMA: &str = "
message test {
  required int64 label;
  optional int32 i32v;
  optional int64 i64v;
  optional float f;
  optional double d;
  optional boolean b;
  optional binary s (UTF8);
  optional binary raw;
  optional int32 dec (DECIMAL(9,2));
  optional int32 day (DATE);
  optional int64 ts (TIMESTAMP_MILLIS);
  optional group tags (LIST) {
    repeated group list {
      optional binary element (UTF8);
    }
  }
}";

/// One row of the test schema.
#[derive(Debug, Clone)]
struct TestRow {
    label: i64,
    i32v: Option<i32>,
    i64v: Option<i64>,
    f: Option<f32>,
    d: Option<f64>,
    b: Option<bool>,
    s: Option<String>,
    raw: Option<Vec<u8>>,
    /// Unscaled, scale 2.
    dec: Option<i32>,
    day: Option<i32>,
    ts: Option<i64>,
    tags: Option<Vec<Option<String>>>,
}

fn rows(n: usize) -> Vec<TestRow> {
    (0..n)
        .map(|i| {
            let k = i as i64;
            let some = |p: usize| i % p != p - 1;
            TestRow {
                label: k % 2,
                i32v: some(5).then_some(if i == 1 {
                    i32::MIN
                } else {
                    (k * 7 - 20) as i32
                }),
                i64v: some(6).then_some(if i == 2 { i64::MAX } else { k * 1_000_003 }),
                f: some(4).then_some(k as f32 * 0.25 - 1.0),
                d: some(7).then_some(if i == 3 { f64::NAN } else { k as f64 * 0.1 }),
                b: some(3).then_some(i % 2 == 0),
                s: some(4).then(|| format!("s{i}é")),
                raw: some(5).then(|| {
                    if i % 2 == 0 {
                        format!("r{i}").into_bytes()
                    } else {
                        vec![0xff, 0xfe, i as u8]
                    }
                }),
                dec: some(3).then_some((k * 123 - 500) as i32),
                day: some(4).then_some(19_000 + i as i32),
                ts: some(5).then_some(1_700_000_000_000 + k),
                tags: match i % 4 {
                    0 => None,
                    1 => Some(Vec::new()),
                    2 => Some(vec![Some(format!("t{i}")), None, Some("x".to_string())]),
                    _ => Some(vec![Some("only".to_string())]),
                },
            }
        })
        .collect()
}

fn expected(r: &TestRow) -> RawRecord {
    let opt = |v: Option<RawValue>| v.unwrap_or(RawValue::Missing);
    let mut rec = RawRecord::new();
    rec.insert("label", RawValue::Int(r.label));
    rec.insert("i32v", opt(r.i32v.map(|x| RawValue::Int(x.into()))));
    rec.insert("i64v", opt(r.i64v.map(RawValue::Int)));
    rec.insert("f", opt(r.f.map(|x| RawValue::Num(x.into()))));
    rec.insert("d", opt(r.d.map(RawValue::Num)));
    rec.insert("b", opt(r.b.map(|x| RawValue::Int(x.into()))));
    rec.insert("s", opt(r.s.clone().map(RawValue::Str)));
    rec.insert(
        "raw",
        opt(r.raw.clone().map(|b| match String::from_utf8(b) {
            Ok(s) => RawValue::Str(s),
            Err(e) => RawValue::Bytes(e.into_bytes()),
        })),
    );
    rec.insert(
        "dec",
        opt(r
            .dec
            .map(|x| RawValue::Num(format!("{x}e-2").parse().unwrap()))),
    );
    rec.insert("day", opt(r.day.map(|x| RawValue::Int(x.into()))));
    rec.insert("ts", opt(r.ts.map(RawValue::Int)));
    rec.insert(
        "tags",
        opt(r.tags.as_ref().map(|t| {
            RawValue::List(
                t.iter()
                    .map(|e| e.clone().map_or(RawValue::Missing, RawValue::Str))
                    .collect(),
            )
        })),
    );
    rec
}

/// Writes an optional scalar column.
fn opt_col<T: DataType>(rg: &mut SerializedRowGroupWriter<'_, File>, vals: Vec<Option<T::T>>)
where
    T::T: Clone,
{
    let mut col = rg.next_column().unwrap().unwrap();
    let defs: Vec<i16> = vals.iter().map(|v| i16::from(v.is_some())).collect();
    let present: Vec<T::T> = vals.into_iter().flatten().collect();
    col.typed::<T>()
        .write_batch(&present, Some(&defs), None)
        .unwrap();
    col.close().unwrap();
}

fn write_test_file(
    path: &Path,
    rows: &[TestRow],
    per_group: usize,
    compression: Compression,
) -> ParquetMetaData {
    write_test_file_with(path, rows, per_group, compression, true)
}

/// [`write_test_file`], with column statistics on or off.
fn write_test_file_with(
    path: &Path,
    rows: &[TestRow],
    per_group: usize,
    compression: Compression,
    statistics: bool,
) -> ParquetMetaData {
    use parquet::file::properties::EnabledStatistics;
    let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(if statistics {
                EnabledStatistics::Page
            } else {
                EnabledStatistics::None
            })
            .build(),
    );
    let mut w = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    for chunk in rows.chunks(per_group) {
        let mut rg = w.next_row_group().unwrap();
        {
            let mut col = rg.next_column().unwrap().unwrap();
            let labels: Vec<i64> = chunk.iter().map(|r| r.label).collect();
            col.typed::<Int64Type>()
                .write_batch(&labels, None, None)
                .unwrap();
            col.close().unwrap();
        }
        opt_col::<Int32Type>(&mut rg, chunk.iter().map(|r| r.i32v).collect());
        opt_col::<Int64Type>(&mut rg, chunk.iter().map(|r| r.i64v).collect());
        opt_col::<FloatType>(&mut rg, chunk.iter().map(|r| r.f).collect());
        opt_col::<DoubleType>(&mut rg, chunk.iter().map(|r| r.d).collect());
        opt_col::<BoolType>(&mut rg, chunk.iter().map(|r| r.b).collect());
        opt_col::<ByteArrayType>(
            &mut rg,
            chunk
                .iter()
                .map(|r| r.s.as_deref().map(ByteArray::from))
                .collect(),
        );
        opt_col::<ByteArrayType>(
            &mut rg,
            chunk
                .iter()
                .map(|r| r.raw.clone().map(ByteArray::from))
                .collect(),
        );
        opt_col::<Int32Type>(&mut rg, chunk.iter().map(|r| r.dec).collect());
        opt_col::<Int32Type>(&mut rg, chunk.iter().map(|r| r.day).collect());
        opt_col::<Int64Type>(&mut rg, chunk.iter().map(|r| r.ts).collect());
        {
            // tags: optional list (def 1) / repeated (def 2) / optional element (def 3).
            let (mut vals, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
            for r in chunk {
                match &r.tags {
                    None => {
                        defs.push(0);
                        reps.push(0);
                    }
                    Some(t) if t.is_empty() => {
                        defs.push(1);
                        reps.push(0);
                    }
                    Some(t) => {
                        for (j, e) in t.iter().enumerate() {
                            reps.push(i16::from(j > 0));
                            match e {
                                Some(s) => {
                                    defs.push(3);
                                    vals.push(ByteArray::from(s.as_str()));
                                }
                                None => defs.push(2),
                            }
                        }
                    }
                }
            }
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<ByteArrayType>()
                .write_batch(&vals, Some(&defs), Some(&reps))
                .unwrap();
            col.close().unwrap();
        }
        rg.close().unwrap();
    }
    w.close().unwrap()
}

fn span(path: &Path) -> SpanFile {
    SpanFile {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        path: path.to_path_buf(),
        format: Format::from_path(path).unwrap(),
        size: std::fs::metadata(path).unwrap().len(),
    }
}

fn read_all(path: &Path) -> Vec<Result<SourceRecord, BadRecord>> {
    open_span(&span(path)).unwrap().collect()
}

fn same_value(a: &RawValue, b: &RawValue) -> bool {
    match (a, b) {
        (RawValue::Num(x), RawValue::Num(y)) => x == y || (x.is_nan() && y.is_nan()),
        (RawValue::List(x), RawValue::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

fn assert_same(got: &RawRecord, want: &RawRecord, line: u64) {
    let g = got.fields();
    let w = want.fields();
    assert_eq!(
        g.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        w.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        "row {line}"
    );
    for ((name, a), (_, b)) in g.iter().zip(w) {
        assert!(same_value(a, b), "row {line} column {name}: {a:?} != {b:?}");
    }
}

#[test]
fn round_trip_every_type_and_compression() {
    let dir = tempfile::tempdir().unwrap();
    let data = rows(23);
    for (i, compression) in [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::ZSTD(ZstdLevel::default()),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("span-{i}.parquet"));
        let meta = write_test_file(&path, &data, 5, compression);
        assert_eq!(meta.num_row_groups(), 5);
        let items = read_all(&path);
        assert_eq!(items.len(), data.len(), "{compression:?}");
        for (k, (item, row)) in items.iter().zip(&data).enumerate() {
            let rec = item.as_ref().unwrap_or_else(|b| panic!("{b}"));
            assert_eq!(
                rec.line,
                k as u64 + 1,
                "rows are numbered across row groups"
            );
            assert_same(&rec.record, &expected(row), rec.line);
            let json: serde_json::Value = serde_json::from_str(&rec.raw).unwrap();
            assert_eq!(json["label"], serde_json::json!(row.label));
        }
    }
}

#[test]
fn extensions_and_config_name() {
    assert_eq!(
        Format::from_path(Path::new("a.parquet")),
        Some(Format::Parquet)
    );
    assert_eq!(
        Format::from_path(Path::new("a.PARQ")),
        Some(Format::Parquet)
    );
    assert_eq!(Format::Parquet.to_string(), "parquet");
    assert_eq!(
        serde_json::from_str::<Format>("\"parquet\"").unwrap(),
        Format::Parquet
    );
}

#[test]
fn an_empty_table_has_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.parquet");
    write_test_file(&path, &[], 5, Compression::SNAPPY);
    assert!(read_all(&path).is_empty());
}

#[test]
fn maps_and_nested_groups_are_unsupported_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.parquet");
    let schema = Arc::new(
        parse_message_type(
            "message m {
               required int64 id;
               optional group m (MAP) {
                 repeated group key_value {
                   required binary key (UTF8);
                   optional int32 value;
                 }
               }
               optional group g {
                 optional int32 x;
               }
             }",
        )
        .unwrap(),
    );
    let mut w = SerializedFileWriter::new(
        File::create(&path).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    // Row 1: map null, group null. Row 2: map {"a": 1}, group null. Row 3: map null, g.x = 5.
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int64Type>()
        .write_batch(&[1, 2, 3], None, None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<ByteArrayType>()
        .write_batch(&[ByteArray::from("a")], Some(&[0, 2, 0]), Some(&[0, 0, 0]))
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int32Type>()
        .write_batch(&[1], Some(&[0, 3, 0]), Some(&[0, 0, 0]))
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int32Type>()
        .write_batch(&[5], Some(&[0, 0, 2]), None)
        .unwrap();
    c.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();

    let items = read_all(&path);
    assert_eq!(items.len(), 3);
    let first = items[0].as_ref().unwrap();
    assert_eq!(first.record.get("id"), Some(&RawValue::Int(1)));
    assert_eq!(first.record.get("m"), Some(&RawValue::Missing));
    let bad = items[1].as_ref().unwrap_err();
    assert_eq!((bad.line, bad.reason), (2, reason::UNSUPPORTED_TYPE));
    assert!(bad.detail.contains("\"m\""), "{}", bad.detail);
    assert!(bad.raw.contains("\"id\":2"), "{}", bad.raw);
    let bad = items[2].as_ref().unwrap_err();
    assert_eq!((bad.line, bad.reason), (3, reason::UNSUPPORTED_TYPE));
    assert!(bad.detail.contains("\"g\""), "{}", bad.detail);
}

#[test]
fn files_that_are_not_parquet_fail_to_open_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_test_file(&good, &rows(10), 4, Compression::SNAPPY);
    let bytes = std::fs::read(&good).unwrap();

    let mut bad_magic = bytes.clone();
    let n = bad_magic.len();
    bad_magic[n - 1] = b'X';
    let mut bad_footer = bytes.clone();
    // The footer (thrift) sits just before its 4-byte length and the magic.
    let footer_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    for b in &mut bad_footer[n - 8 - footer_len..n - 8] {
        *b = 0xff;
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"label,x\n1,2\n".to_vec()),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("bad_magic", bad_magic),
        ("bad_footer", bad_footer),
        ("huge_footer_len", {
            let mut b = bytes.clone();
            b[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
        // A footer whose schema list claims 2^28 elements in 8 bytes: the parquet crate would
        // allocate for all of them first (gigabytes: a failed allocation aborts the process).
        ("list_longer_than_its_footer", {
            let meta = [0x29, 0xfc, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00];
            let mut b = b"PAR1".to_vec();
            b.extend_from_slice(&meta);
            b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
            b.extend_from_slice(b"PAR1");
            b
        }),
        // The fuzz input that aborted the reader that way.
        (
            "fuzz_crash",
            include_bytes!(
                "../../../fuzz/regressions/parquet/crash-b20f061390fa326d38606222d5b6f564b6b3b4f2"
            )
            .to_vec(),
        ),
    ];
    for (name, data) in cases {
        let path = dir.path().join(format!("{name}.parquet"));
        std::fs::write(&path, &data).unwrap();
        let err = open_span(&span(&path)).unwrap_err();
        assert!(matches!(err, DataError::Parquet { .. }), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&*path.to_string_lossy()),
            "{name}: {msg} names the path"
        );
        assert!(msg.contains("not a readable Parquet file"), "{name}: {msg}");
    }
}

#[test]
fn a_corrupt_row_group_is_one_bad_record_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.parquet");
    let data = rows(12);
    let meta = write_test_file(&path, &data, 4, Compression::SNAPPY);
    // Overwrite the `label` column chunk of the second row group (rows 5..=8) with garbage.
    let col = meta.row_group(1).column(0);
    let (start, len) = col.byte_range();
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[start as usize..(start + len) as usize] {
        *b = 0xee;
    }
    std::fs::write(&path, &bytes).unwrap();

    let items = read_all(&path);
    let lines: Vec<(u64, bool)> = items
        .iter()
        .map(|i| match i {
            Ok(r) => (r.line, true),
            Err(b) => (b.line, false),
        })
        .collect();
    assert_eq!(
        lines,
        [
            (1, true),
            (2, true),
            (3, true),
            (4, true),
            (5, false),
            (9, true),
            (10, true),
            (11, true),
            (12, true)
        ]
    );
    let bad = items[4].as_ref().unwrap_err();
    assert_eq!(bad.reason, reason::CORRUPT_ROW_GROUP);
    assert!(bad.detail.contains("row group 1"), "{}", bad.detail);
    assert!(
        bad.detail.contains("4 row(s) are skipped"),
        "{}",
        bad.detail
    );
    for (item, row) in items[5..].iter().zip(&data[8..]) {
        let rec = item.as_ref().unwrap();
        assert_same(&rec.record, &expected(row), rec.line);
    }
}

/// Reads `bytes` as a Parquet span: an open error or items, never a panic; rows 1-based and
/// never going back.
fn read_bytes(dir: &Path, bytes: &[u8]) -> Result<usize, String> {
    let path = dir.join("fuzz.parquet");
    std::fs::write(&path, bytes).unwrap();
    let reader = match open_span(&span(&path)) {
        Ok(r) => r,
        Err(DataError::Parquet { .. }) => return Ok(0),
        Err(e) => return Err(format!("unexpected open error {e}")),
    };
    let mut last = 0;
    let mut n = 0;
    for item in reader {
        let line = match &item {
            Ok(r) => r.line,
            Err(b) => {
                if b.reason == reason::IO_ERROR {
                    return Err(format!("io error on a readable file: {b}"));
                }
                b.line
            }
        };
        if line < 1 || line < last {
            return Err(format!("line {line} after {last}"));
        }
        last = line;
        n += 1;
        if n > 10_000 {
            return Err("too many items".to_string());
        }
    }
    Ok(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn truncated_or_flipped_files_never_panic(
        compression in 0usize..3,
        cut in proptest::option::of(0.0f64..1.0),
        flips in proptest::collection::vec((0.0f64..1.0, 0u8..8), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.parquet");
        let compression = [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(ZstdLevel::default()),
        ][compression];
        write_test_file(&path, &rows(15), 4, compression);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, bit) in flips {
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[i] ^= 1 << bit;
        }
        if let Some(cut) = cut {
            bytes.truncate((bytes.len() as f64 * cut) as usize);
        }
        let n = read_bytes(dir.path(), &bytes);
        prop_assert!(n.is_ok(), "{:?}", n);
    }
}

// ---------------------------------------------------------------------------------------------
// Through the transform: the same feature vectors as the equivalent CSV

#[test]
fn parquet_and_csv_records_transform_alike() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("t.parquet");
    let csv = dir.path().join("t.csv");
    let schema = Arc::new(
        parse_message_type(
            "message t {
               required int64 label;
               optional double price;
               optional int64 count;
               optional binary city (UTF8);
               optional int64 user;
             }",
        )
        .unwrap(),
    );
    let n = 20;
    let label: Vec<i64> = (0..n).map(|i| i % 2).collect();
    let price: Vec<Option<f64>> = (0..n)
        .map(|i| (i % 5 != 4).then_some(i as f64 * 1.5 - 3.25))
        .collect();
    let count: Vec<Option<i64>> = (0..n).map(|i| (i % 3 != 2).then_some(i * 10)).collect();
    let city: Vec<Option<String>> = (0..n)
        .map(|i| (i % 4 != 3).then(|| ["paris", "oslo", "lima"][i as usize % 3].to_string()))
        .collect();
    let user: Vec<Option<i64>> = (0..n).map(|i| Some(9_000_000_000 + i % 7)).collect();

    let mut w = SerializedFileWriter::new(
        File::create(&pq).unwrap(),
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int64Type>()
        .write_batch(&label, None, None)
        .unwrap();
    c.close().unwrap();
    opt_col::<DoubleType>(&mut rg, price.clone());
    opt_col::<Int64Type>(&mut rg, count.clone());
    opt_col::<ByteArrayType>(
        &mut rg,
        city.iter()
            .map(|c| c.as_deref().map(ByteArray::from))
            .collect(),
    );
    opt_col::<Int64Type>(&mut rg, user.clone());
    rg.close().unwrap();
    w.close().unwrap();

    let mut text = String::from("label,price,count,city,user\n");
    let cell = |v: Option<String>| v.unwrap_or_default();
    for i in 0..n as usize {
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            label[i],
            cell(price[i].map(|x| x.to_string())),
            cell(count[i].map(|x| x.to_string())),
            cell(city[i].clone()),
            cell(user[i].map(|x| x.to_string())),
        ));
    }
    std::fs::File::create(&csv)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();

    let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
        "hash_bits": 18,
        "label": {"column": "label"},
        "numeric": [{"name": "price"}, {"name": "count", "log": true}],
        "categorical": [{"name": "city"}, {"name": "user"}],
        "cross": [{"columns": ["city", "user"]}],
    }))
    .unwrap();
    let t = Transformer::new(spec).unwrap();
    let from_pq = read_all(&pq);
    let from_csv = read_all(&csv);
    assert_eq!(from_pq.len(), n as usize);
    assert_eq!(from_csv.len(), n as usize);
    for (a, b) in from_pq.iter().zip(&from_csv) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let (xa, ya) = t.example(&a.record).unwrap();
        let (xb, yb) = t.example(&b.record).unwrap();
        assert_eq!(ya, yb, "row {}", a.line);
        assert_eq!(xa, xb, "row {}", a.line);
    }
}

// ---------------------------------------------------------------------------------------------
// Interop: files written by pyarrow

/// Writes a file with pyarrow: int/float/string/bool/null/list columns, several row groups.
const PYARROW_WRITER: &str = r#"
import sys
import pyarrow as pa
import pyarrow.parquet as pq
n = 25
table = pa.table({
    "label": pa.array([i % 2 for i in range(n)], pa.int64()),
    "i": pa.array([None if i % 5 == 4 else i * 1000003 - 7 for i in range(n)], pa.int64()),
    "small": pa.array([None if i % 6 == 5 else i - 12 for i in range(n)], pa.int32()),
    "x": pa.array([None if i % 7 == 6 else i * 0.1 for i in range(n)], pa.float64()),
    "y": pa.array([None if i % 3 == 2 else i * 0.25 for i in range(n)], pa.float32()),
    "s": pa.array([None if i % 4 == 3 else "s%dé" % i for i in range(n)], pa.string()),
    "flag": pa.array([None if i % 8 == 7 else i % 3 == 0 for i in range(n)], pa.bool_()),
    "nothing": pa.array([None] * n, pa.null()),
    "tags": pa.array(
        [None if i % 4 == 0 else [] if i % 4 == 1 else ["t%d" % i, None, "x"] if i % 4 == 2 else ["one"]
         for i in range(n)],
        pa.list_(pa.string())),
    "ints": pa.array([[i, -i, 2**40 + i] for i in range(n)], pa.list_(pa.int64())),
})
pq.write_table(table, sys.argv[1], row_group_size=7, compression=sys.argv[2])
print(pa.__version__)
"#;

fn pyarrow_expected(i: i64) -> RawRecord {
    let mut r = RawRecord::new();
    let m = RawValue::Missing;
    r.insert("label", RawValue::Int(i % 2));
    r.insert(
        "i",
        if i % 5 == 4 {
            m.clone()
        } else {
            RawValue::Int(i * 1_000_003 - 7)
        },
    );
    r.insert(
        "small",
        if i % 6 == 5 {
            m.clone()
        } else {
            RawValue::Int(i - 12)
        },
    );
    r.insert(
        "x",
        if i % 7 == 6 {
            m.clone()
        } else {
            RawValue::Num(i as f64 * 0.1)
        },
    );
    r.insert(
        "y",
        if i % 3 == 2 {
            m.clone()
        } else {
            RawValue::Num(f64::from(i as f32 * 0.25))
        },
    );
    r.insert(
        "s",
        if i % 4 == 3 {
            m.clone()
        } else {
            RawValue::Str(format!("s{i}é"))
        },
    );
    r.insert(
        "flag",
        if i % 8 == 7 {
            m.clone()
        } else {
            RawValue::Int(i64::from(i % 3 == 0))
        },
    );
    r.insert("nothing", m.clone());
    r.insert(
        "tags",
        match i % 4 {
            0 => m.clone(),
            1 => RawValue::List(Vec::new()),
            2 => RawValue::List(vec![
                RawValue::Str(format!("t{i}")),
                RawValue::Missing,
                RawValue::Str("x".into()),
            ]),
            _ => RawValue::List(vec![RawValue::Str("one".into())]),
        },
    );
    r.insert(
        "ints",
        RawValue::List(vec![
            RawValue::Int(i),
            RawValue::Int(-i),
            RawValue::Int((1 << 40) + i),
        ]),
    );
    r
}

#[test]
fn reads_files_written_by_pyarrow() {
    let test = "reads_files_written_by_pyarrow";
    let required = std::env::var("EVERGREEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.parquet");
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYARROW_WRITER)
        .arg(&path)
        .arg("snappy")
        .output();
    let reason = match out {
        Err(e) => Some(format!("python3 could not be run: {e}")),
        Ok(o) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            Some(format!(
                "the pyarrow writer failed (is pyarrow installed?): {}",
                stderr.lines().last().unwrap_or("").trim()
            ))
        }
        Ok(o) => {
            eprintln!(
                "{test}: pyarrow {}",
                String::from_utf8_lossy(&o.stdout).trim()
            );
            None
        }
    };
    if let Some(reason) = reason {
        assert!(
            !required,
            "{test}: EVERGREEN_REQUIRE_INTEROP=1 but {reason}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: {reason} (set EVERGREEN_REQUIRE_INTEROP=1 to make this a failure)"
        );
        return;
    }
    let items = read_all(&path);
    assert_eq!(items.len(), 25);
    for (i, item) in items.iter().enumerate() {
        let rec = item.as_ref().unwrap_or_else(|b| panic!("{b}"));
        assert_eq!(rec.line, i as u64 + 1);
        assert_same(&rec.record, &pyarrow_expected(i as i64), rec.line);
    }

    // Codecs this build does not enable: every row group is a `corrupt_row_group` record naming
    // the codec, numbered at its first row; never a panic.
    for codec in ["lz4", "brotli"] {
        let path = dir.path().join(format!("py-{codec}.parquet"));
        let out = Command::new("python3")
            .arg("-c")
            .arg(PYARROW_WRITER)
            .arg(&path)
            .arg(codec)
            .output()
            .unwrap();
        assert!(out.status.success(), "{codec}: {out:?}");
        let items = read_all(&path);
        let lines: Vec<u64> = items
            .iter()
            .map(|i| {
                let bad = i.as_ref().unwrap_err();
                assert_eq!(bad.reason, reason::CORRUPT_ROW_GROUP, "{bad}");
                assert!(bad.detail.to_lowercase().contains(codec), "{bad}");
                bad.line
            })
            .collect();
        assert_eq!(lines, [1, 8, 15, 22], "{codec}");
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds

/// Writes the Parquet fuzz seeds, `fuzz/seeds/parquet/` (run explicitly: `cargo test -p
/// evergreen-data --test parquet -- --ignored write_fuzz_seeds`). Small (under 4 KiB each): a
/// few rows of every type in two row groups, uncompressed and snappy; no statistics.
#[test]
#[ignore = "writes the fuzz seeds into the source tree"]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/parquet");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, compression) in [
        ("plain.parquet", Compression::UNCOMPRESSED),
        ("snappy.parquet", Compression::SNAPPY),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        write_test_file_with(&tmp, &rows(6), 3, compression, false);
        std::fs::rename(&tmp, &path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 4096, "{name}: {size} bytes");
        assert_eq!(read_all(&path).len(), 6);
    }
}

/// A fuzz input whose dictionary page claims ~10^9 values in a few bytes: the parquet crate
/// would size the dictionary by that claim (7.5 GB; the failed allocation aborted the process).
/// The page headers are checked first: each such row group is one corrupt-row-group record.
#[test]
fn a_dictionary_page_claiming_more_values_than_its_bytes_is_a_corrupt_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oom.parquet");
    std::fs::write(
        &path,
        include_bytes!(
            "../../../fuzz/regressions/parquet/oom-d232b51bc56d50634c9e75c9c5078bf6e4e0200f"
        ),
    )
    .unwrap();
    let items: Vec<_> = open_span(&span(&path)).unwrap().collect();
    assert!(!items.is_empty());
    let mut dictionary = false;
    for item in &items {
        let bad = item.as_ref().unwrap_err();
        assert_eq!(bad.reason, reason::CORRUPT_ROW_GROUP, "{}", bad.detail);
        dictionary |= bad.detail.contains("dictionary page");
    }
    assert!(dictionary, "{items:?}");
}
