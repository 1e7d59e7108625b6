//! Every metric evergreen exports, defined in one place (names documented in `docs/metrics.md`).
//!
//! One [`Metrics`] is shared by the trainer and the server of a process and rendered in the
//! Prometheus/OpenMetrics text format on `/metrics` and `/monitoring/prometheus/metrics`.
//! Label values are bounded: model names come from config, versions from the retained set,
//! outcomes, APIs, status codes and quarantine reasons from fixed lists in the code.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels `{model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
}

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Model name (`""` when the request named an unknown model).
    pub model: String,
    /// Version that answered (`""` when none did).
    pub version: String,
    /// `predict`, `classify`, `regress`, `status`, `metadata`.
    pub api: String,
    /// HTTP status code.
    pub code: String,
}

/// Labels `{model, api}` for latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Model name.
    pub model: String,
    /// API name.
    pub api: String,
}

/// Labels `{model, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Model name.
    pub model: String,
    /// Outcome (fixed set per metric, see docs/metrics.md).
    pub outcome: String,
}

/// Labels `{model, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Model name.
    pub model: String,
    /// Quarantine reason code.
    pub reason: String,
}

/// Labels `{model, stage}`: a stage of the training cycle (fixed set, see docs/metrics.md).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Model name.
    pub model: String,
    /// `read`, `progressive`, `train`, `evaluate`, `publish`, `commit`.
    pub stage: String,
}

/// Labels `{model, group}`: a parameter group of the model (its layers: bounded by the
/// model's configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Model name.
    pub model: String,
    /// Parameter group, e.g. `layer_0/kernel`.
    pub group: String,
}

/// Labels `{model, stat}`: a figure of the model's size or history (`Model::gauges`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatLabels {
    /// Model name.
    pub model: String,
    /// The figure, e.g. `trees`, `replacements`, `bytes`.
    pub stat: String,
}

/// Labels `{model, detector}`: a drift detector (`loss`, `feature`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorLabels {
    /// Model name.
    pub model: String,
    /// `loss` (ADWIN on the progressive loss) or `feature` (a field's PSI over 0.25).
    pub detector: String,
}

/// Labels `{model, feature}`: a feature field of the spec (bounded by the config).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    /// Model name.
    pub model: String,
    /// Field name (a spec column, or a cross `a_x_b`).
    pub feature: String,
}

/// Labels `{model, alertname}`: one of the trainer's alert rules (fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// Model name.
    pub model: String,
    /// Alert name (as in `deploy/prometheus/alerts.yml`).
    pub alertname: String,
}

/// Labels `{model, version}`: a served version (bounded by the versions retained).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// Model name.
    pub model: String,
    /// Version number.
    pub version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

fn difference_histogram() -> Histogram {
    // 0.0001 .. ~0.8
    Histogram::new(exponential_buckets(0.0001, 2.0, 14))
}

fn batch_size_histogram() -> Histogram {
    // 1 .. 2048 instances
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

fn cycle_histogram() -> Histogram {
    // 1 ms .. ~9 min
    Histogram::new(exponential_buckets(0.001, 2.5, 15))
}

/// All metrics of one process.
pub struct Metrics {
    registry: Registry,
    /// `evergreen_serving_requests_total{model,version,api,code}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `evergreen_serving_request_duration_seconds{model,api}`.
    pub request_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    /// `evergreen_serving_model_version{model}`: newest version being served.
    pub serving_version: Family<ModelLabels, Gauge>,
    /// `evergreen_serving_version_loads_total{model,outcome}`: `loaded` or `failed`.
    pub version_loads: Family<OutcomeLabels, Counter>,
    /// `evergreen_training_cycles_total{model,outcome}`: `published`, `rejected`, `held_back`,
    /// `empty`, `failed`.
    pub cycles: Family<OutcomeLabels, Counter>,
    /// `evergreen_training_cycle_duration_seconds{model}`.
    pub cycle_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `evergreen_training_examples_total{model}`: examples learned.
    pub examples_trained: Family<ModelLabels, Counter>,
    /// `evergreen_data_records_read_total{model}`: good records read from spans.
    pub records_read: Family<ModelLabels, Counter>,
    /// `evergreen_data_quarantined_records_total{model,reason}`.
    pub quarantined: Family<ReasonLabels, Counter>,
    /// `evergreen_training_progressive_logloss{model}` of the last cycle.
    pub progressive_logloss: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_progressive_auc{model}` of the last cycle.
    pub progressive_auc: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_online_logloss{model}`: each example predicted before it was
    /// learned (first epoch of the last cycle).
    pub online_logloss: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_online_auc{model}` of the last cycle.
    pub online_auc: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_replayed_examples_total{model}`: past examples mixed into windows.
    pub replayed: Family<ModelLabels, Counter>,
    /// `evergreen_training_last_published_version{model}`.
    pub published_version: Family<ModelLabels, Gauge>,
    /// `evergreen_data_pending_spans{model}`: ready spans not yet consumed.
    pub pending_spans: Family<ModelLabels, Gauge>,
    /// `evergreen_data_late_spans_total{model}`: spans that appeared at or before the watermark.
    pub late_spans: Family<ModelLabels, Counter>,
    /// `evergreen_serving_routed_requests_total{model,outcome}`: unversioned requests by the
    /// side of the traffic policy that answered (`stable`, `canary`, `pinned`, `latest`).
    pub routed: Family<OutcomeLabels, Counter>,
    /// `evergreen_serving_shadow_predictions_total{model}`: predictions made by a shadow
    /// version on mirrored requests.
    pub shadow_predictions: Family<ModelLabels, Counter>,
    /// `evergreen_serving_shadow_abs_difference{model}`: |shadow − served| per mirrored
    /// prediction.
    pub shadow_difference: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `evergreen_serving_admin_actions_total{model,outcome}`: admin actions by action
    /// (`promote`, `rollback`, `split`, `pin`, `unpin`, `shadow`) or `refused` (bad token).
    pub admin_actions: Family<OutcomeLabels, Counter>,
    /// `evergreen_serving_batch_size{model}`: instances per batch scored by server-side
    /// batching.
    pub batch_size: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// `evergreen_serving_abandoned_requests_total{model}`: requests whose work stopped at
    /// their deadline (the client had its 408).
    pub abandoned_requests: Family<ModelLabels, Counter>,
    /// `evergreen_training_stage_seconds_total{model,stage}`: time spent per cycle stage.
    pub stage_seconds: Family<StageLabels, FloatCounter>,
    /// `evergreen_training_utilization{model}`: share of the last cycle spent training.
    pub utilization: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_evaluation_accuracy{model}`: the last candidate's accuracy on the
    /// held-out slice.
    pub evaluation_accuracy: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_accuracy_drops_in_a_row{model}`: cycles in a row whose held-out
    /// accuracy fell more than 5% (relative) below the previous cycle's.
    pub accuracy_drops_in_a_row: Family<ModelLabels, Gauge>,
    /// `evergreen_training_gate_rejections_in_a_row{model}`: candidates rejected since the last
    /// accepted one.
    pub gate_rejections_in_a_row: Family<ModelLabels, Gauge>,
    /// `evergreen_training_last_cycle_timestamp_seconds{model}`: when the last cycle ended.
    pub last_cycle_timestamp: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_gradient_mean_abs{model,group}`: mean |gradient| of a parameter
    /// group over the last mini-batch of the last cycle (deep models).
    pub gradient_mean_abs: Family<GroupLabels, FloatGauge>,
    /// `evergreen_training_model_stat{model,stat}`: the candidate model's size and history
    /// after the last cycle (forest: trees, background_trees, nodes, leaves, max_depth, bytes,
    /// warnings, replacements).
    pub model_stat: Family<StatLabels, FloatGauge>,
    /// `evergreen_training_drift_detections_total{model,detector}`: windows in which a drift
    /// detector fired.
    pub drift_detections: Family<DetectorLabels, Counter>,
    /// `evergreen_data_feature_psi{model,feature}`: PSI of each field of the last window
    /// against the previous window.
    pub feature_psi: Family<FeatureLabels, FloatGauge>,
    /// `evergreen_training_publication_paused{model}`: 1 while publication is paused.
    pub publication_paused: Family<ModelLabels, Gauge>,
    /// `evergreen_alerts_firing{model,alertname}`: 1 while the trainer's alert rule fires.
    pub alerts_firing: Family<AlertLabels, Gauge>,
    /// `evergreen_serving_feedback_total{model,outcome}`: labels sent back, by what became of
    /// them (`joined`, `unknown`, `expired`, `duplicate`, `invalid`).
    pub feedback: Family<OutcomeLabels, Counter>,
    /// `evergreen_serving_live_logloss{model,version}`: logloss of a version's most recent
    /// labelled predictions.
    pub live_logloss: Family<VersionLabels, FloatGauge>,
    /// `evergreen_serving_live_accuracy{model,version}`: their accuracy.
    pub live_accuracy: Family<VersionLabels, FloatGauge>,
    /// `evergreen_serving_live_examples{model,version}`: how many labelled predictions the
    /// live metrics cover.
    pub live_examples: Family<VersionLabels, Gauge>,
    /// `evergreen_serving_canary_logloss_excess{model}`: the canary's live logloss minus
    /// stable's.
    pub canary_logloss_excess: Family<ModelLabels, FloatGauge>,
    /// `evergreen_training_cadence_seconds{model}`: the adaptive cadence's current wait
    /// between cycles.
    pub cadence_seconds: Family<ModelLabels, FloatGauge>,
    /// `evergreen_data_pipeline_cpu_seconds_total{model,stage}`: CPU time of the input
    /// pipeline's threads per stage (`decode`, `transform`, `decode_transform`).
    pub pipeline_cpu_seconds: Family<StageLabels, FloatCounter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "evergreen_serving_requests",
            "Requests served, by model, answering version, API and HTTP status code",
            requests.clone(),
        );
        let request_duration =
            Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "evergreen_serving_request_duration_seconds",
            "Request latency in seconds, by model and API",
            request_duration.clone(),
        );
        let serving_version = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_serving_model_version",
            "Newest model version loaded for serving",
            serving_version.clone(),
        );
        let version_loads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "evergreen_serving_version_loads",
            "Version loads by the server, by outcome (loaded, failed)",
            version_loads.clone(),
        );
        let cycles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "evergreen_training_cycles",
            "Training cycles by outcome (published, rejected, held_back, empty, failed)",
            cycles.clone(),
        );
        let cycle_duration =
            Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                cycle_histogram as fn() -> Histogram,
            );
        registry.register(
            "evergreen_training_cycle_duration_seconds",
            "Wall time of a training cycle in seconds",
            cycle_duration.clone(),
        );
        let examples_trained = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_training_examples",
            "Examples learned",
            examples_trained.clone(),
        );
        let records_read = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_data_records_read",
            "Good records read from spans",
            records_read.clone(),
        );
        let quarantined = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "evergreen_data_quarantined_records",
            "Records set aside in quarantine, by reason",
            quarantined.clone(),
        );
        let progressive_logloss = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_progressive_logloss",
            "Progressive-validation logloss of the last cycle (model predicts a span before learning it)",
            progressive_logloss.clone(),
        );
        let progressive_auc = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_progressive_auc",
            "Progressive-validation AUC of the last cycle",
            progressive_auc.clone(),
        );
        let online_logloss = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_online_logloss",
            "Online progressive logloss of the last cycle (each example predicted before it is learned, first epoch)",
            online_logloss.clone(),
        );
        let online_auc = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_online_auc",
            "Online progressive AUC of the last cycle",
            online_auc.clone(),
        );
        let replayed = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_training_replayed_examples",
            "Past examples from the replay store mixed into training windows",
            replayed.clone(),
        );
        let published_version = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_training_last_published_version",
            "Last version published by the trainer",
            published_version.clone(),
        );
        let pending_spans = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_data_pending_spans",
            "Ready spans not yet consumed",
            pending_spans.clone(),
        );
        let late_spans = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_data_late_spans",
            "Spans that appeared with a name at or before the watermark (never trained)",
            late_spans.clone(),
        );
        let routed = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "evergreen_serving_routed_requests",
            "Unversioned requests by the side of the traffic policy that answered",
            routed.clone(),
        );
        let shadow_predictions = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_serving_shadow_predictions",
            "Predictions made by a shadow version on mirrored requests",
            shadow_predictions.clone(),
        );
        let shadow_difference =
            Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                difference_histogram as fn() -> Histogram,
            );
        registry.register(
            "evergreen_serving_shadow_abs_difference",
            "Absolute difference between the shadow and the served prediction",
            shadow_difference.clone(),
        );
        let admin_actions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "evergreen_serving_admin_actions",
            "Admin API actions by action, or refused",
            admin_actions.clone(),
        );
        let batch_size = Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            batch_size_histogram as fn() -> Histogram,
        );
        registry.register(
            "evergreen_serving_batch_size",
            "Instances per batch scored by server-side request batching",
            batch_size.clone(),
        );
        let abandoned_requests = Family::<ModelLabels, Counter>::default();
        registry.register(
            "evergreen_serving_abandoned_requests",
            "Requests whose work stopped at their deadline (answered 408)",
            abandoned_requests.clone(),
        );
        let stage_seconds = Family::<StageLabels, FloatCounter>::default();
        registry.register(
            "evergreen_training_stage_seconds",
            "Time spent in each stage of the training cycle",
            stage_seconds.clone(),
        );
        let utilization = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_utilization",
            "Share of the last cycle spent training (low: the loop waits on reading)",
            utilization.clone(),
        );
        let evaluation_accuracy = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_evaluation_accuracy",
            "Accuracy of the last candidate on the held-out slice",
            evaluation_accuracy.clone(),
        );
        let accuracy_drops_in_a_row = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_training_accuracy_drops_in_a_row",
            "Cycles in a row whose held-out accuracy fell more than 5% below the previous one's",
            accuracy_drops_in_a_row.clone(),
        );
        let gate_rejections_in_a_row = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_training_gate_rejections_in_a_row",
            "Candidates rejected by the gate since the last accepted one",
            gate_rejections_in_a_row.clone(),
        );
        let last_cycle_timestamp = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_last_cycle_timestamp_seconds",
            "Unix time at which the last cycle ended",
            last_cycle_timestamp.clone(),
        );
        let gradient_mean_abs = Family::<GroupLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_gradient_mean_abs",
            "Mean absolute gradient of a parameter group over the last mini-batch",
            gradient_mean_abs.clone(),
        );
        let model_stat = Family::<StatLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_model_stat",
            "Size and history of the model after the last cycle (forest: trees, background_trees, nodes, leaves, max_depth, bytes, warnings, replacements)",
            model_stat.clone(),
        );
        let drift_detections = Family::<DetectorLabels, Counter>::default();
        registry.register(
            "evergreen_training_drift_detections",
            "Windows in which a drift detector fired (loss: ADWIN on the progressive loss; feature: a field's PSI over 0.25)",
            drift_detections.clone(),
        );
        let feature_psi = Family::<FeatureLabels, FloatGauge>::default();
        registry.register(
            "evergreen_data_feature_psi",
            "Population Stability Index of each feature field of the last window against the previous window",
            feature_psi.clone(),
        );
        let publication_paused = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "evergreen_training_publication_paused",
            "1 while publication is paused (no cycle starts; spans wait)",
            publication_paused.clone(),
        );
        let alerts_firing = Family::<AlertLabels, Gauge>::default();
        registry.register(
            "evergreen_alerts_firing",
            "1 while an alert rule evaluated by the trainer fires",
            alerts_firing.clone(),
        );
        let feedback = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "evergreen_serving_feedback",
            "Labels sent back for served predictions, by what became of them",
            feedback.clone(),
        );
        let live_logloss = Family::<VersionLabels, FloatGauge>::default();
        registry.register(
            "evergreen_serving_live_logloss",
            "Logloss of a served version's most recent labelled predictions",
            live_logloss.clone(),
        );
        let live_accuracy = Family::<VersionLabels, FloatGauge>::default();
        registry.register(
            "evergreen_serving_live_accuracy",
            "Accuracy of a served version's most recent labelled predictions",
            live_accuracy.clone(),
        );
        let live_examples = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "evergreen_serving_live_examples",
            "Labelled predictions the live metrics of a version cover",
            live_examples.clone(),
        );
        let canary_logloss_excess = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_serving_canary_logloss_excess",
            "Live logloss of the canary minus that of the stable version",
            canary_logloss_excess.clone(),
        );
        let cadence_seconds = Family::<ModelLabels, FloatGauge>::default();
        registry.register(
            "evergreen_training_cadence_seconds",
            "The adaptive training cadence's current wait between cycles",
            cadence_seconds.clone(),
        );
        let pipeline_cpu_seconds = Family::<StageLabels, FloatCounter>::default();
        registry.register(
            "evergreen_data_pipeline_cpu_seconds",
            "CPU time of the input pipeline's threads per stage (decode, transform, or both fused)",
            pipeline_cpu_seconds.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            serving_version,
            version_loads,
            cycles,
            cycle_duration,
            examples_trained,
            records_read,
            quarantined,
            progressive_logloss,
            progressive_auc,
            online_logloss,
            online_auc,
            replayed,
            published_version,
            pending_spans,
            late_spans,
            routed,
            shadow_predictions,
            shadow_difference,
            admin_actions,
            batch_size,
            abandoned_requests,
            stage_seconds,
            utilization,
            evaluation_accuracy,
            accuracy_drops_in_a_row,
            gate_rejections_in_a_row,
            last_cycle_timestamp,
            gradient_mean_abs,
            model_stat,
            drift_detections,
            feature_psi,
            publication_paused,
            alerts_firing,
            feedback,
            live_logloss,
            live_accuracy,
            live_examples,
            canary_logloss_excess,
            cadence_seconds,
            pipeline_cpu_seconds,
        }
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// `{model}` labels.
    pub fn model(model: &str) -> ModelLabels {
        ModelLabels {
            model: model.to_string(),
        }
    }

    /// `{model, outcome}` labels.
    pub fn outcome(model: &str, outcome: &str) -> OutcomeLabels {
        OutcomeLabels {
            model: model.to_string(),
            outcome: outcome.to_string(),
        }
    }
}

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_documented_names() {
        let m = Metrics::new();
        m.cycles
            .get_or_create(&Metrics::outcome("m", "published"))
            .inc();
        m.progressive_auc
            .get_or_create(&Metrics::model("m"))
            .set(0.75);
        m.request_duration
            .get_or_create(&ApiLabels {
                model: "m".into(),
                api: "predict".into(),
            })
            .observe(0.001);
        // Empty families are not rendered: touch every one.
        let ml = Metrics::model("m");
        m.requests
            .get_or_create(&RequestLabels {
                model: "m".into(),
                version: "1".into(),
                api: "predict".into(),
                code: "200".into(),
            })
            .inc();
        m.serving_version.get_or_create(&ml).set(1);
        m.version_loads
            .get_or_create(&Metrics::outcome("m", "loaded"))
            .inc();
        m.cycle_duration.get_or_create(&ml).observe(1.0);
        m.examples_trained.get_or_create(&ml).inc();
        m.records_read.get_or_create(&ml).inc();
        m.quarantined
            .get_or_create(&ReasonLabels {
                model: "m".into(),
                reason: "bad_label".into(),
            })
            .inc();
        m.progressive_logloss.get_or_create(&ml).set(0.5);
        m.online_logloss.get_or_create(&ml).set(0.4);
        m.online_auc.get_or_create(&ml).set(0.8);
        m.replayed.get_or_create(&ml).inc_by(3);
        m.published_version.get_or_create(&ml).set(1);
        m.pending_spans.get_or_create(&ml).set(0);
        m.late_spans.get_or_create(&ml).inc();
        m.routed
            .get_or_create(&Metrics::outcome("m", "canary"))
            .inc();
        m.shadow_predictions.get_or_create(&ml).inc();
        m.shadow_difference.get_or_create(&ml).observe(0.01);
        m.batch_size.get_or_create(&ml).observe(8.0);
        m.abandoned_requests.get_or_create(&ml).inc();
        m.publication_paused.get_or_create(&ml).set(1);
        m.feedback
            .get_or_create(&Metrics::outcome("m", "joined"))
            .inc();
        let vl = VersionLabels {
            model: "m".into(),
            version: "3".into(),
        };
        m.live_logloss.get_or_create(&vl).set(0.4);
        m.live_accuracy.get_or_create(&vl).set(0.8);
        m.live_examples.get_or_create(&vl).set(100);
        m.canary_logloss_excess.get_or_create(&ml).set(0.02);
        m.cadence_seconds.get_or_create(&ml).set(60.0);
        m.pipeline_cpu_seconds
            .get_or_create(&StageLabels {
                model: "m".into(),
                stage: "decode".into(),
            })
            .inc_by(0.25);
        m.alerts_firing
            .get_or_create(&AlertLabels {
                model: "m".into(),
                alertname: "EvergreenDataLag".into(),
            })
            .set(1);
        m.drift_detections
            .get_or_create(&DetectorLabels {
                model: "m".into(),
                detector: "loss".into(),
            })
            .inc();
        m.feature_psi
            .get_or_create(&FeatureLabels {
                model: "m".into(),
                feature: "price".into(),
            })
            .set(0.3);
        m.stage_seconds
            .get_or_create(&StageLabels {
                model: "m".into(),
                stage: "train".into(),
            })
            .inc_by(0.5);
        m.utilization.get_or_create(&ml).set(0.5);
        m.evaluation_accuracy.get_or_create(&ml).set(0.9);
        m.accuracy_drops_in_a_row.get_or_create(&ml).set(1);
        m.gate_rejections_in_a_row.get_or_create(&ml).set(2);
        m.last_cycle_timestamp.get_or_create(&ml).set(1.0);
        m.gradient_mean_abs
            .get_or_create(&GroupLabels {
                model: "m".into(),
                group: "layer_0/kernel".into(),
            })
            .set(0.001);
        m.model_stat
            .get_or_create(&StatLabels {
                model: "m".into(),
                stat: "trees".into(),
            })
            .set(10.0);
        m.admin_actions
            .get_or_create(&Metrics::outcome("m", "promote"))
            .inc();
        let text = m.render();
        assert!(
            text.contains("evergreen_training_cycles_total{model=\"m\",outcome=\"published\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("evergreen_training_progressive_auc{model=\"m\"} 0.75"),
            "{text}"
        );
        assert!(
            text.contains("evergreen_serving_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
        // Every documented name is registered.
        let doc = include_str!("../../../docs/metrics.md");
        for line in doc.lines().filter(|l| l.starts_with("| `evergreen_")) {
            let name = line.split('`').nth(1).unwrap();
            let base = name.trim_end_matches("_total");
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "{name} documented but not registered:\n{text}"
            );
        }
    }
}
