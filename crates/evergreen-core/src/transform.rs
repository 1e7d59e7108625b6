//! The feature transform: raw record → hashed sparse feature vector (+ label).
//!
//! Hashing uses xxh3 (stable across versions and platforms): each column has a seed derived from
//! its name, and a value is hashed with its column's seed, so `a=x` and `b=x` land in different
//! buckets. The exact recipe is part of the model format; see `docs/formats.md`. A spec with
//! `representation = "raw"` (tree models) emits no bias, and categorical indices keep the low
//! 32 bits of their hash instead of being reduced to `hash_bits` ("Raw representation").

use crate::record::{RawRecord, RawValue};
use crate::spec::{FeatureSpec, NumericColumn, Representation, SpecError};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A sparse feature vector over `2^hash_bits` buckets (raw representation: categorical indices
/// span all of `u32`). Indices may repeat (hash collisions).
/// Each entry also carries the id of the field (spec column) that produced it, see
/// [`FeatureSpec::field_names`](crate::FeatureSpec::field_names); linear models ignore it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureVector {
    /// Bucket indices.
    pub indices: Vec<u32>,
    /// Values, parallel to `indices`.
    pub values: Vec<f32>,
    /// Field ids, parallel to `indices`.
    pub fields: Vec<u16>,
}

impl FeatureVector {
    /// Empty vector with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            indices: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends one entry of field 0.
    pub fn push(&mut self, index: u32, value: f32) {
        self.push_field(0, index, value);
    }

    /// Appends one entry of field `field`.
    #[inline]
    pub fn push_field(&mut self, field: u16, index: u32, value: f32) {
        self.indices.push(index);
        self.values.push(value);
        self.fields.push(field);
    }

    /// Removes every entry, keeping the allocations.
    pub fn clear(&mut self) {
        self.indices.clear();
        self.values.clear();
        self.fields.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Iterates `(index, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.indices
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }
}

/// Why a record could not be transformed. `reason()` is a stable code used as a metric label
/// and in quarantine files.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// A numeric column held text that is not a number.
    #[error("column {column:?}: value {value:?} is not a number")]
    NotNumeric {
        /// Column name.
        column: String,
        /// The offending text.
        value: String,
    },
    /// A numeric column held NaN or an infinity.
    #[error("column {column:?}: value {value} is not finite")]
    NonFinite {
        /// Column name.
        column: String,
        /// The offending value.
        value: f64,
    },
    /// `log` was requested for a value <= -1.
    #[error("column {column:?}: log(1+x) undefined for x = {value}")]
    LogDomain {
        /// Column name.
        column: String,
        /// The offending value.
        value: f64,
    },
    /// A column that takes one value held several.
    #[error("column {column:?}: expected one value, got {len}")]
    NotScalar {
        /// Column name.
        column: String,
        /// Number of values.
        len: usize,
    },
    /// A value of the wrong kind for its column (e.g. weighted sparse features in a numeric
    /// column, or a nested list).
    #[error("column {column:?}: {found} value where {expected} was expected")]
    WrongKind {
        /// Column name.
        column: String,
        /// What the column takes.
        expected: &'static str,
        /// What it held.
        found: &'static str,
    },
    /// A finite value that does not fit a feature value (f32) after its transform.
    #[error("column {column:?}: value {value} is out of range for a feature value (f32)")]
    OutOfRange {
        /// Column name (`column:feature` for sparse features).
        column: String,
        /// The value after log/standardize.
        value: f64,
    },
    /// A cross of multi-valued columns would produce more features than allowed.
    #[error("cross {columns:?}: {count} combinations exceed the limit of {MAX_CROSS_PRODUCT}")]
    CrossTooLarge {
        /// Crossed columns.
        columns: String,
        /// Combinations it would produce.
        count: usize,
    },
    /// The label column is absent or empty.
    #[error("label column {column:?} is missing")]
    MissingLabel {
        /// Label column name.
        column: String,
    },
    /// The label value is not one of the accepted values.
    #[error("label column {column:?}: value {value} is not a valid binary label")]
    BadLabel {
        /// Label column name.
        column: String,
        /// The offending value, as text.
        value: String,
    },
}

impl TransformError {
    /// Stable short reason code (metric label, quarantine field).
    pub fn reason(&self) -> &'static str {
        match self {
            TransformError::NotNumeric { .. } => "not_numeric",
            TransformError::NonFinite { .. } => "non_finite",
            TransformError::LogDomain { .. } => "log_domain",
            TransformError::MissingLabel { .. } => "missing_label",
            TransformError::BadLabel { .. } => "bad_label",
            TransformError::NotScalar { .. } => "not_scalar",
            TransformError::WrongKind { .. } => "wrong_kind",
            TransformError::CrossTooLarge { .. } => "cross_too_large",
            TransformError::OutOfRange { .. } => "out_of_range",
        }
    }
}

/// Most features one cross of multi-valued columns may produce for one record.
pub const MAX_CROSS_PRODUCT: usize = 1024;

fn kind_name(v: &RawValue) -> &'static str {
    match v {
        RawValue::Missing => "missing",
        RawValue::Num(_) => "float",
        RawValue::Int(_) => "int64",
        RawValue::Str(_) => "string",
        RawValue::Bytes(_) => "bytes",
        RawValue::List(_) => "list",
        RawValue::Weighted(_) => "weighted sparse",
    }
}

/// Decimal text of an integer in a stack buffer (the canonical bytes of `RawValue::Int`,
/// without the allocation of `to_string`).
fn int_text(i: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = i.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        // 20 digits never occur with a sign: |i64::MIN| has 19.
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

/// Exact powers of ten as `f64` (every one up to 10^22 is representable).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The value of a plain decimal (`[+-]digits[.digits]`, at least one digit) whose digits, read
/// as an integer `m`, satisfy `m <= 2^53` with at most 22 after the point: then `m` and `10^e`
/// are exact and one correctly rounded division gives exactly what `str::parse::<f64>` gives
/// (Clinger's fast path), without its general machinery. `None` for anything else (exponents,
/// `inf`, `NaN`, longer numbers), which the caller parses the general way.
fn parse_plain_decimal(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut count = 0usize;
    let mut frac: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                if count == 19 {
                    return None;
                }
                m = m * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if frac.is_none() => frac = Some(i),
            _ => return None,
        }
    }
    if count == 0 || m > 1 << 53 {
        return None;
    }
    let e = frac.map_or(0, |p| digits.len() - p - 1);
    let x = m as f64 / *POW10.get(e)?;
    Some(if negative { -x } else { x })
}

/// One value as the transform reads it: a value of a [`RawRecord`], or a non-empty text cell
/// of a table row read in place (a CSV cell, which as a record value would be
/// `RawValue::Str`). An empty cell is no value at all, as `RawValue::Missing` is.
#[derive(Clone, Copy)]
enum ValueRef<'a> {
    Raw(&'a RawValue),
    Text(&'a str),
}

impl ValueRef<'_> {
    fn kind_name(self) -> &'static str {
        match self {
            ValueRef::Raw(v) => kind_name(v),
            ValueRef::Text(_) => "string",
        }
    }
}

/// Calls `f` with the canonical bytes of one scalar (see [`RawValue::canonical_bytes`]).
fn with_scalar_bytes(v: &RawValue, f: &mut impl FnMut(&[u8])) {
    match v {
        RawValue::Str(s) => f(s.as_bytes()),
        RawValue::Bytes(b) => f(b),
        RawValue::Int(i) => f(int_text(*i, &mut [0u8; 20])),
        other => {
            if let Some(b) = other.canonical_bytes() {
                f(&b)
            }
        }
    }
}

/// Visits the non-empty canonical values of a categorical column: one for a scalar, each
/// element of a list.
fn for_each_categorical(
    column: &str,
    v: Option<ValueRef<'_>>,
    mut f: impl FnMut(&[u8]),
) -> Result<(), TransformError> {
    let wrong = |found: &RawValue| TransformError::WrongKind {
        column: column.to_string(),
        expected: "a categorical value or a list of them",
        found: kind_name(found),
    };
    let mut visit = |b: &[u8]| {
        if !b.is_empty() {
            f(b)
        }
    };
    match v {
        None | Some(ValueRef::Raw(RawValue::Missing)) => {}
        Some(ValueRef::Text(s)) => visit(s.as_bytes()),
        Some(ValueRef::Raw(RawValue::List(items))) => {
            for item in items {
                match item {
                    RawValue::Missing => {}
                    RawValue::List(_) | RawValue::Weighted(_) => return Err(wrong(item)),
                    scalar => with_scalar_bytes(scalar, &mut visit),
                }
            }
        }
        Some(ValueRef::Raw(w @ RawValue::Weighted(_))) => return Err(wrong(w)),
        Some(ValueRef::Raw(scalar)) => with_scalar_bytes(scalar, &mut visit),
    }
    Ok(())
}

/// The one value of a column that takes a scalar: a one-element list counts as its element, an
/// empty list as missing.
fn scalar_of<'a>(
    column: &str,
    v: Option<ValueRef<'a>>,
) -> Result<Option<ValueRef<'a>>, TransformError> {
    match v {
        None | Some(ValueRef::Raw(RawValue::Missing)) => Ok(None),
        Some(ValueRef::Raw(RawValue::List(items))) => match items.as_slice() {
            [] => Ok(None),
            [one] => scalar_of(column, Some(ValueRef::Raw(one))),
            many => Err(TransformError::NotScalar {
                column: column.to_string(),
                len: many.len(),
            }),
        },
        Some(ValueRef::Raw(w @ RawValue::Weighted(_))) => Err(TransformError::WrongKind {
            column: column.to_string(),
            expected: "one value",
            found: kind_name(w),
        }),
        Some(v) => Ok(Some(v)),
    }
}

/// Where the transform finds the value of each spec column.
trait Source {
    /// The value of the label column.
    fn label(&self, t: &Transformer) -> Option<ValueRef<'_>>;
    /// The value of categorical column `i`.
    fn categorical(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>>;
    /// The value of numeric column `i`.
    fn numeric(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>>;
    /// The value of sparse column `i`.
    fn sparse(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>>;
}

/// A record: values looked up by column name.
impl Source for RawRecord {
    fn label(&self, t: &Transformer) -> Option<ValueRef<'_>> {
        self.get(&t.spec.label.column).map(ValueRef::Raw)
    }
    fn categorical(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.get(&t.spec.categorical[i].name).map(ValueRef::Raw)
    }
    fn numeric(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.get(&t.numeric[i].col.name).map(ValueRef::Raw)
    }
    fn sparse(&self, t: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.get(&t.spec.sparse[i].name).map(ValueRef::Raw)
    }
}

/// Positions of a transformer's columns among the columns of a table (a CSV header),
/// computed once per file by [`Transformer::layout`]; `None` where the table lacks the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    label: Option<usize>,
    categorical: Vec<Option<usize>>,
    numeric: Vec<Option<usize>>,
    sparse: Vec<Option<usize>>,
}

/// A row of text cells laid out as a [`Layout`] says.
struct Cells<'a, 'c, F> {
    layout: &'a Layout,
    cell: F,
    /// The cells outlive the row (so a value read through `&self` may borrow them).
    cells: std::marker::PhantomData<&'c str>,
}

impl<'c, F: Fn(usize) -> &'c str> Cells<'_, 'c, F> {
    fn at(&self, column: Option<usize>) -> Option<ValueRef<'c>> {
        let text = (self.cell)(column?);
        (!text.is_empty()).then_some(ValueRef::Text(text))
    }
}

impl<'c, F: Fn(usize) -> &'c str> Source for Cells<'_, 'c, F> {
    fn label(&self, _: &Transformer) -> Option<ValueRef<'_>> {
        self.at(self.layout.label)
    }
    fn categorical(&self, _: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.at(self.layout.categorical[i])
    }
    fn numeric(&self, _: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.at(self.layout.numeric[i])
    }
    fn sparse(&self, _: &Transformer, i: usize) -> Option<ValueRef<'_>> {
        self.at(self.layout.sparse[i])
    }
}

struct CompiledNumeric {
    col: NumericColumn,
    seed: u64,
}

struct CompiledCross {
    /// For each crossed column: index into categorical (Ok) or numeric (Err) lists.
    parts: Vec<Part>,
    seed: u64,
}

#[derive(Clone, Copy)]
enum Part {
    Categorical(usize),
    Numeric(usize),
}

/// A validated spec compiled for fast, repeated use. Cheap to share behind an `Arc`.
pub struct Transformer {
    spec: FeatureSpec,
    mask: u64,
    /// Mask of categorical indices: `mask` when hashed; the low 32 bits (no reduction to
    /// `hash_bits`) when raw.
    cat_mask: u64,
    /// Whether the bias entry is emitted: `bias = true` and hashed.
    emit_bias: bool,
    bias_index: u32,
    categorical_seeds: Vec<u64>,
    numeric: Vec<CompiledNumeric>,
    crosses: Vec<CompiledCross>,
    sparse_seeds: Vec<u64>,
    /// Per categorical column: whether a cross uses it.
    crossed: Vec<bool>,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("spec", &self.spec)
            .finish()
    }
}

fn column_seed(kind: &str, name: &str) -> u64 {
    let mut buf = Vec::with_capacity(kind.len() + name.len() + 1);
    buf.extend_from_slice(kind.as_bytes());
    buf.push(0x1f);
    buf.extend_from_slice(name.as_bytes());
    xxh3_64(&buf)
}

impl Transformer {
    /// Validates and compiles a spec. Only the rules the transform relies on are checked here, not
    /// the config-only rules of [`FeatureSpec::validate`], so that a spec stored in a version
    /// published by an older build keeps loading.
    pub fn new(spec: FeatureSpec) -> Result<Self, SpecError> {
        spec.validate_for_transform("features")?;
        let mask = (1u64 << spec.hash_bits) - 1;
        let bias_index = (column_seed("bias", "") & mask) as u32;
        let raw = spec.representation == Representation::Raw;
        let cat_mask = if raw { u64::from(u32::MAX) } else { mask };
        let emit_bias = spec.bias && !raw;
        let categorical_seeds = spec
            .categorical
            .iter()
            .map(|c| column_seed("cat", &c.name))
            .collect();
        let numeric = spec
            .numeric
            .iter()
            .map(|c| CompiledNumeric {
                col: c.clone(),
                seed: column_seed("num", &c.name),
            })
            .collect();
        let crosses: Vec<CompiledCross> = spec
            .cross
            .iter()
            .map(|x| {
                let parts = x
                    .columns
                    .iter()
                    .map(|name| {
                        if let Some(i) = spec.categorical.iter().position(|c| c.name == *name) {
                            Part::Categorical(i)
                        } else {
                            let i = spec
                                .numeric
                                .iter()
                                .position(|c| c.name == *name)
                                .expect("validated: cross column exists");
                            Part::Numeric(i)
                        }
                    })
                    .collect();
                CompiledCross {
                    parts,
                    seed: column_seed("cross", &x.columns.join("\u{1f}")),
                }
            })
            .collect();
        let sparse_seeds = spec
            .sparse
            .iter()
            .map(|c| column_seed("sparse", &c.name))
            .collect();
        let crossed = (0..spec.categorical.len())
            .map(|i| {
                crosses.iter().any(|x: &CompiledCross| {
                    x.parts
                        .iter()
                        .any(|p| matches!(p, Part::Categorical(j) if *j == i))
                })
            })
            .collect();
        Ok(Self {
            spec,
            mask,
            cat_mask,
            emit_bias,
            bias_index,
            categorical_seeds,
            numeric,
            crosses,
            sparse_seeds,
            crossed,
        })
    }

    /// The spec this transformer was compiled from.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    fn bucket(&self, h: u64) -> u32 {
        (h & self.mask) as u32
    }

    /// Numeric value of a column after default/log/standardize, `None` when missing.
    fn numeric_value(
        &self,
        n: &CompiledNumeric,
        v: Option<ValueRef<'_>>,
    ) -> Result<Option<f64>, TransformError> {
        let col = &n.col;
        let parse = |text: &str| -> Result<Option<f64>, TransformError> {
            let t = text.trim();
            if t.is_empty() {
                Ok(None)
            } else if let Some(x) = parse_plain_decimal(t) {
                Ok(Some(x))
            } else {
                t.parse::<f64>()
                    .map(Some)
                    .map_err(|_| TransformError::NotNumeric {
                        column: col.name.clone(),
                        value: text.to_string(),
                    })
            }
        };
        let v = match v {
            // A text cell, the common case: no list or kind to look at.
            Some(ValueRef::Text(s)) => Some(ValueRef::Text(s)),
            v => scalar_of(&col.name, v)?,
        };
        let raw = match v {
            None | Some(ValueRef::Raw(RawValue::Missing)) => None,
            Some(ValueRef::Text(s)) => parse(s)?,
            Some(ValueRef::Raw(RawValue::Num(x))) => Some(*x),
            Some(ValueRef::Raw(RawValue::Int(i))) => Some(*i as f64),
            Some(ValueRef::Raw(RawValue::Str(s))) => parse(s)?,
            Some(ValueRef::Raw(RawValue::Bytes(b))) => parse(&String::from_utf8_lossy(b))?,
            Some(other) => {
                return Err(TransformError::WrongKind {
                    column: col.name.clone(),
                    expected: "a number",
                    found: other.kind_name(),
                });
            }
        };
        let Some(mut x) = raw.or(col.default) else {
            return Ok(None);
        };
        if !x.is_finite() {
            return Err(TransformError::NonFinite {
                column: col.name.clone(),
                value: x,
            });
        }
        if col.log {
            if x <= -1.0 {
                return Err(TransformError::LogDomain {
                    column: col.name.clone(),
                    value: x,
                });
            }
            x = x.ln_1p();
        }
        if let Some(s) = col.standardize {
            x = (x - s.mean) / s.std;
        }
        // Standardize can overflow, and the value must fit the f32 of a feature value (it is
        // bucketized otherwise, where any finite f64 will do).
        if !x.is_finite() || (col.buckets.is_none() && !(x as f32).is_finite()) {
            return Err(TransformError::OutOfRange {
                column: col.name.clone(),
                value: x,
            });
        }
        Ok(Some(x))
    }

    fn bucket_of(boundaries: &[f64], x: f64) -> usize {
        boundaries.partition_point(|b| *b <= x)
    }

    /// Transforms the feature columns of a record (the label, if present, is ignored).
    pub fn features(&self, r: &RawRecord) -> Result<FeatureVector, TransformError> {
        self.features_of(r)
    }

    /// The positions of this transformer's columns among `columns` (a table's header).
    pub fn layout<S: AsRef<str>>(&self, columns: &[S]) -> Layout {
        let at = |name: &str| columns.iter().position(|c| c.as_ref() == name);
        Layout {
            label: at(&self.spec.label.column),
            categorical: self.spec.categorical.iter().map(|c| at(&c.name)).collect(),
            numeric: self.numeric.iter().map(|n| at(&n.col.name)).collect(),
            sparse: self.spec.sparse.iter().map(|c| at(&c.name)).collect(),
        }
    }

    /// Features and label of a row of text cells (`cell(i)`: the cell of the table's column
    /// `i`, as laid out by `layout`, which this transformer made), exactly as [`Self::example`]
    /// transforms the record of the row (a non-empty cell a `RawValue::Str`, an empty one
    /// missing), without building it.
    pub fn example_of_cells<'c>(
        &self,
        layout: &Layout,
        cell: impl Fn(usize) -> &'c str,
    ) -> Result<(FeatureVector, f32), TransformError> {
        let mut out = FeatureVector::default();
        let y = self.example_of_cells_into(layout, cell, &mut out)?;
        Ok((out, y))
    }

    /// [`Self::example_of_cells`] into `out` (cleared first; its allocations are reused):
    /// returns the label. `out` is unspecified after an error.
    pub fn example_of_cells_into<'c>(
        &self,
        layout: &Layout,
        cell: impl Fn(usize) -> &'c str,
        out: &mut FeatureVector,
    ) -> Result<f32, TransformError> {
        let row = Cells {
            layout,
            cell,
            cells: std::marker::PhantomData,
        };
        let y = self.label_of(&row)?;
        self.features_into(&row, out)?;
        Ok(y)
    }

    fn features_of<S: Source>(&self, r: &S) -> Result<FeatureVector, TransformError> {
        let mut out = FeatureVector::with_capacity(
            1 + self.spec.categorical.len() + self.numeric.len() + self.crosses.len(),
        );
        self.features_into(r, &mut out)?;
        Ok(out)
    }

    fn features_into<S: Source>(
        &self,
        r: &S,
        out: &mut FeatureVector,
    ) -> Result<(), TransformError> {
        out.clear();
        // Raw representation (validated: no crosses, sparse columns or buckets): no bias, and
        // categorical indices masked by `cat_mask` instead of `mask`; numeric entries as hashed.
        if self.emit_bias {
            out.push_field(0, self.bias_index, 1.0);
        }
        let ncat = self.categorical_seeds.len();
        let nnum = self.numeric.len();
        let ncross = self.crosses.len();
        // Canonical values per categorical column, kept only for the columns that are crossed
        // (no allocation without crosses).
        let crossing = !self.crosses.is_empty();
        let mut cat_values: Vec<Vec<Vec<u8>>> = if crossing {
            vec![Vec::new(); self.categorical_seeds.len()]
        } else {
            Vec::new()
        };
        for (i, (c, seed)) in self
            .spec
            .categorical
            .iter()
            .zip(&self.categorical_seeds)
            .enumerate()
        {
            let mut kept = if self.crossed[i] {
                cat_values.get_mut(i)
            } else {
                None
            };
            let mask = self.cat_mask;
            let field = (1 + i) as u16;
            for_each_categorical(&c.name, r.categorical(self, i), |b| {
                out.push_field(field, (xxh3_64_with_seed(b, *seed) & mask) as u32, 1.0);
                if let Some(kept) = kept.as_deref_mut() {
                    kept.push(b.to_vec());
                }
            })?;
        }
        // Bucket index per numeric column, kept for crosses.
        let mut buckets: Vec<Option<usize>> = if crossing {
            vec![None; self.numeric.len()]
        } else {
            Vec::new()
        };
        for (i, n) in self.numeric.iter().enumerate() {
            let Some(x) = self.numeric_value(n, r.numeric(self, i))? else {
                continue;
            };
            let field = (1 + ncat + i) as u16;
            match &n.col.buckets {
                Some(b) => {
                    let k = Self::bucket_of(b, x);
                    if let Some(slot) = buckets.get_mut(i) {
                        *slot = Some(k);
                    }
                    out.push_field(
                        field,
                        self.bucket(xxh3_64_with_seed(&(k as u64).to_le_bytes(), n.seed)),
                        1.0,
                    );
                }
                None => out.push_field(field, self.bucket(n.seed), x as f32),
            }
        }
        for (xi, (x, spec)) in self.crosses.iter().zip(&self.spec.cross).enumerate() {
            let field = (1 + ncat + nnum + xi) as u16;
            // Each part contributes one or more values; the cross is their cartesian product.
            let mut count = 1usize;
            for part in &x.parts {
                let n = match *part {
                    Part::Categorical(i) => cat_values[i].len(),
                    Part::Numeric(i) => buckets[i].is_some() as usize,
                };
                count = count.saturating_mul(n);
            }
            if count == 0 {
                continue;
            }
            if count > MAX_CROSS_PRODUCT {
                return Err(TransformError::CrossTooLarge {
                    columns: spec.columns.join(","),
                    count,
                });
            }
            let mut hashes = vec![x.seed];
            for part in &x.parts {
                let mut next = Vec::with_capacity(hashes.len());
                for h in &hashes {
                    match *part {
                        Part::Categorical(i) => {
                            for v in &cat_values[i] {
                                next.push(xxh3_64_with_seed(v, *h));
                            }
                        }
                        Part::Numeric(i) => {
                            let k = buckets[i].expect("counted above");
                            next.push(xxh3_64_with_seed(
                                &(k as u64).to_le_bytes(),
                                h ^ 0x9e37_79b9_7f4a_7c15,
                            ));
                        }
                    }
                }
                hashes = next;
            }
            for h in hashes {
                out.push_field(field, self.bucket(h), 1.0);
            }
        }
        for (si, (c, seed)) in self.spec.sparse.iter().zip(&self.sparse_seeds).enumerate() {
            let field = (1 + ncat + nnum + ncross + si) as u16;
            match r.sparse(self, si) {
                None | Some(ValueRef::Raw(RawValue::Missing)) => {}
                Some(ValueRef::Raw(RawValue::Weighted(pairs))) => {
                    for (name, v) in pairs {
                        if !v.is_finite() {
                            return Err(TransformError::NonFinite {
                                column: format!("{}:{name}", c.name),
                                value: *v,
                            });
                        }
                        if !(*v as f32).is_finite() {
                            return Err(TransformError::OutOfRange {
                                column: format!("{}:{name}", c.name),
                                value: *v,
                            });
                        }
                        out.push_field(
                            field,
                            self.bucket(xxh3_64_with_seed(name.as_bytes(), *seed)),
                            *v as f32,
                        );
                    }
                }
                Some(other) => {
                    // Plain values (or lists of them) count as features of weight 1.
                    let mask = self.mask;
                    for_each_categorical(&c.name, Some(other), |b| {
                        out.push_field(field, (xxh3_64_with_seed(b, *seed) & mask) as u32, 1.0)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Reads the binary label of a record (1.0 positive, 0.0 negative).
    pub fn label(&self, r: &RawRecord) -> Result<f32, TransformError> {
        self.label_of(r)
    }

    fn label_of<S: Source>(&self, r: &S) -> Result<f32, TransformError> {
        let l = &self.spec.label;
        let column = || l.column.clone();
        let label = match r.label(self) {
            Some(ValueRef::Text(s)) => Some(ValueRef::Text(s)),
            v => scalar_of(&l.column, v)?,
        };
        let canonical: std::borrow::Cow<'_, str> = match label {
            None | Some(ValueRef::Raw(RawValue::Missing)) => {
                return Err(TransformError::MissingLabel { column: column() });
            }
            Some(ValueRef::Text(s)) => s.into(),
            Some(ValueRef::Raw(v)) => match v.canonical_text() {
                Some(t) => t,
                None => {
                    return Err(TransformError::WrongKind {
                        column: column(),
                        expected: "one label value",
                        found: kind_name(v),
                    });
                }
            },
        };
        let text = canonical.trim();
        if text.is_empty() {
            return Err(TransformError::MissingLabel { column: column() });
        }
        let bad = || TransformError::BadLabel {
            column: column(),
            value: text.to_string(),
        };
        if !l.positive.is_empty() {
            if l.positive.iter().any(|p| p == text) {
                return Ok(1.0);
            }
            if l.negative.is_empty() || l.negative.iter().any(|n| n == text) {
                return Ok(0.0);
            }
            return Err(bad());
        }
        match text {
            "1" | "1.0" | "true" | "True" | "TRUE" => Ok(1.0),
            "0" | "0.0" | "-1" | "-1.0" | "false" | "False" | "FALSE" => Ok(0.0),
            _ => Err(bad()),
        }
    }

    /// Features and label of a training record.
    pub fn example(&self, r: &RawRecord) -> Result<(FeatureVector, f32), TransformError> {
        let y = self.label(r)?;
        Ok((self.features(r)?, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Plain decimals read by the fast path are exactly what `str::parse` reads, and what
        /// it declines the caller parses the general way.
        #[test]
        fn plain_decimals_parse_exactly_as_std(
            sign in proptest::sample::select(vec!["", "-", "+"]),
            int in "[0-9]{0,12}",
            point in proptest::bool::ANY,
            frac in "[0-9]{0,12}",
        ) {
            let t = format!("{sign}{int}{}{frac}", if point { "." } else { "" });
            let fast = parse_plain_decimal(&t);
            match (fast, t.parse::<f64>()) {
                (Some(a), Ok(b)) => proptest::prop_assert_eq!(a.to_bits(), b.to_bits(), "{}", t),
                (Some(a), Err(_)) => proptest::prop_assert!(false, "{} fast-parsed to {} but std refuses it", t, a),
                (None, _) => {}
            }
        }
    }

    #[test]
    fn plain_decimal_fast_path_takes_the_usual_cells_and_declines_the_rest() {
        for t in [
            "0",
            "1",
            "-2",
            "+3.5",
            "0.3687",
            ".5",
            "5.",
            "-0",
            "9007199254740992",
        ] {
            assert_eq!(
                parse_plain_decimal(t).map(f64::to_bits),
                t.parse::<f64>().ok().map(f64::to_bits),
                "{t}"
            );
            assert!(parse_plain_decimal(t).is_some(), "{t}");
        }
        for t in [
            "",
            "-",
            ".",
            "1e5",
            "inf",
            "NaN",
            "1.2.3",
            "9007199254740993",
            "0x10",
            " 1",
            "1_000",
        ] {
            assert!(parse_plain_decimal(t).is_none(), "{t}");
        }
    }

    fn spec() -> FeatureSpec {
        serde_json::from_value(serde_json::json!({
            "hash_bits": 12,
            "label": {"column": "y"},
            "categorical": [{"name": "site"}],
            "numeric": [
                {"name": "price", "log": true, "standardize": {"mean": 1.0, "std": 2.0}},
                {"name": "hour", "buckets": [6.0, 12.0, 18.0]}
            ],
            "cross": [{"columns": ["site", "hour"]}]
        }))
        .unwrap()
    }

    fn rec(pairs: &[(&str, RawValue)]) -> RawRecord {
        pairs.iter().cloned().collect()
    }

    #[test]
    fn every_entry_carries_its_columns_field_id() {
        let mut sp = spec();
        sp.sparse = vec![serde_json::from_value(serde_json::json!({"name": "ns"})).unwrap()];
        let t = Transformer::new(sp).unwrap();
        assert_eq!(
            t.spec().field_names(),
            ["bias", "site", "price", "hour", "site_x_hour", "ns"]
        );
        let r = rec(&[
            (
                "site",
                RawValue::List(vec![RawValue::Str("a".into()), RawValue::Str("b".into())]),
            ),
            ("price", RawValue::Num(3.0)),
            ("hour", RawValue::Num(7.0)),
            ("ns", RawValue::Weighted(vec![("k".into(), 2.0)])),
        ]);
        let v = t.features(&r).unwrap();
        // bias, 2 sites, price, hour bucket, 2 crosses, one sparse pair
        assert_eq!(v.fields, [0, 1, 1, 2, 3, 4, 4, 5]);
        assert_eq!(v.fields.len(), v.indices.len());
    }

    #[test]
    fn text_and_number_inputs_give_identical_vectors() {
        let t = Transformer::new(spec()).unwrap();
        let csv = rec(&[
            ("site", RawValue::Str("a.com".into())),
            ("price", RawValue::Str("3.25".into())),
            ("hour", RawValue::Str("13".into())),
            ("y", RawValue::Str("1".into())),
        ]);
        let json = rec(&[
            ("hour", RawValue::Num(13.0)),
            ("price", RawValue::Num(3.25)),
            ("site", RawValue::Str("a.com".into())),
        ]);
        let (a, y) = t.example(&csv).unwrap();
        assert_eq!(y, 1.0);
        assert_eq!(a, t.features(&json).unwrap());
        // bias + site + price + hour bucket + cross
        assert_eq!(a.len(), 5);
        let price = a.values[2] as f64;
        assert!((price - ((3.25f64).ln_1p() - 1.0) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn missing_values_contribute_nothing_and_skip_crosses() {
        let t = Transformer::new(spec()).unwrap();
        let v = t
            .features(&rec(&[("site", RawValue::Str("b".into()))]))
            .unwrap();
        assert_eq!(v.len(), 2); // bias + site
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let t = Transformer::new(spec()).unwrap();
        let e = t
            .features(&rec(&[("price", RawValue::Str("cheap".into()))]))
            .unwrap_err();
        assert_eq!(e.reason(), "not_numeric");
        let e = t
            .features(&rec(&[("price", RawValue::Num(f64::NAN))]))
            .unwrap_err();
        assert_eq!(e.reason(), "non_finite");
        let e = t
            .features(&rec(&[("price", RawValue::Num(-2.0))]))
            .unwrap_err();
        assert_eq!(e.reason(), "log_domain");
        assert_eq!(t.label(&rec(&[])).unwrap_err().reason(), "missing_label");
        assert_eq!(
            t.label(&rec(&[("y", RawValue::Str("maybe".into()))]))
                .unwrap_err()
                .reason(),
            "bad_label"
        );
    }

    #[test]
    fn bucket_boundaries_are_left_closed() {
        assert_eq!(Transformer::bucket_of(&[6.0, 12.0], 5.9), 0);
        assert_eq!(Transformer::bucket_of(&[6.0, 12.0], 6.0), 1);
        assert_eq!(Transformer::bucket_of(&[6.0, 12.0], 100.0), 2);
    }

    #[test]
    fn explicit_label_values() {
        let mut s = spec();
        s.label.positive = vec!["UP".into()];
        s.label.negative = vec!["DOWN".into()];
        let t = Transformer::new(s).unwrap();
        let l = |v: &str| t.label(&rec(&[("y", RawValue::Str(v.into()))]));
        assert_eq!(l("UP").unwrap(), 1.0);
        assert_eq!(l("DOWN").unwrap(), 0.0);
        assert!(l("SIDEWAYS").is_err());
    }

    /// Golden: the hashing recipe (`docs/formats.md`, "Feature hashing") is part of the model
    /// format. A model's weights are indexed by these buckets, and the trainer that wrote it and
    /// every server that will ever load it must compute the same indices for the same record.
    /// If this test fails, the change breaks every stored model: do not update the constants,
    /// restore the recipe (a new recipe needs a new, opt-in spec field).
    #[test]
    fn golden_hashed_indices_are_stable() {
        let t = Transformer::new(crate::spec::tests::golden_spec()).unwrap();
        let r = rec(&[
            ("site", RawValue::Str("example.com".into())),
            ("device", RawValue::Num(3.0)),
            ("price", RawValue::Str("3.25".into())),
            ("hour", RawValue::Num(13.0)),
            ("clicked", RawValue::Str("yes".into())),
        ]);
        let (v, y) = t.example(&r).unwrap();
        assert_eq!(y, 1.0);
        // bias, site, device, price, hour bucket 2, cross site×hour, cross site×device
        assert_eq!(v.indices, GOLDEN_INDICES);
        let price = ((3.25f64.ln_1p() - 1.5) / 0.75) as f32;
        assert_eq!(v.values.len(), GOLDEN_INDICES.len());
        for (i, x) in v.values.iter().enumerate() {
            let want = if i == 3 { price } else { 1.0 };
            assert!((x - want).abs() <= 1e-6, "value {i}: {x} != {want}");
        }
    }

    const GOLDEN_INDICES: [u32; 7] = [35468, 61692, 13780, 18507, 36180, 31860, 31379];

    #[test]
    fn stored_spec_with_negative_only_still_compiles_with_default_values() {
        // Older builds accepted `negative` without `positive` (and ignored it); versions they
        // published must keep loading, with the default label values.
        let mut s = spec();
        s.label.negative = vec!["DOWN".into()];
        assert!(s.validate("features").is_err());
        let t = Transformer::new(s).unwrap();
        let l = |v: &str| t.label(&rec(&[("y", RawValue::Str(v.into()))]));
        assert_eq!(l("1").unwrap(), 1.0);
        assert_eq!(l("0").unwrap(), 0.0);
        assert!(l("DOWN").is_err());
    }

    #[test]
    fn default_label_values_are_exactly_the_documented_ones() {
        let t = Transformer::new(spec()).unwrap();
        let l = |v: &str| t.label(&rec(&[("y", RawValue::Str(v.into()))]));
        for v in ["1", "1.0", "true", "True", "TRUE", " 1 "] {
            assert_eq!(l(v).unwrap(), 1.0, "{v}");
        }
        for v in ["0", "0.0", "-1", "-1.0", "false", "False", "FALSE"] {
            assert_eq!(l(v).unwrap(), 0.0, "{v}");
        }
        for v in ["yes", "no", "tRUE", "2", "1.00", "+1"] {
            assert_eq!(l(v).unwrap_err().reason(), "bad_label", "{v}");
        }
        assert_eq!(t.label(&rec(&[("y", RawValue::Num(1.0))])).unwrap(), 1.0);
        assert_eq!(t.label(&rec(&[("y", RawValue::Num(-1.0))])).unwrap(), 0.0);
    }

    #[test]
    fn lists_ints_bytes_and_sparse_columns() {
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
            "hash_bits": 16,
            "bias": false,
            "label": {"column": "y"},
            "categorical": [{"name": "tags"}, {"name": "user"}],
            "numeric": [{"name": "price"}],
            "cross": [{"columns": ["tags", "user"]}],
            "sparse": [{"name": "ns"}]
        }))
        .unwrap();
        let t = Transformer::new(spec).unwrap();
        let r = rec(&[
            (
                "tags",
                RawValue::List(vec![
                    RawValue::Bytes(b"a".to_vec()),
                    RawValue::Str("b".into()),
                    RawValue::Bytes(vec![]),
                ]),
            ),
            ("user", RawValue::Int(9_007_199_254_740_993)), // 2^53 + 1: exact as int64
            ("price", RawValue::List(vec![RawValue::Num(2.5)])),
            (
                "ns",
                RawValue::Weighted(vec![("f1".into(), 0.5), ("f2".into(), 2.0)]),
            ),
            ("y", RawValue::List(vec![RawValue::Int(1)])),
        ]);
        let (v, y) = t.example(&r).unwrap();
        assert_eq!(y, 1.0);
        // 2 tags + user + price + 2 crosses (a×user, b×user) + 2 sparse
        assert_eq!(v.len(), 8, "{v:?}");
        assert_eq!(&v.values[3..4], &[2.5]);
        assert_eq!(&v.values[6..], &[0.5, 2.0]);
        // An int64 id and its text hash alike; a neighbouring id does not collide by rounding.
        let as_text = rec(&[("user", RawValue::Str("9007199254740993".into()))]);
        let neighbour = rec(&[("user", RawValue::Int(9_007_199_254_740_992))]);
        let only_user = |r: &RawRecord| t.features(r).unwrap().indices;
        assert_eq!(
            only_user(&as_text),
            only_user(&rec(&[("user", RawValue::Int(9_007_199_254_740_993))]))
        );
        assert_ne!(only_user(&as_text), only_user(&neighbour));
    }

    #[test]
    fn shape_and_kind_errors_are_typed() {
        let t = Transformer::new(spec()).unwrap();
        let two = RawValue::List(vec![RawValue::Num(1.0), RawValue::Num(2.0)]);
        let e = t.features(&rec(&[("price", two)])).unwrap_err();
        assert_eq!(e.reason(), "not_scalar");
        let w = RawValue::Weighted(vec![("a".into(), 1.0)]);
        let e = t.features(&rec(&[("price", w.clone())])).unwrap_err();
        assert_eq!(e.reason(), "wrong_kind");
        let e = t.features(&rec(&[("site", w)])).unwrap_err();
        assert_eq!(e.reason(), "wrong_kind");
        let many: Vec<RawValue> = (0..2000).map(RawValue::Int).collect();
        let e = t
            .features(&rec(&[
                ("site", RawValue::List(many)),
                ("hour", RawValue::Num(3.0)),
            ]))
            .unwrap_err();
        assert!(
            matches!(e, TransformError::CrossTooLarge { count: 2000, .. }),
            "{e}"
        );
        let e = t.label(&rec(&[("y", RawValue::List(vec![]))])).unwrap_err();
        assert_eq!(e.reason(), "missing_label");
    }

    proptest::proptest! {
        #[test]
        fn int_text_matches_to_string(i in proptest::num::i64::ANY) {
            let mut buf = [0u8; 20];
            let expected = i.to_string();
            proptest::prop_assert_eq!(int_text(i, &mut buf), expected.as_bytes());
        }
    }

    #[test]
    fn values_beyond_f32_are_out_of_range_not_infinite() {
        let t = Transformer::new(spec()).unwrap();
        // price has log + standardize: ln(1 + 1e300) is small, so use the sparse and plain paths.
        let spec: FeatureSpec = serde_json::from_value(serde_json::json!({
            "hash_bits": 8, "label": {"column": "y"},
            "numeric": [{"name": "x"}, {"name": "s", "standardize": {"mean": 0.0, "std": 1e-300}}],
            "sparse": [{"name": "w"}]
        }))
        .unwrap();
        let u = Transformer::new(spec).unwrap();
        let e = u
            .features(&rec(&[("x", RawValue::Num(2.59e46))]))
            .unwrap_err();
        assert_eq!(e.reason(), "out_of_range");
        let e = u.features(&rec(&[("s", RawValue::Num(1e10))])).unwrap_err();
        assert_eq!(e.reason(), "out_of_range", "standardize overflow");
        let w = RawValue::Weighted(vec![("f".into(), -3.8e56)]);
        let e = u.features(&rec(&[("w", w)])).unwrap_err();
        assert_eq!(e.reason(), "out_of_range");
        // Bucketized columns take any finite value.
        assert!(t.features(&rec(&[("hour", RawValue::Num(1e300))])).is_ok());
    }

    #[test]
    fn int_text_extremes() {
        for i in [0, -1, 9, 10, i64::MIN, i64::MAX] {
            assert_eq!(int_text(i, &mut [0u8; 20]), i.to_string().as_bytes());
        }
    }

    fn raw_spec() -> FeatureSpec {
        serde_json::from_value(serde_json::json!({
            "hash_bits": 8,
            "representation": "raw",
            "label": {"column": "y"},
            "categorical": [{"name": "site"}, {"name": "device"}],
            "numeric": [
                {"name": "price", "log": true, "standardize": {"mean": 1.0, "std": 2.0}},
                {"name": "age", "default": 30.0},
                {"name": "score"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn raw_representation_emits_values_and_unmasked_category_ids_without_bias() {
        let t = Transformer::new(raw_spec()).unwrap();
        assert!(
            t.spec().bias,
            "bias defaults to true and is accepted in raw mode"
        );
        let cat = |name: &str, v: &str| xxh3_64_with_seed(v.as_bytes(), column_seed("cat", name));
        // A value whose hash has bits set above hash_bits (nearly all of them with 8 bits).
        let site = (0..100)
            .map(|i| format!("s{i}"))
            .find(|v| cat("site", v) as u32 >= 1 << 16)
            .unwrap();
        let r = rec(&[
            ("site", RawValue::Str(site.clone())),
            ("device", RawValue::Int(3)),
            ("price", RawValue::Str("3.25".into())),
            // age missing: its default; score missing: nothing.
            ("y", RawValue::Str("1".into())),
        ]);
        let (v, y) = t.example(&r).unwrap();
        assert_eq!(y, 1.0);
        assert_eq!(v.fields, [1, 2, 3, 4]);
        let mask = (1u64 << 8) - 1;
        assert_eq!(
            v.indices,
            [
                cat("site", &site) as u32,
                cat("device", "3") as u32,
                (column_seed("num", "price") & mask) as u32,
                (column_seed("num", "age") & mask) as u32,
            ]
        );
        assert!(v.indices[0] > mask as u32, "category index not masked");
        let price = ((3.25f64.ln_1p() - 1.0) / 2.0) as f32;
        assert_eq!(v.values, [1.0, 1.0, price, 30.0]);
        // Numeric entries are exactly those of the hashed representation.
        let mut hashed = raw_spec();
        hashed.representation = Representation::Hashed;
        let h = Transformer::new(hashed).unwrap().features(&r).unwrap();
        assert_eq!(h.fields[0], 0, "hashed mode keeps its bias");
        assert_eq!(&h.indices[3..], &v.indices[2..]);
        assert_eq!(&h.values[3..], &v.values[2..]);
        assert_eq!(h.indices[1], (u64::from(v.indices[0]) & mask) as u32);
        // Text cells go through the same transform.
        let header = ["y", "price", "device", "site", "age", "score"];
        let layout = t.layout(&header);
        let row = ["1", "3.25", "3", site.as_str(), "", ""];
        let (c, cy) = t.example_of_cells(&layout, |i| row[i]).unwrap();
        assert_eq!((c, cy), (v, y));
        // Two values that share a bucket with 8 bits keep distinct ids.
        let values: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        let (a, b) = values
            .iter()
            .enumerate()
            .flat_map(|(i, a)| values[i + 1..].iter().map(move |b| (a, b)))
            .find(|(a, b)| cat("site", a) & mask == cat("site", b) & mask)
            .expect("a bucket collision among 100 values in 256 buckets");
        let id = |v: &str| {
            t.features(&rec(&[("site", RawValue::Str(v.into()))]))
                .unwrap()
        };
        assert_ne!(id(a).indices, id(b).indices);
    }

    proptest::proptest! {
        #[test]
        fn indices_stay_in_range(site in ".{0,12}", price in -0.99f64..1e6, hour in -10f64..40.0) {
            let t = Transformer::new(spec()).unwrap();
            let v = t.features(&rec(&[
                ("site", RawValue::Str(site)),
                ("price", RawValue::Num(price)),
                ("hour", RawValue::Num(hour)),
            ])).unwrap();
            for (i, x) in v.iter() {
                proptest::prop_assert!((i as usize) < t.spec().dim());
                proptest::prop_assert!(x.is_finite());
            }
        }
    }
}
