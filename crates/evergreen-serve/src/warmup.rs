//! TensorFlow Serving's SavedModel warm-up file (`assets.extra/tf_serving_warmup_requests`:
//! TFRecord framing, one `tensorflow.serving.PredictionLog` per record, at most 1000 records)
//! read into the records its requests ask about, for the warm-up of a version before it is
//! served. The framing (length, masked CRC-32C of the length, payload, masked CRC-32C of the
//! payload) is checked here: a warm-up file is small and read whole, and the serving crate
//! does not depend on the data crate's streaming reader.

use crate::grpc::pb::tensorflow::serving::{PredictionLog, prediction_log::LogType};
use evergreen_core::RawRecord;
use prost::Message;

/// Where TF Serving looks for the warm-up file in a version directory.
pub(crate) const TF_WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// TFRecord's CRC mask (the format's `kMaskDelta`).
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The payloads of a TFRecord file held in memory, at most `max` of them.
fn records(mut bytes: &[u8], max: usize) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = out.len() + 1;
        if out.len() == max {
            return Err(format!("more than {max} records (TF Serving's limit)"));
        }
        let (head, rest) = bytes
            .split_at_checked(12)
            .ok_or_else(|| format!("record {n}: truncated header"))?;
        let (len_bytes, len_crc) = head.split_at(8);
        if masked_crc(len_bytes) != u32::from_le_bytes(len_crc.try_into().expect("4 bytes")) {
            return Err(format!("record {n}: length fails its CRC"));
        }
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")))
            .map_err(|_| format!("record {n}: length too large"))?;
        let (payload, rest) = rest
            .split_at_checked(len)
            .ok_or_else(|| format!("record {n}: truncated payload"))?;
        let (crc, rest) = rest
            .split_at_checked(4)
            .ok_or_else(|| format!("record {n}: truncated payload CRC"))?;
        if masked_crc(payload) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(format!("record {n}: payload fails its CRC"));
        }
        out.push(payload);
        bytes = rest;
    }
    Ok(out)
}

/// The requests of a warm-up file, each as the records it asks about (one per instance or
/// example), named for messages (`record 3 (predict)`).
pub(crate) fn requests(bytes: &[u8], max: usize) -> Result<Vec<(String, Vec<RawRecord>)>, String> {
    let mut out = Vec::new();
    for (i, payload) in records(bytes, max)?.into_iter().enumerate() {
        let n = i + 1;
        let log = PredictionLog::decode(payload)
            .map_err(|e| format!("record {n}: not a PredictionLog: {e}"))?;
        let bad = |what: &str, e: crate::error::ApiError| format!("record {n} ({what}): {e}");
        let missing = |what: &str| format!("record {n} ({what}): the log has no request");
        match log.log_type {
            Some(LogType::PredictLog(l)) => {
                let req = l.request.ok_or_else(|| missing("predict"))?;
                let records =
                    crate::grpc::predict_records(&req.inputs).map_err(|e| bad("predict", e))?;
                out.push((format!("record {n} (predict)"), records));
            }
            Some(LogType::PredictStreamedLog(l)) => {
                for (k, req) in l.request.iter().enumerate() {
                    let records = crate::grpc::predict_records(&req.inputs)
                        .map_err(|e| bad("streamed predict", e))?;
                    out.push((format!("record {n} (streamed predict {})", k + 1), records));
                }
            }
            Some(LogType::ClassifyLog(l)) => {
                let req = l.request.ok_or_else(|| missing("classify"))?;
                let records = crate::grpc::input_records(req.input.as_ref())
                    .map_err(|e| bad("classify", e))?;
                out.push((format!("record {n} (classify)"), records));
            }
            Some(LogType::RegressLog(l)) => {
                let req = l.request.ok_or_else(|| missing("regress"))?;
                let records = crate::grpc::input_records(req.input.as_ref())
                    .map_err(|e| bad("regress", e))?;
                out.push((format!("record {n} (regress)"), records));
            }
            None => {
                return Err(format!(
                    "record {n}: not a classify, regress or predict log (multi-inference and \
                     session-run logs are not supported)"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            let len = (p.len() as u64).to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(&masked_crc(&len).to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(&masked_crc(p).to_le_bytes());
        }
        out
    }

    #[test]
    fn framing_is_checked_and_bounded() {
        let file = framed(&[b"ab", b"", b"xyz"]);
        assert_eq!(records(&file, 10).unwrap(), [&b"ab"[..], b"", b"xyz"]);
        assert!(records(&file, 2).unwrap_err().contains("more than 2"));
        for cut in 1..file.len() {
            if ![18, 34].contains(&cut) {
                assert!(records(&file[..cut], 10).is_err(), "cut at {cut}");
            }
        }
        for flip in 0..file.len() {
            let mut bad = file.clone();
            bad[flip] ^= 0x01;
            assert!(records(&bad, 10).is_err(), "flip at {flip}");
        }
    }

    #[test]
    fn a_log_without_a_known_request_is_refused_by_name() {
        let file = framed(&[&PredictionLog::default().encode_to_vec()]);
        assert!(
            requests(&file, 10)
                .unwrap_err()
                .contains("not a classify, regress or predict")
        );
        assert!(
            requests(&framed(&[b"\xff\xff"]), 10)
                .unwrap_err()
                .contains("not a PredictionLog")
        );
    }
}
