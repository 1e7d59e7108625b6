//! gRPC, wire-compatible with TensorFlow Serving: `tensorflow.serving.PredictionService` (Predict,
//! Classify, Regress, GetModelMetadata) and `ModelService.GetModelStatus`, from evergreen's own
//! `.proto` declarations (`proto/`, same packages, names and field numbers). Requests resolve
//! versions, labels and the traffic policy exactly as the REST API does, and every response's
//! `model_spec` (and the `x-evergreen-model-version` metadata) names the version that answered.

use crate::Server;
use crate::api::{self, Api, Route, Target};
use crate::error::ApiError;
use evergreen_core::{RawRecord, RawValue};
use pb::tensorflow::serving as tfs;
use pb::tensorflow::{DataType, Example, TensorProto, TensorShapeProto, feature};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Code generated from `proto/` by `build.rs`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    /// Package `tensorflow`.
    pub mod tensorflow {
        tonic::include_proto!("tensorflow");
        /// Package `tensorflow.error`.
        pub mod error {
            tonic::include_proto!("tensorflow.error");
        }
        /// Package `tensorflow.serving`.
        pub mod serving {
            tonic::include_proto!("tensorflow.serving");
        }
    }
}

/// The output tensor of Predict: P(y = 1) per instance, shape `[batch]`.
pub const OUTPUT: &str = "probabilities";
/// The one signature.
pub const SIGNATURE: &str = "serving_default";

/// The gRPC services over a [`Server`].
#[derive(Clone)]
pub(crate) struct Grpc {
    server: Server,
}

/// Both services, ready for a tonic router.
pub(crate) fn services(
    server: Server,
) -> (
    tfs::prediction_service_server::PredictionServiceServer<Grpc>,
    tfs::model_service_server::ModelServiceServer<Grpc>,
) {
    let limit = server.inner.opts.max_body_bytes;
    let g = Grpc { server };
    (
        tfs::prediction_service_server::PredictionServiceServer::new(g.clone())
            .max_decoding_message_size(limit),
        tfs::model_service_server::ModelServiceServer::new(g).max_decoding_message_size(limit),
    )
}

fn status_of(e: ApiError) -> Status {
    match e {
        ApiError::BadRequest(m) => Status::invalid_argument(m),
        ApiError::NotFound(m) => Status::not_found(m),
        ApiError::MethodNotAllowed { message, .. } => Status::unimplemented(message),
        ApiError::PayloadTooLarge(m) => Status::resource_exhausted(m),
        ApiError::Unavailable(m) => Status::unavailable(m),
        ApiError::Timeout(m) => Status::deadline_exceeded(m),
    }
}

/// The client's deadline (the `grpc-timeout` header: up to 8 digits and a unit, `H`, `M`, `S`,
/// `m`, `u` or `n`), so that the work of a request it gave up on stops.
fn grpc_timeout(headers: &axum::http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The REST route a `ModelSpec` stands for.
fn route_of(spec: Option<&tfs::ModelSpec>, api: Api) -> Result<Route, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
    if spec.name.is_empty() {
        return Err(Status::invalid_argument("Missing model name in request."));
    }
    if !crate::json::SIGNATURES.contains(&spec.signature_name.as_str()) {
        return Err(Status::invalid_argument(format!(
            "Serving signature name: \"{}\" not found in signature def",
            spec.signature_name
        )));
    }
    let target = match &spec.version_choice {
        None => Target::Latest,
        Some(tfs::model_spec::VersionChoice::Version(v)) => {
            let v = u64::try_from(*v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| Status::invalid_argument(format!("invalid version {v}")))?;
            Target::Version(v)
        }
        Some(tfs::model_spec::VersionChoice::VersionLabel(l)) => Target::Label(l.clone()),
    };
    Ok(Route {
        model: spec.name.clone(),
        target,
        api,
    })
}

fn answered_spec(model: &str, version: u64) -> tfs::ModelSpec {
    tfs::ModelSpec {
        name: model.to_string(),
        signature_name: SIGNATURE.into(),
        version_choice: Some(tfs::model_spec::VersionChoice::Version(version as i64)),
    }
}

fn with_version<T>(msg: T, version: u64, prediction_id: Option<String>) -> Response<T> {
    let mut r = Response::new(msg);
    r.metadata_mut().insert(
        crate::VERSION_HEADER,
        tonic::metadata::MetadataValue::from(version),
    );
    if let Some(id) = prediction_id
        && let Ok(v) = id.parse()
    {
        r.metadata_mut().insert(crate::api::PREDICTION_ID_HEADER, v);
    }
    r
}

/// Counts a request like the REST API does.
fn count(server: &Server, model: &str, version: Option<u64>, api: Api, code: &str) {
    let known = server.inner.models.load().contains_key(model);
    server
        .inner
        .metrics
        .requests
        .get_or_create(&evergreen_metrics::RequestLabels {
            model: if known {
                model.to_string()
            } else {
                String::new()
            },
            version: version.map(|v| v.to_string()).unwrap_or_default(),
            api: format!("grpc_{}", api.as_str()),
            code: code.to_string(),
        })
        .inc();
}

/// Values of one input tensor, row by row: `rows` rows of `per_row` values each.
fn tensor_rows(name: &str, t: &TensorProto) -> Result<(usize, Vec<RawValue>), String> {
    let dims: Vec<i64> = t
        .tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default();
    if dims.iter().any(|d| *d < 0) {
        return Err(format!("input {name}: unknown dimension in its shape"));
    }
    let content = &t.tensor_content;
    let fixed = |size: usize| -> Result<Vec<&[u8]>, String> {
        if !content.len().is_multiple_of(size) {
            return Err(format!(
                "input {name}: tensor_content of {} bytes is not a whole number of {size}-byte values",
                content.len()
            ));
        }
        Ok(content.chunks_exact(size).collect())
    };
    let values: Vec<RawValue> = match DataType::try_from(t.dtype) {
        Ok(DataType::DtString) => t
            .string_val
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => RawValue::Str(s.to_string()),
                Err(_) => RawValue::Bytes(b.clone()),
            })
            .collect(),
        Ok(DataType::DtFloat) if !content.is_empty() => fixed(4)?
            .into_iter()
            .map(|c| RawValue::Num(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64))
            .collect(),
        Ok(DataType::DtFloat) => t
            .float_val
            .iter()
            .map(|v| RawValue::Num(*v as f64))
            .collect(),
        Ok(DataType::DtDouble) if !content.is_empty() => fixed(8)?
            .into_iter()
            .map(|c| RawValue::Num(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect(),
        Ok(DataType::DtDouble) => t.double_val.iter().map(|v| RawValue::Num(*v)).collect(),
        Ok(DataType::DtInt32) if !content.is_empty() => fixed(4)?
            .into_iter()
            .map(|c| RawValue::Int(i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64))
            .collect(),
        Ok(DataType::DtInt32) => t.int_val.iter().map(|v| RawValue::Int(*v as i64)).collect(),
        Ok(DataType::DtInt64) if !content.is_empty() => fixed(8)?
            .into_iter()
            .map(|c| RawValue::Int(i64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect(),
        Ok(DataType::DtInt64) => t.int64_val.iter().map(|v| RawValue::Int(*v)).collect(),
        Ok(DataType::DtBool) if !content.is_empty() => {
            content.iter().map(|b| RawValue::Int(*b as i64)).collect()
        }
        Ok(DataType::DtBool) => t
            .bool_val
            .iter()
            .map(|v| RawValue::Int(*v as i64))
            .collect(),
        Ok(other) => {
            return Err(format!(
                "input {name}: dtype {} is not supported (use DT_STRING, DT_FLOAT, DT_DOUBLE, \
                 DT_INT32, DT_INT64 or DT_BOOL)",
                other.as_str_name()
            ));
        }
        Err(_) => return Err(format!("input {name}: unknown dtype {}", t.dtype)),
    };
    // A scalar is one row; otherwise the first dimension is the batch.
    let rows = match dims.first() {
        None => 1,
        Some(d) => *d as usize,
    };
    let per_row: usize = dims.iter().skip(1).map(|d| *d as usize).product();
    let expected = if dims.is_empty() { 1 } else { rows * per_row };
    if values.len() != expected {
        return Err(format!(
            "input {name}: shape {dims:?} needs {expected} values, the tensor has {}",
            values.len()
        ));
    }
    Ok((rows, values))
}

/// The instances of a Predict request: one record per row of the inputs (every input must have
/// the same number of rows; a row with several values becomes a list).
pub(crate) fn predict_records(
    inputs: &HashMap<String, TensorProto>,
) -> Result<Vec<RawRecord>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::BadRequest("Missing input tensors".into()));
    }
    let mut names: Vec<&String> = inputs.keys().collect();
    names.sort();
    let mut batch: Option<usize> = None;
    let mut columns = Vec::with_capacity(names.len());
    for name in names {
        let (rows, values) = tensor_rows(name, &inputs[name]).map_err(ApiError::BadRequest)?;
        match batch {
            None => batch = Some(rows),
            Some(b) if b != rows => {
                return Err(ApiError::BadRequest(format!(
                    "input {name} has {rows} rows, the other inputs {b}: every input needs the \
                     same first dimension"
                )));
            }
            Some(_) => {}
        }
        columns.push((name, values));
    }
    let rows = batch.unwrap_or(0);
    if rows > crate::MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "{rows} instances in one request; at most {}",
            crate::MAX_BATCH
        )));
    }
    let mut records: Vec<RawRecord> = (0..rows).map(|_| RawRecord::default()).collect();
    for (name, values) in columns {
        let per_row = values.len().checked_div(rows).unwrap_or(0);
        let mut it = values.into_iter();
        for r in records.iter_mut() {
            let v = if per_row == 1 {
                it.next().unwrap_or(RawValue::Missing)
            } else {
                RawValue::List(it.by_ref().take(per_row).collect())
            };
            r.insert(name.to_string(), v);
        }
    }
    Ok(records)
}

/// One tf.Example as a record (a context example's features are merged in first).
fn example_record(e: &Example, context: Option<&Example>) -> RawRecord {
    let mut r = RawRecord::default();
    for ex in context.into_iter().chain(std::iter::once(e)) {
        let Some(features) = &ex.features else {
            continue;
        };
        let mut keys: Vec<&String> = features.feature.keys().collect();
        keys.sort();
        for k in keys {
            let mut values: Vec<RawValue> = match &features.feature[k].kind {
                None => Vec::new(),
                Some(feature::Kind::BytesList(b)) => b
                    .value
                    .iter()
                    .map(|v| match std::str::from_utf8(v) {
                        Ok(s) => RawValue::Str(s.to_string()),
                        Err(_) => RawValue::Bytes(v.clone()),
                    })
                    .collect(),
                Some(feature::Kind::FloatList(f)) => {
                    f.value.iter().map(|v| RawValue::Num(*v as f64)).collect()
                }
                Some(feature::Kind::Int64List(i)) => {
                    i.value.iter().map(|v| RawValue::Int(*v)).collect()
                }
            };
            let v = match values.len() {
                0 => RawValue::Missing,
                1 => values.pop().unwrap_or(RawValue::Missing),
                _ => RawValue::List(values),
            };
            r.insert(k.clone(), v);
        }
    }
    r
}

pub(crate) fn input_records(input: Option<&tfs::Input>) -> Result<Vec<RawRecord>, ApiError> {
    let kind = input
        .and_then(|i| i.kind.as_ref())
        .ok_or_else(|| ApiError::BadRequest("Input is empty".into()))?;
    let records: Vec<RawRecord> = match kind {
        tfs::input::Kind::ExampleList(l) => {
            l.examples.iter().map(|e| example_record(e, None)).collect()
        }
        tfs::input::Kind::ExampleListWithContext(l) => l
            .examples
            .iter()
            .map(|e| example_record(e, l.context.as_ref()))
            .collect(),
    };
    if records.is_empty() {
        return Err(ApiError::BadRequest("Input is empty".into()));
    }
    if records.len() > crate::MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "{} examples in one request; at most {}",
            records.len(),
            crate::MAX_BATCH
        )));
    }
    Ok(records)
}

impl Grpc {
    /// Resolves, scores (on a blocking thread) and mirrors to a shadow: the common part of the
    /// three inference RPCs. Returns the answering version and the predictions.
    async fn infer(
        &self,
        route: Route,
        headers: axum::http::HeaderMap,
        records: Vec<RawRecord>,
    ) -> Result<(u64, Vec<f64>, Option<String>), (Option<u64>, ApiError)> {
        let server = self.server.clone();
        let deadline = grpc_timeout(&headers).map(|t| Instant::now() + t);
        let done = tokio::task::spawn_blocking(move || {
            let named = api::resolve(&server, &route).map_err(|e| (None, e))?;
            let (v, lv, shadow) = api::pick(&server, &route, named, &headers, &records);
            let p = api::score_served(&server, &route.model, v, &lv, &records, deadline)
                .and_then(api::Scored::wait)
                .map_err(|e| (Some(v), e))?;
            // Feedback on: the answer's prediction id (metadata), as over REST.
            let id = server.inner.feedback.as_ref().map(|f| {
                let key = server
                    .inner
                    .models
                    .load()
                    .get(&route.model)
                    .and_then(|m| api::split_key(&m.snapshot.load(), &headers, &records));
                f.record(&route.model, v, &p, key.as_deref())
            });
            if let Some(sv) = shadow {
                api::mirror(&server, &route.model, sv, records, p.clone());
            }
            Ok((v, p, id))
        })
        .await;
        match done {
            Ok(r) => r,
            Err(e) => Err((None, ApiError::Unavailable(format!("request failed: {e}")))),
        }
    }

    /// Runs `f`, counting the request; errors become gRPC statuses.
    async fn run<T>(
        &self,
        api: Api,
        model: &str,
        f: impl std::future::Future<Output = Result<(u64, T, Option<String>), (Option<u64>, ApiError)>>,
    ) -> Result<Response<T>, Status> {
        match f.await {
            Ok((v, msg, id)) => {
                count(&self.server, model, Some(v), api, "OK");
                Ok(with_version(msg, v, id))
            }
            Err((v, e)) => {
                let s = status_of(e);
                count(&self.server, model, v, api, &format!("{:?}", s.code()));
                Err(s)
            }
        }
    }
}

#[tonic::async_trait]
impl tfs::prediction_service_server::PredictionService for Grpc {
    async fn predict(
        &self,
        request: Request<tfs::PredictRequest>,
    ) -> Result<Response<tfs::PredictResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let req = request.into_inner();
        let route = route_of(req.model_spec.as_ref(), Api::Predict)?;
        let model = route.model.clone();
        self.run(Api::Predict, &model.clone(), async move {
            if req.output_filter.iter().any(|o| o != OUTPUT) {
                return Err((
                    None,
                    ApiError::BadRequest(format!(
                        "output_filter {:?}: the only output is \"{OUTPUT}\"",
                        req.output_filter
                    )),
                ));
            }
            let records = predict_records(&req.inputs).map_err(|e| (None, e))?;
            let n = records.len();
            let (v, p, id) = self.infer(route, headers, records).await?;
            let tensor = TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![pb::tensorflow::tensor_shape_proto::Dim {
                        size: n as i64,
                        name: String::new(),
                    }],
                    unknown_rank: false,
                }),
                float_val: p.iter().map(|p| *p as f32).collect(),
                ..Default::default()
            };
            Ok((
                v,
                tfs::PredictResponse {
                    model_spec: Some(answered_spec(&model, v)),
                    outputs: HashMap::from([(OUTPUT.to_string(), tensor)]),
                },
                id,
            ))
        })
        .await
    }

    async fn classify(
        &self,
        request: Request<tfs::ClassificationRequest>,
    ) -> Result<Response<tfs::ClassificationResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let req = request.into_inner();
        let route = route_of(req.model_spec.as_ref(), Api::Classify)?;
        let model = route.model.clone();
        self.run(Api::Classify, &model.clone(), async move {
            let records = input_records(req.input.as_ref()).map_err(|e| (None, e))?;
            let (v, p, id) = self.infer(route, headers, records).await?;
            let classifications = p
                .iter()
                .map(|p| tfs::Classifications {
                    classes: vec![
                        tfs::Class {
                            label: "0".into(),
                            score: (1.0 - p) as f32,
                        },
                        tfs::Class {
                            label: "1".into(),
                            score: *p as f32,
                        },
                    ],
                })
                .collect();
            Ok((
                v,
                tfs::ClassificationResponse {
                    model_spec: Some(answered_spec(&model, v)),
                    result: Some(tfs::ClassificationResult { classifications }),
                },
                id,
            ))
        })
        .await
    }

    async fn regress(
        &self,
        request: Request<tfs::RegressionRequest>,
    ) -> Result<Response<tfs::RegressionResponse>, Status> {
        let headers = request.metadata().clone().into_headers();
        let req = request.into_inner();
        let route = route_of(req.model_spec.as_ref(), Api::Regress)?;
        let model = route.model.clone();
        self.run(Api::Regress, &model.clone(), async move {
            let records = input_records(req.input.as_ref()).map_err(|e| (None, e))?;
            let (v, p, id) = self.infer(route, headers, records).await?;
            Ok((
                v,
                tfs::RegressionResponse {
                    model_spec: Some(answered_spec(&model, v)),
                    result: Some(tfs::RegressionResult {
                        regressions: p
                            .iter()
                            .map(|p| tfs::Regression { value: *p as f32 })
                            .collect(),
                    }),
                },
                id,
            ))
        })
        .await
    }

    async fn get_model_metadata(
        &self,
        request: Request<tfs::GetModelMetadataRequest>,
    ) -> Result<Response<tfs::GetModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let route = route_of(req.model_spec.as_ref(), Api::Metadata)?;
        let model = route.model.clone();
        self.run(Api::Metadata, &model.clone(), async move {
            if req.metadata_field.is_empty() {
                return Err((
                    None,
                    ApiError::BadRequest(
                        "GetModelMetadataRequest must specify at least one metadata_field".into(),
                    ),
                ));
            }
            if let Some(f) = req.metadata_field.iter().find(|f| *f != "signature_def") {
                return Err((
                    None,
                    ApiError::BadRequest(format!("Metadata field {f} is not supported")),
                ));
            }
            let (v, lv) = api::resolve(&self.server, &route).map_err(|e| (None, e))?;
            let spec = lv.transformer.spec();
            let info = |name: &str, dtype: DataType| pb::tensorflow::TensorInfo {
                dtype: dtype as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: vec![pb::tensorflow::tensor_shape_proto::Dim {
                        size: -1,
                        name: String::new(),
                    }],
                    unknown_rank: false,
                }),
                encoding: Some(pb::tensorflow::tensor_info::Encoding::Name(
                    name.to_string(),
                )),
            };
            let mut inputs = HashMap::new();
            for c in &spec.categorical {
                inputs.insert(c.name.clone(), info(&c.name, DataType::DtString));
            }
            for c in &spec.numeric {
                inputs.insert(c.name.clone(), info(&c.name, DataType::DtFloat));
            }
            let signature = pb::tensorflow::SignatureDef {
                inputs,
                outputs: HashMap::from([(OUTPUT.to_string(), info(OUTPUT, DataType::DtFloat))]),
                method_name: "tensorflow/serving/predict".into(),
                defaults: HashMap::new(),
            };
            let map = tfs::SignatureDefMap {
                signature_def: HashMap::from([(SIGNATURE.to_string(), signature)]),
            };
            let any = prost_types::Any {
                type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
                value: prost::Message::encode_to_vec(&map),
            };
            Ok((
                v,
                tfs::GetModelMetadataResponse {
                    model_spec: Some(answered_spec(&model, v)),
                    metadata: HashMap::from([("signature_def".to_string(), any)]),
                },
                None,
            ))
        })
        .await
    }
}

#[tonic::async_trait]
impl tfs::model_service_server::ModelService for Grpc {
    async fn get_model_status(
        &self,
        request: Request<tfs::GetModelStatusRequest>,
    ) -> Result<Response<tfs::GetModelStatusResponse>, Status> {
        let req = request.into_inner();
        let route = route_of(req.model_spec.as_ref(), Api::Status)?;
        let Some(model) = self.server.inner.models.load().get(&route.model).cloned() else {
            count(&self.server, &route.model, None, Api::Status, "NotFound");
            return Err(Status::not_found(format!(
                "Could not find any versions of model {}",
                route.model
            )));
        };
        let snap = model.snapshot.load_full();
        let versions: Vec<u64> = match &route.target {
            Target::Latest => snap.versions.keys().rev().copied().collect(),
            Target::Version(v) => snap
                .versions
                .contains_key(v)
                .then_some(*v)
                .into_iter()
                .collect(),
            Target::Label(l) => snap
                .labels
                .get(l)
                .filter(|v| snap.versions.contains_key(v))
                .copied()
                .into_iter()
                .collect(),
        };
        if versions.is_empty() {
            count(&self.server, &route.model, None, Api::Status, "NotFound");
            return Err(Status::not_found(api::not_found_message(
                &route.model,
                &route.target,
            )));
        }
        count(&self.server, &route.model, None, Api::Status, "OK");
        Ok(Response::new(tfs::GetModelStatusResponse {
            model_version_status: versions
                .into_iter()
                .map(|v| tfs::ModelVersionStatus {
                    version: v as i64,
                    state: tfs::model_version_status::State::Available as i32,
                    status: Some(tfs::StatusProto {
                        error_code: pb::tensorflow::error::Code::Ok as i32,
                        error_message: String::new(),
                    }),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| pb::tensorflow::tensor_shape_proto::Dim {
                        size: *d,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn grpc_timeouts_parse_as_the_grpc_spec_writes_them() {
        let of = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(of("1n"), Some(Duration::from_nanos(1)));
        for bad in [
            "",
            "m",
            "10",
            "10s",
            "123456789S",
            "-1S",
            "1.5S",
            " 1S",
            "1x",
        ] {
            assert_eq!(of(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&axum::http::HeaderMap::new()), None);
    }

    #[test]
    fn tensors_become_rows_from_values_or_raw_content() {
        let mut x = tensor(DataType::DtFloat, &[2]);
        x.tensor_content = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut c = tensor(DataType::DtString, &[2, 1]);
        c.string_val = vec![b"a".to_vec(), vec![0xff]];
        let mut i = tensor(DataType::DtInt64, &[2, 2]);
        i.int64_val = vec![1, 2, 3, 4];
        let inputs = HashMap::from([("x".into(), x), ("c".into(), c), ("i".into(), i)]);
        let r = predict_records(&inputs).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].get("x"), Some(&RawValue::Num(1.5)));
        assert_eq!(r[1].get("x"), Some(&RawValue::Num(-2.0)));
        assert_eq!(r[0].get("c"), Some(&RawValue::Str("a".into())));
        assert_eq!(r[1].get("c"), Some(&RawValue::Bytes(vec![0xff])));
        assert_eq!(
            r[1].get("i"),
            Some(&RawValue::List(vec![RawValue::Int(3), RawValue::Int(4)]))
        );
        // A scalar is one row.
        let mut s = tensor(DataType::DtDouble, &[]);
        s.double_val = vec![0.25];
        let r = predict_records(&HashMap::from([("x".into(), s)])).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn malformed_tensors_are_invalid_arguments() {
        let mut a = tensor(DataType::DtFloat, &[3]);
        a.float_val = vec![1.0, 2.0];
        let e = predict_records(&HashMap::from([("a".into(), a)])).unwrap_err();
        assert!(e.to_string().contains("needs 3 values"), "{e}");
        let mut a = tensor(DataType::DtFloat, &[1]);
        a.tensor_content = vec![1, 2, 3];
        assert!(predict_records(&HashMap::from([("a".into(), a)])).is_err());
        let a = tensor(DataType::DtHalf, &[0]);
        let e = predict_records(&HashMap::from([("a".into(), a)])).unwrap_err();
        assert!(e.to_string().contains("DT_HALF"), "{e}");
        let mut a = tensor(DataType::DtFloat, &[2]);
        a.float_val = vec![1.0, 2.0];
        let mut b = tensor(DataType::DtFloat, &[1]);
        b.float_val = vec![1.0];
        let e = predict_records(&HashMap::from([("a".into(), a), ("b".into(), b)])).unwrap_err();
        assert!(e.to_string().contains("same first dimension"), "{e}");
        assert!(predict_records(&HashMap::new()).is_err());
        let a = tensor(DataType::DtFloat, &[-1]);
        assert!(predict_records(&HashMap::from([("a".into(), a)])).is_err());
    }
}
