//! Shared helpers for the binary's integration tests: spawn `evergreen`, read its output lines,
//! write configs and spans.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evergreen")
}

/// The shipped Elec2 stream: header and rows.
pub fn elec2() -> (String, Vec<String>) {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/elec2.csv"))
            .unwrap();
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap();
    (header, lines.collect())
}

/// Writes a span atomically (temp name, then rename), as producers must.
pub fn write_span(dir: &Path, name: &str, header: &str, rows: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut text = String::from(header);
    text.push('\n');
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// A config for model `m` under `root`; `serve` adds a REST server on a free port.
pub fn write_config(root: &Path, serve: bool, extra_training: &str) -> PathBuf {
    let serve = if serve {
        "[serve]\nrest_api_port = 0\nmax_body_bytes = 65536\n"
    } else {
        ""
    };
    let text = format!(
        r#"version = 1
[model]
name = "m"
[model.ftrl]
alpha = 0.1
[data]
dir = "in"
poll_interval_ms = 50
max_bad_fraction = 0.2
[features]
hash_bits = 16
label = {{ column = "class" }}
[[features.numeric]]
name = "nswprice"
[[features.numeric]]
name = "nswdemand"
[[features.numeric]]
name = "vicprice"
[[features.numeric]]
name = "vicdemand"
[[features.numeric]]
name = "transfer"
[[features.numeric]]
name = "period"
buckets = [0.25, 0.5, 0.75]
[training]
holdout_fraction = 0.2
{extra_training}
[gate]
max_auc_drop = 0.3
max_logloss_increase = 0.3
min_examples = 10
[registry]
base_path = "models"
keep_versions = 50
[state]
dir = "state"
{serve}"#
    );
    let path = root.join("evergreen.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `evergreen` with its stdout and stderr lines.
pub struct Proc {
    pub child: Child,
    pub out: Receiver<String>,
    pub err: Receiver<String>,
    pub seen_out: Vec<String>,
    pub seen_err: Vec<String>,
}

fn pump(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    /// Spawns the binary with `args` and extra environment.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        Self {
            child,
            out,
            err,
            seen_out: Vec::new(),
            seen_err: Vec::new(),
        }
    }

    /// Waits for a stdout line matching `pred`.
    pub fn wait_out(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    self.seen_out.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    self.drain_err();
                    panic!(
                        "no stdout line {what}; stdout so far:\n{}\nstderr:\n{}",
                        self.seen_out.join("\n"),
                        self.seen_err.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for a stderr line matching `pred`.
    pub fn wait_err(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => {
                    self.seen_err.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line {what}; stderr:\n{}",
                    self.seen_err.join("\n")
                ),
            }
        }
    }

    /// Collects stderr lines available now.
    pub fn drain_err(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.seen_err.push(l);
        }
    }

    /// Waits for the process to exit (with a deadline) and returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The child is gone, so both pipes reach end of file: read each to its end
                // (the pump threads hang up), not merely what has arrived so far.
                let until = Instant::now() + Duration::from_secs(30);
                for (rx, seen) in [
                    (&self.out, &mut self.seen_out),
                    (&self.err, &mut self.seen_err),
                ] {
                    while let Ok(l) =
                        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    {
                        seen.push(l);
                    }
                }
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit; stderr:\n{}",
                    self.seen_err.join("\n")
                );
            }
            // Nothing to wait on but the child itself: poll its status.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The REST address printed at start.
    pub fn rest_addr(&mut self) -> String {
        let line = self.wait_out("with the REST address", |l| l.contains("on http://"));
        let start = line.find("http://").unwrap();
        line[start..].split_whitespace().next().unwrap().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, with a deadline.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `evergreen train --config <config> --data <data> --window-rows <rows> --publish none` with
/// the report in `<dir>/report.json` and each of `sets` as a `--set`; asserts success and
/// returns the report's windows.
pub fn train_windows(
    dir: &Path,
    config: &Path,
    data: &Path,
    rows: usize,
    sets: &[String],
) -> Vec<serde_json::Value> {
    let report = dir.join("report.json");
    let mut cmd = Command::new(bin());
    cmd.args(["train", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["--window-rows", &rows.to_string(), "--publish", "none"])
        .args(["--quiet", "--report"])
        .arg(&report);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    report["window_reports"].as_array().unwrap().clone()
}
