//! Raw records: the values of one example before the feature transform.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// One raw value as a source or a request delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// Absent, empty or JSON `null`.
    Missing,
    /// A floating-point number (JSON number, tf.Example float, NaN/Infinity token).
    Num(f64),
    /// A 64-bit integer (tf.Example int64): kept exact, so large ids hash without rounding.
    Int(i64),
    /// A string (every CSV cell arrives as a string; numeric columns parse it).
    Str(String),
    /// Bytes that need not be UTF-8 (tf.Example bytes_list).
    Bytes(Vec<u8>),
    /// Several values of one feature (tf.Example lists): a categorical column becomes multi-hot,
    /// a numeric column accepts exactly one value.
    List(Vec<RawValue>),
    /// Named, weighted sparse features (a VW namespace, LibSVM/LibFFM `index:value` pairs).
    Weighted(Vec<(String, f64)>),
}

impl RawValue {
    /// Canonical bytes of a scalar value, used for hashing categorical values: a JSON number `3`,
    /// an int64 `3` and a CSV cell `"3"` hash the same, and so do `Str("a")` and `Bytes(b"a")`.
    /// `None` for missing values, lists and weighted features.
    pub fn canonical_bytes(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            RawValue::Missing | RawValue::List(_) | RawValue::Weighted(_) => None,
            RawValue::Str(s) => Some(Cow::Borrowed(s.as_bytes())),
            RawValue::Bytes(b) => Some(Cow::Borrowed(b.as_slice())),
            RawValue::Num(x) => Some(Cow::Owned(format!("{x}").into_bytes())),
            RawValue::Int(i) => Some(Cow::Owned(i.to_string().into_bytes())),
        }
    }

    /// Canonical text of a scalar value (bytes decoded lossily), see [`Self::canonical_bytes`].
    pub fn canonical_text(&self) -> Option<Cow<'_, str>> {
        match self.canonical_bytes()? {
            Cow::Borrowed(b) => Some(String::from_utf8_lossy(b)),
            Cow::Owned(b) => Some(Cow::Owned(String::from_utf8_lossy(&b).into_owned())),
        }
    }
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Missing => f.write_str("<missing>"),
            RawValue::Num(x) => write!(f, "{x}"),
            RawValue::Int(i) => write!(f, "{i}"),
            RawValue::Str(s) => write!(f, "{s:?}"),
            RawValue::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            RawValue::List(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            RawValue::Weighted(v) => {
                f.write_str("{")?;
                for (i, (k, x)) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {x}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A raw record: named values in source order. Lookups are linear; records are narrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRecord {
    fields: Vec<(FieldName, RawValue)>,
}

/// A field name. Shared (`Arc<str>`) so that a reader can intern the names of its columns and
/// build records without allocating a string per field.
pub type FieldName = Arc<str>;

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
    pub fn insert(&mut self, name: impl Into<FieldName>, value: RawValue) {
        let name = name.into();
        if let Some(slot) = self
            .fields
            .iter_mut()
            .find(|(n, _)| Arc::ptr_eq(n, &name) || *n == name)
        {
            slot.1 = value;
        } else {
            self.fields.push((name, value));
        }
    }

    /// Appends a field without looking for an existing one of the same name: for readers whose
    /// names are unique by construction (a CSV header checked for duplicates).
    pub fn push_unique(&mut self, name: FieldName, value: RawValue) {
        debug_assert!(self.get(&name).is_none(), "duplicate field {name}");
        self.fields.push((name, value));
    }

    /// The value of a field, `None` when the record has no such field.
    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// All fields in order.
    pub fn fields(&self) -> &[(FieldName, RawValue)] {
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

impl<S: Into<FieldName>> FromIterator<(S, RawValue)> for RawRecord {
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
        assert_eq!(RawValue::Int(3).canonical_bytes().unwrap(), &b"3"[..]);
        assert_eq!(
            RawValue::Int(i64::MIN).canonical_text().unwrap(),
            "-9223372036854775808"
        );
        assert_eq!(
            RawValue::Bytes(b"3".to_vec()).canonical_bytes(),
            RawValue::Str("3".into()).canonical_bytes()
        );
        assert!(
            RawValue::List(vec![RawValue::Int(1)])
                .canonical_bytes()
                .is_none()
        );
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
