//! Sparse text formats: Vowpal Wabbit, LibSVM and LibFFM, one example per line.
//!
//! All three readers share the line handling of the JSON Lines reader: lines end with `\n` (a
//! `\r` before it is dropped), line numbers are 1-based and count every line, blank lines (only
//! spaces, tabs, `\r`) are skipped, a UTF-8 byte order mark at the start of the file is ignored,
//! a line that is not UTF-8 is a bad record with reason [`reason::INVALID_UTF8`], and a line that
//! does not follow its format is a bad record with reason [`reason::MALFORMED_LINE`] whose detail
//! names the offending token; reading continues with the next line. Tokens are separated by
//! ASCII whitespace. Numbers are parsed as `f64` (`1`, `+1`, `-0.5`, `1e-3`, `.5`; also `nan` and
//! `inf`, which the transform then rejects with its own reasons).
//!
//! # Mapping to raw records
//!
//! A feature spec reads these records with `label = { column = "label" }` and one
//! `[[features.sparse]]` column per weighted field below. Fields appear in the record in the order
//! listed, namespaces and LibFFM fields in the order of their first appearance on the line.
//!
//! ## Vowpal Wabbit
//!
//! `[label [importance [base]]] [tag]|namespace[:scale] feature[:value] ... |namespace2 ...`
//!
//! - `label` ([`RawValue::Num`]): the first token before the first `|`. VW's binary labels `-1`
//!   and `1` canonicalize to `"-1"` and `"1"`, which the default label rule reads as negative and
//!   positive. A line without a label (starting with `|`, or with only a tag before it) has no
//!   `label` field, so the transform reports it as missing.
//! - `importance` (Num): the second token, when present; `base` (Num): the third.
//! - `tag` ([`RawValue::Str`]): the last token before the first `|` when it starts with `'` (which
//!   is stripped), or when it is not a number and is either the third or later token or touches
//!   the `|` (`1 mytag|f ...`). Unlike VW, a *number* touching the `|` (`1|f a`) is read as the
//!   label, not as a tag.
//! - Each namespace is a [`RawValue::Weighted`] field named by the text right after `|` up to `:`
//!   or whitespace; `|` followed directly by whitespace (or `:scale`) is the namespace `default`.
//!   A feature without `:value` has value 1; `name:value` splits at the first `:` (the name may be
//!   empty, as in `|price :0.23`); the namespace's scale multiplies every value. A namespace that
//!   appears twice on a line has its pairs merged, in order. Feature names are kept as text (the
//!   transform hashes them). A namespace named `label`, `importance`, `base` or `tag` would clash
//!   with those fields and makes the line malformed.
//! - String feature values, as VW 9 reads them: `city:paris` is the feature `city^paris` with
//!   value 1 (not scaled by the namespace, as in VW). A value is a string when it has no numeric
//!   prefix (`paris`, `-paris`, `.x`, `e5`); one that starts like a number but is not one
//!   (`-1e3x`, `1.5e`) makes the line malformed, where VW would silently take the prefix; so do
//!   an empty value and a value with another `:`.
//! - A line without `|` is a labelled example without features.
//!
//! Not supported: multi-line examples (blank lines simply separate nothing) and non-scalar labels (multiclass,
//! cost-sensitive, contextual bandit), which are malformed because the label is not a number.
//!
//! ## LibSVM
//!
//! `label [qid:n] index:value index:value ... [# comment]`
//!
//! - `label` (Num): `0`, `1`, `-1`, `+1`, or any number.
//! - `qid` (Num): SVMlight's query id, when the token after the label is `qid:n`.
//! - `features` (Weighted): one pair per `index:value` token, named by the index text as written
//!   (split at the first `:`), in order; repeated indices are kept.
//!
//! Everything from `#` on is a comment; a line that is only a comment is skipped like a blank
//! line. A token without `:`, an empty index or a value that is not a number is malformed.
//!
//! ## LibFFM
//!
//! `label field:index:value ...`
//!
//! - `label` (Num).
//! - `field_<field>` (Weighted) for each field, with pairs (index text, value); tokens of the same
//!   field are merged in order.
//!
//! A token that is not exactly three non-empty `:`-separated parts with a numeric value is
//! malformed.

use crate::reader::InputFile;
use std::path::Path;

use evergreen_core::{RawRecord, RawValue};

use crate::DataError;
use crate::reader::{Line, LineReader, RowSource, SourceRecord, Step, reason};

/// Opens a Vowpal Wabbit text span.
pub(crate) fn open_vw(file: InputFile, _path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Ok(Box::new(Lines::new(file, parse_vw)))
}

/// Opens a LibSVM text span.
pub(crate) fn open_libsvm(file: InputFile, _path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Ok(Box::new(Lines::new(file, parse_libsvm)))
}

/// Opens a LibFFM text span.
pub(crate) fn open_libffm(file: InputFile, _path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Ok(Box::new(Lines::new(file, parse_libffm)))
}

/// Parses one non-blank line: `Ok(None)` when the line holds no example (a LibSVM comment),
/// `Err(detail)` when it is malformed.
type ParseLine = fn(&str) -> Result<Option<RawRecord>, String>;

/// The three formats over the shared line reader.
struct Lines {
    lines: LineReader,
    parse: ParseLine,
}

impl Lines {
    fn new(file: InputFile, parse: ParseLine) -> Self {
        Lines {
            lines: LineReader::new(file),
            parse,
        }
    }
}

impl RowSource for Lines {
    fn step(&mut self) -> Step {
        loop {
            let (line, text) = match self.lines.next_line() {
                Line::Done(step) => return step,
                Line::Text(line, text) => (line, text),
            };
            if text.bytes().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match (self.parse)(text) {
                Ok(None) => continue,
                Ok(Some(record)) => {
                    return Step::Record(SourceRecord {
                        line,
                        record,
                        raw: text.to_string(),
                    });
                }
                Err(detail) => {
                    return Step::Bad {
                        line,
                        reason: reason::MALFORMED_LINE,
                        detail,
                        raw: text.to_string(),
                    };
                }
            }
        }
    }
}

/// A token for a detail message: quoted, long ones cut at 80 characters.
fn shown(token: &str) -> String {
    const MAX: usize = 80;
    match token.char_indices().nth(MAX) {
        Some((i, _)) => format!("'{}…'", &token[..i]),
        None => format!("'{token}'"),
    }
}

/// A number token; `None` when it is not one.
fn number(token: &str) -> Option<f64> {
    token.parse::<f64>().ok()
}

/// Whether `text` starts like a number (an optional sign, then a digit or `.` and a digit):
/// VW reads such a value as a number, anything else as a string value.
fn numeric_prefix(text: &str) -> bool {
    let t = text.strip_prefix(['+', '-']).unwrap_or(text);
    let t = t.strip_prefix('.').unwrap_or(t);
    t.starts_with(|c: char| c.is_ascii_digit())
}

/// A number token, or a detail naming its role.
fn required_number(role: &str, token: &str) -> Result<f64, String> {
    number(token).ok_or_else(|| format!("{role} {} is not a number", shown(token)))
}

/// Adds `pairs` to the weighted field `name`, merging with an earlier one of the same name.
fn merge(groups: &mut Vec<(String, Vec<(String, f64)>)>, name: &str, pairs: Vec<(String, f64)>) {
    match groups.iter_mut().find(|(n, _)| n == name) {
        Some((_, existing)) => existing.extend(pairs),
        None => groups.push((name.to_string(), pairs)),
    }
}

// ---------------------------------------------------------------------------------------------
// Vowpal Wabbit

/// Field names the label section uses; no namespace may take them.
const VW_RESERVED: [&str; 4] = ["label", "importance", "base", "tag"];

/// The name of the namespace written as `|` followed by whitespace.
const VW_DEFAULT_NAMESPACE: &str = "default";

fn parse_vw(text: &str) -> Result<Option<RawRecord>, String> {
    let (head, namespaces) = match text.find('|') {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let mut record = RawRecord::new();

    // The label section: [label [importance [base]]] [tag].
    let touches_bar = namespaces.is_some() && head.ends_with(|c: char| !c.is_ascii_whitespace());
    let mut tokens: Vec<&str> = head.split_ascii_whitespace().collect();
    let mut tag = None;
    if let Some(&last) = tokens.last() {
        if let Some(t) = last.strip_prefix('\'') {
            tag = Some(t);
        } else if number(last).is_none() && (tokens.len() >= 3 || touches_bar) {
            tag = Some(last);
        }
        if tag.is_some() {
            tokens.pop();
        }
    }
    if tokens.len() > 3 {
        return Err(format!(
            "{} tokens before the first '|': expected at most label, importance, base and tag",
            tokens.len() + usize::from(tag.is_some())
        ));
    }
    for (role, token) in ["label", "importance", "base"].iter().zip(&tokens) {
        record.insert(*role, RawValue::Num(required_number(role, token)?));
    }
    if let Some(t) = tag {
        record.insert("tag", RawValue::Str(t.to_string()));
    }

    // The namespaces.
    let Some(namespaces) = namespaces else {
        return Ok(Some(record));
    };
    let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for segment in namespaces.split('|') {
        let header_len = segment
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(segment.len());
        let (header, features) = segment.split_at(header_len);
        let (name, scale) = match header.split_once(':') {
            Some((name, scale)) => {
                let scale = number(scale)
                    .ok_or_else(|| format!("namespace {}: scale is not a number", shown(header)))?;
                (name, scale)
            }
            None => (header, 1.0),
        };
        let name = if name.is_empty() {
            VW_DEFAULT_NAMESPACE
        } else {
            name
        };
        if VW_RESERVED.contains(&name) {
            return Err(format!(
                "namespace {} has the name of a reserved field (label, importance, base, tag)",
                shown(name)
            ));
        }
        let mut pairs = Vec::new();
        for token in features.split_ascii_whitespace() {
            match token.split_once(':') {
                Some((feature, value)) => match number(value) {
                    Some(v) => pairs.push((feature.to_string(), v * scale)),
                    None if !value.is_empty() && !value.contains(':') && !numeric_prefix(value) => {
                        pairs.push((format!("{feature}^{value}"), 1.0))
                    }
                    None => {
                        return Err(format!(
                            "feature {}: value is neither a number nor a string value",
                            shown(token)
                        ));
                    }
                },
                None => pairs.push((token.to_string(), scale)),
            }
        }
        merge(&mut groups, name, pairs);
    }
    for (name, pairs) in groups {
        record.insert(name, RawValue::Weighted(pairs));
    }
    Ok(Some(record))
}

// ---------------------------------------------------------------------------------------------
// LibSVM

fn parse_libsvm(text: &str) -> Result<Option<RawRecord>, String> {
    let body = text.split_once('#').map_or(text, |(body, _comment)| body);
    let mut tokens = body.split_ascii_whitespace().peekable();
    let Some(label) = tokens.next() else {
        return Ok(None);
    };
    let mut record = RawRecord::with_capacity(3);
    record.insert("label", RawValue::Num(required_number("label", label)?));
    if let Some(qid) = tokens.peek().and_then(|t| t.strip_prefix("qid:")) {
        let q = required_number("qid", qid)?;
        record.insert("qid", RawValue::Num(q));
        tokens.next();
    }
    let mut pairs = Vec::new();
    for token in tokens {
        let Some((index, value)) = token.split_once(':') else {
            return Err(format!(
                "feature {}: expected index:value (no ':')",
                shown(token)
            ));
        };
        if index.is_empty() {
            return Err(format!("feature {}: index is empty", shown(token)));
        }
        let value = number(value)
            .ok_or_else(|| format!("feature {}: value is not a number", shown(token)))?;
        pairs.push((index.to_string(), value));
    }
    record.insert("features", RawValue::Weighted(pairs));
    Ok(Some(record))
}

// ---------------------------------------------------------------------------------------------
// LibFFM

fn parse_libffm(text: &str) -> Result<Option<RawRecord>, String> {
    let mut tokens = text.split_ascii_whitespace();
    let Some(label) = tokens.next() else {
        return Ok(None);
    };
    let mut record = RawRecord::new();
    record.insert("label", RawValue::Num(required_number("label", label)?));
    let mut groups: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for token in tokens {
        let mut parts = token.splitn(3, ':');
        let (Some(field), Some(index), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "feature {}: expected field:index:value",
                shown(token)
            ));
        };
        if field.is_empty() {
            return Err(format!("feature {}: field is empty", shown(token)));
        }
        if index.is_empty() {
            return Err(format!("feature {}: index is empty", shown(token)));
        }
        let value = number(value)
            .ok_or_else(|| format!("feature {}: value is not a number", shown(token)))?;
        let name = format!("field_{field}");
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pairs)) => pairs.push((index.to_string(), value)),
            None => groups.push((name, vec![(index.to_string(), value)])),
        }
    }
    for (name, pairs) in groups {
        record.insert(name, RawValue::Weighted(pairs));
    }
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, f64)]) -> RawValue {
        RawValue::Weighted(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn vw_label_section_variants() {
        let r = parse_vw("1 2.5 'row7 |a x").unwrap().unwrap();
        assert_eq!(r.get("label"), Some(&RawValue::Num(1.0)));
        assert_eq!(r.get("importance"), Some(&RawValue::Num(2.5)));
        assert_eq!(r.get("tag"), Some(&RawValue::Str("row7".into())));

        let r = parse_vw("-1 mytag|a x").unwrap().unwrap();
        assert_eq!(r.get("label"), Some(&RawValue::Num(-1.0)));
        assert_eq!(r.get("tag"), Some(&RawValue::Str("mytag".into())));
        assert_eq!(r.get("importance"), None);

        let r = parse_vw("1 0.5 t3 |a x").unwrap().unwrap();
        assert_eq!(r.get("tag"), Some(&RawValue::Str("t3".into())));

        let r = parse_vw("1 2 0.1 |a x").unwrap().unwrap();
        assert_eq!(r.get("base"), Some(&RawValue::Num(0.1)));

        let r = parse_vw("1|a x").unwrap().unwrap();
        assert_eq!(r.get("label"), Some(&RawValue::Num(1.0)));
        assert_eq!(r.get("tag"), None);

        let r = parse_vw("onlytag|a x").unwrap().unwrap();
        assert_eq!(r.get("label"), None);
        assert_eq!(r.get("tag"), Some(&RawValue::Str("onlytag".into())));

        assert_eq!(
            parse_vw("1 abc |a x").unwrap_err(),
            "importance 'abc' is not a number"
        );
        assert_eq!(
            parse_vw("abc |a x").unwrap_err(),
            "label 'abc' is not a number"
        );
        assert!(parse_vw("1 2 3 4 |a").unwrap_err().contains("4 tokens"));
        assert!(parse_vw("1 2 3 4 'x |a").unwrap_err().contains("5 tokens"));
    }

    #[test]
    fn vw_namespaces() {
        let r = parse_vw("1 |u:2 a b:0.5 |  c |u d :3").unwrap().unwrap();
        assert_eq!(
            r.get("u"),
            Some(&w(&[("a", 2.0), ("b", 1.0), ("d", 1.0), ("", 3.0)]))
        );
        assert_eq!(r.get("default"), Some(&w(&[("c", 1.0)])));
        assert_eq!(r.len(), 3);
        assert!(parse_vw("1 |tag a").unwrap_err().contains("reserved field"));
        assert_eq!(
            parse_vw("1 |u:x a").unwrap_err(),
            "namespace 'u:x': scale is not a number"
        );
        assert_eq!(
            parse_vw("1 |u a:b:1").unwrap_err(),
            "feature 'a:b:1': value is neither a number nor a string value"
        );
    }

    /// Checked against VW 9.11's `--audit` output for the same lines: `a^city^paris:...:1`,
    /// `a^city^-paris`, `a^city^.x`, `a^city:...:5`, `a^^paris`, and a string value not scaled by
    /// the namespace (`|a:2 city:paris` → value 1).
    #[test]
    fn vw_string_feature_values() {
        let r = parse_vw("1 |a:2 city:paris n:2.5 plain c:-paris d:.x e:+5 :lima f:e5")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.get("a"),
            Some(&w(&[
                ("city^paris", 1.0),
                ("n", 5.0),
                ("plain", 2.0),
                ("c^-paris", 1.0),
                ("d^.x", 1.0),
                ("e", 10.0),
                ("^lima", 1.0),
                ("f^e5", 1.0),
            ]))
        );
        for bad in ["1 |a c:-1e3x", "1 |a c:1.5e", "1 |a c:", "1 |a c:.5x"] {
            assert!(
                parse_vw(bad).unwrap_err().contains("neither a number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn shown_cuts_long_tokens_at_a_char_boundary() {
        let long = "é".repeat(200);
        let s = shown(&long);
        assert!(s.ends_with("…'"));
        assert_eq!(s.chars().count(), 80 + 3);
    }

    #[test]
    fn libsvm_qid_and_comment_only_lines() {
        let r = parse_libsvm("2 qid:7 1:1 # c").unwrap().unwrap();
        assert_eq!(r.get("qid"), Some(&RawValue::Num(7.0)));
        assert_eq!(r.get("features"), Some(&w(&[("1", 1.0)])));
        assert_eq!(parse_libsvm("  # only a comment").unwrap(), None);
    }
}
