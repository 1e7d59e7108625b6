//! The parallel input pipeline: shards read in parallel, records decoded on the reader threads,
//! feature transform on a worker pool, batches assembled in order-stable or order-free mode,
//! bounded channels end to end.
//!
//! ```text
//!  shards ─▶ cycle_length reader threads ─▶ sequencer ─▶ [bounded] ─▶ workers (transform)
//!            (framing + decode, chunks)    (round robin)              │
//!                                                                     ▼ [bounded]
//!                                         consumer: reorder (ordered mode) ─▶ batches
//! ```
//!
//! Reader `i` owns shards `i, i + cycle_length, ...` in turn, and the sequencer takes one chunk
//! from each busy reader in turn, so the order of chunks (and with `ordered`, of examples) is a
//! function of the inputs alone, like tf.data's deterministic `interleave`. Every channel is
//! bounded, so memory is bounded by `(cycle_length * 2 + queue + workers + queue) * chunk`
//! records whatever the size of the input; a slow consumer stops the readers (backpressure).
//! Dropping the [`Pipeline`] stops every thread.
//!
//! In ordered mode the pipeline can also stop and resume exactly: after
//! [`Pipeline::next_buffered`] has drained what was already taken in, [`Pipeline::resume_point`]
//! says how far each shard has been delivered (always a whole number of chunks, or the shard's
//! end) and whose turn comes next, and [`Pipeline::start_at`] continues from there with the same
//! chunks in the same order as an uninterrupted run.

use crate::{BadRecord, DataError, SpanFile};
use crossbeam_channel::{Receiver, Sender, bounded};
use evergreen_core::{FeatureVector, TransformError, Transformer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// Pipeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Shards read at the same time (tf.data's `cycle_length`).
    pub cycle_length: usize,
    /// Transform worker threads; 0 transforms on the reader threads instead (best when there
    /// are no more cores than readers).
    pub workers: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// Records per chunk handed between threads.
    pub chunk: usize,
    /// Chunks buffered between stages (prefetch depth).
    pub queue: usize,
    /// Deliver examples in a deterministic order (else as soon as they are ready).
    pub ordered: bool,
    /// How each shard is read (TFRecord CRC checks).
    pub read: crate::ReadOptions,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        // One reader per core (at most 8), each decoding and transforming its own chunks; cores
        // beyond 8 transform. Measured on 2 cores (BENCHMARKS.md): 2 readers transforming
        // inline beat 2 readers + 1 or 2 transform threads, which beat 1 + 1; more threads
        // than cores is slower.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cycle_length = cores.clamp(1, 8);
        Self {
            cycle_length,
            workers: cores.saturating_sub(cycle_length).min(16),
            batch_size: 128,
            chunk: 1024,
            queue: 8,
            ordered: true,
            read: crate::ReadOptions::default(),
        }
    }
}

/// One transformed example and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Index of its shard in the input list.
    pub shard: usize,
    /// Its record (line) number in the shard, 1-based.
    pub position: u64,
    /// Hashed features.
    pub features: FeatureVector,
    /// Label (0 or 1).
    pub label: f32,
}

/// A record set aside, with why.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// The reader could not parse it.
    Parse(BadRecord),
    /// It parsed but could not be transformed.
    Transform {
        /// Index of its shard.
        shard: usize,
        /// Record number.
        position: u64,
        /// Why.
        error: TransformError,
        /// Original text (empty for binary formats).
        raw: String,
    },
}

/// What the pipeline delivers.
#[derive(Debug)]
pub enum Item {
    /// A batch of examples (the last one of the input may be short).
    Batch(Vec<Example>),
    /// A record set aside; see [`Rejected`].
    Rejected(Rejected),
    /// A shard was read to its end: `records` good or bad records, `bytes` its size.
    ShardDone {
        /// Index of the shard.
        shard: usize,
        /// Records (good and bad) it held.
        records: u64,
    },
    /// A shard could not be opened or read (IO error); its remaining records are missing, so
    /// the caller must treat the input as failed and retry it.
    Failed {
        /// Index of the shard.
        shard: usize,
        /// The error.
        error: String,
        /// Whether the error is about the content (an unusable CSV header, a file that is not
        /// Parquet) rather than IO.
        bad_input: bool,
    },
}

/// Where a pipeline stopped delivering, to resume from (see [`Pipeline::resume_point`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumePoint {
    /// Records (good and bad) delivered per shard, in input order.
    pub records: Vec<u64>,
    /// Shards whose end (or failure) has been delivered: not opened again.
    pub finished: Vec<bool>,
    /// Reader thread whose chunk comes next in the round robin.
    pub next_reader: usize,
}

/// Hands feature vectors the consumer is done with back to the readers, which fill them again
/// instead of allocating (see [`Pipeline::recycler`]): in steady state the examples of a
/// stream live in the same memory, and no allocation crosses threads. Cheap to clone; a
/// recycler whose pipeline has ended drops what it is given.
#[derive(Debug, Clone)]
pub struct Recycler {
    tx: Sender<Vec<FeatureVector>>,
}

impl Recycler {
    /// Hands `vectors` back (dropped when the readers have enough waiting already).
    pub fn recycle(&self, vectors: Vec<FeatureVector>) {
        if !vectors.is_empty() {
            let _ = self.tx.try_send(vectors);
        }
    }
}

/// Batches of returned vectors waiting for the readers.
const RECYCLED_BATCHES: usize = 16;

/// A reader thread's supply of feature vectors: recycled ones first, else new.
pub(crate) struct FeaturePool {
    rx: Option<Receiver<Vec<FeatureVector>>>,
    stash: Vec<FeatureVector>,
}

impl FeaturePool {
    /// A pool that only allocates.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Self {
            rx: None,
            stash: Vec::new(),
        }
    }

    /// An empty feature vector, reusing a recycled one's allocations when there is one.
    pub(crate) fn take(&mut self) -> FeatureVector {
        if self.stash.is_empty()
            && let Some(batch) = self.rx.as_ref().and_then(|rx| rx.try_recv().ok())
        {
            self.stash = batch;
        }
        match self.stash.pop() {
            Some(mut v) => {
                v.clear();
                v
            }
            None => FeatureVector::default(),
        }
    }

    /// Takes back a vector that was not handed out after all.
    pub(crate) fn give_back(&mut self, v: FeatureVector) {
        self.stash.push(v);
    }
}

enum Chunk {
    Records {
        shard: usize,
        records: Vec<Result<crate::SourceRecord, BadRecord>>,
    },
    /// Already transformed on the reader thread (CSV always, other formats with
    /// `workers == 0`; example files need no transform): `records` records read.
    Transformed {
        shard: usize,
        records: u64,
        good: Vec<Example>,
        bad: Vec<Rejected>,
    },
    Done {
        shard: usize,
        records: u64,
    },
    Failed {
        shard: usize,
        error: String,
        bad_input: bool,
    },
}

enum Output {
    Examples {
        shard: usize,
        records: u64,
        good: Vec<Example>,
        bad: Vec<Rejected>,
    },
    Done {
        shard: usize,
        records: u64,
    },
    Failed {
        shard: usize,
        error: String,
        bad_input: bool,
    },
}

/// A running pipeline; iterate it for [`Item`]s.
pub struct Pipeline {
    out: Receiver<(u64, Output)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ordered: bool,
    next_seq: u64,
    pending: BTreeMap<u64, Output>,
    batch: Vec<Example>,
    batch_size: usize,
    ready: std::collections::VecDeque<Item>,
    finished: bool,
    /// Bytes read from the shard files so far (compressed bytes for gzip).
    bytes_read: Arc<AtomicU64>,
    /// CPU time per stage.
    cpu: Arc<StageCpu>,
    /// Reader threads.
    cycle: usize,
    /// How far each shard has been taken in (see [`ResumePoint`]).
    consumed: ResumePoint,
    /// See [`Pipeline::recycler`].
    recycle: Recycler,
}

/// Transforms one chunk of records.
fn transform_records(
    shard: usize,
    records: Vec<Result<crate::SourceRecord, BadRecord>>,
    t: &Transformer,
) -> (Vec<Example>, Vec<Rejected>) {
    let mut good = Vec::with_capacity(records.len());
    let mut bad = Vec::new();
    for r in records {
        match r {
            Ok(rec) => match t.example(&rec.record) {
                Ok((features, label)) => good.push(Example {
                    shard,
                    position: rec.line,
                    features,
                    label,
                }),
                Err(error) => bad.push(Rejected::Transform {
                    shard,
                    position: rec.line,
                    error,
                    raw: rec.raw,
                }),
            },
            Err(b) => bad.push(Rejected::Parse(b)),
        }
    }
    (good, bad)
}

/// Reads an example-file shard straight into examples (no parsing, no transform), after its
/// first `skip` records; false when the pipeline is gone.
#[allow(clippy::too_many_arguments)]
fn read_examples_shard(
    file: &SpanFile,
    shard: usize,
    chunk: usize,
    read: crate::ReadOptions,
    tx: &Sender<Chunk>,
    bytes: &Arc<AtomicU64>,
    expected: crate::examples::ExamplesHeader,
    skip: u64,
    pool: &mut FeaturePool,
) -> bool {
    use crate::examples::{ExamplesShard, ShardStep};
    let opened = crate::reader::InputFile::open(&file.path, Some(bytes.clone()))
        .map_err(|e| (format!("cannot open {}: {e}", file.path.display()), false))
        .and_then(|f| {
            ExamplesShard::open(f, &file.path, &file.name, shard, read.verify_crc, expected)
        });
    let mut reader = match opened {
        Ok(r) => r,
        Err((error, bad_input)) => {
            return tx
                .send(Chunk::Failed {
                    shard,
                    error,
                    bad_input,
                })
                .is_ok();
        }
    };
    if let Err(error) = reader.skip(skip) {
        return tx
            .send(Chunk::Failed {
                shard,
                error,
                bad_input: false,
            })
            .is_ok();
    }
    loop {
        let msg = match reader.step(chunk.max(1), pool) {
            ShardStep::Chunk(good, bad) => Chunk::Transformed {
                shard,
                records: (good.len() + bad.len()) as u64,
                good,
                bad,
            },
            ShardStep::Done(records) => {
                return tx.send(Chunk::Done { shard, records }).is_ok();
            }
            ShardStep::Failed { error, bad_input } => {
                return tx
                    .send(Chunk::Failed {
                        shard,
                        error,
                        bad_input,
                    })
                    .is_ok();
            }
        };
        if tx.send(msg).is_err() {
            return false;
        }
    }
}

/// CPU time the pipeline's threads spent per stage, in nanoseconds summed over threads (time
/// blocked handing chunks on is not counted).
#[derive(Debug, Default)]
struct StageCpu {
    /// Reading, framing and parsing records that a transform thread then transforms.
    decode: AtomicU64,
    /// Transforming records into feature vectors on a transform thread.
    transform: AtomicU64,
    /// Both at once on a reader thread: CSV cells go straight into features, and every format
    /// when there are no transform threads.
    fused: AtomicU64,
}

/// Seconds of CPU time per pipeline stage (see [`Pipeline::stage_cpu`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageCpuSeconds {
    /// Reading and decoding records handed to transform threads.
    pub decode: f64,
    /// Transforming them there.
    pub transform: f64,
    /// Reading, decoding and transforming in one pass on a reader thread.
    pub decode_transform: f64,
}

impl StageCpuSeconds {
    /// `self - earlier`, per stage.
    pub fn since(&self, earlier: &StageCpuSeconds) -> StageCpuSeconds {
        StageCpuSeconds {
            decode: self.decode - earlier.decode,
            transform: self.transform - earlier.transform,
            decode_transform: self.decode_transform - earlier.decode_transform,
        }
    }
}

/// Adds the time since `*t` to `into` and restarts `*t`.
fn account(t: &mut Instant, into: &AtomicU64) {
    let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
    into.fetch_add(ns, Ordering::Relaxed);
    *t = Instant::now();
}

/// Reads the rest of a shard (after `count` records) transformed on this thread, in chunks of
/// examples and rejects, then its end or failure; false when the pipeline is gone.
#[allow(clippy::too_many_arguments)]
fn read_transformed(
    reader: &mut crate::SpanReader,
    shard: usize,
    chunk: usize,
    t: &Transformer,
    layout: Option<&evergreen_core::Layout>,
    tx: &Sender<Chunk>,
    mut count: u64,
    pool: &mut FeaturePool,
    cpu: &StageCpu,
) -> bool {
    use crate::reader::Transformed;
    let mut lap = Instant::now();
    let mut good = Vec::with_capacity(chunk);
    let mut bad = Vec::new();
    let mut records = 0u64;
    let flush = |good: &mut Vec<Example>, bad: &mut Vec<Rejected>, records: &mut u64| {
        let msg = Chunk::Transformed {
            shard,
            records: std::mem::take(records),
            good: std::mem::replace(good, Vec::with_capacity(chunk)),
            bad: std::mem::take(bad),
        };
        tx.send(msg).is_ok()
    };
    while let Some(item) = reader.next_transformed(t, layout, pool) {
        match item {
            Transformed::Bad(b) if b.reason == crate::reason::IO_ERROR => {
                if records > 0 && !flush(&mut good, &mut bad, &mut records) {
                    return false;
                }
                let _ = tx.send(Chunk::Failed {
                    shard,
                    error: b.detail,
                    bad_input: false,
                });
                return true;
            }
            Transformed::Example {
                line,
                features,
                label,
            } => good.push(Example {
                shard,
                position: line,
                features,
                label,
            }),
            Transformed::Refused { line, error, raw } => bad.push(Rejected::Transform {
                shard,
                position: line,
                error,
                raw,
            }),
            Transformed::Bad(b) => bad.push(Rejected::Parse(b)),
        }
        count += 1;
        records += 1;
        if records as usize == chunk {
            account(&mut lap, &cpu.fused);
            if !flush(&mut good, &mut bad, &mut records) {
                return false;
            }
            lap = Instant::now();
        }
    }
    account(&mut lap, &cpu.fused);
    if records > 0 && !flush(&mut good, &mut bad, &mut records) {
        return false;
    }
    tx.send(Chunk::Done {
        shard,
        records: count,
    })
    .is_ok()
}

#[allow(clippy::too_many_arguments)]
fn reader_thread(
    shards: Arc<Vec<SpanFile>>,
    mine: Vec<usize>,
    chunk: usize,
    read: crate::ReadOptions,
    transformer: Arc<Transformer>,
    inline: bool,
    tx: Sender<Chunk>,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    examples: crate::examples::ExamplesHeader,
    resume: Arc<ResumePoint>,
    mut pool: FeaturePool,
    cpu: Arc<StageCpu>,
) {
    for shard in mine {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if resume.finished.get(shard).copied().unwrap_or(false) {
            continue;
        }
        let skip = resume.records.get(shard).copied().unwrap_or(0);
        if shards[shard].format == crate::Format::Examples {
            if !read_examples_shard(
                &shards[shard],
                shard,
                chunk,
                read,
                &tx,
                &bytes,
                examples,
                skip,
                &mut pool,
            ) {
                return;
            }
            continue;
        }
        let reader =
            match crate::reader::open_span_counted(&shards[shard], read, Some(bytes.clone())) {
                Ok(r) => r,
                Err(e) => {
                    let bad_input = matches!(
                        e,
                        DataError::Header { .. }
                            | DataError::DuplicateColumn { .. }
                            | DataError::Parquet { .. }
                    );
                    let _ = tx.send(Chunk::Failed {
                        shard,
                        error: e.to_string(),
                        bad_input,
                    });
                    continue;
                }
            };
        let mut reader = reader;
        let mut count = 0u64;
        // Resuming: the records delivered before are read again (framing and decoding) but not
        // passed on, so record numbers and chunk boundaries stay those of an uninterrupted run.
        while count < skip {
            match reader.next() {
                None => break,
                Some(Err(bad)) if bad.reason == crate::reason::IO_ERROR => {
                    let _ = tx.send(Chunk::Failed {
                        shard,
                        error: bad.detail.clone(),
                        bad_input: false,
                    });
                    count = u64::MAX;
                    break;
                }
                Some(_) => count += 1,
            }
        }
        if count == u64::MAX {
            continue;
        }
        // CSV rows go from their cells straight to features here, always: that is cheaper than
        // building records for a transform thread. Other formats when `inline`.
        let layout = reader.columns().map(|c| transformer.layout(c));
        if layout.is_some() || inline {
            if !read_transformed(
                &mut reader,
                shard,
                chunk,
                &transformer,
                layout.as_ref(),
                &tx,
                count,
                &mut pool,
                &cpu,
            ) {
                return;
            }
            continue;
        }
        let mut buf = Vec::with_capacity(chunk);
        let mut lap = Instant::now();
        for item in reader {
            if let Err(bad) = &item
                && bad.reason == crate::reason::IO_ERROR
            {
                if !buf.is_empty()
                    && tx
                        .send(Chunk::Records {
                            shard,
                            records: std::mem::take(&mut buf),
                        })
                        .is_err()
                {
                    return;
                }
                let _ = tx.send(Chunk::Failed {
                    shard,
                    error: bad.detail.clone(),
                    bad_input: false,
                });
                count = u64::MAX;
                break;
            }
            count += 1;
            buf.push(item);
            if buf.len() == chunk {
                account(&mut lap, &cpu.decode);
                let records = std::mem::replace(&mut buf, Vec::with_capacity(chunk));
                if tx.send(Chunk::Records { shard, records }).is_err() {
                    return;
                }
                lap = Instant::now();
            }
        }
        account(&mut lap, &cpu.decode);
        if count == u64::MAX {
            continue;
        }
        if !buf.is_empty()
            && tx
                .send(Chunk::Records {
                    shard,
                    records: buf,
                })
                .is_err()
        {
            return;
        }
        if tx
            .send(Chunk::Done {
                shard,
                records: count,
            })
            .is_err()
        {
            return;
        }
    }
}

impl Pipeline {
    /// Starts reading `shards` (in this order) through `transformer`.
    pub fn start(
        shards: Vec<SpanFile>,
        transformer: Arc<Transformer>,
        opts: PipelineOptions,
    ) -> Self {
        Self::start_at(shards, transformer, opts, ResumePoint::default())
    }

    /// Starts reading `shards` from `resume` (a [`Pipeline::resume_point`] of an earlier
    /// pipeline over the same shards with the same options): what was delivered before is
    /// skipped, and in ordered mode the rest comes in the order an uninterrupted run gives.
    pub fn start_at(
        shards: Vec<SpanFile>,
        transformer: Arc<Transformer>,
        opts: PipelineOptions,
        resume: ResumePoint,
    ) -> Self {
        let mut consumed = resume;
        consumed.records.resize(shards.len(), 0);
        consumed.finished.resize(shards.len(), false);
        let resume = Arc::new(consumed.clone());
        let cycle = opts.cycle_length.max(1).min(shards.len().max(1));
        // workers == 0: the reader threads transform, and one thread passes chunks on; but with
        // fewer shards than `cycle_length` the cores left idle transform instead.
        let inline = opts.workers == 0 && cycle == opts.cycle_length.max(1);
        let workers = if opts.workers == 0 && !inline {
            opts.cycle_length.max(1) - cycle
        } else {
            opts.workers.max(1)
        };
        let chunk = opts.chunk.max(1);
        let queue = opts.queue.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let bytes_read = Arc::new(AtomicU64::new(0));
        let cpu = Arc::new(StageCpu::default());
        let spec = transformer.spec();
        let examples = crate::examples::ExamplesHeader {
            spec_fingerprint: spec.fingerprint(),
            hash_bits: spec.index_bits(),
            fields: u16::try_from(spec.field_count()).unwrap_or(u16::MAX),
        };
        let shards = Arc::new(shards);
        let mut threads = Vec::new();

        let (recycle_tx, recycle_rx) = bounded::<Vec<FeatureVector>>(RECYCLED_BATCHES);
        // Readers, each with its own small channel so the sequencer can take turns.
        let mut reader_rx = Vec::new();
        for i in 0..cycle {
            let (tx, rx) = bounded::<Chunk>(2);
            let mine: Vec<usize> = (i..shards.len()).step_by(cycle).collect();
            let transformer = transformer.clone();
            let (shards, stop, bytes) = (shards.clone(), stop.clone(), bytes_read.clone());
            let (resume, cpu) = (resume.clone(), cpu.clone());
            let pool = FeaturePool {
                rx: Some(recycle_rx.clone()),
                stash: Vec::new(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("evergreen-read-{i}"))
                    .spawn(move || {
                        reader_thread(
                            shards,
                            mine,
                            chunk,
                            opts.read,
                            transformer,
                            inline,
                            tx,
                            stop,
                            bytes,
                            examples,
                            resume,
                            pool,
                            cpu,
                        )
                    })
                    .expect("spawn reader thread"),
            );
            reader_rx.push(rx);
        }

        // Sequencer: round robin over busy readers, numbering chunks.
        let (work_tx, work_rx) = bounded::<(u64, Chunk)>(queue);
        {
            let stop = stop.clone();
            let first = consumed.next_reader % cycle;
            threads.push(
                std::thread::Builder::new()
                    .name("evergreen-sequence".into())
                    .spawn(move || {
                        let mut live: Vec<Receiver<Chunk>> = reader_rx;
                        let mut seq = 0u64;
                        let mut i = first;
                        while !live.is_empty() {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let idx = i % live.len();
                            match live[idx].recv() {
                                Ok(c) => {
                                    if work_tx.send((seq, c)).is_err() {
                                        return;
                                    }
                                    seq += 1;
                                    i = idx + 1;
                                }
                                Err(_) => {
                                    live.remove(idx);
                                    i = idx;
                                }
                            }
                        }
                    })
                    .expect("spawn sequencer thread"),
            );
        }

        // Workers: transform.
        let (out_tx, out_rx) = bounded::<(u64, Output)>(queue);
        for w in 0..workers {
            let (rx, tx, t, stop, cpu) = (
                work_rx.clone(),
                out_tx.clone(),
                transformer.clone(),
                stop.clone(),
                cpu.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("evergreen-transform-{w}"))
                    .spawn(move || {
                        while let Ok((seq, c)) = rx.recv() {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let out = match c {
                                Chunk::Records { shard, records } => {
                                    let n = records.len() as u64;
                                    let mut lap = Instant::now();
                                    let (good, bad) = transform_records(shard, records, &t);
                                    account(&mut lap, &cpu.transform);
                                    Output::Examples {
                                        shard,
                                        records: n,
                                        good,
                                        bad,
                                    }
                                }
                                Chunk::Transformed {
                                    shard,
                                    records,
                                    good,
                                    bad,
                                } => Output::Examples {
                                    shard,
                                    records,
                                    good,
                                    bad,
                                },
                                Chunk::Done { shard, records } => Output::Done { shard, records },
                                Chunk::Failed {
                                    shard,
                                    error,
                                    bad_input,
                                } => Output::Failed {
                                    shard,
                                    error,
                                    bad_input,
                                },
                            };
                            if tx.send((seq, out)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn transform thread"),
            );
        }
        drop(out_tx);
        Self {
            out: out_rx,
            stop,
            threads,
            ordered: opts.ordered,
            next_seq: 0,
            pending: BTreeMap::new(),
            batch: Vec::with_capacity(opts.batch_size.max(1)),
            batch_size: opts.batch_size.max(1),
            ready: Default::default(),
            finished: false,
            bytes_read,
            cpu,
            cycle,
            consumed,
            recycle: Recycler { tx: recycle_tx },
        }
    }

    /// Where the consumer hands back the feature vectors of examples it is done with, for the
    /// readers to fill again (optional: without it every example is a new allocation).
    pub fn recycler(&self) -> Recycler {
        self.recycle.clone()
    }

    /// The next item already taken in (a rejected record, a batch, or the examples waiting for
    /// a full batch, delivered as a short batch), without reading further; `None` when nothing
    /// is buffered. Once it returns `None`, [`Pipeline::resume_point`] matches exactly what
    /// was delivered.
    pub fn next_buffered(&mut self) -> Option<Item> {
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        if self.batch.is_empty() {
            return None;
        }
        Some(Item::Batch(std::mem::replace(
            &mut self.batch,
            Vec::with_capacity(self.batch_size),
        )))
    }

    /// How far each shard has been taken in, and whose turn comes next. It is where the items
    /// delivered so far end once [`Pipeline::next_buffered`] has returned `None`. In ordered
    /// mode every shard's count is a prefix of it; order-free mode gives no such guarantee.
    pub fn resume_point(&self) -> ResumePoint {
        self.consumed.clone()
    }

    /// CPU time the pipeline's threads have spent so far per stage (summed over threads).
    pub fn stage_cpu(&self) -> StageCpuSeconds {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
        StageCpuSeconds {
            decode: s(&self.cpu.decode),
            transform: s(&self.cpu.transform),
            decode_transform: s(&self.cpu.fused),
        }
    }

    /// Bytes read from the shard files so far (compressed bytes for gzip; with read-ahead, a bit
    /// ahead of the examples delivered): for progress bars.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn absorb(&mut self, out: Output) {
        let shard = match &out {
            Output::Examples { shard, .. }
            | Output::Done { shard, .. }
            | Output::Failed { shard, .. } => *shard,
        };
        self.consumed.next_reader = (shard % self.cycle + 1) % self.cycle;
        match out {
            Output::Examples {
                shard,
                records,
                good,
                bad,
            } => {
                self.consumed.records[shard] += records;
                for r in bad {
                    self.ready.push_back(Item::Rejected(r));
                }
                for e in good {
                    self.batch.push(e);
                    if self.batch.len() == self.batch_size {
                        let full =
                            std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
                        self.ready.push_back(Item::Batch(full));
                    }
                }
            }
            Output::Done { shard, records } => {
                self.consumed.finished[shard] = true;
                self.ready.push_back(Item::ShardDone { shard, records })
            }
            Output::Failed {
                shard,
                error,
                bad_input,
            } => {
                self.consumed.finished[shard] = true;
                self.ready.push_back(Item::Failed {
                    shard,
                    error,
                    bad_input,
                })
            }
        }
    }
}

impl Iterator for Pipeline {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            if self.ordered
                && let Some(o) = self.pending.remove(&self.next_seq)
            {
                self.next_seq += 1;
                self.absorb(o);
                continue;
            }
            match self.out.recv() {
                Ok((seq, out)) => {
                    if self.ordered {
                        // Absorbed one chunk at a time, at the top of the loop, when `ready`
                        // is empty: what is buffered at any point is then a function of the
                        // input alone, so a cut after `next_buffered` is reproducible.
                        self.pending.insert(seq, out);
                    } else {
                        self.absorb(out);
                    }
                }
                Err(_) => {
                    // Every worker is done: flush what is left.
                    let rest = std::mem::take(&mut self.pending);
                    for (_, o) in rest {
                        self.absorb(o);
                    }
                    if !self.batch.is_empty() {
                        let last = std::mem::take(&mut self.batch);
                        self.ready.push_back(Item::Batch(last));
                    }
                    self.finished = true;
                }
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Threads blocked on a full channel wake when we drain the output (workers), or when
        // the stage after them exits and their send fails (sequencer, readers).
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() {
                let _ = self.out.recv_timeout(std::time::Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use evergreen_core::FeatureSpec;

    fn transformer() -> Arc<Transformer> {
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
            "hash_bits": 12, "label": {"column": "y"},
            "numeric": [{"name": "x"}], "categorical": [{"name": "c"}]
        }))
        .unwrap();
        Arc::new(Transformer::new(spec).unwrap())
    }

    fn shards(dir: &std::path::Path, n: usize, rows: usize) -> Vec<SpanFile> {
        (0..n)
            .map(|s| {
                let path = dir.join(format!("s{s}.csv"));
                let mut text = String::from("x,c,y\n");
                for r in 0..rows {
                    if r % 97 == 13 {
                        text.push_str("oops,a,1\n");
                    } else {
                        text.push_str(&format!("{}.5,c{},{}\n", s * 100_000 + r, r % 7, r % 2));
                    }
                }
                std::fs::write(&path, text).unwrap();
                SpanFile {
                    name: format!("s{s}.csv"),
                    size: std::fs::metadata(&path).unwrap().len(),
                    path,
                    format: Format::Csv,
                }
            })
            .collect()
    }

    fn collect(p: Pipeline) -> (Vec<(usize, u64)>, usize, Vec<usize>, usize) {
        let mut order = Vec::new();
        let (mut bad, mut done, mut batches) = (0, Vec::new(), 0);
        for item in p {
            match item {
                Item::Batch(b) => {
                    batches += 1;
                    order.extend(b.iter().map(|e| (e.shard, e.position)));
                }
                Item::Rejected(_) => bad += 1,
                Item::ShardDone { shard, .. } => done.push(shard),
                Item::Failed { error, .. } => panic!("{error}"),
            }
        }
        (order, bad, done, batches)
    }

    /// Every example (shard, position, features, label) a pipeline delivers; with `recycle`,
    /// each batch's feature vectors go back to the readers as soon as they are copied out.
    fn examples(p: Pipeline, recycle: bool) -> Vec<(usize, u64, FeatureVector, f32)> {
        let r = p.recycler();
        let mut out = Vec::new();
        for item in p {
            if let Item::Batch(b) = item {
                out.extend(
                    b.iter()
                        .map(|e| (e.shard, e.position, e.features.clone(), e.label)),
                );
                if recycle {
                    r.recycle(b.into_iter().map(|e| e.features).collect());
                }
            }
        }
        out
    }

    /// The CSV shards as JSON lines (read as records, transformed by the workers).
    fn as_jsonl(files: &[SpanFile]) -> Vec<SpanFile> {
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f.path).unwrap();
                let mut out = String::new();
                for line in text.lines().skip(1) {
                    let v: Vec<&str> = line.split(',').collect();
                    let x = v[0]
                        .parse::<f64>()
                        .map_or_else(|_| serde_json::json!(v[0]), |x| serde_json::json!(x));
                    let row =
                        serde_json::json!({"x": x, "c": v[1], "y": v[2].parse::<u8>().unwrap()});
                    out.push_str(&format!("{row}\n"));
                }
                let path = f.path.with_extension("jsonl");
                std::fs::write(&path, out).unwrap();
                SpanFile {
                    name: format!("{}.jsonl", f.name),
                    size: std::fs::metadata(&path).unwrap().len(),
                    path,
                    format: Format::Jsonl,
                }
            })
            .collect()
    }

    #[test]
    fn a_lone_reader_over_mixed_formats_delivers_in_order() {
        // One reader: CSV and example-file chunks transformed on it, JSON-lines chunks by the
        // transform workers (or on it, workers 0); the order is the shards' one after the
        // other, each as read alone.
        let dir = tempfile::tempdir().unwrap();
        let csv = shards(dir.path(), 4, 700);
        let jsonl = as_jsonl(&csv);
        let evgx = as_example_files(&csv);
        let files = vec![
            csv[0].clone(),
            jsonl[1].clone(),
            evgx[2].clone(),
            jsonl[3].clone(),
            csv[1].clone(),
        ];
        let opts = PipelineOptions {
            cycle_length: 1,
            workers: 2,
            batch_size: 64,
            chunk: 50,
            queue: 1,
            ordered: true,
            read: crate::ReadOptions::default(),
        };
        let mut expected = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let alone = examples(Pipeline::start(vec![f.clone()], transformer(), opts), false);
            assert!(!alone.is_empty());
            expected.extend(alone.into_iter().map(|(_, p, x, y)| (i, p, x, y)));
        }
        for workers in [2, 0] {
            let opts = PipelineOptions { workers, ..opts };
            let got = examples(Pipeline::start(files.clone(), transformer(), opts), true);
            assert_eq!(got, expected, "workers {workers}");
        }
    }

    #[test]
    fn cpu_time_is_counted_where_the_pipeline_spends_it() {
        let dir = tempfile::tempdir().unwrap();
        let csv = shards(dir.path(), 2, 3000);
        let jsonl = as_jsonl(&csv);
        let opts = PipelineOptions {
            cycle_length: 1,
            workers: 2,
            batch_size: 64,
            chunk: 100,
            queue: 2,
            ordered: true,
            read: crate::ReadOptions::default(),
        };
        let drained = |files: &[SpanFile], opts| {
            let mut p = Pipeline::start(files.to_vec(), transformer(), opts);
            let mut n = 0;
            for item in p.by_ref() {
                if let Item::Batch(b) = item {
                    n += b.len();
                }
            }
            assert!(n > 5000, "{n}");
            p.stage_cpu()
        };
        // CSV: cells straight into features on the reader thread.
        let c = drained(&csv, opts);
        assert!(
            c.decode_transform > 0.0 && c.decode == 0.0 && c.transform == 0.0,
            "{c:?}"
        );
        // JSON lines with transform threads: decoded on the reader, transformed on the workers.
        let j = drained(&jsonl, opts);
        assert!(
            j.decode > 0.0 && j.transform > 0.0 && j.decode_transform == 0.0,
            "{j:?}"
        );
        // Without transform threads, fused on the reader.
        let j0 = drained(&jsonl, PipelineOptions { workers: 0, ..opts });
        assert!(j0.decode_transform > 0.0 && j0.transform == 0.0, "{j0:?}");
        let d = j.since(&StageCpuSeconds::default());
        assert_eq!(d, j);
    }

    #[test]
    fn recycled_feature_vectors_carry_nothing_over() {
        let dir = tempfile::tempdir().unwrap();
        let csv = shards(dir.path(), 3, 2000);
        let evgx = as_example_files(&csv);
        for files in [csv, evgx] {
            let plain = examples(
                Pipeline::start(files.clone(), transformer(), PipelineOptions::default()),
                false,
            );
            let recycled = examples(
                Pipeline::start(files.clone(), transformer(), PipelineOptions::default()),
                true,
            );
            assert_eq!(plain.len(), 3 * 2000 - 3 * 21);
            assert_eq!(recycled, plain);
        }
    }

    #[test]
    fn every_record_exactly_once_and_ordered_mode_is_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let files = shards(d.path(), 5, 1000);
        let opts = PipelineOptions {
            cycle_length: 3,
            workers: 3,
            batch_size: 64,
            chunk: 50,
            queue: 2,
            ordered: true,
            read: crate::ReadOptions::default(),
        };
        let (a, bad_a, done_a, batches) =
            collect(Pipeline::start(files.clone(), transformer(), opts));
        let (b, _, _, _) = collect(Pipeline::start(files.clone(), transformer(), opts));
        assert_eq!(a, b, "ordered mode gives the same order every run");
        let bad_per_shard = (0..1000).filter(|r| r % 97 == 13).count();
        assert_eq!(bad_a, 5 * bad_per_shard);
        assert_eq!(a.len(), 5 * (1000 - bad_per_shard));
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len(), "no example twice");
        let mut done = done_a.clone();
        done.sort();
        assert_eq!(done, vec![0, 1, 2, 3, 4]);
        assert_eq!(batches, a.len().div_ceil(64));
        // Within a shard, positions increase.
        for s in 0..5 {
            let pos: Vec<u64> = a
                .iter()
                .filter(|(sh, _)| *sh == s)
                .map(|(_, p)| *p)
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]));
        }
        // Transforming on the reader threads (workers 0) gives the same examples in the same
        // order; so does a span with fewer shards than readers (idle readers transform).
        let (inline, _, _, _) = collect(Pipeline::start(
            files.clone(),
            transformer(),
            PipelineOptions { workers: 0, ..opts },
        ));
        assert_eq!(inline, a);
        let (few, _, _, _) = collect(Pipeline::start(
            files[..2].to_vec(),
            transformer(),
            PipelineOptions { workers: 0, ..opts },
        ));
        let first_two: Vec<_> = a.iter().filter(|(s, _)| *s < 2).cloned().collect();
        let mut few_sorted = few.clone();
        few_sorted.sort();
        let mut first_two_sorted = first_two.clone();
        first_two_sorted.sort();
        assert_eq!(few_sorted, first_two_sorted);
        // Order-free mode delivers the same set.
        let (mut c, _, _, _) = collect(Pipeline::start(
            files,
            transformer(),
            PipelineOptions {
                ordered: false,
                ..opts
            },
        ));
        c.sort();
        assert_eq!(c, sorted);
    }

    #[test]
    fn bytes_read_reaches_the_total_size_of_the_shards() {
        let d = tempfile::tempdir().unwrap();
        let files = shards(d.path(), 3, 2000);
        let total: u64 = files.iter().map(|f| f.size).sum();
        let mut p = Pipeline::start(files, transformer(), PipelineOptions::default());
        assert!(p.bytes_read() <= total);
        let mut last = 0;
        while p.next().is_some() {
            let now = p.bytes_read();
            assert!(now >= last && now <= total);
            last = now;
        }
        assert_eq!(p.bytes_read(), total);
    }

    #[test]
    fn dropping_a_pipeline_early_stops_every_thread() {
        let d = tempfile::tempdir().unwrap();
        let files = shards(d.path(), 4, 5000);
        let mut p = Pipeline::start(files, transformer(), PipelineOptions::default());
        assert!(matches!(
            p.next(),
            Some(Item::Batch(_)) | Some(Item::Rejected(_))
        ));
        drop(p); // must not hang
    }

    /// Everything a pipeline delivers, in order: examples as (shard, position), rejected records
    /// as (shard name or index, position), and shard ends.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        examples: Vec<(usize, u64)>,
        rejected: Vec<(String, u64)>,
        done: Vec<usize>,
    }

    impl Seen {
        fn take(&mut self, item: Item) {
            match item {
                Item::Batch(b) => self
                    .examples
                    .extend(b.iter().map(|e| (e.shard, e.position))),
                Item::Rejected(Rejected::Parse(b)) => self.rejected.push((b.span, b.line)),
                Item::Rejected(Rejected::Transform {
                    shard, position, ..
                }) => self.rejected.push((shard.to_string(), position)),
                Item::ShardDone { shard, .. } => self.done.push(shard),
                Item::Failed { error, .. } => panic!("{error}"),
            }
        }

        /// Takes `n` items of `p`, then what it has buffered, and stops it where they end.
        fn take_then_cut(&mut self, mut p: Pipeline, n: usize) -> ResumePoint {
            for item in p.by_ref().take(n) {
                self.take(item);
            }
            while let Some(item) = p.next_buffered() {
                self.take(item);
            }
            p.resume_point()
        }
    }

    /// The same shards as example files (`.evgx`), with one malformed record each.
    fn as_example_files(files: &[SpanFile]) -> Vec<SpanFile> {
        use crate::examples::{ExamplesHeader, ExamplesWriter};
        let t = transformer();
        let spec = t.spec();
        let header = ExamplesHeader {
            spec_fingerprint: spec.fingerprint(),
            hash_bits: spec.hash_bits,
            fields: spec.field_count() as u16,
        };
        files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let path = f.path.with_extension(format!("{i}.evgx"));
                let mut w =
                    ExamplesWriter::new(std::fs::File::create(&path).unwrap(), header).unwrap();
                for item in Pipeline::start(vec![f.clone()], t.clone(), Default::default()) {
                    if let Item::Batch(b) = item {
                        for e in b {
                            w.write(&e.features, e.label).unwrap();
                        }
                    }
                }
                let mut tf = crate::tfrecord::TfRecordWriter::new(w.into_inner());
                tf.write_record(&[9, 9, 9]).unwrap();
                SpanFile {
                    name: format!("{i}.evgx"),
                    size: std::fs::metadata(&path).unwrap().len(),
                    path,
                    format: Format::Examples,
                }
            })
            .collect()
    }

    #[test]
    fn a_pipeline_resumed_at_its_resume_point_continues_exactly() {
        let d = tempfile::tempdir().unwrap();
        // Uneven shards (one a multiple of the chunk size) so that readers finish at different
        // times and the round robin changes along the way.
        let mut files = shards(d.path(), 5, 1000);
        let small = d.path().join("small");
        std::fs::create_dir_all(&small).unwrap();
        let extra = shards(&small, 2, 300);
        files.extend(extra);
        let example_files = as_example_files(&files);
        for (files, workers) in [(&files, 0), (&files, 2), (&example_files, 0)] {
            let opts = PipelineOptions {
                cycle_length: 3,
                workers,
                batch_size: 64,
                chunk: 50,
                queue: 2,
                ordered: true,
                read: crate::ReadOptions::default(),
            };
            let mut whole = Seen::default();
            for item in Pipeline::start(files.clone(), transformer(), opts) {
                whole.take(item);
            }
            for cut_after in [0usize, 1, 7, 30, 61, 75] {
                // Read `cut_after` items, drain what is buffered, stop; then resume (twice, to
                // chain resume points) and compare with the uninterrupted run.
                let mut seen = Seen::default();
                let start = |at| Pipeline::start_at(files.clone(), transformer(), opts, at);
                let at = seen.take_then_cut(start(ResumePoint::default()), cut_after);
                let at = seen.take_then_cut(start(at), cut_after / 2);
                for item in Pipeline::start_at(files.clone(), transformer(), opts, at.clone()) {
                    seen.take(item);
                }
                assert_eq!(
                    seen, whole,
                    "{:?}, workers {workers}, cut after {cut_after} items",
                    files[0].format
                );
            }
        }
    }

    #[test]
    fn a_missing_shard_is_reported_as_failed() {
        let d = tempfile::tempdir().unwrap();
        let mut files = shards(d.path(), 2, 10);
        files[1].path = d.path().join("gone.csv");
        let failed: Vec<_> = Pipeline::start(files, transformer(), PipelineOptions::default())
            .filter_map(|i| match i {
                Item::Failed {
                    shard, bad_input, ..
                } => Some((shard, bad_input)),
                _ => None,
            })
            .collect();
        assert_eq!(failed, vec![(1, false)]);
    }

    /// A Parquet shard with the columns of [`shards`]: `x` double, `c` string, `y` int64, in
    /// row groups of 100.
    fn parquet_shard(dir: &std::path::Path, name: &str, rows: usize) -> SpanFile {
        use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
        let path = dir.join(name);
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message s { required double x; required binary c (UTF8); required int64 y; }",
            )
            .unwrap(),
        );
        let props = Arc::new(parquet::file::properties::WriterProperties::builder().build());
        let mut w = parquet::file::writer::SerializedFileWriter::new(
            std::fs::File::create(&path).unwrap(),
            schema,
            props,
        )
        .unwrap();
        let all: Vec<usize> = (0..rows).collect();
        for chunk in all.chunks(100) {
            let mut rg = w.next_row_group().unwrap();
            let x: Vec<f64> = chunk.iter().map(|&r| r as f64 + 0.5).collect();
            let c: Vec<ByteArray> = chunk
                .iter()
                .map(|&r| ByteArray::from(format!("c{}", r % 7).as_str()))
                .collect();
            let y: Vec<i64> = chunk.iter().map(|&r| (r % 2) as i64).collect();
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<DoubleType>()
                .write_batch(&x, None, None)
                .unwrap();
            col.close().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<ByteArrayType>()
                .write_batch(&c, None, None)
                .unwrap();
            col.close().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<Int64Type>()
                .write_batch(&y, None, None)
                .unwrap();
            col.close().unwrap();
            rg.close().unwrap();
        }
        w.close().unwrap();
        SpanFile {
            name: name.to_string(),
            size: std::fs::metadata(&path).unwrap().len(),
            path,
            format: crate::Format::Parquet,
        }
    }

    #[test]
    fn parquet_shards_count_their_size_and_train() {
        let d = tempfile::tempdir().unwrap();
        let files = vec![
            parquet_shard(d.path(), "a.parquet", 1000),
            parquet_shard(d.path(), "b.parquet", 250),
        ];
        let total: u64 = files.iter().map(|f| f.size).sum();
        let mut p = Pipeline::start(files, transformer(), PipelineOptions::default());
        let mut examples = 0;
        let mut last = 0;
        while let Some(item) = p.next() {
            match item {
                Item::Batch(b) => examples += b.len(),
                Item::ShardDone { .. } => {}
                other => panic!("{other:?}"),
            }
            let now = p.bytes_read();
            assert!(now >= last && now <= total, "{now} of {total}");
            last = now;
        }
        assert_eq!(examples, 1250);
        assert_eq!(p.bytes_read(), total);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_bad_input() {
        let d = tempfile::tempdir().unwrap();
        let mut files = vec![parquet_shard(d.path(), "a.parquet", 10)];
        let bad = d.path().join("b.parquet");
        std::fs::write(&bad, b"PAR1 this is not parquet").unwrap();
        files.push(SpanFile {
            name: "b.parquet".into(),
            path: bad,
            format: crate::Format::Parquet,
            size: 24,
        });
        let failed: Vec<_> = Pipeline::start(files, transformer(), PipelineOptions::default())
            .filter_map(|i| match i {
                Item::Failed {
                    shard,
                    bad_input,
                    error,
                } => Some((shard, bad_input, error)),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!((failed[0].0, failed[0].1), (1, true));
        assert!(failed[0].2.contains("b.parquet"), "{}", failed[0].2);
    }
}
