//! The admin API under `/admin/v1/models/<name>`: read a model's serving state, and promote,
//! roll back, split (with a ramp), pin and shadow. Every call needs `Authorization: Bearer
//! <token>` (compared in constant time); every action is applied to the registry's
//! `labels.json` / `traffic.json` atomically, takes effect at once (the model is reloaded before
//! the answer) and is handed to an [`AdminAudit`] (the binary's writes the lineage store) with
//! who, what, when and why.

use crate::Server;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use evergreen_metrics::OutcomeLabels;
use evergreen_registry::{AdminChange, AdminError, Registry, Shadow, SplitRequest};
use serde::Deserialize;
use serde_json::{Value, json};

/// One applied admin action, as handed to the [`AdminAudit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAction {
    /// Model it applies to.
    pub model: String,
    /// `promote`, `rollback`, `split`, `pin`, `unpin` or `shadow`.
    pub action: String,
    /// Who (the request's `actor`, default `admin-api`).
    pub actor: String,
    /// Why (the request's `reason`).
    pub reason: String,
    /// What changed (labels and traffic policy before and after), as JSON.
    pub details_json: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Where admin actions are recorded. The binary records them in the lineage store; the serving
/// crate itself stays free of it.
pub trait AdminAudit: Send + Sync + 'static {
    /// Records an applied action; an error is reported to the caller with the action's result.
    fn record(&self, action: &AdminAction) -> Result<(), String>;
}

/// Admin API settings.
#[derive(Clone)]
pub struct AdminOptions {
    /// The bearer token every admin request must carry.
    pub token: String,
    /// Where actions are recorded.
    pub audit: std::sync::Arc<dyn AdminAudit>,
}

impl PartialEq for AdminOptions {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.token.as_bytes(), other.token.as_bytes())
            && std::sync::Arc::ptr_eq(&self.audit, &other.audit)
    }
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// Who and why, common to every action body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Body of `:promote` and `:pin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Body of `:split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    #[serde(flatten)]
    split: SplitRequest,
}

/// Body of `:shadow`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowBody {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn refused(server: &Server, model: &str, message: &str) -> Response {
    server
        .inner
        .metrics
        .admin_actions
        .get_or_create(&OutcomeLabels {
            model: model.to_string(),
            outcome: "refused".into(),
        })
        .inc();
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"evergreen-admin\""),
    );
    r
}

/// The admin options when the request carries the admin token; otherwise the response (404
/// when the admin API is off, 401 with the refusal counted for `metric_model`).
fn authorize(
    server: &Server,
    headers: &HeaderMap,
    metric_model: &str,
) -> Result<crate::AdminOptions, Box<Response>> {
    let Some(opts) = server.inner.opts.admin.clone() else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: start the server with an admin token \
             (EVERGREEN_ADMIN_TOKEN or --admin_token_file)",
        )));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(Box::new(refused(
            server,
            metric_model,
            "admin API: missing `Authorization: Bearer <token>`",
        ))),
        Some(t) if !constant_time_eq(t.trim().as_bytes(), opts.token.as_bytes()) => Err(Box::new(
            refused(server, metric_model, "admin API: wrong token"),
        )),
        Some(_) => Ok(opts),
    }
}

/// `/admin/v1/models/{*rest}`.
pub(crate) async fn admin(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/admin/v1/models/")
        .unwrap_or_default();
    let (name, verb) = match rest.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    // Only served models: a name from the request never reaches the filesystem otherwise.
    let known = server.inner.models.load().contains_key(name);
    let metric_model = if known { name } else { "" };
    let opts = match authorize(&server, &headers, metric_model) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if !known {
        return no_such_model(name);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), format!("cannot read request body: {e}")),
    };
    match (method.clone(), verb) {
        (Method::GET, None) => state(&server, name).await,
        (Method::POST, Some("feedback")) => feedback(&server, &opts, name, &body).await,
        (Method::POST, Some(verb)) => act(&server, &opts, name, verb, &body).await,
        (_, None) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("admin API: use GET for {}", uri.path()),
        ),
        (_, Some(_)) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("admin API: use POST for {}", uri.path()),
        ),
    }
}

/// 404 for a model name that is not served (or no longer: the model config file changed).
fn no_such_model(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("admin API: no model named {name:?} is served"),
    )
}

/// `GET /admin/v1/models/<m>`: versions on disk and served, labels, traffic policy.
async fn state(server: &Server, name: &str) -> Response {
    let Some(model) = server.inner.models.load().get(name).cloned() else {
        return no_such_model(name);
    };
    let base = model.base_path.clone();
    let model_name = name.to_string();
    let snap = model.snapshot.load_full();
    let read = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let r = Registry::open_existing(&base, &model_name).map_err(|e| e.to_string())?;
        Ok(json!({
            "model": model_name,
            "on_disk": r.versions().map_err(|e| e.to_string())?,
            "labels": r.labels().map_err(|e| e.to_string())?,
            "traffic": r.traffic().map_err(|e| e.to_string())?,
        }))
    })
    .await;
    match read {
        Ok(Ok(mut v)) => {
            v["served"] = json!(snap.versions.keys().rev().collect::<Vec<_>>());
            (StatusCode::OK, axum::Json(v)).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("admin API body: {e}")))
}

/// After `change` was applied to `model_name`'s registry: the model is reloaded (effective
/// now, not at the next poll) and the action recorded; returns a warning when it could not be.
/// Blocking.
fn applied(
    srv: &Server,
    audit: &dyn AdminAudit,
    model_name: &str,
    change: &AdminChange,
    actor: String,
    reason: String,
    now: i64,
) -> Option<String> {
    if let Some(m) = srv.inner.models.load().get(model_name) {
        m.reload(&srv.inner.metrics);
    }
    let record = AdminAction {
        model: model_name.to_string(),
        action: change.action.to_string(),
        actor,
        reason,
        details_json: serde_json::to_string(change).expect("change serializes"),
        at_ms: now,
    };
    audit.record(&record).err().map(|e| {
        tracing::error!(model = %model_name, action = change.action, "admin action applied but not recorded: {e}");
        format!("applied, but not recorded: {e}")
    })
}

/// `POST /admin/v1/models/<m>:<verb>`.
async fn act(
    server: &Server,
    opts: &crate::AdminOptions,
    name: &str,
    verb: &str,
    body: &[u8],
) -> Response {
    let now = crate::now_ms();
    // Parse the body into the action to run on the registry, plus who and why.
    type Action = Box<dyn FnOnce(&Registry) -> Result<AdminChange, AdminError> + Send>;
    let parsed: Result<(Action, Common), ApiError> = match verb {
        "promote" | "pin" => parse::<VersionBody>(body).map(|b| {
            let v = b.version;
            let action: Action = if verb == "promote" {
                Box::new(move |r: &Registry| r.promote(v))
            } else {
                Box::new(move |r: &Registry| r.pin(v))
            };
            (
                action,
                Common {
                    actor: b.actor,
                    reason: b.reason,
                },
            )
        }),
        "unpin" => {
            parse::<Common>(body).map(|c| (Box::new(|r: &Registry| r.pin(None)) as Action, c))
        }
        "rollback" => {
            parse::<Common>(body).map(|c| (Box::new(|r: &Registry| r.rollback()) as Action, c))
        }
        "pause" => parse::<Common>(body).map(|c| {
            let why = c.reason.clone().unwrap_or_default();
            (
                Box::new(move |r: &Registry| r.pause_publication(&why)) as Action,
                c,
            )
        }),
        "resume" => parse::<Common>(body)
            .map(|c| (Box::new(|r: &Registry| r.resume_publication()) as Action, c)),
        "split" => {
            // `actor` and `reason` ride along in the same object.
            let mut v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("admin API body: {e}"));
                }
            };
            let take = |v: &mut Value, k: &str| {
                v.as_object_mut()
                    .and_then(|o| o.remove(k))
                    .and_then(|x| x.as_str().map(str::to_string))
            };
            let common = Common {
                actor: take(&mut v, "actor"),
                reason: take(&mut v, "reason"),
            };
            serde_json::from_value::<SplitBody>(v)
                .map_err(|e| ApiError::BadRequest(format!("admin API body: {e}")))
                .map(|b| {
                    let split = b.split;
                    (
                        Box::new(move |r: &Registry| r.split(&split, now)) as Action,
                        common,
                    )
                })
        }
        "shadow" => parse::<ShadowBody>(body).and_then(|b| {
            let shadow = match (b.version, b.percent) {
                (Some(version), p) => Some(Shadow {
                    version,
                    percent: p.unwrap_or(100.0),
                }),
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(ApiError::BadRequest(
                        "admin API: a shadow percent needs a version".into(),
                    ));
                }
            };
            Ok((
                Box::new(move |r: &Registry| r.shadow(shadow)) as Action,
                Common {
                    actor: b.actor,
                    reason: b.reason,
                },
            ))
        }),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "admin API: unknown action {other:?} (promote, rollback, split, pin, unpin, \
                     shadow, pause, resume)"
                ),
            );
        }
    };
    let (action, common) = match parsed {
        Ok(p) => p,
        Err(e) => return error(e.status(), e.to_string()),
    };
    let actor = common.actor.unwrap_or_else(|| "admin-api".into());
    let reason = common.reason.unwrap_or_default();
    if actor.len() > 256 || reason.len() > 4096 {
        return error(
            StatusCode::BAD_REQUEST,
            "admin API: actor is limited to 256 bytes and reason to 4096",
        );
    }
    let Some(model) = server.inner.models.load().get(name).cloned() else {
        return no_such_model(name);
    };
    let (base, model_name, audit) = (
        model.base_path.clone(),
        name.to_string(),
        opts.audit.clone(),
    );
    let srv = server.clone();
    let done = tokio::task::spawn_blocking(move || {
        let registry = Registry::open_existing(&base, &model_name)?;
        let change = action(&registry)?;
        let warning = applied(
            &srv,
            audit.as_ref(),
            &model_name,
            &change,
            actor,
            reason,
            now,
        );
        Ok::<_, AdminError>((change, warning))
    })
    .await;
    let outcome = |o: &str| {
        server
            .inner
            .metrics
            .admin_actions
            .get_or_create(&OutcomeLabels {
                model: name.to_string(),
                outcome: o.to_string(),
            })
            .inc();
    };
    match done {
        Ok(Ok((change, warning))) => {
            outcome(change.action);
            tracing::info!(model = %name, action = change.action, summary = %change.summary, "admin action");
            let mut body = json!({
                "model": name,
                "action": change.action,
                "summary": change.summary,
                "labels": change.labels_after,
                "traffic": change.traffic_after,
            });
            if let Some(w) = warning {
                body["warning"] = json!(w);
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(AdminError::Invalid(m))) => {
            outcome("failed");
            error(StatusCode::BAD_REQUEST, m)
        }
        Ok(Err(e)) => {
            outcome("failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(e) => {
            outcome("failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Body of `:feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    feedback: Vec<crate::feedback::FeedbackItem>,
}

/// Labels per `:feedback` request, at most.
const MAX_FEEDBACK_ITEMS: usize = 10_000;

/// `POST /admin/v1/models/<m>:feedback`: labels for earlier predictions (by prediction id or
/// split key). They are joined, the versions' live metrics updated and, with a canary policy,
/// the canary judged: rolled back or promoted (an admin action by `evergreen-canary`, the
/// numbers behind it as the reason).
async fn feedback(
    server: &Server,
    opts: &crate::AdminOptions,
    name: &str,
    body: &[u8],
) -> Response {
    let Some(store) = server.inner.feedback.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "feedback is off: start the server with --enable_feedback",
        );
    };
    let items = match serde_json::from_slice::<FeedbackBody>(body) {
        Ok(b) if b.feedback.len() <= MAX_FEEDBACK_ITEMS => b.feedback,
        Ok(b) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} labels in one request; at most {MAX_FEEDBACK_ITEMS}",
                    b.feedback.len()
                ),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("feedback body: {e}")),
    };
    let (report, touched) = store.join(name, &items);
    let m = &server.inner.metrics;
    for (outcome, n) in [
        ("joined", report.joined),
        ("unknown", report.unknown),
        ("expired", report.expired),
        ("duplicate", report.duplicate),
        ("invalid", report.invalid),
    ] {
        if n > 0 {
            m.feedback
                .get_or_create(&OutcomeLabels {
                    model: name.to_string(),
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
    }
    let mut live = serde_json::Map::new();
    for v in touched {
        if let Some(l) = store.live(name, v) {
            let labels = evergreen_metrics::VersionLabels {
                model: name.to_string(),
                version: v.to_string(),
            };
            m.live_logloss.get_or_create(&labels).set(l.logloss);
            m.live_accuracy.get_or_create(&labels).set(l.accuracy);
            m.live_examples
                .get_or_create(&labels)
                .set(i64::try_from(l.examples).unwrap_or(i64::MAX));
            live.insert(v.to_string(), json!(l));
        }
    }
    let verdict = canary_verdict(server, opts, name).await;
    (
        StatusCode::OK,
        axum::Json(json!({"model": name, "report": report, "live": live, "canary": verdict})),
    )
        .into_response()
}

/// Judges a canary that gets traffic by the live metrics of canary and stable: sets the excess
/// gauge and, under the canary policy, rolls it back or promotes it. Returns what happened.
async fn canary_verdict(server: &Server, opts: &crate::AdminOptions, name: &str) -> Value {
    use crate::feedback::{Verdict, verdict};
    let (Some(store), Some(model)) = (
        server.inner.feedback.as_ref(),
        server.inner.models.load().get(name).cloned(),
    ) else {
        return Value::Null;
    };
    let snap = model.snapshot.load_full();
    let (Some(&canary), Some(&stable)) = (
        snap.labels.get(evergreen_registry::CANARY),
        snap.labels.get(evergreen_registry::STABLE),
    ) else {
        return Value::Null;
    };
    if snap.traffic.canary_percent_at(crate::now_ms()) <= 0.0 {
        return Value::Null;
    }
    let (c, s) = (store.live(name, canary), store.live(name, stable));
    if let (Some(c), Some(s)) = (c, s) {
        server
            .inner
            .metrics
            .canary_logloss_excess
            .get_or_create(&evergreen_metrics::Metrics::model(name))
            .set(c.logloss - s.logloss);
    }
    let Some(policy) = store.opts.canary else {
        return json!({"canary": canary, "stable": stable, "verdict": "none (no canary policy)"});
    };
    let decision = verdict(&policy, c, s);
    let numbers = |c: crate::feedback::Live, s: crate::feedback::Live| {
        format!(
            "canary v{canary} live logloss {:.4} over {} labelled predictions, stable v{stable} {:.4} over {}; tolerance {}",
            c.logloss, c.examples, s.logloss, s.examples, policy.max_logloss_increase
        )
    };
    let (c, s) = match (decision, c, s) {
        (Verdict::Wait, _, _) | (_, None, _) | (_, _, None) => {
            return json!({"canary": canary, "stable": stable, "verdict": "wait"});
        }
        (_, Some(c), Some(s)) => (c, s),
    };
    let reason = numbers(c, s);
    let (base, model_name, audit, srv) = (
        model.base_path.clone(),
        name.to_string(),
        opts.audit.clone(),
        server.clone(),
    );
    let why = reason.clone();
    let done = tokio::task::spawn_blocking(move || {
        let registry = Registry::open_existing(&base, &model_name)?;
        let change = match decision {
            Verdict::RollBack => registry.rollback()?,
            _ => registry.promote(Some(canary))?,
        };
        let warning = applied(
            &srv,
            audit.as_ref(),
            &model_name,
            &change,
            "evergreen-canary".into(),
            why,
            crate::now_ms(),
        );
        Ok::<_, AdminError>((change, warning))
    })
    .await;
    match done {
        Ok(Ok((change, warning))) => {
            server
                .inner
                .metrics
                .admin_actions
                .get_or_create(&OutcomeLabels {
                    model: name.to_string(),
                    outcome: change.action.to_string(),
                })
                .inc();
            tracing::warn!(model = %name, action = change.action, "canary verdict: {reason}");
            json!({"canary": canary, "stable": stable, "verdict": change.action,
                   "reason": reason, "summary": change.summary, "warning": warning})
        }
        Ok(Err(e)) => json!({"canary": canary, "verdict": "failed", "error": e.to_string()}),
        Err(e) => json!({"canary": canary, "verdict": "failed", "error": e.to_string()}),
    }
}

/// An Alertmanager webhook notification (version 4; fields evergreen does not use ignored).
#[derive(Debug, Deserialize)]
struct Notification {
    alerts: Vec<NotifiedAlert>,
}

/// One alert of a [`Notification`].
#[derive(Debug, Deserialize)]
struct NotifiedAlert {
    status: String,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

/// Alerts handled per notification, at most.
const MAX_NOTIFIED_ALERTS: usize = 1000;

/// `POST /admin/v1/alertmanager`: Alertmanager's webhook receiver (`webhook_configs` with
/// `http_config.authorization.credentials` set to the admin token). An alert acts when it has
/// a `model` label naming a served model and an `evergreen_action` label: `rollback` (when
/// firing; once per alert, however often it is sent: `fingerprint@startsAt` is remembered in
/// the registry with the rollback) or `pause_publication` (paused while firing, resumed when
/// resolved). Each action is applied and recorded like an admin action, by actor
/// `alertmanager`, with the alert's name and summary as the reason. The answer lists what was
/// applied and what was ignored, and why.
pub(crate) async fn alertmanager(
    State(server): State<Server>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let opts = match authorize(&server, &headers, "") {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if method != Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin API: use POST for /admin/v1/alertmanager",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), format!("cannot read request body: {e}")),
    };
    let note: Notification = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook notification: {e}"),
            );
        }
    };
    if note.alerts.len() > MAX_NOTIFIED_ALERTS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_NOTIFIED_ALERTS} alerts per notification"),
        );
    }
    let now = crate::now_ms();
    let srv = server.clone();
    let done = tokio::task::spawn_blocking(move || {
        let (mut applied_list, mut ignored) = (Vec::new(), Vec::new());
        for a in note.alerts {
            let name = a.labels.get("alertname").cloned().unwrap_or_default();
            let mut ignore = |why: String| ignored.push(json!({"alert": name.clone(), "why": why}));
            let Some(action) = a.labels.get("evergreen_action") else {
                ignore("no evergreen_action label".into());
                continue;
            };
            let Some(model_name) = a.labels.get("model") else {
                ignore("no model label".into());
                continue;
            };
            let Some(model) = srv.inner.models.load().get(model_name).cloned() else {
                ignore(format!("no model named {model_name:?} is served"));
                continue;
            };
            let firing = a.status == "firing";
            let summary = a.annotations.get("summary").cloned().unwrap_or_default();
            let reason = format!("alert {name} {}: {summary}", a.status);
            let registry = match Registry::open_existing(&model.base_path, model_name) {
                Ok(r) => r,
                Err(e) => {
                    ignore(e.to_string());
                    continue;
                }
            };
            let result = match (action.as_str(), firing) {
                ("rollback", true) => {
                    let key = format!("{}@{}", a.fingerprint, a.starts_at);
                    registry.rollback_for_alert(&key)
                }
                ("rollback", false) => {
                    ignore("resolved: a rollback is not undone".into());
                    continue;
                }
                ("pause_publication", true) => registry.pause_publication(&reason).map(Some),
                ("pause_publication", false) => registry.resume_publication().map(Some),
                (other, _) => {
                    ignore(format!(
                        "unknown evergreen_action {other:?} (rollback, pause_publication)"
                    ));
                    continue;
                }
            };
            match result {
                Ok(Some(change)) => {
                    let warning = applied(
                        &srv,
                        opts.audit.as_ref(),
                        model_name,
                        &change,
                        "alertmanager".into(),
                        reason,
                        now,
                    );
                    srv.inner
                        .metrics
                        .admin_actions
                        .get_or_create(&OutcomeLabels {
                            model: model_name.clone(),
                            outcome: change.action.to_string(),
                        })
                        .inc();
                    tracing::info!(model = %model_name, alert = %name, action = change.action, summary = %change.summary, "alert acted on");
                    applied_list.push(json!({
                        "model": model_name, "alert": name, "action": change.action,
                        "summary": change.summary, "warning": warning,
                    }));
                }
                Ok(None) => ignore("already acted on (the same alert sent again)".into()),
                Err(e) => ignore(e.to_string()),
            }
        }
        json!({"applied": applied_list, "ignored": ignored})
    })
    .await;
    match done {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
