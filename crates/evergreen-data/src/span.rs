//! Span discovery: which files of a data directory are ready to be read, in which order.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::DataError;

/// The on-disk format of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// JSON Lines: one JSON object per line.
    Jsonl,
    /// TFRecord framing of serialized `tf.train.Example` protos, plain or gzip-compressed
    /// (detected from the content).
    Tfrecord,
    /// Vowpal Wabbit text format.
    Vw,
    /// LibSVM text format (`label index:value ...`).
    Libsvm,
    /// LibFFM text format (`label field:index:value ...`).
    Libffm,
    /// Evergreen example file (`.evgx`): transformed examples, see `examples.rs`.
    Examples,
    /// Apache Parquet (one record per row; see `docs/formats.md`).
    Parquet,
}

impl Format {
    /// The format a file name's extension implies (case-insensitive): `.csv` → [`Format::Csv`];
    /// `.jsonl`, `.ndjson`, `.json` → [`Format::Jsonl`]; `.tfrecord`, `.tfrecords` (optionally
    /// followed by `.gz`/`.gzip`) → [`Format::Tfrecord`]; `.vw` → [`Format::Vw`]; `.libsvm`,
    /// `.svm` → [`Format::Libsvm`]; `.libffm`, `.ffm` → [`Format::Libffm`]; `.evgx`, `.evgx.gz`
    /// → [`Format::Examples`]; `.parquet`, `.parq` → [`Format::Parquet`]; anything else → `None`.
    pub fn from_path(p: &Path) -> Option<Format> {
        let name = p.file_name()?.to_str()?.to_ascii_lowercase();
        for (suffixes, format) in [
            (
                &[
                    ".tfrecord",
                    ".tfrecords",
                    ".tfrecord.gz",
                    ".tfrecords.gz",
                    ".tfrecord.gzip",
                ][..],
                Format::Tfrecord,
            ),
            (&[".vw"][..], Format::Vw),
            (&[".libsvm", ".svm"][..], Format::Libsvm),
            (&[".libffm", ".ffm"][..], Format::Libffm),
            (&[".evgx", ".evgx.gz"][..], Format::Examples),
            (&[".parquet", ".parq"][..], Format::Parquet),
        ] {
            if suffixes.iter().any(|s| name.ends_with(s)) {
                return Some(format);
            }
        }
        let ext = p.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("csv") {
            Some(Format::Csv)
        } else if ["jsonl", "ndjson", "json"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e))
        {
            Some(Format::Jsonl)
        } else {
            None
        }
    }

    /// The lowercase name, as in configuration files (`csv`, `jsonl`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Tfrecord => "tfrecord",
            Format::Vw => "vw",
            Format::Libsvm => "libsvm",
            Format::Libffm => "libffm",
            Format::Examples => "examples",
            Format::Parquet => "parquet",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span ready to be read.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFile {
    /// The file name (no directory); spans are ordered and watermarked by it.
    pub name: String,
    /// The full path.
    pub path: PathBuf,
    /// How to read it.
    pub format: Format,
    /// Size in bytes when it was listed.
    pub size: u64,
}

impl SpanFile {
    /// A single file given by path (not listed from a data directory), read as `format`; its
    /// name is the file name (the whole path when it has none).
    pub fn at(path: &Path, format: Format) -> io::Result<SpanFile> {
        let size = fs::metadata(path)?.len();
        Ok(SpanFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            path: path.to_path_buf(),
            format,
            size,
        })
    }
}

/// Suffixes (compared case-insensitively) that mark a file as not (yet) a span.
const NOT_READY_SUFFIXES: [&str; 3] = [".tmp", ".partial", ".ready"];

/// The suffix of a ready marker: span `X` is complete once `X.ready` exists.
const READY_SUFFIX: &str = ".ready";

/// A directory that spans land in, and the rule that says which of its files are ready.
///
/// See the crate documentation for the ready rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanDir {
    dir: PathBuf,
    ready_marker: bool,
    format: Option<Format>,
}

impl SpanDir {
    /// A span directory. With `ready_marker`, a span `X` is only taken once `X.ready` exists
    /// beside it; with `format`, every file that passes the name rule is read in that format
    /// whatever its extension.
    pub fn new(dir: impl Into<PathBuf>, ready_marker: bool, format: Option<Format>) -> Self {
        Self {
            dir: dir.into(),
            ready_marker,
            format,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether spans wait for a `.ready` marker.
    pub fn ready_marker(&self) -> bool {
        self.ready_marker
    }

    /// The forced format, if any.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Ready spans sorted by name (byte order). A missing directory is an error naming it.
    ///
    /// Entries that vanish while listing (a writer renaming or removing them) are skipped; names
    /// that are not valid UTF-8 are skipped with a warning.
    pub fn list(&self) -> Result<Vec<SpanFile>, DataError> {
        let list_err = |source| DataError::ListDir {
            dir: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    tracing::warn!(dir = %self.dir.display(), name = ?raw, "skipping non-UTF-8 file name");
                }
            }
        }
        // One listing serves both the spans and their markers: a marker seen here was created
        // after its span was complete.
        let markers: HashSet<&str> = if self.ready_marker {
            names
                .iter()
                .filter_map(|n| n.strip_suffix(READY_SUFFIX))
                .collect()
        } else {
            HashSet::new()
        };

        let mut spans = Vec::new();
        for name in &names {
            let Some(format) = self.candidate_format(name) else {
                continue;
            };
            if self.ready_marker && !markers.contains(name.as_str()) {
                tracing::debug!(span = %name, "span has no ready marker yet");
                continue;
            }
            let path = self.dir.join(name);
            // Follows symbolic links: a link to a regular file is a span.
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(DataError::Stat { path, source }),
            };
            if !meta.is_file() {
                continue;
            }
            spans.push(SpanFile {
                name: name.clone(),
                path,
                format,
                size: meta.len(),
            });
        }
        spans.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(spans)
    }

    /// Ready spans whose name sorts strictly after `watermark` (`None` = all), in name order.
    pub fn after(&self, watermark: Option<&str>) -> Result<Vec<SpanFile>, DataError> {
        let mut spans = self.list()?;
        if let Some(w) = watermark {
            spans.retain(|s| s.name.as_str() > w);
        }
        Ok(spans)
    }

    /// The format a file of this name would be read in, when its name passes the ready rule.
    fn candidate_format(&self, name: &str) -> Option<Format> {
        if name.starts_with('.') || name.starts_with('_') {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        if NOT_READY_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            return None;
        }
        self.format.or_else(|| Format::from_path(Path::new(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension_is_case_insensitive() {
        assert_eq!(Format::from_path(Path::new("a.csv")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("a.CSV")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("a.jsonl")), Some(Format::Jsonl));
        assert_eq!(
            Format::from_path(Path::new("a.NDJSON")),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_path(Path::new("a.Json")), Some(Format::Jsonl));
        assert_eq!(Format::from_path(Path::new("a.txt")), None);
        assert_eq!(Format::from_path(Path::new("csv")), None);
    }

    #[test]
    fn format_serde_is_lowercase() {
        assert_eq!(serde_json::to_string(&Format::Jsonl).unwrap(), "\"jsonl\"");
        assert_eq!(
            serde_json::from_str::<Format>("\"csv\"").unwrap(),
            Format::Csv
        );
        assert_eq!(Format::Csv.to_string(), "csv");
    }

    #[test]
    fn name_rule() {
        let d = SpanDir::new("/nowhere", false, None);
        assert_eq!(d.candidate_format("span-001.csv"), Some(Format::Csv));
        assert_eq!(d.candidate_format(".span.csv"), None);
        assert_eq!(d.candidate_format("_span.csv"), None);
        assert_eq!(d.candidate_format("span.csv.tmp"), None);
        assert_eq!(d.candidate_format("span.csv.TMP"), None);
        assert_eq!(d.candidate_format("span.csv.partial"), None);
        assert_eq!(d.candidate_format("span.csv.ready"), None);
        assert_eq!(d.candidate_format("span.parquet"), Some(Format::Parquet));
        assert_eq!(d.candidate_format("span.PARQ"), Some(Format::Parquet));
        assert_eq!(d.candidate_format("span.orc"), None);
        let forced = SpanDir::new("/nowhere", false, Some(Format::Jsonl));
        assert_eq!(forced.candidate_format("span-001"), Some(Format::Jsonl));
        assert_eq!(forced.candidate_format("span.csv"), Some(Format::Jsonl));
        assert_eq!(forced.candidate_format("span.tmp"), None);
    }
}
