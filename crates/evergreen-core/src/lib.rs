//! Pure core shared by trainer and server: raw records, the feature spec and its transform.
//!
//! Nothing in this crate does IO, spawns threads or reads the clock: the same bytes of code turn a
//! raw record into a feature vector at training time and at serving time, which is what rules out
//! train/serve skew (the tf.transform lesson).

pub mod record;
pub mod spec;
pub mod transform;

pub use record::{FieldName, RawRecord, RawValue};
pub use spec::{
    CategoricalColumn, CrossColumn, FeatureSpec, FieldKind, LabelSpec, NumericColumn,
    NumericTransform, Representation, SparseColumn, SpecError,
};
pub use transform::{FeatureVector, Layout, TransformError, Transformer};
