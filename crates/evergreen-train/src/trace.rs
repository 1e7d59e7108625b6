//! Performance traces: every cycle and its stages as Chrome trace events, the JSON array format
//! that Perfetto (ui.perfetto.dev) and `chrome://tracing` load. One file per training process,
//! `evergreen-<model>-<unix secs>-<pid>.trace.json`; after each cycle its events are appended
//! and the closing `]` rewritten, so the file is valid JSON between cycles (and a file cut
//! short by a crash still loads: both viewers accept an unterminated array). Writing takes
//! microseconds after the cycle: training never pauses for it. Layout in `docs/formats.md`.

use crate::CycleReport;
use serde_json::json;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends cycles to a trace file.
#[derive(Debug)]
pub struct TraceWriter {
    path: PathBuf,
    out: BufWriter<File>,
    pid: u32,
    /// Events written so far (the first one needs no separating comma).
    events: u64,
}

impl TraceWriter {
    /// Creates the trace file of this process for `model` in `dir` (created if missing).
    pub fn create(dir: &Path, model: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let pid = std::process::id();
        // The model name comes from the config; keep the file name plain anyway.
        let safe: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("evergreen-{safe}-{secs}-{pid}.trace.json"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
            pid,
            events: 0,
        };
        w.out.write_all(b"[")?;
        w.event(&json!({
            "name": "process_name", "ph": "M", "pid": pid, "tid": 0,
            "args": {"name": format!("evergreen training {model}")},
        }))?;
        w.event(&json!({
            "name": "thread_name", "ph": "M", "pid": pid, "tid": 0,
            "args": {"name": "cycles"},
        }))?;
        w.close()?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn event(&mut self, e: &serde_json::Value) -> std::io::Result<()> {
        if self.events > 0 {
            self.out.write_all(b",")?;
        }
        self.out.write_all(b"\n")?;
        serde_json::to_writer(&mut self.out, e)?;
        self.events += 1;
        Ok(())
    }

    /// Ends the array and flushes; the next event overwrites the `]`.
    fn close(&mut self) -> std::io::Result<()> {
        self.out.write_all(b"\n]\n")?;
        self.out.flush()?;
        self.out.seek(SeekFrom::Current(-3))?;
        Ok(())
    }

    /// Appends a cycle that just ended (`report.seconds` long, ending now): a complete event
    /// (`ph: X`) for the cycle, one per stage nested in it, and a counter (`ph: C`) with the
    /// trainer's utilisation.
    pub fn write_cycle(&mut self, step: u64, r: &CycleReport) -> std::io::Result<()> {
        let end_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6);
        let start_us = end_us - r.seconds * 1e6;
        let pid = self.pid;
        self.event(&json!({
            "name": format!("cycle {step}: {}", r.span),
            "cat": "cycle", "ph": "X", "pid": pid, "tid": 0,
            "ts": start_us, "dur": r.seconds * 1e6,
            "args": {
                "span": r.span, "outcome": r.outcome.as_str(), "records": r.records,
                "trained": r.trained, "version": r.version,
                "utilization": r.utilization(),
            },
        }))?;
        for s in &r.stages {
            let mut e = json!({
                "name": s.stage, "cat": "stage", "ph": "X", "pid": pid, "tid": 0,
                "ts": start_us + s.start_seconds * 1e6, "dur": s.seconds * 1e6,
            });
            if s.stage == "read" {
                // The pipeline threads' CPU time behind the wait (decode and transform).
                e["args"] = json!(r.read_cpu);
            }
            self.event(&e)?;
        }
        if let Some(u) = r.utilization() {
            self.event(&json!({
                "name": "trainer utilization", "ph": "C", "pid": pid, "tid": 0,
                "ts": start_us, "args": {"train": u},
            }))?;
        }
        self.close()
    }
}
