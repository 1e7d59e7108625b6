//! The feature spec: which raw columns become which hashed features, and how the label is read.
//!
//! The spec is declared in the config, validated once, and saved inside every model version. A
//! server transforms requests with the spec stored in the version it serves.

use serde::{Deserialize, Serialize};

/// Largest supported `hash_bits` (2^30 buckets).
pub const MAX_HASH_BITS: u8 = 30;

/// The complete, serializable feature spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Features are hashed into `2^hash_bits` buckets.
    #[serde(default = "default_hash_bits")]
    pub hash_bits: u8,
    /// The label column and how to read it.
    pub label: LabelSpec,
    /// Add a constant bias feature (hashed representation only: a raw spec never emits it, and
    /// accepts `bias = true`, the default, without effect).
    #[serde(default = "default_true")]
    pub bias: bool,
    /// Categorical columns, hashed by value.
    #[serde(default)]
    pub categorical: Vec<CategoricalColumn>,
    /// Numeric columns, with optional log, standardize and bucketize.
    #[serde(default)]
    pub numeric: Vec<NumericColumn>,
    /// Crosses of categorical (or bucketized numeric) columns.
    #[serde(default)]
    pub cross: Vec<CrossColumn>,
    /// Sparse columns of named, weighted features (VW namespaces, LibSVM/LibFFM fields): each
    /// `name:value` pair becomes one hashed feature with that value. Skipped when empty so the
    /// fingerprint of specs without sparse columns is unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse: Vec<SparseColumn>,
    /// Which representation of the features the model consumes: hashed (linear, FM, FFM, deep
    /// models) or raw (tree models). Skipped when hashed, the default, so the fingerprint of
    /// every spec written before this field existed is unchanged.
    #[serde(default, skip_serializing_if = "Representation::is_hashed")]
    pub representation: Representation,
}

/// The representation of the features a model consumes (`features.representation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Representation {
    /// Every feature hashed into `2^hash_bits` buckets, with the bias and crosses: for linear,
    /// FM, FFM and deep models.
    #[default]
    Hashed,
    /// Raw values for tree models: each numeric column's value and each categorical value's
    /// identity (its full 32-bit hash, not reduced to `hash_bits`); no bias, crosses, sparse
    /// columns or numeric buckets.
    Raw,
}

impl Representation {
    /// True for [`Representation::Hashed`].
    pub fn is_hashed(&self) -> bool {
        *self == Representation::Hashed
    }
}

/// How a tree model reads the entries of one field (see [`FeatureSpec::field_kinds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// The field carries no information to split on (the bias, field 0).
    Unused,
    /// The entry's value is a number to split on by threshold; its index is constant.
    Numeric,
    /// The entry's index identifies a category (its value is `1.0`, or a weight for sparse
    /// columns); split by index.
    Categorical,
}

/// A sparse column: a record field holding named, weighted features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseColumn {
    /// Column (field) name: a VW namespace, `features` for LibSVM, `field_<n>` for LibFFM.
    pub name: String,
}

fn default_hash_bits() -> u8 {
    18
}
fn default_true() -> bool {
    true
}

/// How the binary label is read from its column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Name of the label column.
    pub column: String,
    /// Values (as text, after trimming) that mean the positive class. Empty: exactly `1`, `1.0`,
    /// `true`, `True` and `TRUE` are positive and exactly `0`, `0.0`, `-1`, `-1.0`, `false`,
    /// `False` and `FALSE` negative; anything else is a bad label.
    #[serde(default)]
    pub positive: Vec<String>,
    /// Values that mean the negative class; only allowed together with `positive` (validation
    /// rejects it alone). Empty means every value not in `positive` is negative.
    #[serde(default)]
    pub negative: Vec<String>,
}

/// A categorical column: each distinct value becomes one hashed indicator feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalColumn {
    /// Column name.
    pub name: String,
}

/// Standardization constants: `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardize {
    /// Mean subtracted.
    pub mean: f64,
    /// Standard deviation divided by (must be > 0).
    pub std: f64,
}

/// A numeric column and its transform, applied in this order: default for missing, `log`
/// (ln(1+x)), `standardize`, then `buckets` (which turns the value into a categorical bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericColumn {
    /// Column name.
    pub name: String,
    /// Apply ln(1 + x) (x must be > -1).
    #[serde(default)]
    pub log: bool,
    /// Standardize with fixed constants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardize: Option<Standardize>,
    /// Bucket boundaries (strictly increasing); the value becomes the index of its bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<f64>>,
    /// Value used when the column is missing; without it a missing value contributes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<f64>,
}

/// Alias kept for readability at call sites.
pub type NumericTransform = NumericColumn;

/// A cross of two or more categorical or bucketized columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossColumn {
    /// The crossed columns.
    pub columns: Vec<String>,
}

/// A spec that cannot be used; the message names the offending key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    /// Dotted path of the offending key, e.g. `features.numeric[2].standardize.std`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        key: key.into(),
        message: message.into(),
    }
}

impl FeatureSpec {
    /// Checks every rule of a spec declared in a config: the rules the transform relies on, plus
    /// rules that catch settings with no effect (`label.negative` without `label.positive`).
    /// `prefix` is the key path of the spec in its file (e.g. `features`), used in messages.
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        self.validate_for_transform(prefix)?;
        if self.label.positive.is_empty() && !self.label.negative.is_empty() {
            return Err(err(
                format!("{prefix}.label.negative"),
                "is only used together with `positive`: also list the values of the positive \
                 class in `positive`, or remove `negative` to use the default label values",
            ));
        }
        Ok(())
    }

    /// The rules the transform relies on (used by `Transformer::new`). Deliberately narrower than
    /// [`FeatureSpec::validate`]: specs stored in already published versions were validated by
    /// older builds, and one that an older build accepted must still load and serve.
    pub(crate) fn validate_for_transform(&self, prefix: &str) -> Result<(), SpecError> {
        if self.hash_bits == 0 || self.hash_bits > MAX_HASH_BITS {
            return Err(err(
                format!("{prefix}.hash_bits"),
                format!(
                    "must be between 1 and {MAX_HASH_BITS} (got {})",
                    self.hash_bits
                ),
            ));
        }
        if self.label.column.trim().is_empty() {
            return Err(err(format!("{prefix}.label.column"), "must not be empty"));
        }
        if self.field_count() > usize::from(u16::MAX) {
            return Err(err(
                prefix,
                format!(
                    "at most {} columns (got {})",
                    u16::MAX - 1,
                    self.field_count() - 1
                ),
            ));
        }
        if self.representation == Representation::Raw {
            if !self.cross.is_empty() {
                return Err(err(
                    format!("{prefix}.cross[0]"),
                    "not allowed with representation = \"raw\": trees learn interactions \
                     themselves; crosses are for hashed models",
                ));
            }
            if !self.sparse.is_empty() {
                return Err(err(
                    format!("{prefix}.sparse[0]"),
                    "not allowed with representation = \"raw\": sparse columns of weighted \
                     features are for hashed models",
                ));
            }
            if let Some(i) = self.numeric.iter().position(|c| c.buckets.is_some()) {
                return Err(err(
                    format!("{prefix}.numeric[{i}].buckets"),
                    "not allowed with representation = \"raw\": trees split numeric values \
                     themselves",
                ));
            }
        }
        if self.categorical.is_empty() && self.numeric.is_empty() && self.sparse.is_empty() {
            return Err(err(
                prefix,
                "declares no feature: add at least one [[features.categorical]], [[features.numeric]] or [[features.sparse]]",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let names = self
            .categorical
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{prefix}.categorical[{i}].name"), &c.name))
            .chain(
                self.numeric
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{prefix}.numeric[{i}].name"), &c.name)),
            )
            .chain(
                self.sparse
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{prefix}.sparse[{i}].name"), &c.name)),
            );
        for (key, name) in names {
            if name.trim().is_empty() {
                return Err(err(key, "must not be empty"));
            }
            if *name == self.label.column {
                return Err(err(
                    key,
                    format!("column {name:?} is the label column and cannot also be a feature"),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(err(key, format!("column {name:?} is declared twice")));
            }
        }
        for (i, c) in self.numeric.iter().enumerate() {
            let k = format!("{prefix}.numeric[{i}]");
            if let Some(s) = c.standardize {
                if !(s.std.is_finite() && s.std > 0.0) {
                    return Err(err(
                        format!("{k}.standardize.std"),
                        format!("must be a finite number > 0 (got {})", s.std),
                    ));
                }
                if !s.mean.is_finite() {
                    return Err(err(format!("{k}.standardize.mean"), "must be finite"));
                }
            }
            if let Some(b) = &c.buckets {
                if b.is_empty() {
                    return Err(err(
                        format!("{k}.buckets"),
                        "must list at least one boundary",
                    ));
                }
                if b.iter().any(|x| !x.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(err(
                        format!("{k}.buckets"),
                        "boundaries must be finite and strictly increasing",
                    ));
                }
            }
            if let Some(d) = c.default
                && !d.is_finite()
            {
                return Err(err(format!("{k}.default"), "must be finite"));
            }
        }
        for (i, x) in self.cross.iter().enumerate() {
            let k = format!("{prefix}.cross[{i}].columns");
            if x.columns.len() < 2 {
                return Err(err(k, "a cross needs at least two columns"));
            }
            for col in &x.columns {
                let categorical = self.categorical.iter().any(|c| c.name == *col);
                let bucketized = self
                    .numeric
                    .iter()
                    .any(|c| c.name == *col && c.buckets.is_some());
                if !categorical && !bucketized {
                    return Err(err(
                        &k,
                        format!(
                            "column {col:?} is not a declared categorical or bucketized numeric column"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A stable 64-bit fingerprint of the spec (xxh3 of its canonical JSON); stored in model
    /// headers so a model is never applied with another spec.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_vec(self).expect("spec serializes");
        xxhash_rust::xxh3::xxh3_64(&json)
    }

    /// Bits of the feature indices the transform emits: `hash_bits`, or 32 for the raw
    /// representation (category ids are not reduced to the hash table).
    pub fn index_bits(&self) -> u8 {
        match self.representation {
            Representation::Hashed => self.hash_bits,
            Representation::Raw => 32,
        }
    }

    /// Number of hash buckets.
    pub fn dim(&self) -> usize {
        1usize << self.hash_bits
    }

    /// Number of feature fields (see [`FeatureSpec::field_names`]).
    pub fn field_count(&self) -> usize {
        1 + self.categorical.len() + self.numeric.len() + self.cross.len() + self.sparse.len()
    }

    /// Field names by field id: every feature the transform emits carries the id of the column
    /// that produced it. Field 0 is the bias (present even when `bias = false`, then unused),
    /// then categorical, numeric, cross (columns joined by `_x_`) and sparse columns, each in
    /// spec order. Field-aware models (FFM, embeddings per field) size themselves by this.
    pub fn field_names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.field_count());
        out.push("bias".to_string());
        out.extend(self.categorical.iter().map(|c| c.name.clone()));
        out.extend(self.numeric.iter().map(|c| c.name.clone()));
        out.extend(self.cross.iter().map(|c| c.columns.join("_x_")));
        out.extend(self.sparse.iter().map(|c| c.name.clone()));
        out
    }

    /// Field kinds by field id, indexed exactly like [`FeatureSpec::field_names`]: field 0 (the
    /// bias, constant when emitted and never emitted in raw mode) is always
    /// [`FieldKind::Unused`]; categorical columns are [`FieldKind::Categorical`]; numeric columns
    /// [`FieldKind::Numeric`], or [`FieldKind::Categorical`] when bucketized (hashed mode only);
    /// crosses and sparse columns (hashed mode only) [`FieldKind::Categorical`].
    pub fn field_kinds(&self) -> Vec<FieldKind> {
        let mut out = Vec::with_capacity(self.field_count());
        out.push(FieldKind::Unused);
        out.extend(self.categorical.iter().map(|_| FieldKind::Categorical));
        out.extend(self.numeric.iter().map(|c| {
            if c.buckets.is_some() {
                FieldKind::Categorical
            } else {
                FieldKind::Numeric
            }
        }));
        out.extend(self.cross.iter().map(|_| FieldKind::Categorical));
        out.extend(self.sparse.iter().map(|_| FieldKind::Categorical));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec() -> FeatureSpec {
        serde_json::from_value(serde_json::json!({
            "label": {"column": "y"},
            "categorical": [{"name": "c"}],
            "numeric": [{"name": "x", "buckets": [0.0, 1.0]}],
            "cross": [{"columns": ["c", "x"]}]
        }))
        .unwrap()
    }

    #[test]
    fn valid_spec_passes() {
        spec().validate("features").unwrap();
    }

    #[test]
    fn label_as_feature_is_rejected_with_key() {
        let mut s = spec();
        s.categorical.push(CategoricalColumn { name: "y".into() });
        let e = s.validate("features").unwrap_err();
        assert_eq!(e.key, "features.categorical[1].name");
    }

    #[test]
    fn cross_of_plain_numeric_is_rejected() {
        let mut s = spec();
        s.numeric[0].buckets = None;
        let e = s.validate("features").unwrap_err();
        assert!(e.to_string().contains("features.cross[0].columns"), "{e}");
    }

    #[test]
    fn bad_std_and_buckets_are_rejected() {
        let mut s = spec();
        s.numeric[0].standardize = Some(Standardize {
            mean: 0.0,
            std: 0.0,
        });
        assert_eq!(
            s.validate("f").unwrap_err().key,
            "f.numeric[0].standardize.std"
        );
        let mut s = spec();
        s.numeric[0].buckets = Some(vec![1.0, 1.0]);
        assert_eq!(s.validate("f").unwrap_err().key, "f.numeric[0].buckets");
    }

    #[test]
    fn negative_without_positive_is_rejected_with_key() {
        let mut s = spec();
        s.label.negative = vec!["DOWN".into()];
        let e = s.validate("features").unwrap_err();
        assert_eq!(e.key, "features.label.negative");
        assert!(e.message.contains("positive"), "{e}");
        s.label.positive = vec!["UP".into()];
        s.validate("features").unwrap();
    }

    /// A spec using every kind of field, shared by the golden tests here and in `transform.rs`.
    pub(crate) fn golden_spec() -> FeatureSpec {
        serde_json::from_value(serde_json::json!({
            "hash_bits": 16,
            "label": {"column": "clicked", "positive": ["yes"], "negative": ["no"]},
            "bias": true,
            "categorical": [{"name": "site"}, {"name": "device"}],
            "numeric": [
                {"name": "price", "log": true, "standardize": {"mean": 1.5, "std": 0.75},
                 "default": 0.0},
                {"name": "hour", "buckets": [6.0, 12.0, 18.0]}
            ],
            "cross": [{"columns": ["site", "hour"]}, {"columns": ["site", "device"]}]
        }))
        .unwrap()
    }

    /// Golden: every stored model records `FeatureSpec::fingerprint()` of the spec it was trained
    /// with (model header), and `Registry::load` refuses a model whose fingerprint differs from
    /// that of the spec in its manifest. The fingerprint is xxh3 of the spec's compact JSON, so
    /// any change to `FeatureSpec`'s serialized form (a renamed or reordered field, or a new field
    /// that is always serialized) changes the fingerprint of every existing spec and makes every
    /// stored model unloadable. A new field must therefore be
    /// `#[serde(default, skip_serializing_if = ...)]` so that existing specs serialize, and
    /// fingerprint, exactly as before. If this test fails, do not update the constant: fix the
    /// serialized form.
    #[test]
    fn golden_fingerprint_is_stable() {
        let s = golden_spec();
        s.validate("features").unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            GOLDEN_JSON,
            "serialized form of FeatureSpec changed"
        );
        assert_eq!(s.fingerprint(), GOLDEN_FINGERPRINT);
    }

    const GOLDEN_JSON: &str = concat!(
        r#"{"hash_bits":16,"label":{"column":"clicked","positive":["yes"],"negative":["no"]},"#,
        r#""bias":true,"categorical":[{"name":"site"},{"name":"device"}],"#,
        r#""numeric":[{"name":"price","log":true,"standardize":{"mean":1.5,"std":0.75},"#,
        r#""default":0.0},{"name":"hour","log":false,"buckets":[6.0,12.0,18.0]}],"#,
        r#""cross":[{"columns":["site","hour"]},{"columns":["site","device"]}]}"#
    );
    const GOLDEN_FINGERPRINT: u64 = 0x1ac9_2f12_1d7a_3f0f;

    /// `representation` is skipped when hashed: a hashed spec serializes, and fingerprints,
    /// exactly as the same spec written without the key.
    #[test]
    fn hashed_representation_leaves_json_and_fingerprint_unchanged() {
        let s = golden_spec();
        assert_eq!(s.representation, Representation::Hashed);
        assert!(
            !serde_json::to_string(&s)
                .unwrap()
                .contains("representation")
        );
        assert_eq!(
            s.fingerprint(),
            xxhash_rust::xxh3::xxh3_64(GOLDEN_JSON.as_bytes())
        );
        let explicit = GOLDEN_JSON.replacen('{', r#"{"representation":"hashed","#, 1);
        let e: FeatureSpec = serde_json::from_str(&explicit).unwrap();
        assert_eq!(e, s);
        assert_eq!(e.fingerprint(), GOLDEN_FINGERPRINT);
    }

    fn raw_spec() -> FeatureSpec {
        serde_json::from_value(serde_json::json!({
            "representation": "raw",
            "label": {"column": "y"},
            "categorical": [{"name": "c"}],
            "numeric": [{"name": "x", "log": true}]
        }))
        .unwrap()
    }

    #[test]
    fn raw_representation_round_trips_and_changes_the_fingerprint() {
        let s = raw_spec();
        assert_eq!(s.representation, Representation::Raw);
        assert!(s.bias, "bias defaults to true and is accepted in raw mode");
        s.validate("features").unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""representation":"raw""#), "{json}");
        assert_eq!(serde_json::from_str::<FeatureSpec>(&json).unwrap(), s);
        let mut hashed = s.clone();
        hashed.representation = Representation::Hashed;
        assert_ne!(s.fingerprint(), hashed.fingerprint());
        assert_eq!(
            serde_json::from_str::<Representation>(r#""hashed""#).unwrap(),
            Representation::Hashed
        );
        assert!(serde_json::from_str::<Representation>(r#""Raw""#).is_err());
    }

    #[test]
    fn raw_representation_rejects_crosses_sparse_and_buckets_with_key() {
        let mut s = raw_spec();
        s.categorical.push(CategoricalColumn { name: "d".into() });
        s.cross.push(CrossColumn {
            columns: vec!["c".into(), "d".into()],
        });
        let e = s.validate("features").unwrap_err();
        assert_eq!(e.key, "features.cross[0]");
        assert!(e.to_string().contains("features.cross[0]: "), "{e}");
        assert!(
            e.message.contains("trees learn interactions themselves"),
            "{e}"
        );
        // Not only a config rule: the transform refuses it too.
        assert_eq!(
            crate::Transformer::new(s.clone()).unwrap_err().key,
            "features.cross[0]"
        );
        s.cross.clear();
        s.validate("features").unwrap();

        let mut s = raw_spec();
        s.sparse.push(SparseColumn { name: "ns".into() });
        let e = s.validate("features").unwrap_err();
        assert_eq!(e.key, "features.sparse[0]");
        assert!(e.message.contains("raw"), "{e}");

        let mut s = raw_spec();
        s.numeric.push(NumericColumn {
            name: "h".into(),
            log: false,
            standardize: None,
            buckets: Some(vec![6.0, 12.0]),
            default: None,
        });
        let e = s.validate("f").unwrap_err();
        assert_eq!(e.key, "f.numeric[1].buckets");
        assert!(
            e.message.contains("trees split numeric values themselves"),
            "{e}"
        );
    }

    #[test]
    fn field_kinds_follow_field_names() {
        let mut s = golden_spec();
        s.sparse.push(SparseColumn { name: "ns".into() });
        use FieldKind::*;
        let kinds = s.field_kinds();
        assert_eq!(kinds.len(), s.field_names().len());
        // bias, site, device, price, hour (bucketized), 2 crosses, ns
        assert_eq!(
            kinds,
            [
                Unused,
                Categorical,
                Categorical,
                Numeric,
                Categorical,
                Categorical,
                Categorical,
                Categorical
            ]
        );
        assert_eq!(raw_spec().field_kinds(), [Unused, Categorical, Numeric]);
        assert_eq!(
            serde_json::to_string(&Categorical).unwrap(),
            r#""categorical""#
        );
    }

    #[test]
    fn fingerprint_changes_with_spec() {
        let a = spec();
        let mut b = spec();
        b.hash_bits = 10;
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), spec().fingerprint());
    }
}
