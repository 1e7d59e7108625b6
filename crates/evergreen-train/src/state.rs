//! `trainer-state.json`: the watermark of cycles that did not publish, committed atomically.

use crate::TrainError;
use evergreen_registry::{Manifest, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the trainer state inside `state.dir`.
pub const STATE_FILE: &str = "trainer-state.json";

/// The trainer's committed progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// State format version.
    pub format_version: u32,
    /// Model this state belongs to.
    pub model_name: String,
    /// Last consumed span (every ready span up to it, in name order, was consumed).
    pub watermark: Option<String>,
    /// Newest published version (the model the next cycle warm-starts from).
    pub last_version: Option<u64>,
    /// Spans consumed so far (cycles committed).
    pub cycles: u64,
}

impl TrainerState {
    fn new(model_name: &str) -> Self {
        Self {
            format_version: 1,
            model_name: model_name.to_string(),
            watermark: None,
            last_version: None,
            cycles: 0,
        }
    }

    /// Reads the state file; a missing file is a fresh state.
    pub fn load(path: &Path, model_name: &str) -> Result<Self, TrainError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new(model_name)),
            Err(e) => {
                return Err(TrainError::State {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| TrainError::State {
            path: path.to_path_buf(),
            message: format!("invalid trainer state: {e}"),
        })?;
        if state.model_name != model_name {
            return Err(TrainError::State {
                path: path.to_path_buf(),
                message: format!(
                    "belongs to model {:?}, not {model_name:?}: give each model its own state.dir",
                    state.model_name
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(path, &json).map_err(|e| TrainError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Adopts a published version whose watermark is ahead of this state (crash between publish
    /// and state commit). Returns true when the state changed.
    pub fn adopt_version(&mut self, m: &Manifest) -> bool {
        let ahead = match (&m.watermark, &self.watermark) {
            (Some(v), Some(s)) => v > s,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let newer = self.last_version.is_none_or(|l| m.version > l);
        if ahead || newer {
            if ahead {
                self.watermark = m.watermark.clone();
                self.cycles += 1;
            }
            self.last_version = Some(self.last_version.map_or(m.version, |l| l.max(m.version)));
            true
        } else {
            false
        }
    }

    /// Records a consumed span (and the version it produced, if any).
    pub fn commit_span(&mut self, span: &str, version: Option<u64>) {
        self.watermark = Some(span.to_string());
        if version.is_some() {
            self.last_version = version;
        }
        self.cycles += 1;
    }
}
