//! HTTP routes: TF Serving's v1 REST API (status, metadata, predict, classify, regress),
//! metrics and health. Every error is JSON `{"error": "..."}`.

use crate::batching::{Batcher, Pending};
use crate::error::ApiError;
use crate::json::{self, Format};
use crate::state::Snapshot;
use crate::{Server, VERSION_HEADER};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use evergreen_core::{FeatureVector, RawRecord};
use evergreen_metrics::{ApiLabels, RequestLabels};
use evergreen_registry::{CANARY, LoadedVersion, STABLE, SharedVersion, key_bucket};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Instant;

/// Builds the router over `server`.
pub(crate) fn router(server: Server) -> Router {
    let limit = server.inner.opts.max_body_bytes;
    Router::new()
        .route("/v1/models", any(models_root))
        .route("/v1/models/{*rest}", any(models))
        .route("/admin/v1/models/{*rest}", any(crate::admin::admin))
        .route("/admin/v1/alertmanager", any(crate::admin::alertmanager))
        .route("/metrics", get(metrics))
        .route("/monitoring/prometheus/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(healthz))
        .route("/livez", get(livez))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            refuse_declared_oversize,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            server.inner.opts.request_timeout,
        ))
        .with_state(server)
}

/// The model APIs, also the metric label `api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Status,
    Metadata,
    Predict,
    Classify,
    Regress,
}

impl Api {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Api::Status => "status",
            Api::Metadata => "metadata",
            Api::Predict => "predict",
            Api::Classify => "classify",
            Api::Regress => "regress",
        }
    }

    fn from_verb(verb: &str) -> Option<Self> {
        [Api::Predict, Api::Classify, Api::Regress]
            .into_iter()
            .find(|a| verb.eq_ignore_ascii_case(a.as_str()))
    }
}

/// Which version a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Latest,
    Version(u64),
    Label(String),
}

/// A parsed `/v1/models/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) model: String,
    pub(crate) target: Target,
    pub(crate) api: Api,
}

/// Parses the part of the path after `/v1/models/`, following TF Serving's patterns
/// `<name>[/versions/<n>|/labels/<l>][/metadata]` and
/// `<name>[/versions/<n>|/labels/<l>]:(predict|classify|regress)` (keywords case-insensitive).
pub(crate) fn parse_route(rest: &str) -> Option<Route> {
    let (head, mut api) = match rest.split_once(':') {
        Some((head, verb)) => (head, Api::from_verb(verb)?),
        None => (rest, Api::Status),
    };
    let mut segs: Vec<&str> = head.split('/').collect();
    if api == Api::Status
        && segs.len() > 1
        && segs
            .last()
            .is_some_and(|s| s.eq_ignore_ascii_case("metadata"))
    {
        segs.pop();
        api = Api::Metadata;
    }
    let (name, target) = match segs.as_slice() {
        [name] => (*name, Target::Latest),
        [name, kw, v]
            if kw.eq_ignore_ascii_case("versions")
                && !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (*name, Target::Version(v.parse().ok()?))
        }
        [name, kw, l] if kw.eq_ignore_ascii_case("labels") && !l.is_empty() => {
            (*name, Target::Label((*l).to_string()))
        }
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some(Route {
        model: name.to_string(),
        target,
        api,
    })
}

/// Best guess of the API of a path that does not parse (for the metric label).
fn guess_api(rest: &str) -> Api {
    match rest.rsplit_once(':') {
        Some((_, verb)) => Api::from_verb(verb).unwrap_or(Api::Predict),
        None if rest.to_ascii_lowercase().ends_with("/metadata") => Api::Metadata,
        None => Api::Status,
    }
}

/// Outcome of a model API request: the answering version (when one was resolved) and the
/// JSON body or error.
struct Reply {
    version: Option<u64>,
    result: Result<Value, ApiError>,
    /// The answer's prediction id, when feedback is on.
    prediction_id: Option<String>,
}

impl Reply {
    fn err(e: ApiError) -> Self {
        Self {
            version: None,
            result: Err(e),
            prediction_id: None,
        }
    }
}

/// Response header with the prediction id of an inference answer (feedback on): instance `i`
/// of the request is `<id>/<i>`.
pub const PREDICTION_ID_HEADER: &str = "x-evergreen-prediction-id";

/// Refuses a request whose declared `Content-Length` is over the body limit at once, before
/// reading any of the body (the same 413 as a body found too long while it is read, which
/// covers bodies sent without a length).
/// When a request arrived (before its body was read): the request timeout counts from here.
#[derive(Debug, Clone, Copy)]
struct Arrival(Instant);

async fn refuse_declared_oversize(
    State(limit): State<usize>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    req.extensions_mut().insert(Arrival(Instant::now()));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return error_response(&ApiError::PayloadTooLarge(format!(
            "request body exceeds the limit of {limit} bytes"
        )));
    }
    next.run(req).await
}

fn error_response(e: &ApiError) -> Response {
    let mut resp = (e.status(), axum::Json(json!({ "error": e.to_string() }))).into_response();
    if let ApiError::MethodNotAllowed { allow, .. } = e {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

async fn models_root(method: Method) -> Response {
    error_response(&ApiError::NotFound(format!(
        "Malformed request: {method} /v1/models: missing model name"
    )))
}

/// Requests with bodies up to this size are parsed and scored on the async worker that read
/// them (microseconds of work); larger ones on the blocking pool, so that they hold no async
/// worker and the request timeout answers for them (their work stops at the same deadline:
/// `check_deadline`).
const INLINE_BODY_BYTES: usize = 64 << 10;

async fn models(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    arrival: Option<axum::Extension<Arrival>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let path = uri.path();
    let rest = path.strip_prefix("/v1/models/").unwrap_or_default();
    let (reply, api, model) = match parse_route(rest) {
        Some(route) => {
            let model = if server.inner.models.load().contains_key(&route.model) {
                route.model.clone()
            } else {
                String::new()
            };
            let api = route.api;
            let handled = if matches!(&body, Ok(b) if b.len() > INLINE_BODY_BYTES) {
                let (s, m, h) = (server.clone(), method.clone(), headers.clone());
                // The request timeout answers 408 at this deadline; the work stops there too.
                let arrived = arrival.map_or(start, |a| a.0.0);
                let deadline = arrived + server.inner.opts.request_timeout;
                tokio::task::spawn_blocking(move || {
                    handle(&s, &m, &route, &h, body, Some(deadline))
                })
                .await
                .unwrap_or_else(|e| {
                    Handled::Reply(Reply::err(ApiError::Unavailable(format!(
                        "the request's work stopped: {e}"
                    ))))
                })
            } else {
                handle(&server, &method, &route, &headers, body, None)
            };
            let reply = match handled {
                Handled::Reply(r) => r,
                // Waits for its batch without holding a thread.
                Handled::Queued {
                    version,
                    pending,
                    finish,
                } => finish.reply(&server, version, pending.await),
            };
            (reply, api, model)
        }
        None => (
            Reply::err(ApiError::NotFound(format!(
                "Malformed request: {method} {path}"
            ))),
            guess_api(rest),
            String::new(),
        ),
    };
    let mut resp = match &reply.result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => error_response(e),
    };
    if let Some(v) = reply.version {
        resp.headers_mut()
            .insert(VERSION_HEADER, HeaderValue::from(v));
    }
    if let Some(id) = reply.prediction_id.as_deref()
        && let Ok(h) = HeaderValue::from_str(id)
    {
        resp.headers_mut().insert(PREDICTION_ID_HEADER, h);
    }
    let metrics = &server.inner.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            model: model.clone(),
            version: reply.version.map(|v| v.to_string()).unwrap_or_default(),
            api: api.as_str().to_string(),
            code: resp.status().as_u16().to_string(),
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&ApiLabels {
            model,
            api: api.as_str().to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// What [`handle`] produced: the reply, or predictions being scored in a batch.
enum Handled {
    Reply(Reply),
    Queued {
        version: u64,
        pending: Pending,
        finish: Finish,
    },
}

impl From<Reply> for Handled {
    fn from(r: Reply) -> Self {
        Handled::Reply(r)
    }
}

/// What an inference reply needs besides its predictions.
struct Finish {
    api: Api,
    format: Format,
    /// The model's name, the shadow version and the records to mirror to it.
    shadow: Option<(String, (u64, SharedVersion), Vec<RawRecord>)>,
    /// Feedback on: the model's name and the request's split key.
    feedback: Option<(String, Option<Vec<u8>>)>,
}

impl Finish {
    /// The reply of version `version` for `result`; mirrors the request to the shadow.
    fn reply(self, server: &Server, version: u64, result: Result<Vec<f64>, ApiError>) -> Reply {
        match result {
            Ok(p) => {
                let prediction_id = match (&self.feedback, &server.inner.feedback) {
                    (Some((model, key)), Some(f)) => {
                        Some(f.record(model, version, &p, key.as_deref()))
                    }
                    _ => None,
                };
                if let Some((model, sv, records)) = self.shadow {
                    mirror(server, &model, sv, records, p.clone());
                }
                Reply {
                    version: Some(version),
                    result: Ok(respond(self.api, self.format, p)),
                    prediction_id,
                }
            }
            Err(e) => Reply {
                version: Some(version),
                result: Err(e),
                prediction_id: None,
            },
        }
    }
}

fn handle(
    server: &Server,
    method: &Method,
    route: &Route,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    deadline: Option<Instant>,
) -> Handled {
    let read_only = matches!(route.api, Api::Status | Api::Metadata);
    let allowed = if read_only {
        method == Method::GET || method == Method::HEAD
    } else {
        method == Method::POST
    };
    if !allowed {
        return Reply::err(ApiError::MethodNotAllowed {
            message: format!(
                "Method {method} not allowed for the {} API (use {})",
                route.api.as_str(),
                if read_only { "GET" } else { "POST" }
            ),
            allow: if read_only { "GET, HEAD" } else { "POST" },
        })
        .into();
    }
    match route.api {
        Api::Status => Reply {
            version: None,
            result: status(server, route),
            prediction_id: None,
        }
        .into(),
        Api::Metadata => match resolve(server, route) {
            Ok((v, lv)) => Reply {
                version: Some(v),
                result: Ok(metadata(&route.model, v, &lv)),
                prediction_id: None,
            }
            .into(),
            Err(e) => Reply::err(e).into(),
        },
        Api::Predict | Api::Classify | Api::Regress => {
            let body = match body {
                Ok(b) => b,
                Err(rejection) => {
                    return Reply::err(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge(format!(
                            "request body exceeds the limit of {} bytes",
                            server.inner.opts.max_body_bytes
                        ))
                    } else {
                        ApiError::BadRequest(format!("cannot read request body: {rejection}"))
                    })
                    .into();
                }
            };
            // The named version (404/503 as before), then the body, then, for unversioned
            // requests, the traffic policy (the split key may be a feature of the body).
            let named = match resolve(server, route) {
                Ok(named) => named,
                Err(e) => return Reply::err(e).into(),
            };
            let single = single_input(named.1.transformer.spec());
            let (format, records) = match parse_inference(route.api, &body, single) {
                Ok(parsed) => parsed,
                Err(e) => return Reply::err(e).into(),
            };
            let (v, lv, shadow) = pick(server, route, named, headers, &records);
            let scored = score_served(server, &route.model, v, &lv, &records, deadline);
            // Feedback on: the split key joins a label sent back by key.
            let feedback = server.inner.feedback.as_ref().map(|_| {
                let key = server
                    .inner
                    .models
                    .load()
                    .get(&route.model)
                    .and_then(|m| split_key(&m.snapshot.load(), headers, &records));
                (route.model.clone(), key)
            });
            let finish = Finish {
                api: route.api,
                format,
                shadow: shadow.map(|sv| (route.model.clone(), sv, records)),
                feedback,
            };
            match scored {
                Ok(Scored::Now(p)) => finish.reply(server, v, Ok(p)).into(),
                Ok(Scored::Queued(pending)) => Handled::Queued {
                    version: v,
                    pending,
                    finish,
                },
                Err(e) => finish.reply(server, v, Err(e)).into(),
            }
        }
    }
}

/// The answering version, its model, and the shadow version (with its model) if any.
pub(crate) type Picked = (u64, SharedVersion, Option<(u64, SharedVersion)>);

/// The version that answers an inference request on `records` (`named`, the route's own
/// resolution, or, for an unversioned request, the one the traffic policy picks, counted in the
/// routing metric) and the shadow version that should also predict it, if any.
pub(crate) fn pick(
    server: &Server,
    route: &Route,
    (mut v, mut lv): (u64, SharedVersion),
    headers: &HeaderMap,
    records: &[RawRecord],
) -> Picked {
    let mut shadow = None;
    if route.target == Target::Latest
        && let Some(model) = server.inner.models.load().get(&route.model).cloned()
    {
        let snap = model.snapshot.load_full();
        let key = split_key(&snap, headers, records);
        if let Some((rv, rlv, side)) = route_unversioned(&snap, key.as_deref()) {
            (v, lv) = (rv, rlv);
            server
                .inner
                .metrics
                .routed
                .get_or_create(&evergreen_metrics::OutcomeLabels {
                    model: route.model.clone(),
                    outcome: side.to_string(),
                })
                .inc();
        }
        shadow = shadow_of(&snap, v, key.as_deref());
    }
    (v, lv, shadow)
}

/// The split key of a request: the policy's header, else its feature in the first instance,
/// else none (the request is then placed at random).
pub(crate) fn split_key(
    snap: &Snapshot,
    headers: &HeaderMap,
    records: &[RawRecord],
) -> Option<Vec<u8>> {
    if let Some(h) = headers.get(snap.traffic.key_header()) {
        return Some(h.as_bytes().to_vec());
    }
    let feature = snap.traffic.key_feature.as_deref()?;
    let value = records.first()?.get(feature)?;
    value.canonical_bytes().map(|b| b.into_owned())
}

/// A stand-in key for requests without one: successive requests spread evenly.
fn random_key() -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut key = n.to_le_bytes().to_vec();
    key.extend_from_slice(&t.to_le_bytes());
    key
}

/// Where the traffic policy sends an unversioned request, and which side that is (`pinned`,
/// `canary`, `stable`); `None` when no policy applies (the newest version answers).
pub(crate) fn route_unversioned(
    snap: &Snapshot,
    key: Option<&[u8]>,
) -> Option<(u64, SharedVersion, &'static str)> {
    let loaded = |v: u64| snap.versions.get(&v).map(|lv| (v, lv.clone()));
    if let Some((v, lv)) = snap.traffic.pinned.and_then(loaded) {
        return Some((v, lv, "pinned"));
    }
    if let Some((v, lv)) = snap.labels.get(CANARY).copied().and_then(loaded) {
        let share = snap.traffic.canary_percent_at(crate::now_ms());
        let bucket = match key {
            Some(k) => key_bucket(k),
            None => key_bucket(&random_key()),
        };
        if share > 0.0 && bucket < share {
            return Some((v, lv, "canary"));
        }
    }
    let stable = *snap.labels.get(STABLE)?;
    // The stable version, or (if it is not loaded) the newest loaded one not newer than it.
    let (v, lv) = snap
        .versions
        .range(..=stable)
        .next_back()
        .map(|(v, lv)| (*v, lv.clone()))
        .or_else(|| snap.latest().map(|(v, lv)| (v, lv.clone())))?;
    Some((v, lv, if v == stable { "stable" } else { "latest" }))
}

/// The shadow version that should also predict this request, if any.
pub(crate) fn shadow_of(
    snap: &Snapshot,
    served: u64,
    key: Option<&[u8]>,
) -> Option<(u64, SharedVersion)> {
    let s = snap.traffic.shadow.as_ref()?;
    if s.version == served || s.percent <= 0.0 {
        return None;
    }
    let lv = snap.versions.get(&s.version)?;
    let mut k = key.map_or_else(random_key, <[u8]>::to_vec);
    k.extend_from_slice(b"/shadow");
    (key_bucket(&k) < s.percent).then(|| (s.version, lv.clone()))
}

/// Predicts `records` with the shadow version off the request path and records how far its
/// predictions are from the served ones (metrics and a debug log); never touches the response.
pub(crate) fn mirror(
    server: &Server,
    model: &str,
    (version, lv): (u64, SharedVersion),
    records: Vec<RawRecord>,
    served: Vec<f64>,
) {
    let metrics = server.inner.metrics.clone();
    let model = model.to_string();
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn_blocking(move || {
        let labels = evergreen_metrics::ModelLabels {
            model: model.clone(),
        };
        let Ok(p) = score(&lv, &records, None) else {
            tracing::debug!(%model, version, "shadow version cannot score a mirrored request");
            return;
        };
        let hist = metrics.shadow_difference.get_or_create(&labels);
        let mut worst = 0.0f64;
        for (a, b) in p.iter().zip(&served) {
            let d = (a - b).abs();
            worst = worst.max(d);
            hist.observe(d);
        }
        metrics
            .shadow_predictions
            .get_or_create(&labels)
            .inc_by(p.len() as u64);
        tracing::debug!(%model, version, instances = p.len(), worst, "shadow predictions");
    });
}

pub(crate) fn not_found_message(model: &str, target: &Target) -> String {
    match target {
        Target::Latest => format!("Servable not found for request: Latest({model})"),
        Target::Version(v) => format!("Servable not found for request: Specific({model}, {v})"),
        Target::Label(l) => format!("Unrecognized servable version label: {l}"),
    }
}

/// The version a predict/metadata request names, from the snapshot loaded once, now.
pub(crate) fn resolve(server: &Server, route: &Route) -> Result<(u64, SharedVersion), ApiError> {
    let Some(model) = server.inner.models.load().get(&route.model).cloned() else {
        return Err(ApiError::NotFound(not_found_message(
            &route.model,
            &route.target,
        )));
    };
    let snap = model.snapshot.load_full();
    let specific = |snap: &Snapshot, v: u64| {
        snap.versions
            .get(&v)
            .map(|lv| (v, lv.clone()))
            .ok_or_else(|| ApiError::NotFound(not_found_message(&route.model, &Target::Version(v))))
    };
    match &route.target {
        Target::Latest => snap.latest().map(|(v, lv)| (v, lv.clone())).ok_or_else(|| {
            ApiError::Unavailable(format!(
                "Servable not found for request: Latest({}): no version of the model has been loaded yet",
                route.model
            ))
        }),
        Target::Version(v) => specific(&snap, *v),
        Target::Label(l) => match snap.labels.get(l) {
            Some(v) => specific(&snap, *v),
            None => Err(ApiError::NotFound(not_found_message(
                &route.model,
                &route.target,
            ))),
        },
    }
}

fn version_status(v: u64) -> Value {
    json!({
        "version": v.to_string(),
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}
    })
}

/// `GET /v1/models/<name>[/versions/<n>|/labels/<l>]`, TF's messages on 404.
fn status(server: &Server, route: &Route) -> Result<Value, ApiError> {
    let none = || {
        ApiError::NotFound(format!(
            "Could not find any versions of model {}",
            route.model
        ))
    };
    let model = server
        .inner
        .models
        .load()
        .get(&route.model)
        .cloned()
        .ok_or_else(none)?;
    let snap = model.snapshot.load_full();
    let missing = |v: u64| {
        ApiError::NotFound(format!(
            "Could not find version {v} of model {}",
            route.model
        ))
    };
    let versions: Vec<u64> = match &route.target {
        Target::Latest => {
            if snap.versions.is_empty() {
                return Err(none());
            }
            snap.versions.keys().rev().copied().collect()
        }
        Target::Version(v) if snap.versions.contains_key(v) => vec![*v],
        Target::Version(v) => return Err(missing(*v)),
        Target::Label(l) => match snap.labels.get(l) {
            Some(v) if snap.versions.contains_key(v) => vec![*v],
            Some(v) => return Err(missing(*v)),
            None => {
                return Err(ApiError::NotFound(not_found_message(
                    &route.model,
                    &route.target,
                )));
            }
        },
    };
    Ok(json!({
        "model_version_status": versions.into_iter().map(version_status).collect::<Vec<_>>()
    }))
}

fn tensor_info(name: &str, dtype: &str) -> Value {
    json!({
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": false},
        "name": name
    })
}

/// TF's `GetModelMetadata` shape for the `serving_default` signature, plus the manifest.
fn metadata(model: &str, version: u64, lv: &LoadedVersion) -> Value {
    let spec = lv.transformer.spec();
    let mut inputs = Map::new();
    for c in &spec.categorical {
        inputs.insert(c.name.clone(), tensor_info(&c.name, "DT_STRING"));
    }
    for c in &spec.numeric {
        inputs.insert(c.name.clone(), tensor_info(&c.name, "DT_FLOAT"));
    }
    let manifest = serde_json::to_value(&lv.manifest).unwrap_or(Value::Null);
    json!({
        "model_spec": {"name": model, "signature_name": "", "version": version.to_string()},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": inputs,
                        "outputs": {"probabilities": tensor_info("probabilities", "DT_FLOAT")},
                        "method_name": "tensorflow/serving/predict"
                    }
                }
            },
            "evergreen": {"manifest": manifest}
        }
    })
}

/// Transforms each record with the version's own transformer and predicts with its model.
pub(crate) fn score(
    lv: &LoadedVersion,
    records: &[RawRecord],
    deadline: Option<Instant>,
) -> Result<Vec<f64>, ApiError> {
    let xs = features(lv, records, deadline)?;
    let mut p = Vec::with_capacity(xs.len());
    for (i, x) in xs.iter().enumerate() {
        check_deadline(deadline, i, "scoring")?;
        p.push(lv.model.predict(x));
    }
    Ok(p)
}

/// The feature vectors of `records` under `lv`'s spec; the error names the instance.
fn features(
    lv: &LoadedVersion,
    records: &[RawRecord],
    deadline: Option<Instant>,
) -> Result<Vec<FeatureVector>, ApiError> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            check_deadline(deadline, i, "transforming")?;
            lv.transformer
                .features(r)
                .map_err(|e| ApiError::BadRequest(format!("instance {i}: {e}")))
        })
        .collect()
}

/// Instances transformed or scored between two looks at a request's deadline.
const DEADLINE_EVERY: usize = 256;

/// `Err(Timeout)` when instance `i` is a multiple of [`DEADLINE_EVERY`] and `deadline` has
/// passed: a request whose client already had its 408 stops instead of running on.
fn check_deadline(deadline: Option<Instant>, i: usize, doing: &str) -> Result<(), ApiError> {
    match deadline {
        Some(d) if i.is_multiple_of(DEADLINE_EVERY) && Instant::now() >= d => {
            Err(ApiError::Timeout(format!(
                "the request's deadline passed while {doing} instance {i}; its work stopped"
            )))
        }
        _ => Ok(()),
    }
}

/// The batching queue of version `v` of `model`, when that version batches requests.
fn batcher_of(server: &Server, model: &str, v: u64) -> Option<Arc<Batcher>> {
    server.inner.opts.batching.as_ref()?; // off: no snapshot lookups on the request path
    let models = server.inner.models.load();
    let snap = models.get(model)?.snapshot.load();
    snap.batchers.get(&v).cloned()
}

/// Predictions of `records` by version `v` of `model` (`lv`): scored here, or queued for a
/// batch with other requests' instances when that version batches.
pub(crate) enum Scored {
    Now(Vec<f64>),
    Queued(Pending),
}

impl Scored {
    /// The predictions, waiting for a queued batch (on a blocking thread).
    pub(crate) fn wait(self) -> Result<Vec<f64>, ApiError> {
        match self {
            Scored::Now(p) => Ok(p),
            Scored::Queued(pending) => pending.wait(),
        }
    }
}

pub(crate) fn score_served(
    server: &Server,
    model: &str,
    v: u64,
    lv: &LoadedVersion,
    records: &[RawRecord],
    deadline: Option<Instant>,
) -> Result<Scored, ApiError> {
    let scored = match batcher_of(server, model, v) {
        Some(b) => features(lv, records, deadline).and_then(|xs| b.submit(xs).map(Scored::Queued)),
        None => score(lv, records, deadline).map(Scored::Now),
    };
    if let Err(ApiError::Timeout(_)) = &scored {
        server
            .inner
            .metrics
            .abandoned_requests
            .get_or_create(&evergreen_metrics::Metrics::model(model))
            .inc();
    }
    scored
}

/// The model's input column when it has exactly one (bare instance values then name it).
fn single_input(spec: &evergreen_core::FeatureSpec) -> Option<&str> {
    let mut names = spec
        .categorical
        .iter()
        .map(|c| c.name.as_str())
        .chain(spec.numeric.iter().map(|c| c.name.as_str()))
        .chain(spec.sparse.iter().map(|c| c.name.as_str()));
    let first = names.next()?;
    names.next().is_none().then_some(first)
}

/// The records of an inference request (and, for `:predict`, its format).
fn parse_inference(
    api: Api,
    body: &[u8],
    single: Option<&str>,
) -> Result<(Format, Vec<RawRecord>), ApiError> {
    match api {
        Api::Predict => json::predict_request(body, single),
        _ => Ok((Format::Row, json::examples_request(body)?)),
    }
}

/// The response body of an inference API for predictions `p`.
fn respond(api: Api, format: Format, p: Vec<f64>) -> Value {
    match api {
        Api::Predict => match format {
            Format::Row => json!({ "predictions": p }),
            Format::Columnar => json!({ "outputs": p }),
        },
        Api::Classify => {
            let results: Vec<Value> = p
                .into_iter()
                .map(|p| json!([["0", 1.0 - p], ["1", p]]))
                .collect();
            json!({ "results": results })
        }
        _ => json!({ "results": p }),
    }
}

async fn metrics(State(server): State<Server>) -> Response {
    (
        [(header::CONTENT_TYPE, evergreen_metrics::CONTENT_TYPE)],
        server.inner.metrics.render(),
    )
        .into_response()
}

/// Liveness: 200 while the process answers at all.
async fn livez() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "alive"}))).into_response()
}

/// Readiness (`/readyz`, `/healthz`): 200 when every model serves at least one version, else
/// 503.
async fn healthz(State(server): State<Server>) -> Response {
    let mut ok = true;
    let mut models = Map::new();
    let served = server.inner.models.load_full();
    for (name, m) in served.iter() {
        let snap = m.snapshot.load();
        let versions: Vec<String> = snap.versions.keys().rev().map(|v| v.to_string()).collect();
        ok &= !versions.is_empty();
        models.insert(name.clone(), json!({ "versions": versions }));
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ok { "ok" } else { "unavailable" }, "models": models});
    (status, axum::Json(body)).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(&ApiError::NotFound(format!(
        "Not found: {method} {}",
        uri.path()
    )))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_response(&ApiError::MethodNotAllowed {
        message: format!("Method {method} not allowed for {}", uri.path()),
        allow: "GET, HEAD",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(model: &str, target: Target, api: Api) -> Option<Route> {
        Some(Route {
            model: model.into(),
            target,
            api,
        })
    }

    #[test]
    fn routes_parse_like_tf_serving() {
        assert_eq!(parse_route("m"), r("m", Target::Latest, Api::Status));
        assert_eq!(
            parse_route("m/versions/3"),
            r("m", Target::Version(3), Api::Status)
        );
        assert_eq!(
            parse_route("m/labels/stable/metadata"),
            r("m", Target::Label("stable".into()), Api::Metadata)
        );
        assert_eq!(
            parse_route("m/metadata"),
            r("m", Target::Latest, Api::Metadata)
        );
        assert_eq!(
            parse_route("metadata"),
            r("metadata", Target::Latest, Api::Status)
        );
        assert_eq!(
            parse_route("m:predict"),
            r("m", Target::Latest, Api::Predict)
        );
        assert_eq!(
            parse_route("m/Versions/12:Classify"),
            r("m", Target::Version(12), Api::Classify)
        );
        assert_eq!(
            parse_route("m/labels/canary:regress"),
            r("m", Target::Label("canary".into()), Api::Regress)
        );
        for bad in [
            "",
            "m/",
            "m:explain",
            "m/versions/x",
            "m/versions/",
            "m/versions/99999999999999999999999",
            "m/metadata:predict",
            "m/versions/1/extra",
            "m:predict:predict",
            "/m",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
        assert_eq!(guess_api("m/x:classify"), Api::Classify);
        assert_eq!(guess_api("m/x/metadata"), Api::Metadata);
        assert_eq!(guess_api("m/x"), Api::Status);
    }

    #[test]
    fn work_stops_at_a_passed_deadline_every_few_hundred_instances() {
        let now = Instant::now();
        let passed = Some(now);
        let ahead = Some(now + std::time::Duration::from_secs(3600));
        for i in [0, DEADLINE_EVERY, 7 * DEADLINE_EVERY] {
            match check_deadline(passed, i, "scoring") {
                Err(ApiError::Timeout(m)) => assert!(m.contains(&format!("instance {i}")), "{m}"),
                other => panic!("instance {i}: {other:?}"),
            }
            assert!(check_deadline(ahead, i, "scoring").is_ok());
            assert!(check_deadline(None, i, "scoring").is_ok());
        }
        // Between two looks the clock is not read.
        assert!(check_deadline(passed, DEADLINE_EVERY + 1, "scoring").is_ok());
        assert_eq!(
            ApiError::Timeout(String::new()).status(),
            StatusCode::REQUEST_TIMEOUT
        );
    }
}
