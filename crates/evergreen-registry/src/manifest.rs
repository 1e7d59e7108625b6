//! The version manifest: everything needed to serve, audit and warm-start from a version.

use evergreen_core::FeatureSpec;
use evergreen_eval::{GateResult, Summary};
use evergreen_model::ModelKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current manifest format version.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Size and checksum of one file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// xxh3-64 of the content, 16 lowercase hex digits.
    pub xxh3: String,
}

impl FileEntry {
    /// Entry describing `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size: bytes.len() as u64,
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
        }
    }

    /// True when `bytes` match this entry.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        *self == Self::of(bytes)
    }
}

/// `manifest.json` of a version directory. Spec in `docs/formats.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Model name.
    pub model_name: String,
    /// This version.
    pub version: u64,
    /// Version this one was warm-started from.
    pub parent_version: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Model kind.
    pub model_kind: ModelKind,
    /// The exact feature spec the model was trained with; servers transform with it.
    pub feature_spec: FeatureSpec,
    /// Training hyperparameters and settings, as configured.
    pub training: serde_json::Value,
    /// Spans trained into this version by its own cycle.
    pub spans: Vec<String>,
    /// Name of the last span consumed when this version was cut (every span up to it, in name
    /// order, has been consumed). Part of the exactly-once commit.
    pub watermark: Option<String>,
    /// Progressive-validation metrics of the parent on the new span, before training.
    pub progressive: Option<Summary>,
    /// Candidate metrics on the held-out slice.
    pub evaluation: Option<Summary>,
    /// Serving model's metrics on the same held-out slice.
    pub baseline: Option<Summary>,
    /// The gate decision with every check.
    pub gate: Option<GateResult>,
    /// Crate version and git commit of the code that trained it.
    pub code_version: String,
    /// Files of the version with size and checksum.
    pub files: BTreeMap<String, FileEntry>,
    /// Source positions reached when this version was cut: for each shard of the span(s)
    /// trained into it, the number of records read (every one of them, good or bad, is
    /// accounted for: trained, held out, or quarantined). Committed with the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<SourcePosition>,
    /// Set when this version was cut in the middle of a span (`data.window_records`): the span
    /// and how many of its windows are consumed; `positions` then says where its shards stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialSpan>,
}

/// A span consumed in part: windows `1..=parts` are committed, the rest is read on from the
/// source positions committed with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSpan {
    /// Span identifier (it sorts after the watermark).
    pub span: String,
    /// Windows of the span committed so far.
    pub parts: u32,
    /// Reader whose chunk comes next (so a resumed read interleaves shards as an uninterrupted
    /// one would).
    #[serde(default)]
    pub next_reader: usize,
}

impl PartialSpan {
    /// Identifier of window `part` of `span` (quarantine file, lineage, replay store).
    pub fn part_id(span: &str, part: u32) -> String {
        format!("{span}.part{part:05}")
    }

    /// Identifier of the last committed window.
    pub fn id(&self) -> String {
        Self::part_id(&self.span, self.parts)
    }
}

/// How far a shard was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Span identifier.
    pub span: String,
    /// Shard file path.
    pub shard: String,
    /// Records (good and bad) read from the shard.
    pub records: u64,
    /// Whether the shard was read to its end (always, unless the span was cut into windows).
    #[serde(default = "yes")]
    pub finished: bool,
}

fn yes() -> bool {
    true
}
