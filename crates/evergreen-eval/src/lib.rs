//! Streaming evaluation metrics and the evaluation gate. Pure: no IO.

pub mod drift;
mod gate;
mod metrics;
pub mod serde_nan;

pub use gate::{Check, GateConfig, GateResult, evaluate_gate};
pub use metrics::{Metrics, Summary};
