//! Offline / backfill training (`evergreen train --data PATH...`): the same window code as a
//! `run` cycle (read through the pipeline with quarantine, progressive validation, mini-batch
//! training warm-started from the latest version, holdout gate), over files given on the command
//! line instead of spans discovered in the data directory.
//!
//! Each input file is read through the pipeline and cut into windows of `window_rows` records
//! (the whole file when unset), each trained as soon as it is complete, in file order: reading
//! overlaps training and memory holds one window. The bad-record limit applies per window, and a
//! file whose framing breaks part way has the windows before the break trained, the rest not. Nothing is written
//! to the registry until the end: with [`PublishMode::Last`] the final model becomes one new
//! version (the atomic rename is the only commit), so a backfill killed at any point leaves the
//! registry exactly as it was and can simply be rerun; it never moves the `run` watermark.

use crate::{
    CycleReport, Outcome, Sinks, Span, TrainError, Trainer, WindowMode, failpoint, now_ms,
};
use evergreen_data::{Format, SpanDir, SpanFile};
use evergreen_eval::{GateResult, Summary};
use evergreen_metrics::Metrics;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a backfill publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// Nothing: an offline evaluation. Every window's candidate is kept (the gate is computed and
    /// reported but not enforced), and the registry is not touched.
    None,
    /// Windows failing the gate are discarded as in `run`; the final model is published as one
    /// version if at least one window was accepted.
    Last,
}

/// Options of [`Trainer::backfill`].
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Records per window (`None`: one window per file).
    pub window_rows: Option<usize>,
    /// What to publish.
    pub publish: PublishMode,
}

/// Progress of a backfill, for a progress bar.
#[derive(Debug)]
pub enum BackfillEvent<'a> {
    /// Reading a file starts; its windows follow.
    FileStarted {
        /// The file.
        file: &'a Path,
        /// Its size.
        bytes: u64,
    },
    /// A window was trained.
    Window {
        /// The file it came from.
        file: &'a Path,
        /// Bytes of the file read so far (the pipeline reads a little ahead of training).
        bytes_done: u64,
        /// The window's report.
        report: &'a CycleReport,
    },
}

/// The result of a backfill.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillReport {
    /// Input files.
    pub files: usize,
    /// Windows trained.
    pub windows: u64,
    /// Windows whose candidate was accepted (gate passed, or gate not enforced).
    pub accepted_windows: u64,
    /// Good examples read.
    pub examples: u64,
    /// Records quarantined.
    pub bad: u64,
    /// Records quarantined, by reason.
    pub bad_by_reason: std::collections::BTreeMap<String, u64>,
    /// Files held back (too many bad records, or unreadable framing/header), with why.
    pub held_back: Vec<String>,
    /// Examples learned (times epochs).
    pub trained: u64,
    /// Wall time of the whole backfill (reading included).
    pub seconds: f64,
    /// Good examples per second of wall time.
    pub examples_per_second: f64,
    /// Progressive validation over every window: the model as it was before each window
    /// predicts the window.
    pub progressive: Option<Summary>,
    /// Online progressive validation over every window: first-epoch predictions, each made
    /// before its mini-batch was learned.
    pub online: Option<Summary>,
    /// The version published at the end, if any.
    pub version: Option<u64>,
    /// The version the backfill started from.
    pub parent_version: Option<u64>,
    /// Per-window reports.
    pub window_reports: Vec<CycleReport>,
}

impl Trainer {
    /// Trains over `paths` (files, or directories whose files are taken in name order), window by
    /// window, warm-starting from the latest version. See the module documentation.
    pub fn backfill(
        &mut self,
        paths: &[PathBuf],
        opts: &BackfillOptions,
        progress: &mut dyn FnMut(BackfillEvent<'_>),
    ) -> Result<BackfillReport, TrainError> {
        let started = Instant::now();
        let first_step = self.state.cycles;
        let files = self.backfill_files(paths)?;
        let parent_version = self.state.last_version;
        let mut out = BackfillReport {
            files: files.len(),
            windows: 0,
            accepted_windows: 0,
            examples: 0,
            bad: 0,
            bad_by_reason: Default::default(),
            held_back: Vec::new(),
            trained: 0,
            seconds: 0.0,
            examples_per_second: 0.0,
            progressive: None,
            online: None,
            version: None,
            parent_version,
            window_reports: Vec::new(),
        };
        let mut sinks = Sinks::default();
        let replay_before = self.replay.clone();
        let enforce_gate = opts.publish == PublishMode::Last;
        let mut accepted_spans: Vec<String> = Vec::new();
        let mut positions = Vec::new();
        let mut last_gate: Option<(CycleReport, GateResult)> = None;
        let rows = opts.window_rows.unwrap_or(usize::MAX).max(1);
        for file in &files {
            let span = Span {
                id: format!("backfill-{}", file.name),
                uri: file.path.clone(),
                shards: vec![file.clone()],
            };
            progress(BackfillEvent::FileStarted {
                file: &file.path,
                bytes: file.size,
            });
            // Windows are trained as the pipeline delivers them: reading (on the pipeline's
            // threads) overlaps training, and memory holds one window, not the file.
            let mut stream = self.stream_span(&span)?;
            let mut buf = Vec::with_capacity(rows.min(1 << 20));
            let mut bad_at_cut = 0u64;
            let mut w = 0usize;
            let mut trained_any = false;
            loop {
                let more = stream.fill(&mut buf, rows)?;
                if let Some(e) = &stream.header_error {
                    let why = if w > 0 {
                        format!("{e} (the {w} windows before it were trained, the rest is not)")
                    } else {
                        e.clone()
                    };
                    tracing::error!(file = %file.path.display(), "held back: {why}");
                    out.held_back
                        .push(format!("{}: {why}", file.path.display()));
                    break;
                }
                while buf.len() >= rows || (!more && !buf.is_empty()) {
                    // The window moves out in one allocation of its size; `buf` keeps its
                    // capacity for the next one (no regrowth per window).
                    let window: Vec<_> = buf.drain(..rows.min(buf.len())).collect();
                    let bad_here = stream.bad_seen - bad_at_cut;
                    bad_at_cut = stream.bad_seen;
                    let window_span = Span {
                        id: if rows == usize::MAX {
                            span.id.clone()
                        } else {
                            format!("{}#{w}", span.id)
                        },
                        ..span.clone()
                    };
                    w += 1;
                    out.examples += window.len() as u64;
                    let total = window.len() as u64 + bad_here;
                    // The bad-record limit applies per window (a window is trained before the
                    // rest of the file is read).
                    if bad_here as f64 / total as f64 > self.cfg.data.max_bad_fraction {
                        let why = format!(
                            "window {}: {bad_here} of {total} records bad (> max_bad_fraction {}); \
                             see {}",
                            window_span.id,
                            self.cfg.data.max_bad_fraction,
                            self.quarantine.path_for(&span.id).display()
                        );
                        tracing::error!(file = %file.path.display(), "held back: {why}");
                        out.held_back
                            .push(format!("{}: {why}", file.path.display()));
                        continue;
                    }
                    let mut report =
                        CycleReport::started(&window_span.id, window.len() as u64, parent_version);
                    let t = Instant::now();
                    report.origin = Some(t);
                    let cpu = stream.pipeline.stage_cpu();
                    report.read_cpu = cpu.since(&stream.cpu_seen).into();
                    stream.cpu_seen = cpu;
                    self.train_and_gate(
                        &window_span,
                        window,
                        &mut report,
                        WindowMode::Backfill { enforce_gate },
                        Some(&mut sinks),
                        Some(&stream.pipeline.recycler()),
                    )?;
                    report.seconds = t.elapsed().as_secs_f64();
                    out.windows += 1;
                    self.observe(first_step + out.windows, &report, None);
                    out.trained += report.trained;
                    if report.outcome == Outcome::Published {
                        out.accepted_windows += 1;
                        trained_any = true;
                        if let Some(g) = &report.gate {
                            last_gate = Some((report.clone(), g.clone()));
                        }
                    }
                    progress(BackfillEvent::Window {
                        file: &file.path,
                        bytes_done: stream.bytes_read().min(file.size),
                        report: &report,
                    });
                    out.window_reports.push(report);
                }
                if !more {
                    break;
                }
            }
            // Drain what is left (after a framing error) so the quarantine file is complete.
            let framing = stream.header_error.is_some();
            while stream.fill(&mut Vec::new(), usize::MAX)? {}
            if w == 0 && !framing && stream.bad_seen > 0 {
                // Not one good record: nothing of the file was trained, say so.
                let why = format!(
                    "all {} records bad; see {}",
                    stream.bad_seen,
                    self.quarantine.path_for(&span.id).display()
                );
                tracing::error!(file = %file.path.display(), "held back: {why}");
                out.held_back
                    .push(format!("{}: {why}", file.path.display()));
            }
            let read = stream.finish(Vec::new())?;
            failpoint("after_read");
            out.bad += read.bad.values().sum::<u64>();
            for (k, v) in read.bad {
                *out.bad_by_reason.entry(k).or_default() += v;
            }
            if trained_any {
                accepted_spans.push(span.id.clone());
                positions.extend(read.positions);
            }
        }
        if !sinks.progressive.is_empty() {
            out.progressive = Some(sinks.progressive.summary());
        }
        if !sinks.online.is_empty() {
            out.online = Some(sinks.online.summary());
        }
        if opts.publish == PublishMode::Last
            && let Some((mut last, gate)) = last_gate
        {
            // One version for the whole backfill; its manifest carries the backfill-wide
            // progressive metrics, the last accepted window's gate, and every source position.
            // The `run` watermark is left as it was.
            last.progressive = out.progressive;
            last.positions = positions;
            let watermark = self.state.watermark.clone();
            let model = self.model.clone();
            let version = self.publish_version(
                model.as_ref(),
                accepted_spans.clone(),
                watermark,
                self.state.partial.clone(),
                &last,
                &gate,
            )?;
            self.state.last_version = Some(version);
            let record = {
                let span = Span {
                    id: accepted_spans.first().cloned().unwrap_or_default(),
                    uri: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                    shards: Vec::new(),
                };
                last.version = Some(version);
                last.parent_version = parent_version;
                last.records = out.examples;
                last.bad = Default::default();
                self.cycle_record(&span, &last, now_ms(), now_ms())
            };
            if let Err(e) = self.lineage.record_cycle(&record) {
                tracing::error!(
                    "lineage not recorded (re-recorded from the manifest at start): {e}"
                );
            }
            if self.cfg.training.replay.capacity > 0 {
                // After the publish: a crash in between leaves the sample without this backfill's
                // examples (a sample, not training data: nothing is lost or trained twice).
                let path = crate::ReplayStore::path_for(
                    &self.cfg.state.dir,
                    self.state.watermark.as_deref(),
                );
                if let Err(e) = evergreen_registry::write_atomic(&path, &self.replay.encode()) {
                    tracing::error!("{}: replay store not written: {e}", path.display());
                }
            }
            if let Err(e) = self.state.save(&self.cfg.state.dir.join(crate::STATE_FILE)) {
                tracing::error!(
                    "state file not written (the manifest of v{version} is the commit): {e}"
                );
            }
            self.metrics
                .published_version
                .get_or_create(&Metrics::model(&self.cfg.model.name))
                .set(version as i64);
            out.version = Some(version);
        } else {
            // Nothing published: restore the model and replay sample the backfill started from.
            self.replay = replay_before;
            self.model = match parent_version {
                Some(v) => {
                    let mut m = self.registry.load(v)?.model;
                    crate::apply_params(&self.cfg, &mut m)?;
                    m
                }
                None => crate::fresh_model(&self.cfg)?,
            };
        }
        out.seconds = started.elapsed().as_secs_f64();
        out.examples_per_second = if out.seconds > 0.0 {
            out.examples as f64 / out.seconds
        } else {
            0.0
        };
        Ok(out)
    }

    /// Files to backfill: each path as given, directories expanded to their files in name order.
    fn backfill_files(&self, paths: &[PathBuf]) -> Result<Vec<SpanFile>, TrainError> {
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                out.extend(SpanDir::new(p, false, self.cfg.data.format).list()?);
                continue;
            }
            let format: Format = match self.cfg.data.format.or_else(|| Format::from_path(p)) {
                Some(f) => f,
                None => {
                    return Err(TrainError::State {
                        path: p.clone(),
                        message: "unknown format: set data.format or use a known extension \
                                  (.csv, .jsonl, .tfrecord[.gz], .vw, .libsvm, .ffm)"
                            .into(),
                    });
                }
            };
            out.push(SpanFile::at(p, format).map_err(|e| TrainError::State {
                path: p.clone(),
                message: format!("cannot read input: {e}"),
            })?);
        }
        Ok(out)
    }
}
