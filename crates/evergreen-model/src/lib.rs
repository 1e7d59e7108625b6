//! Online models and their versioned, checksummed binary format. Pure: no IO; no threads
//! except inside [`Ftrl::learn_parallel`] and [`Fm::learn_parallel`] (Hogwild-style, scoped,
//! opt-in), `Deep::learn_parallel` and [`Forest::learn_parallel`] (trees split among threads).
//!
//! Every model implements [`Model`]: predict a probability for a feature vector (hashed, or raw
//! values for the forest), learn one
//! labelled example, encode its full state (optimizer state included, so a later cycle
//! warm-starts exactly where this one stopped). [`save`] and [`load`] wrap that state in the
//! format described in `docs/formats.md`.

mod common;
mod deep;
mod dense;
mod embedding;
mod ffm;
mod file_map;
mod fm;
mod forest;
mod format;
mod ftrl;
mod hogwild;
mod open;
mod sparse_memory;

pub use common::{MAX_FACTORS, MAX_STATE_FLOATS, ShapeError, logloss};
pub use ffm::{Ffm, FfmParams};
pub use fm::{Fm, FmParams};

pub use deep::{Deep, DeepParams, DeepVariant};
pub use dense::{Adam, DenseLayer, SplitMix64};
pub use embedding::{HashedEmbeddingTable, SparseOptimizer, TableConfig};
pub use forest::{
    Criterion, Event, EventKind, Forest, ForestParams, ForestSummary, LeafPrediction, MAX_EVENTS,
    MAX_TREES, NumericObserver, TreeSummary,
};
pub use format::{FORMAT_VERSION, Header, MAGIC, ModelError, load, save};
pub use ftrl::{Ftrl, FtrlParams, MAX_ADMIT_AFTER, WeightStorage};
pub use open::{OpenError, Opened, open};

use evergreen_core::{FeatureVector, FieldKind, Representation};
use serde::{Deserialize, Serialize};

/// Kinds of model, with their stable code in the binary header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Logistic regression trained with FTRL-Proximal.
    Ftrl,
    /// Second-order factorization machine (Rendle 2010) trained with AdaGrad.
    Fm,
    /// Field-aware factorization machine (Juan et al. 2016, as in LibFFM) trained with AdaGrad.
    Ffm,
    /// Wide&Deep or DeepFM: embeddings, MLP tower and a wide part (`Deep`).
    Deep,
    /// Adaptive random forest of Hoeffding trees over raw features (`Forest`).
    Forest,
}

impl ModelKind {
    /// Stable code written in the header.
    pub fn code(self) -> u16 {
        match self {
            ModelKind::Ftrl => 1,
            ModelKind::Fm => 2,
            ModelKind::Ffm => 3,
            ModelKind::Deep => 4,
            ModelKind::Forest => 5,
        }
    }

    /// Kind for a header code.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(ModelKind::Ftrl),
            2 => Some(ModelKind::Fm),
            3 => Some(ModelKind::Ffm),
            4 => Some(ModelKind::Deep),
            5 => Some(ModelKind::Forest),
            _ => None,
        }
    }

    /// Name used in configs, manifests and metadata.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Ftrl => "ftrl",
            ModelKind::Fm => "fm",
            ModelKind::Ffm => "ffm",
            ModelKind::Deep => "deep",
            ModelKind::Forest => "forest",
        }
    }
}

/// An online binary classifier over the features of a [`FeatureVector`]: hashed sparse
/// features for most kinds, raw values (numeric values and category ids by field) for the
/// forest, as [`Model::representation`] declares.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// Which kind this is.
    fn kind(&self) -> ModelKind;
    /// Number of hash buckets the model was built for.
    fn dim(&self) -> usize;
    /// The representation of the features the model consumes; the spec a version is trained
    /// and served with must produce it (`features.representation`). Default: hashed.
    fn representation(&self) -> Representation {
        Representation::Hashed
    }
    /// For models over raw features: the kind of each field id the model was built for (the
    /// spec's `field_kinds`, checked when a version is loaded). Default: none.
    fn field_kinds(&self) -> Option<&[FieldKind]> {
        None
    }
    /// Probability of the positive class.
    fn predict(&self, x: &FeatureVector) -> f64;
    /// Appends [`Model::predict`] of each example to `out`. The default predicts one by one;
    /// models with dense parts override it with batched matrix products (the same values up to
    /// floating-point rounding).
    fn predict_batch(&self, xs: &[FeatureVector], out: &mut Vec<f64>) {
        out.extend(xs.iter().map(|x| self.predict(x)));
    }
    /// Learns one example (`y` is 0 or 1) and returns the prediction made before the update.
    fn learn(&mut self, x: &FeatureVector, y: f32) -> f64;
    /// Learns a mini-batch and appends, per example, the prediction made before the update
    /// (progressive validation). The default learns example by example; models with dense
    /// parts override it with a true mini-batch step.
    fn learn_batch(&mut self, xs: &[FeatureVector], ys: &[f32], preds: &mut Vec<f64>) {
        debug_assert_eq!(xs.len(), ys.len());
        for (x, &y) in xs.iter().zip(ys) {
            preds.push(self.learn(x, y));
        }
    }
    /// Called by the trainer after each window (span) is trained: housekeeping such as expiring
    /// embedding rows unseen for a configured number of windows. Default: nothing.
    fn end_window(&mut self) {}
    /// True when every parameter is finite (the gate rejects a model that is not).
    fn is_finite(&self) -> bool;
    /// Examples learned over the model's whole life (across warm starts).
    fn examples_seen(&self) -> u64;
    /// Appends the full state (parameters and optimizer state) to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// A boxed deep copy.
    fn clone_box(&self) -> Box<dyn Model>;
    /// For downcasting to the concrete kind (e.g. to change hyperparameters on warm start).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// For downcasting to the concrete kind, read-only.
    fn as_any(&self) -> &dyn std::any::Any;
    /// The configured learning rate (FTRL's `alpha`, the step size of the others), for
    /// dashboards. Default: none.
    fn learning_rate(&self) -> Option<f64> {
        None
    }
    /// Calls `visit(tag, values)` for each group of parameters worth a histogram (TensorBoard):
    /// weights per layer, embedding row norms, the last mini-batch's gradients per layer. Tags
    /// are `/`-separated (`weights/...`, `gradients/...`, `embeddings/...`). Default: none.
    fn inspect(&self, _visit: &mut dyn FnMut(&str, &[f32])) {}
    /// Only the `gradients/...` groups of [`Model::inspect`] (cheap: no pass over embeddings or
    /// hashed weights), for the trainer's per-cycle gradient gauges. Default: none.
    fn inspect_gradients(&self, _visit: &mut dyn FnMut(&str, &[f32])) {}
    /// Calls `visit(name, value)` for each figure of the model's size and history worth a
    /// gauge (the forest: trees, background trees, nodes, leaves, depth, bytes, warnings,
    /// replacements). Default: none.
    fn gauges(&self, _visit: &mut dyn FnMut(&str, f64)) {}
}

impl Clone for Box<dyn Model> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Parameter-level access for gradient checks (tests and the conformance suite): not a stable
/// API. Parameter ids are model-specific (documented on each implementation).
#[doc(hidden)]
pub trait Differentiable: Model {
    /// Logloss of one example and the analytic gradient of that logloss (regularization not
    /// included) with respect to every parameter the example touches: `(id, derivative)`,
    /// ids unique.
    fn loss_and_grad(&self, x: &FeatureVector, y: f32) -> (f64, Vec<(usize, f64)>);
    /// Current value of a parameter.
    fn param(&self, id: usize) -> f64;
    /// Overwrites a parameter (rounded to the storage precision).
    fn set_param(&mut self, id: usize, value: f64);
}

/// Logistic function with the margin clipped to keep probabilities away from exact 0 and 1
/// (a NaN margin, which only corrupt state can produce, reads as 0: probability 0.5).
pub fn sigmoid(margin: f64) -> f64 {
    let m = if margin.is_nan() {
        0.0
    } else {
        margin.clamp(-35.0, 35.0)
    };
    1.0 / (1.0 + (-m).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_codes_and_names() {
        for (kind, code, name) in [
            (ModelKind::Ftrl, 1, "ftrl"),
            (ModelKind::Fm, 2, "fm"),
            (ModelKind::Ffm, 3, "ffm"),
            (ModelKind::Deep, 4, "deep"),
            (ModelKind::Forest, 5, "forest"),
        ] {
            assert_eq!(kind.code(), code);
            assert_eq!(ModelKind::from_code(code), Some(kind));
            assert_eq!(kind.name(), name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
        }
        assert_eq!(ModelKind::from_code(0), None);
        assert_eq!(ModelKind::from_code(6), None);
    }

    #[test]
    fn sigmoid_of_nan_is_one_half() {
        assert_eq!(sigmoid(f64::NAN), 0.5);
        assert!(sigmoid(f64::INFINITY) < 1.0);
    }
}
