//! The model registry: immutable numbered versions laid out as TensorFlow Serving expects,
//! `<base_path>/<model_name>/<version>/`, published atomically.
//!
//! Publish writes `model.bin` and `manifest.json` into `<base>/.tmp-<version>-<pid>/`, fsyncs
//! both files and the directory, renames it to `<base>/<version>` and fsyncs `<base>`. A reader
//! lists only directories named by a version number in canonical form (`1`, `2`, ..., never `0`
//! or `007`) that hold a manifest; it verifies the manifest, the model's checksums and its
//! dimension before use. A crash at any point leaves either no version or a complete one
//! (plus a stale `.tmp-*` directory that the next publisher removes). Retention renames a victim
//! to `.deleting-<version>` before removing it, so no reader sees a half-deleted version.

mod manifest;
mod traffic;

pub use manifest::{FileEntry, MANIFEST_FORMAT_VERSION, Manifest, PartialSpan, SourcePosition};
pub use traffic::{
    AdminChange, AdminError, CANARY, DEFAULT_KEY_HEADER, STABLE, Shadow, SplitRequest,
    TRAFFIC_FILE, TrafficPolicy, key_bucket,
};

use evergreen_core::{FeatureSpec, Representation, SpecError, Transformer};
use evergreen_model::{Model, ModelError};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the model inside a version directory.
pub const MODEL_FILE: &str = "model.bin";
/// File name of the manifest inside a version directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the labels map in the model's base directory.
pub const LABELS_FILE: &str = "labels.json";

/// Registry errors; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Manifest unreadable.
    #[error("{path}: invalid manifest: {message}")]
    Manifest {
        /// Manifest path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `labels.json` unreadable (not a JSON object of label names to version numbers).
    #[error("{path}: invalid labels file: {message}")]
    Labels {
        /// Labels file path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `traffic.json` unreadable or out of range.
    #[error("{path}: invalid traffic policy: {message}")]
    Traffic {
        /// Policy file path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Model file failed verification.
    #[error("{path}: {source}")]
    Model {
        /// Model file path.
        path: PathBuf,
        /// Why it failed.
        source: ModelError,
    },
    /// The model was built for another number of hash buckets than its stored spec produces
    /// (using it would index out of bounds).
    #[error("{path}: model has {model_dim} buckets but its feature spec produces {spec_dim}")]
    Dimension {
        /// Model file path.
        path: PathBuf,
        /// Buckets of the model.
        model_dim: usize,
        /// Buckets of the spec (`2^hash_bits`).
        spec_dim: usize,
    },
    /// The model consumes another representation of the features (hashed or raw, or raw
    /// fields of other kinds) than its stored spec produces.
    #[error("{path}: {message}")]
    Representation {
        /// Model file path.
        path: PathBuf,
        /// What differs.
        message: String,
    },
    /// The stored feature spec is unusable.
    #[error("{path}: stored feature spec invalid: {source}")]
    Spec {
        /// Manifest path.
        path: PathBuf,
        /// Why.
        source: SpecError,
    },
    /// Version absent.
    #[error("version {version} of model {model:?} not found under {base}")]
    NotFound {
        /// Model name.
        model: String,
        /// Requested version.
        version: u64,
        /// Base directory.
        base: PathBuf,
    },
    /// Version already published.
    #[error("version {version} already exists under {base}")]
    Exists {
        /// Version number.
        version: u64,
        /// Base directory.
        base: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A loaded, verified version: manifest, model and the transformer for its stored feature spec.
#[derive(Debug)]
pub struct LoadedVersion {
    /// The version's manifest.
    pub manifest: Manifest,
    /// The model (predict only on the serving path).
    pub model: Box<dyn Model>,
    /// The transformer compiled from the spec stored in this version.
    pub transformer: Transformer,
    /// True when the model reads its parameters from a mapped private copy of its file.
    pub mapped: bool,
    /// Why a mapping was asked for but the model was read into memory instead.
    pub fallback: Option<String>,
}

/// One model's directory of versions.
#[derive(Debug, Clone)]
pub struct Registry {
    base: PathBuf,
    model_name: String,
}

/// Writes `bytes` to `path` and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Fsyncs a directory so a rename inside it is durable.
pub fn sync_dir(path: &Path) -> Result<(), RegistryError> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

/// Replaces `path` atomically with `bytes` (temp file + fsync + rename + fsync of the parent).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(parent)
}

impl Registry {
    /// Opens (creating if needed) the directory `base` holding the versions of `model_name`.
    pub fn open(base: impl Into<PathBuf>, model_name: &str) -> Result<Self, RegistryError> {
        let base = base.into();
        fs::create_dir_all(&base).map_err(io(&base))?;
        Ok(Self {
            base,
            model_name: model_name.to_string(),
        })
    }

    /// Opens an existing directory without creating it (for servers).
    pub fn open_existing(
        base: impl Into<PathBuf>,
        model_name: &str,
    ) -> Result<Self, RegistryError> {
        let base = base.into();
        fs::metadata(&base).map_err(io(&base))?;
        Ok(Self {
            base,
            model_name: model_name.to_string(),
        })
    }

    /// The base directory (`<base_path>/<model_name>`).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The model name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Directory of a version.
    pub fn version_dir(&self, version: u64) -> PathBuf {
        self.base.join(version.to_string())
    }

    /// Complete versions, ascending. A complete version is a directory named by a version number
    /// in canonical decimal form (ASCII digits, no sign, no leading zero, not `0`: exactly what
    /// [`Registry::version_dir`] produces, so each listed version maps back to its directory)
    /// that holds a manifest (publish renames whole directories, so none is half-written).
    pub fn versions(&self) -> Result<Vec<u64>, RegistryError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.base).map_err(io(&self.base))? {
            let entry = entry.map_err(io(&self.base))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(v) = parse_version_name(name) else {
                continue;
            };
            if entry.path().join(MANIFEST_FILE).is_file() {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The newest complete version.
    pub fn latest(&self) -> Result<Option<u64>, RegistryError> {
        Ok(self.versions()?.last().copied())
    }

    /// Reads a version's manifest, and checks that its `format_version` is one this build reads
    /// (1 to [`MANIFEST_FORMAT_VERSION`]) and that its `version` is the directory's.
    pub fn manifest(&self, version: u64) -> Result<Manifest, RegistryError> {
        let path = self.version_dir(version).join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RegistryError::NotFound {
                    model: self.model_name.clone(),
                    version,
                    base: self.base.clone(),
                }
            } else {
                RegistryError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let invalid = |message: String| RegistryError::Manifest {
            path: path.clone(),
            message,
        };
        // The format version first, so that a manifest written by a newer build is reported as
        // such rather than as a parse error of a field that changed.
        #[derive(serde::Deserialize)]
        struct Probe {
            format_version: u32,
        }
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if probe.format_version == 0 || probe.format_version > MANIFEST_FORMAT_VERSION {
            return Err(invalid(format!(
                "manifest format version {} is not one this build reads (1 to {MANIFEST_FORMAT_VERSION})",
                probe.format_version
            )));
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        if manifest.version != version {
            return Err(invalid(format!(
                "manifest says version {} but lies in the directory of version {version}",
                manifest.version
            )));
        }
        Ok(manifest)
    }

    /// Loads and verifies a version: the manifest (see [`Registry::manifest`]), the model file's
    /// size and checksum recorded in it, the model file's own checks, the spec fingerprint, the
    /// stored spec, and that the model's dimension is the spec's `2^hash_bits`. The model is
    /// read into memory (an owned model, to learn from).
    pub fn load(&self, version: u64) -> Result<LoadedVersion, RegistryError> {
        self.load_with(version, None)
    }

    /// [`Registry::load`] for serving: with `scratch_dir`, an FTRL model is served from a
    /// mapped private copy made there ([`evergreen_model::open`]; `LoadedVersion::fallback`
    /// says why when it could not be), so that loading it beside the version serving does not
    /// hold two decoded models.
    pub fn load_with(
        &self,
        version: u64,
        scratch_dir: Option<&Path>,
    ) -> Result<LoadedVersion, RegistryError> {
        let manifest = self.manifest(version)?;
        let dir = self.version_dir(version);
        let mpath = dir.join(MANIFEST_FILE);
        let path = dir.join(MODEL_FILE);
        let entry = manifest
            .files
            .get(MODEL_FILE)
            .ok_or_else(|| RegistryError::Manifest {
                path: mpath.clone(),
                message: format!("no entry for {MODEL_FILE}"),
            })?;
        let opened = evergreen_model::open(&path, scratch_dir).map_err(|e| match e {
            evergreen_model::OpenError::Io { path, source } => RegistryError::Io { path, source },
            evergreen_model::OpenError::Model { path, source } => {
                RegistryError::Model { path, source }
            }
        })?;
        let found = FileEntry {
            size: opened.size,
            xxh3: format!("{:016x}", opened.xxh3),
        };
        if *entry != found {
            return Err(RegistryError::Model {
                path,
                source: ModelError::Checksum,
            });
        }
        let (header, model) = (opened.header, opened.model);
        if header.spec_fingerprint != manifest.feature_spec.fingerprint() {
            return Err(RegistryError::Manifest {
                path: mpath,
                message:
                    "model was trained with a different feature spec than the manifest declares"
                        .into(),
            });
        }
        let transformer = Transformer::new(manifest.feature_spec.clone()).map_err(|source| {
            RegistryError::Spec {
                path: mpath,
                source,
            }
        })?;
        // Checked after the spec validated (hash_bits in range, so dim() cannot overflow).
        // The fingerprint alone does not guarantee this: a crafted model with the right
        // fingerprint and a valid checksum could be smaller than the spec's index range.
        let spec_dim = transformer.spec().dim();
        let model_dim = model.dim();
        if model_dim != spec_dim {
            return Err(RegistryError::Dimension {
                path,
                model_dim,
                spec_dim,
            });
        }
        if let Some(message) = representation_mismatch(model.as_ref(), transformer.spec()) {
            return Err(RegistryError::Representation { path, message });
        }
        // The trainer never publishes a non-finite model (the gate rejects it); a file that
        // holds one anyway is refused rather than served as NaN predictions.
        if !model.is_finite() {
            return Err(RegistryError::Model {
                path,
                source: ModelError::Body("non-finite parameters"),
            });
        }
        Ok(LoadedVersion {
            manifest,
            model,
            transformer,
            mapped: opened.mapped,
            fallback: opened.fallback,
        })
    }

    /// Publishes a new immutable version. `manifest.version` names it; `manifest.files` is
    /// filled in here. Returns the version directory.
    pub fn publish(
        &self,
        mut manifest: Manifest,
        model_bytes: &[u8],
    ) -> Result<PathBuf, RegistryError> {
        let version = manifest.version;
        let dest = self.version_dir(version);
        if version == 0 {
            return Err(RegistryError::Manifest {
                path: dest.join(MANIFEST_FILE),
                message: "version 0 cannot be published: versions start at 1".into(),
            });
        }
        if dest.exists() {
            return Err(RegistryError::Exists {
                version,
                base: self.base.clone(),
            });
        }
        self.remove_stale_temporaries()?;
        let tmp = self
            .base
            .join(format!(".tmp-{version}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        write_synced(&tmp.join(MODEL_FILE), model_bytes)?;
        manifest
            .files
            .insert(MODEL_FILE.to_string(), FileEntry::of(model_bytes));
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        write_synced(&tmp.join(MANIFEST_FILE), &json)?;
        sync_dir(&tmp)?;
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        sync_dir(&self.base)?;
        Ok(dest)
    }

    /// Removes `.tmp-*` and `.deleting-*` leftovers of crashed publishers or retention runs.
    pub fn remove_stale_temporaries(&self) -> Result<(), RegistryError> {
        for entry in fs::read_dir(&self.base).map_err(io(&self.base))? {
            let entry = entry.map_err(io(&self.base))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.starts_with(".tmp-") || name.starts_with(".deleting-"))
                && entry.path().is_dir()
            {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// Retention: keeps the newest `keep` versions (at least 1), every version in `protected`
    /// (the trainer protects the version it has just published), every version named in
    /// `labels.json`, and the versions `traffic.json` needs (pinned, shadow, and the last three
    /// of the promotion history, for rollback); removes every other version. Returns the
    /// removed versions, ascending.
    pub fn apply_retention(
        &self,
        keep: usize,
        protected: &[u64],
    ) -> Result<Vec<u64>, RegistryError> {
        let versions = self.versions()?;
        let labels = self.labels()?;
        let traffic = self.traffic()?;
        let mut needed: Vec<u64> = traffic.versions().collect();
        needed.extend(traffic.history.iter().rev().take(3));
        let keep = keep.max(1);
        let cut = versions.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &v in &versions[..cut] {
            if protected.contains(&v) || needed.contains(&v) || labels.values().any(|l| *l == v) {
                continue;
            }
            let dir = self.version_dir(v);
            let doomed = self.base.join(format!(".deleting-{v}"));
            fs::rename(&dir, &doomed).map_err(io(&dir))?;
            fs::remove_dir_all(&doomed).map_err(io(&doomed))?;
            removed.push(v);
        }
        if !removed.is_empty() {
            sync_dir(&self.base)?;
        }
        Ok(removed)
    }

    /// Version labels (`stable`, `canary`, ...), from `labels.json`; empty when absent.
    pub fn labels(&self) -> Result<BTreeMap<String, u64>, RegistryError> {
        let path = self.base.join(LABELS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Labels {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(RegistryError::Io { path, source: e }),
        }
    }

    /// Replaces the labels map atomically.
    pub fn set_labels(&self, labels: &BTreeMap<String, u64>) -> Result<(), RegistryError> {
        let json = serde_json::to_vec_pretty(labels).expect("labels serialize");
        write_atomic(&self.base.join(LABELS_FILE), &json)
    }
}

/// The version named by a directory, if the name is a version number in canonical decimal form
/// (what `version.to_string()` writes) and at least 1. Names such as `007`, `+7` or `0` are not
/// versions: `version_dir` would map their number to another directory.
fn parse_version_name(name: &str) -> Option<u64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) || name.starts_with('0') {
        return None;
    }
    name.parse::<u64>().ok()
}

/// A shared, loaded version (what servers hold).
pub type SharedVersion = Arc<LoadedVersion>;

/// Why `model` cannot consume the features `spec` produces (representation, or the kinds of
/// raw fields), `None` when it can.
pub fn representation_mismatch(model: &dyn Model, spec: &FeatureSpec) -> Option<String> {
    let name = |r: Representation| match r {
        Representation::Hashed => "hashed",
        Representation::Raw => "raw",
    };
    if model.representation() != spec.representation {
        return Some(format!(
            "model of kind {:?} consumes {} features but its feature spec produces {} ones",
            model.kind().name(),
            name(model.representation()),
            name(spec.representation)
        ));
    }
    match model.field_kinds() {
        Some(kinds) if kinds != spec.field_kinds().as_slice() => Some(format!(
            "model was built for fields of kinds {kinds:?} but its feature spec has {:?}",
            spec.field_kinds()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
