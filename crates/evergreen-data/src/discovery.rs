//! Span discovery like TFX ExampleGen: a path pattern with `{SPAN}`, `{VERSION}` and
//! `{YYYY}{MM}{DD}` placeholders (and `*`, `?` globs) names where spans land; every file that
//! matches with the same span number belongs to that span (a span can be a directory of
//! shards), and when a span exists in several versions the newest version wins.
//!
//! Pattern rules (each path component is matched on its own, relative to a base directory):
//! - `{SPAN}` matches one or more digits: the span number;
//! - `{YYYY}`, `{MM}`, `{DD}` match 4, 2 and 2 digits; the span number is then the number of
//!   days from 1970-01-01 to that date (as in TFX: `log-20170101.data` is span 17167);
//! - `{VERSION}` matches one or more digits, and needs `{SPAN}` or the date;
//! - `*` matches any run of characters within a component, `?` one character;
//! - a placeholder that appears twice must match the same number both times.
//!
//! The ready rule of [`crate::SpanDir`] applies to every shard file (names starting with `.` or
//! `_`, or ending in `.tmp`, `.partial` or `.ready` are never data); with `ready_marker`, a span
//! is taken only once each of its shards `X` has an `X.ready` beside it or the directory that
//! holds its shards has a `_SUCCESS` file (the Hadoop/Spark convention). Spans are identified
//! by [`DiscoveredSpan::id`], which sorts in span order, so the trainer's name-ordered
//! watermark works unchanged.

use crate::{DataError, Format, SpanFile};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Star,
    Question,
    Span,
    Version,
    Year,
    Month,
    Day,
}

/// A parsed span pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPattern {
    raw: String,
    base: PathBuf,
    components: Vec<Vec<Token>>,
    uses_date: bool,
}

/// One span found by a pattern: its number, the winning version, and its shard files.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredSpan {
    /// Span number (days since 1970-01-01 for date patterns).
    pub span: u64,
    /// The newest version present, when the pattern has `{VERSION}`.
    pub version: Option<u64>,
    /// Shard files, sorted by path.
    pub shards: Vec<SpanFile>,
}

impl DiscoveredSpan {
    /// Identifier used as the span's name (watermark, quarantine, lineage): `span-` and the
    /// zero-padded span number, so that identifiers sort like span numbers.
    pub fn id(&self) -> String {
        span_id(self.span)
    }

    /// The directory holding the shards when they share one, else the first shard's path.
    pub fn uri(&self) -> PathBuf {
        let parents: Vec<_> = self.shards.iter().filter_map(|s| s.path.parent()).collect();
        match parents.first() {
            Some(p) if self.shards.len() > 1 && parents.iter().all(|q| q == p) => p.to_path_buf(),
            _ => self
                .shards
                .first()
                .map(|s| s.path.clone())
                .unwrap_or_default(),
        }
    }
}

/// The identifier of span number `n` (see [`DiscoveredSpan::id`]).
pub fn span_id(n: u64) -> String {
    format!("span-{n:020}")
}

#[derive(Default, Clone, Debug)]
struct Captures {
    span: Option<u64>,
    version: Option<u64>,
    year: Option<u64>,
    month: Option<u64>,
    day: Option<u64>,
}

fn invalid(pattern: &str, message: impl Into<String>) -> DataError {
    DataError::Pattern {
        pattern: pattern.to_string(),
        message: message.into(),
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        _ => 28,
    }
}

impl SpanPattern {
    /// Parses `pattern` (a `/`-separated path relative to `base`).
    pub fn parse(pattern: &str, base: &Path) -> Result<Self, DataError> {
        if pattern.is_empty() || pattern.starts_with('/') {
            return Err(invalid(
                pattern,
                "must be a non-empty path relative to the data directory",
            ));
        }
        let mut components = Vec::new();
        let (mut span, mut version, mut date) = (false, false, [false; 3]);
        for comp in pattern.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(invalid(
                    pattern,
                    format!("path component {comp:?} is not allowed"),
                ));
            }
            let mut tokens = Vec::new();
            let mut rest = comp;
            while let Some(c) = rest.chars().next() {
                if c == '{' {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| invalid(pattern, "unclosed '{'"))?;
                    let t = match &rest[1..end] {
                        "SPAN" => {
                            span = true;
                            Token::Span
                        }
                        "VERSION" => {
                            version = true;
                            Token::Version
                        }
                        "YYYY" => {
                            date[0] = true;
                            Token::Year
                        }
                        "MM" => {
                            date[1] = true;
                            Token::Month
                        }
                        "DD" => {
                            date[2] = true;
                            Token::Day
                        }
                        other => {
                            return Err(invalid(
                                pattern,
                                format!(
                                    "unknown placeholder {{{other}}} (use SPAN, VERSION, YYYY, MM, DD)"
                                ),
                            ));
                        }
                    };
                    tokens.push(t);
                    rest = &rest[end + 1..];
                } else {
                    tokens.push(match c {
                        '*' => Token::Star,
                        '?' => Token::Question,
                        c => Token::Literal(c),
                    });
                    rest = &rest[c.len_utf8()..];
                }
            }
            components.push(tokens);
        }
        let uses_date = date.iter().any(|d| *d);
        if uses_date && !date.iter().all(|d| *d) {
            return Err(invalid(
                pattern,
                "a date needs all of {YYYY}, {MM} and {DD}",
            ));
        }
        if span == uses_date {
            return Err(invalid(
                pattern,
                "use exactly one of {SPAN} or the date {YYYY}{MM}{DD}",
            ));
        }
        let _ = version;
        Ok(Self {
            raw: pattern.to_string(),
            base: base.to_path_buf(),
            components,
            uses_date,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Every span present, ascending, each with the shards of its newest version. `format`
    /// forces a format; otherwise each shard's extension must name one (others are skipped).
    pub fn discover(
        &self,
        ready_marker: bool,
        format: Option<Format>,
    ) -> Result<Vec<DiscoveredSpan>, DataError> {
        let mut found: Vec<(Captures, PathBuf)> = Vec::new();
        self.walk(&self.base, 0, Captures::default(), &mut found)?;
        // span -> version -> shards
        let mut by_span: BTreeMap<u64, BTreeMap<Option<u64>, Vec<PathBuf>>> = BTreeMap::new();
        for (c, path) in found {
            let span = if self.uses_date {
                let (y, m, d) = (
                    c.year.unwrap_or(0),
                    c.month.unwrap_or(0),
                    c.day.unwrap_or(0),
                );
                if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
                    tracing::warn!(path = %path.display(), "skipping file: not a valid date");
                    continue;
                }
                let days = days_from_civil(y as i64, m, d);
                if days < 0 {
                    tracing::warn!(path = %path.display(), "skipping file: date before 1970-01-01");
                    continue;
                }
                days as u64
            } else {
                c.span.unwrap_or(0)
            };
            by_span
                .entry(span)
                .or_default()
                .entry(c.version)
                .or_default()
                .push(path);
        }
        let mut out = Vec::new();
        for (span, mut versions) in by_span {
            let Some((version, mut paths)) = versions.pop_last() else {
                continue;
            };
            paths.sort();
            let mut shards = Vec::new();
            for path in paths {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Some(f) = format.or_else(|| Format::from_path(&path)) else {
                    continue;
                };
                let size = match fs::metadata(&path) {
                    Ok(m) if m.is_file() => m.len(),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(DataError::Stat { path, source }),
                };
                shards.push(SpanFile {
                    name,
                    path,
                    format: f,
                    size,
                });
            }
            if shards.is_empty() {
                continue;
            }
            if ready_marker && !Self::ready(&shards) {
                tracing::debug!(span, "span has no ready marker yet");
                continue;
            }
            out.push(DiscoveredSpan {
                span,
                version,
                shards,
            });
        }
        Ok(out)
    }

    /// Spans after the watermark id (see [`DiscoveredSpan::id`]); `None` means all.
    pub fn after(
        &self,
        watermark: Option<&str>,
        ready_marker: bool,
        format: Option<Format>,
    ) -> Result<Vec<DiscoveredSpan>, DataError> {
        let mut spans = self.discover(ready_marker, format)?;
        if let Some(w) = watermark {
            spans.retain(|s| s.id().as_str() > w);
        }
        Ok(spans)
    }

    /// The rolling window of the last `k` spans up to and including span `last` (for replay).
    pub fn rolling_window(
        &self,
        last: u64,
        k: usize,
        format: Option<Format>,
    ) -> Result<Vec<DiscoveredSpan>, DataError> {
        let mut spans = self.discover(false, format)?;
        spans.retain(|s| s.span <= last);
        let skip = spans.len().saturating_sub(k);
        Ok(spans.split_off(skip))
    }

    fn ready(shards: &[SpanFile]) -> bool {
        let all_marked = shards.iter().all(|s| {
            let mut m = s.path.clone().into_os_string();
            m.push(".ready");
            Path::new(&m).exists()
        });
        let success = shards
            .first()
            .and_then(|s| s.path.parent())
            .map(|p| p.join("_SUCCESS").exists())
            .unwrap_or(false);
        all_marked || success
    }

    fn walk(
        &self,
        dir: &Path,
        depth: usize,
        caps: Captures,
        out: &mut Vec<(Captures, PathBuf)>,
    ) -> Result<(), DataError> {
        let last = depth + 1 == self.components.len();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if depth > 0 && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(DataError::ListDir {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| DataError::ListDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !data_name(&name, last) {
                continue;
            }
            let chars: Vec<char> = name.chars().collect();
            let Some(c) = match_tokens(&self.components[depth], &chars, caps.clone()) else {
                continue;
            };
            let path = entry.path();
            if last {
                out.push((c, path));
            } else if path.is_dir() {
                self.walk(&path, depth + 1, c, out)?;
            }
        }
        Ok(())
    }
}

/// The ready rule on names: hidden, underscore-prefixed and temporary names are never data.
fn data_name(name: &str, file: bool) -> bool {
    if name.starts_with('.') || name.starts_with('_') {
        return false;
    }
    if file {
        let lower = name.to_ascii_lowercase();
        if [".tmp", ".partial", ".ready"]
            .iter()
            .any(|s| lower.ends_with(s))
        {
            return false;
        }
    }
    true
}

fn set(slot: &mut Option<u64>, v: u64) -> bool {
    match slot {
        Some(old) => *old == v,
        None => {
            *slot = Some(v);
            true
        }
    }
}

/// Matches a component's tokens against a name, returning the captures on success.
fn match_tokens(tokens: &[Token], s: &[char], caps: Captures) -> Option<Captures> {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty().then_some(caps);
    };
    match first {
        Token::Literal(c) => {
            if s.first() == Some(c) {
                match_tokens(rest, &s[1..], caps)
            } else {
                None
            }
        }
        Token::Question => {
            if s.is_empty() {
                None
            } else {
                match_tokens(rest, &s[1..], caps)
            }
        }
        Token::Star => (0..=s.len()).find_map(|i| match_tokens(rest, &s[i..], caps.clone())),
        Token::Year | Token::Month | Token::Day => {
            let width = if *first == Token::Year { 4 } else { 2 };
            if s.len() < width || !s[..width].iter().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let v: u64 = s[..width].iter().collect::<String>().parse().ok()?;
            let mut c = caps;
            let slot = match first {
                Token::Year => &mut c.year,
                Token::Month => &mut c.month,
                _ => &mut c.day,
            };
            if !set(slot, v) {
                return None;
            }
            match_tokens(rest, &s[width..], c)
        }
        Token::Span | Token::Version => {
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            // Longest first, then shorter (a following literal digit may need some).
            (1..=digits.min(19)).rev().find_map(|n| {
                let v: u64 = s[..n].iter().collect::<String>().parse().ok()?;
                let mut c = caps.clone();
                let slot = if *first == Token::Span {
                    &mut c.span
                } else {
                    &mut c.version
                };
                if !set(slot, v) {
                    return None;
                }
                match_tokens(rest, &s[n..], c)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "a,y\n1,1\n").unwrap();
    }

    #[test]
    fn spans_versions_and_shard_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(r, "span-1/v1/part-0.csv");
        touch(r, "span-1/v2/part-0.csv");
        touch(r, "span-1/v2/part-1.csv");
        touch(r, "span-2/v1/part-0.csv");
        touch(r, "span-2/v1/.part-1.csv.tmp");
        touch(r, "span-2/v1/_SUCCESS");
        touch(r, "span-x/v1/part-0.csv");
        touch(r, "span-10/v3/part-0.csv");
        let p = SpanPattern::parse("span-{SPAN}/v{VERSION}/*.csv", r).unwrap();
        let spans = p.discover(false, None).unwrap();
        let got: Vec<(u64, Option<u64>, usize)> = spans
            .iter()
            .map(|s| (s.span, s.version, s.shards.len()))
            .collect();
        assert_eq!(
            got,
            vec![(1, Some(2), 2), (2, Some(1), 1), (10, Some(3), 1)]
        );
        assert_eq!(spans[0].uri(), r.join("span-1/v2"));
        assert!(spans[0].id() < spans[2].id(), "ids sort like span numbers");
        let after = p.after(Some(&span_id(1)), false, None).unwrap();
        assert_eq!(
            after.iter().map(|s| s.span).collect::<Vec<_>>(),
            vec![2, 10]
        );
        let window = p.rolling_window(10, 2, None).unwrap();
        assert_eq!(
            window.iter().map(|s| s.span).collect::<Vec<_>>(),
            vec![2, 10]
        );
        // ready markers: only span 2 has _SUCCESS
        let ready = p.discover(true, None).unwrap();
        assert_eq!(ready.iter().map(|s| s.span).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn date_placeholders_map_to_days_since_epoch() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(r, "log-20170101.csv");
        touch(r, "log-20170102.csv");
        touch(r, "log-20170231.csv"); // not a date
        let p = SpanPattern::parse("log-{YYYY}{MM}{DD}.csv", r).unwrap();
        let spans = p.discover(false, None).unwrap();
        assert_eq!(
            spans.iter().map(|s| s.span).collect::<Vec<_>>(),
            vec![17167, 17168]
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    #[test]
    fn bad_patterns_are_named() {
        let r = Path::new(".");
        for (p, msg) in [
            ("x-{SPAM}.csv", "unknown placeholder"),
            ("x-{SPAN.csv", "unclosed"),
            ("x.csv", "exactly one of"),
            ("{SPAN}-{YYYY}{MM}{DD}", "exactly one of"),
            ("{YYYY}{MM}.csv", "all of"),
            ("../{SPAN}", "not allowed"),
            ("/abs/{SPAN}", "relative"),
        ] {
            let e = SpanPattern::parse(p, r).unwrap_err().to_string();
            assert!(e.contains(msg) && e.contains(p), "{p}: {e}");
        }
    }

    #[test]
    fn repeated_placeholder_must_agree() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "3/part-3.csv");
        touch(d.path(), "4/part-5.csv");
        let p = SpanPattern::parse("{SPAN}/part-{SPAN}.csv", d.path()).unwrap();
        let spans = p.discover(false, None).unwrap();
        assert_eq!(spans.iter().map(|s| s.span).collect::<Vec<_>>(), vec![3]);
    }

    proptest::proptest! {
        #[test]
        fn matcher_never_panics(name in ".{0,30}", pat in "[a-z*?{}SPANVERIO0-9-]{0,12}") {
            if let Ok(p) = SpanPattern::parse(&pat, Path::new(".")) {
                let chars: Vec<char> = name.chars().collect();
                let _ = match_tokens(&p.components[0], &chars, Captures::default());
            }
        }
    }
}
