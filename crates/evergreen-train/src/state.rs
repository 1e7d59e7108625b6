//! `trainer-state.json`: the watermark of cycles that did not publish, committed atomically.

use crate::TrainError;
use evergreen_registry::{Manifest, PartialSpan, SourcePosition, write_atomic};
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
    /// Cycles committed so far (spans, or windows of spans).
    pub cycles: u64,
    /// The span after the watermark consumed in part (`data.window_records`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialSpan>,
    /// With `partial`: how far each of its shards has been read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<SourcePosition>,
}

impl TrainerState {
    fn new(model_name: &str) -> Self {
        Self {
            format_version: 1,
            model_name: model_name.to_string(),
            watermark: None,
            last_version: None,
            cycles: 0,
            partial: None,
            positions: Vec::new(),
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

    /// Identifier of the last commit: the last window of the span in progress, else the
    /// watermark (it names the replay store committed with it).
    pub fn commit_id(&self) -> Option<String> {
        match &self.partial {
            Some(p) => Some(p.id()),
            None => self.watermark.clone(),
        }
    }

    /// Adopts a published version whose watermark (or window of a span) is ahead of this state
    /// (crash between publish and state commit). Returns true when the state changed.
    pub fn adopt_version(&mut self, m: &Manifest) -> bool {
        let ahead = match (&m.watermark, &self.watermark) {
            (Some(v), Some(s)) if v != s => v > s,
            (None, Some(_)) => false,
            (Some(_), None) => true,
            // Same watermark: compare the windows of the span after it.
            _ => match (&m.partial, &self.partial) {
                (Some(a), Some(b)) => (&a.span, a.parts) > (&b.span, b.parts),
                (Some(_), None) => true,
                (None, _) => false,
            },
        };
        let newer = self.last_version.is_none_or(|l| m.version > l);
        if ahead || newer {
            if ahead {
                self.watermark = m.watermark.clone();
                self.partial = m.partial.clone();
                self.positions = if m.partial.is_some() {
                    m.positions.clone()
                } else {
                    Vec::new()
                };
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
        self.partial = None;
        self.positions.clear();
        if version.is_some() {
            self.last_version = version;
        }
        self.cycles += 1;
    }

    /// Records a consumed window of a span: `partial` and where its shards stop (and the
    /// version it produced, if any).
    pub fn commit_part(
        &mut self,
        partial: PartialSpan,
        positions: Vec<SourcePosition>,
        version: Option<u64>,
    ) {
        self.partial = Some(partial);
        self.positions = positions;
        if version.is_some() {
            self.last_version = version;
        }
        self.cycles += 1;
    }
}
