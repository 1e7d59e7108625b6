//! Request bodies: TF Serving's JSON dialect (bare `NaN`/`Infinity` tokens, `{"b64": ...}`
//! values, one-element lists) parsed into raw records.

use crate::MAX_BATCH;
use crate::error::ApiError;
use base64::Engine as _;
use evergreen_core::{RawRecord, RawValue};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Key of the object a bare non-finite token is rewritten to before JSON parsing.
const NONFINITE_KEY: &str = "__evergreen_nonfinite__";

/// Row (`instances`) or columnar (`inputs`) request format; the response mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `{"instances": [...]}` → `{"predictions": [...]}`.
    Row,
    /// `{"inputs": {...}}` → `{"outputs": [...]}`.
    Columnar,
}

/// Non-finite tokens TF Serving's parser (RapidJSON with `kParseNanAndInfFlag`) accepts,
/// longest first, with the value each stands for.
const TOKENS: [(&str, &str); 7] = [
    ("-Infinity", "-Infinity"),
    ("+Infinity", "Infinity"),
    ("Infinity", "Infinity"),
    ("-Inf", "-Infinity"),
    ("+Inf", "Infinity"),
    ("Inf", "Infinity"),
    ("NaN", "NaN"),
];

/// Rewrites bare `NaN`, `Infinity`, `-Infinity` (and `Inf` forms) outside string literals into
/// a marker object that [`raw_value`] turns back into the number. Borrowed when there is none.
pub(crate) fn rewrite_nonfinite(input: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if in_string {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'N' | b'I' | b'-' | b'+' => {
                let rest = &input[i..];
                let hit = TOKENS.iter().find(|(tok, _)| {
                    rest.starts_with(tok.as_bytes())
                        && rest
                            .get(tok.len())
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                });
                match hit {
                    Some((tok, value)) => {
                        let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
                        buf.extend_from_slice(&input[copied..i]);
                        buf.extend_from_slice(
                            format!("{{\"{NONFINITE_KEY}\":\"{value}\"}}").as_bytes(),
                        );
                        i += tok.len();
                        copied = i;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    match out {
        Some(mut buf) => {
            buf.extend_from_slice(&input[copied..]);
            Cow::Owned(buf)
        }
        None => Cow::Borrowed(input),
    }
}

/// Parses a request body as a JSON object (non-finite tokens accepted).
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let text = rewrite_nonfinite(body);
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("JSON parse error: {e}"))),
    }
}

/// Signature names accepted: the one signature evergreen serves, and the method-named ones
/// TensorFlow Serving's examples use (`tensorflow/serving/regress`, ...), which it also answers.
pub(crate) const SIGNATURES: [&str; 5] = [
    "",
    "serving_default",
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
];

/// Checks `signature_name`: absent, or one of [`SIGNATURES`].
pub(crate) fn check_signature(req: &Map<String, Value>) -> Result<(), ApiError> {
    match req.get("signature_name") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if SIGNATURES.contains(&s.as_str()) => Ok(()),
        Some(Value::String(s)) => Err(ApiError::BadRequest(format!(
            "Serving signature name: \"{s}\" not found in signature def"
        ))),
        Some(other) => Err(ApiError::BadRequest(format!(
            "'signature_name' must be a string, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn scalar(v: &Value) -> Result<RawValue, String> {
    match v {
        Value::Null => Ok(RawValue::Missing),
        Value::Bool(b) => Ok(RawValue::Str(b.to_string())),
        Value::Number(n) => n
            .as_f64()
            .map(RawValue::Num)
            .ok_or_else(|| format!("number {n} is not representable")),
        Value::String(s) => Ok(RawValue::Str(s.clone())),
        Value::Object(o) => {
            if o.len() == 1 {
                if let Some(Value::String(t)) = o.get(NONFINITE_KEY) {
                    return Ok(RawValue::Num(match t.as_str() {
                        "Infinity" => f64::INFINITY,
                        "-Infinity" => f64::NEG_INFINITY,
                        _ => f64::NAN,
                    }));
                }
                if let Some(b) = o.get("b64") {
                    let Value::String(s) = b else {
                        return Err(format!("\"b64\" must hold a string, got {}", kind(b)));
                    };
                    return decode_b64(s).map(RawValue::Str);
                }
            }
            Err("unsupported object; the only object value accepted is {\"b64\": \"...\"}".into())
        }
        Value::Array(_) => Err("nested lists are not supported; give one value".into()),
    }
}

fn decode_b64(s: &str) -> Result<String, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    let bytes = STANDARD
        .decode(s)
        .or_else(|e| URL_SAFE.decode(s).map_err(|_| e))
        .map_err(|e| format!("invalid base64 in \"b64\" value: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "\"b64\" value does not decode to UTF-8 text".to_string())
}

/// One feature value: a scalar, a one-element list `[v]`, `[]` (missing), or a list of
/// scalars (several values of one feature, as a `tf.Example` list: a categorical column
/// becomes multi-hot; a numeric column refuses it, naming the column).
pub(crate) fn raw_value(v: &Value) -> Result<RawValue, String> {
    match v {
        Value::Array(items) => match items.as_slice() {
            [] => Ok(RawValue::Missing),
            [one] => scalar(one),
            many => many
                .iter()
                .enumerate()
                .map(|(i, x)| scalar(x).map_err(|e| format!("element {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(RawValue::List),
        },
        other => scalar(other),
    }
}

fn record(
    i: usize,
    obj: &Map<String, Value>,
    base: Option<&RawRecord>,
) -> Result<RawRecord, ApiError> {
    let mut r = base
        .cloned()
        .unwrap_or_else(|| RawRecord::with_capacity(obj.len()));
    for (col, v) in obj {
        let value = raw_value(v)
            .map_err(|e| ApiError::BadRequest(format!("instance {i}: column {col:?}: {e}")))?;
        r.insert(col.clone(), value);
    }
    Ok(r)
}

fn check_batch(n: usize, what: &str) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::BadRequest(format!("'{what}' is empty")));
    }
    if n > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "batch of {n} {what} exceeds the maximum of {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// A predict body: `{"signature_name"?, "instances": [{col: v}, ...]}` or
/// `{"signature_name"?, "inputs": {col: [v, ...]}}`. When the model has a single input
/// (`single_input`), instances may be bare values (`{"instances": [1.0, 2.0]}`) and `inputs` a
/// bare list, as TensorFlow Serving allows.
pub(crate) fn predict_request(
    body: &[u8],
    single_input: Option<&str>,
) -> Result<(Format, Vec<RawRecord>), ApiError> {
    let req = parse_object(body)?;
    check_signature(&req)?;
    match (req.get("instances"), req.get("inputs")) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "request has both 'instances' and 'inputs'; give exactly one".into(),
        )),
        (None, None) => Err(ApiError::BadRequest(
            "Missing 'inputs' or 'instances' key".into(),
        )),
        (Some(instances), None) => {
            let Value::Array(items) = instances else {
                return Err(ApiError::BadRequest(format!(
                    "'instances' must be a list, got {}",
                    kind(instances)
                )));
            };
            check_batch(items.len(), "instances")?;
            let records = items
                .iter()
                .enumerate()
                .map(|(i, item)| match (item, single_input) {
                    (Value::Object(obj), _) => record(i, obj, None),
                    (value, Some(name)) => {
                        let v = raw_value(value)
                            .map_err(|e| ApiError::BadRequest(format!("instance {i}: {e}")))?;
                        let mut r = RawRecord::with_capacity(1);
                        r.insert(name.to_string(), v);
                        Ok(r)
                    }
                    (other, None) => Err(ApiError::BadRequest(format!(
                        "instance {i}: expected an object {{column: value}}, got {} (bare \
                         values need a model with a single input)",
                        kind(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((Format::Row, records))
        }
        (None, Some(Value::Array(values))) if single_input.is_some() => {
            let name = single_input.unwrap_or_default();
            check_batch(values.len(), "instances")?;
            let records = values
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    let v = raw_value(value)
                        .map_err(|e| ApiError::BadRequest(format!("instance {i}: {e}")))?;
                    let mut r = RawRecord::with_capacity(1);
                    r.insert(name.to_string(), v);
                    Ok(r)
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok((Format::Columnar, records))
        }
        (None, Some(inputs)) => {
            let Value::Object(columns) = inputs else {
                return Err(ApiError::BadRequest(format!(
                    "'inputs' must be an object {{column: [values]}}, got {}",
                    kind(inputs)
                )));
            };
            let mut n = None;
            for (col, v) in columns {
                let Value::Array(values) = v else {
                    return Err(ApiError::BadRequest(format!(
                        "inputs column {col:?}: expected a list of values, got {}",
                        kind(v)
                    )));
                };
                match n {
                    None => n = Some((col, values.len())),
                    Some((first, len)) if len != values.len() => {
                        return Err(ApiError::BadRequest(format!(
                            "inputs columns have different lengths: {first:?} has {len}, {col:?} has {}",
                            values.len()
                        )));
                    }
                    Some(_) => {}
                }
            }
            let n = n.map_or(0, |(_, len)| len);
            if columns.is_empty() {
                return Err(ApiError::BadRequest("'inputs' has no column".into()));
            }
            check_batch(n, "instances")?;
            let mut records: Vec<RawRecord> = (0..n)
                .map(|_| RawRecord::with_capacity(columns.len()))
                .collect();
            for (col, v) in columns {
                let Value::Array(values) = v else { continue };
                for (i, (r, value)) in records.iter_mut().zip(values).enumerate() {
                    let value = raw_value(value).map_err(|e| {
                        ApiError::BadRequest(format!("instance {i}: column {col:?}: {e}"))
                    })?;
                    r.insert(col.clone(), value);
                }
            }
            Ok((Format::Columnar, records))
        }
    }
}

/// A classify or regress body: `{"signature_name"?, "context"?: {col: v}, "examples":
/// [{col: v}, ...]}`; context values apply to every example unless the example sets the column.
pub(crate) fn examples_request(body: &[u8]) -> Result<Vec<RawRecord>, ApiError> {
    let req = parse_object(body)?;
    check_signature(&req)?;
    let context = match req.get("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(obj)) => Some(record(0, obj, None).map_err(|e| {
            ApiError::BadRequest(format!(
                "context: {}",
                e.to_string().trim_start_matches("instance 0: ")
            ))
        })?),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "'context' must be an object, got {}",
                kind(other)
            )));
        }
    };
    let Some(examples) = req.get("examples") else {
        return Err(ApiError::BadRequest("Missing 'examples' key".into()));
    };
    let Value::Array(items) = examples else {
        return Err(ApiError::BadRequest(format!(
            "'examples' must be a list, got {}",
            kind(examples)
        )));
    };
    check_batch(items.len(), "examples")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(obj) => record(i, obj, context.as_ref()),
            other => Err(ApiError::BadRequest(format!(
                "instance {i}: expected an object {{column: value}}, got {}",
                kind(other)
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predict_request_any(body: &[u8]) -> Result<(Format, Vec<RawRecord>), ApiError> {
        predict_request(body, None)
    }

    #[test]
    fn bare_instances_need_a_single_input_model() {
        let (f, r) = predict_request(br#"{"instances": [1.0, 2.0, 5.0]}"#, Some("x")).unwrap();
        assert_eq!(f, Format::Row);
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].get("x"), Some(&RawValue::Num(5.0)));
        let (f, r) = predict_request(br#"{"inputs": [1.0, [2.0]]}"#, Some("x")).unwrap();
        assert_eq!(f, Format::Columnar);
        assert_eq!(r[1].get("x"), Some(&RawValue::Num(2.0)));
        let e = predict_request(br#"{"instances": [1.0]}"#, None).unwrap_err();
        assert!(e.to_string().contains("single input"), "{e}");
        assert!(
            predict_request(
                br#"{"signature_name": "tensorflow/serving/regress", "instances": [{"x": 1}]}"#,
                None
            )
            .is_ok()
        );
        assert!(predict_request(br#"{"signature_name": "other", "instances": []}"#, None).is_err());
    }

    fn rw(s: &str) -> String {
        String::from_utf8(rewrite_nonfinite(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn nonfinite_tokens_are_rewritten_outside_strings_only() {
        assert!(matches!(rewrite_nonfinite(b"{\"a\": 1}"), Cow::Borrowed(_)));
        let out =
            rw(r#"{"NaN": NaN, "b": [Infinity, -Infinity], "c": "Infinity -Inf", "d": -Inf}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["NaN"][NONFINITE_KEY], "NaN");
        assert_eq!(v["b"][0][NONFINITE_KEY], "Infinity");
        assert_eq!(v["b"][1][NONFINITE_KEY], "-Infinity");
        assert_eq!(v["c"], "Infinity -Inf");
        assert_eq!(v["d"][NONFINITE_KEY], "-Infinity");
        // Escaped quotes do not end a string.
        let out = rw(r#"{"a": "x\"NaN", "b": NaN}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["a"], "x\"NaN");
        assert_eq!(v["b"][NONFINITE_KEY], "NaN");
        // A longer bare word is left alone (and fails to parse as JSON).
        assert!(serde_json::from_str::<Value>(&rw(r#"{"a": NaNa}"#)).is_err());
        // Negative numbers are untouched.
        assert_eq!(rw("[-1, -0.5e-3]"), "[-1, -0.5e-3]");
    }

    #[test]
    fn values_map_to_raw_values() {
        let v = |s: &str| raw_value(&serde_json::from_str::<Value>(&rw(s)).unwrap());
        assert_eq!(v("3.5").unwrap(), RawValue::Num(3.5));
        assert_eq!(v("[3.5]").unwrap(), RawValue::Num(3.5));
        assert_eq!(v("\"a\"").unwrap(), RawValue::Str("a".into()));
        assert_eq!(v("true").unwrap(), RawValue::Str("true".into()));
        assert_eq!(v("null").unwrap(), RawValue::Missing);
        assert_eq!(v("[]").unwrap(), RawValue::Missing);
        assert_eq!(
            v(r#"{"b64": "aGVsbG8="}"#).unwrap(),
            RawValue::Str("hello".into())
        );
        assert_eq!(
            v(r#"[{"b64": "aGVsbG8"}]"#).unwrap(),
            RawValue::Str("hello".into())
        );
        assert!(v(r#"{"b64": "!!"}"#).unwrap_err().contains("base64"));
        assert!(v(r#"{"b64": "//8="}"#).unwrap_err().contains("UTF-8"));
        assert!(v(r#"{"x": 1}"#).is_err());
        assert_eq!(
            v(r#"[1, "a"]"#).unwrap(),
            RawValue::List(vec![RawValue::Num(1.0), RawValue::Str("a".into())])
        );
        assert!(v("[[1]]").is_err());
        assert!(v("[1, [2]]").unwrap_err().contains("element 1"));
        match v("NaN").unwrap() {
            RawValue::Num(x) => assert!(x.is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(v("-Infinity").unwrap(), RawValue::Num(f64::NEG_INFINITY));
    }

    #[test]
    fn request_shapes() {
        let (f, r) =
            predict_request_any(br#"{"instances": [{"a": 1}, {"a": [2], "b": "x"}]}"#).unwrap();
        assert_eq!(f, Format::Row);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].get("b"), Some(&RawValue::Str("x".into())));
        let (f, r) =
            predict_request_any(br#"{"inputs": {"a": [1, 2], "b": ["x", ["y"]]}}"#).unwrap();
        assert_eq!(f, Format::Columnar);
        assert_eq!(r[1].get("a"), Some(&RawValue::Num(2.0)));
        assert_eq!(r[1].get("b"), Some(&RawValue::Str("y".into())));
        let e = |b: &str| predict_request_any(b.as_bytes()).unwrap_err().to_string();
        assert!(e(r#"{"inputs": {"a": [1, 2], "b": [1]}}"#).contains("different lengths"));
        assert!(e(r#"{"instances": [], "inputs": {}}"#).contains("both"));
        assert!(e(r#"{}"#).contains("Missing"));
        assert!(e(r#"{"instances": []}"#).contains("empty"));
        assert!(e(r#"{"instances": [1]}"#).contains("instance 0"));
        assert!(
            e(r#"{"instances": [{"a": 1}, {"a": [1, [2]]}]}"#).contains("instance 1: column \"a\"")
        );
        assert!(e(r#"{"signature_name": "other", "instances": [{}]}"#).contains("signature"));
        assert!(e("[1]").contains("object"));
        assert!(e("{").contains("JSON parse error"));
        let r = examples_request(br#"{"context": {"c": "k", "a": 0}, "examples": [{"a": 1}, {}]}"#)
            .unwrap();
        assert_eq!(r[0].get("a"), Some(&RawValue::Num(1.0)));
        assert_eq!(r[0].get("c"), Some(&RawValue::Str("k".into())));
        assert_eq!(r[1].get("a"), Some(&RawValue::Num(0.0)));
    }

    proptest::proptest! {
        #[test]
        fn rewriting_never_changes_valid_json(s in "\\PC{0,40}", x in proptest::num::f64::NORMAL) {
            let doc = serde_json::json!({"s": s.clone(), "NaN": [x, s]}).to_string();
            let out = rewrite_nonfinite(doc.as_bytes());
            proptest::prop_assert_eq!(out.as_ref(), doc.as_bytes());
        }
    }
}
