//! Raw records: the values of one example before the feature transform.

use std::fmt;

/// One raw value as a source or a request delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// Absent, empty or JSON `null`.
    Missing,
    /// A number (JSON number, or NaN/Infinity token).
    Num(f64),
    /// A string (every CSV cell arrives as a string; numeric columns parse it).
    Str(String),
}

impl RawValue {
    /// Canonical text of the value, used for hashing categorical values: a JSON number `3` and a
    /// CSV cell `"3"` hash the same.
    pub fn canonical_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            RawValue::Missing => None,
            RawValue::Str(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
            RawValue::Num(x) => Some(std::borrow::Cow::Owned(format!("{x}"))),
        }
    }
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Missing => f.write_str("<missing>"),
            RawValue::Num(x) => write!(f, "{x}"),
            RawValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A raw record: named values in source order. Lookups are linear; records are narrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRecord {
    fields: Vec<(String, RawValue)>,
}

impl RawRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            fields: Vec::with_capacity(n),
        }
    }

    /// Adds (or replaces) a field.
    pub fn insert(&mut self, name: impl Into<String>, value: RawValue) {
        let name = name.into();
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            self.fields.push((name, value));
        }
    }

    /// The value of a field, `None` when the record has no such field.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// All fields in order.
    pub fn fields(&self) -> &[(String, RawValue)] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the record has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl<S: Into<String>> FromIterator<(S, RawValue)> for RawRecord {
    fn from_iter<T: IntoIterator<Item = (S, RawValue)>>(iter: T) -> Self {
        let mut r = RawRecord::new();
        for (k, v) in iter {
            r.insert(k, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_of_integral_number_matches_csv_cell() {
        assert_eq!(RawValue::Num(3.0).canonical_text().unwrap(), "3");
        assert_eq!(RawValue::Num(0.5).canonical_text().unwrap(), "0.5");
        assert_eq!(RawValue::Str("3".into()).canonical_text().unwrap(), "3");
        assert!(RawValue::Missing.canonical_text().is_none());
    }

    #[test]
    fn insert_replaces_existing_field() {
        let mut r = RawRecord::new();
        r.insert("a", RawValue::Num(1.0));
        r.insert("a", RawValue::Num(2.0));
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("a"), Some(&RawValue::Num(2.0)));
    }
}
