//! TensorBoard event files: what each training cycle measured, in the format TensorBoard 2.x
//! reads. One file per writer, `events.out.tfevents.<secs>.<host>.<pid>.<n>.evergreen` in the run
//! directory: TFRecord framing (length, masked CRC-32C) of `tensorflow.Event` protos, the first
//! with `file_version: "brain.Event:2"`, then one event per scalar (`simple_value`) or text
//! summary (a string tensor with the `text` plugin's metadata). Written and flushed per cycle,
//! so TensorBoard follows a running loop; a record cut short by a crash is skipped by its reader.
//! The layout of the messages is documented in `docs/formats.md`.

use evergreen_data::tfrecord::TfRecordWriter;
use evergreen_model::Model;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// `tensorflow.Event` (the fields evergreen writes; `summary` and `file_version` are members of
/// the message's `what` oneof: one or the other is set).
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` (`simple_value` and `tensor` are members of its `value` oneof).
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
    #[prost(message, optional, tag = "5")]
    histo: Option<HistogramProto>,
    #[prost(message, optional, tag = "8")]
    tensor: Option<Tensor>,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
}

/// `tensorflow.HistogramProto`: bucket `i` counts the values in
/// `[bucket_limit[i - 1], bucket_limit[i])` (the first from -infinity).
#[derive(Clone, PartialEq, prost::Message)]
struct HistogramProto {
    #[prost(double, tag = "1")]
    min: f64,
    #[prost(double, tag = "2")]
    max: f64,
    #[prost(double, tag = "3")]
    num: f64,
    #[prost(double, tag = "4")]
    sum: f64,
    #[prost(double, tag = "5")]
    sum_squares: f64,
    #[prost(double, repeated, tag = "6")]
    bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    bucket: Vec<f64>,
}

/// TensorFlow's default histogram bucket limits (`histogram.cc`): ±1e-12 growing by 10% up to
/// ±1e20, then ±f64::MAX, and 0.
fn default_limits() -> &'static [f64] {
    static LIMITS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut pos = Vec::new();
        let mut v = 1.0e-12;
        while v < 1.0e20 {
            pos.push(v);
            v *= 1.1;
        }
        pos.push(f64::MAX);
        let mut all: Vec<f64> = pos.iter().rev().map(|v| -v).collect();
        all.push(0.0);
        all.extend(pos);
        all
    })
}

/// The histogram of `values` as TensorFlow encodes it: default buckets, runs of empty buckets
/// merged into one. Non-finite values are left out.
fn histogram_of(values: &[f32]) -> HistogramProto {
    let limits = default_limits();
    let mut counts = vec![0.0f64; limits.len()];
    let mut h = HistogramProto {
        min: f64::MAX,
        max: -f64::MAX,
        ..HistogramProto::default()
    };
    for v in values
        .iter()
        .map(|&v| f64::from(v))
        .filter(|v| v.is_finite())
    {
        h.min = h.min.min(v);
        h.max = h.max.max(v);
        h.num += 1.0;
        h.sum += v;
        h.sum_squares += v * v;
        // The bucket whose upper limit is the first one above `v`.
        counts[limits.partition_point(|&l| l <= v)] += 1.0;
    }
    let mut i = 0;
    while i < counts.len() {
        let (mut end, mut count) = (limits[i], counts[i]);
        i += 1;
        if count <= 0.0 {
            while i < counts.len() && counts[i] <= 0.0 {
                (end, count) = (limits[i], counts[i]);
                i += 1;
            }
        }
        h.bucket_limit.push(end);
        h.bucket.push(count);
    }
    if h.num == 0.0 {
        (h.min, h.max) = (0.0, 0.0);
    }
    h
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    content: Vec<u8>,
}

/// `tensorflow.TensorProto`: a scalar string.
#[derive(Clone, PartialEq, prost::Message)]
struct Tensor {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` of a scalar (no dimensions).
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShape {}

/// `tensorflow.DataType.DT_STRING`.
const DT_STRING: i32 = 7;

/// Writes one TensorBoard event file.
pub struct EventWriter {
    out: TfRecordWriter<BufWriter<File>>,
    path: PathBuf,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter")
            .field("path", &self.path)
            .finish()
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, as TensorFlow puts it in event file names (letters, digits, `-`, `.`).
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

impl EventWriter {
    /// Creates a new event file in `dir` (created if missing) and writes its version record.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let wall = now_secs();
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "events.out.tfevents.{}.{}.{}.{}.evergreen",
            wall as u64,
            host(),
            std::process::id(),
            WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let mut w = Self {
            out: TfRecordWriter::new(BufWriter::new(file)),
            path,
        };
        w.write(&Event {
            wall_time: wall,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, e: &Event) -> std::io::Result<()> {
        self.out.write_record(&prost::Message::encode_to_vec(e))
    }

    fn summary(&mut self, step: i64, value: SummaryValue) -> std::io::Result<()> {
        self.write(&Event {
            wall_time: now_secs(),
            step,
            file_version: None,
            summary: Some(Summary { value: vec![value] }),
        })
    }

    /// A scalar (TensorBoard's Scalars tab); non-finite values are written as they are.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> std::io::Result<()> {
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                simple_value: Some(value as f32),
                histo: None,
                tensor: None,
                metadata: None,
            },
        )
    }

    /// A text summary (TensorBoard's Text tab, Markdown).
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> std::io::Result<()> {
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                simple_value: None,
                histo: None,
                tensor: Some(Tensor {
                    dtype: DT_STRING,
                    tensor_shape: Some(TensorShape {}),
                    string_val: vec![text.as_bytes().to_vec()],
                }),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                        content: Vec::new(),
                    }),
                }),
            },
        )
    }

    /// A histogram of `values` (TensorBoard's Histograms and Distributions tabs), in
    /// TensorFlow's default buckets; non-finite values are left out.
    pub fn histogram(&mut self, tag: &str, step: i64, values: &[f32]) -> std::io::Result<()> {
        self.summary(
            step,
            SummaryValue {
                tag: tag.into(),
                simple_value: None,
                histo: Some(histogram_of(values)),
                tensor: None,
                metadata: None,
            },
        )
    }

    /// Pushes what was written to the file (TensorBoard reads it from there).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.get_mut().flush()
    }
}

/// Writes the numbers of one cycle's report at `step`: the model before the cycle on the whole
/// window (`progressive/*`), the candidate's online predictions (`online/*`), the candidate and
/// the serving model on the held-out slice (`evaluation/*`, `baseline/*`), the counts, the
/// throughput and the gate's decision (scalar `gate/passed` and its text).
///
/// Also the per-step training loss (`train/loss`, step: the model's examples seen; the points
/// of a rejected candidate are overwritten by those of the next cycle, which restarts from the
/// same model), the model's learning rate and its histograms ([`Model::inspect`]: weights,
/// the last mini-batch's gradients, embedding norms) at the cycle's step.
pub fn write_cycle(
    w: &mut EventWriter,
    step: i64,
    r: &crate::CycleReport,
    losses: &[(u64, f64)],
    model: &dyn Model,
) -> std::io::Result<()> {
    for &(seen, loss) in losses {
        w.scalar("train/loss", i64::try_from(seen).unwrap_or(i64::MAX), loss)?;
    }
    if let Some(lr) = model.learning_rate() {
        w.scalar("train/learning_rate", step, lr)?;
    }
    let mut failed = None;
    model.inspect(&mut |tag, values| {
        if failed.is_none()
            && let Err(e) = w.histogram(tag, step, values)
        {
            failed = Some(e);
        }
    });
    model.gauges(&mut |name, value| {
        if failed.is_none()
            && let Err(e) = w.scalar(&format!("model/{name}"), step, value)
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    for (prefix, s) in [
        ("progressive", &r.progressive),
        ("online", &r.online),
        ("evaluation", &r.evaluation),
        ("baseline", &r.baseline),
    ] {
        if let Some(s) = s {
            w.scalar(&format!("{prefix}/logloss"), step, s.logloss)?;
            w.scalar(&format!("{prefix}/auc"), step, s.auc)?;
            w.scalar(&format!("{prefix}/accuracy"), step, s.accuracy)?;
            w.scalar(&format!("{prefix}/calibration"), step, s.calibration)?;
        }
    }
    w.scalar("data/records", step, r.records as f64)?;
    w.scalar("data/quarantined", step, r.bad.values().sum::<u64>() as f64)?;
    w.scalar("train/examples", step, r.trained as f64)?;
    w.scalar("train/replayed", step, r.replayed as f64)?;
    if r.seconds > 0.0 {
        w.scalar(
            "train/examples_per_second",
            step,
            r.trained as f64 / r.seconds,
        )?;
    }
    w.scalar("cycle/seconds", step, r.seconds)?;
    for s in &r.stages {
        w.scalar(&format!("stage/{}_seconds", s.stage), step, s.seconds)?;
    }
    if let Some(u) = r.utilization() {
        w.scalar("train/utilization", step, u)?;
    }
    for (stage, seconds) in [
        ("decode", r.read_cpu.decode_seconds),
        ("transform", r.read_cpu.transform_seconds),
        ("decode_transform", r.read_cpu.decode_transform_seconds),
    ] {
        w.scalar(&format!("pipeline/{stage}_cpu_seconds"), step, seconds)?;
    }
    if let Some(d) = &r.drift {
        w.scalar(
            "drift/loss_change",
            step,
            if d.loss_change { 1.0 } else { 0.0 },
        )?;
        w.scalar("drift/loss_level", step, d.loss_level)?;
        for (feature, psi) in &d.psi {
            w.scalar(&format!("drift/psi/{feature}"), step, *psi)?;
        }
    }
    if let Some(g) = &r.gate {
        w.scalar("gate/passed", step, if g.passed { 1.0 } else { 0.0 })?;
        w.text("gate/decision", step, &g.summary())?;
    }
    if let Some(v) = r.version {
        w.scalar("registry/published_version", step, v as f64)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back every record of an event file (framing checked by our TFRecord reader).
    fn events(path: &Path) -> Vec<Event> {
        let mut r = evergreen_data::tfrecord::TfRecordReader::new(std::io::BufReader::new(
            File::open(path).unwrap(),
        ));
        let mut out = Vec::new();
        while let Some(rec) = r.next_record() {
            out.push(<Event as prost::Message>::decode(rec.unwrap()).unwrap());
        }
        out
    }

    #[test]
    fn version_record_then_scalars_and_text() {
        let d = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(&d.path().join("run")).unwrap();
        w.scalar("progressive/logloss", 3, 0.25).unwrap();
        w.text("gate/decision", 3, "PASS").unwrap();
        w.flush().unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let e = events(w.path());
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].file_version.as_deref(), Some("brain.Event:2"));
        let v = &e[1].summary.as_ref().unwrap().value[0];
        assert_eq!(
            (e[1].step, v.tag.as_str(), v.simple_value),
            (3, "progressive/logloss", Some(0.25))
        );
        let t = &e[2].summary.as_ref().unwrap().value[0];
        assert_eq!(
            t.tensor.as_ref().unwrap().string_val,
            vec![b"PASS".to_vec()]
        );
        assert_eq!(
            t.metadata
                .as_ref()
                .unwrap()
                .plugin_data
                .as_ref()
                .unwrap()
                .plugin_name,
            "text"
        );
        // A second writer in the same directory, the same second, gets its own file.
        let w2 = EventWriter::create(&d.path().join("run")).unwrap();
        assert_ne!(w2.path(), w.path());
    }

    #[test]
    fn histograms_use_tensorflows_buckets_and_merge_empty_runs() {
        let limits = default_limits();
        // 774 limits 1e-12 · 1.1^k below 1e20, then f64::MAX, on each side of 0.
        assert_eq!(limits.len(), 2 * 775 + 1);
        assert_eq!(limits[775], 0.0);
        assert_eq!(limits[776], 1e-12);
        assert!(limits[775 + 774] < 1e20 && limits[775 + 774] * 1.1 >= 1e20);
        assert_eq!((limits[0], limits[limits.len() - 1]), (-f64::MAX, f64::MAX));
        assert!(limits.windows(2).all(|w| w[0] < w[1]));
        let h = histogram_of(&[0.0, 1.0, -1.0, 2.5, 1.0, f32::NAN, f32::INFINITY]);
        assert_eq!((h.num, h.min, h.max), (5.0, -1.0, 2.5));
        assert_eq!((h.sum, h.sum_squares), (3.5, 9.25));
        assert_eq!(h.bucket.iter().sum::<f64>(), 5.0);
        assert_eq!(h.bucket.len(), h.bucket_limit.len());
        // Four occupied buckets (-1, 0, 1 twice, 2.5), each between merged empty runs.
        assert_eq!(h.bucket.iter().filter(|&&c| c > 0.0).count(), 4);
        assert!(h.bucket.windows(2).all(|w| w[0] > 0.0 || w[1] > 0.0));
        assert_eq!(*h.bucket_limit.last().unwrap(), f64::MAX);
        // A value lands in the bucket whose upper limit is the first above it.
        let at = |v: f64| h.bucket_limit.iter().position(|&l| l > v).unwrap();
        assert_eq!(h.bucket[at(1.0)], 2.0);
        assert_eq!(h.bucket[at(0.0)], 1.0);
        let empty = histogram_of(&[]);
        assert_eq!((empty.num, empty.min, empty.max), (0.0, 0.0, 0.0));
        assert_eq!(empty.bucket, vec![0.0]);
    }
}
