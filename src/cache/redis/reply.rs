//! Reading `FT.SEARCH` replies, and writing embeddings the way RediSearch stores them.

use ::redis::Value;

use super::RedisCacheError;
use crate::cache::answer::Answer;
use crate::cache::guard::Fingerprint;

/// One search result: the cosine distance and the entry's fields.
pub(super) struct Document {
    pub(super) dist: f32,
    pub(super) answer: Answer,
    pub(super) fingerprint: Fingerprint,
    /// Unix milliseconds.
    pub(super) expires: u64,
}

/// The documents of an `FT.SEARCH` reply (`[total, key, [field, value, ...], ...]`), in
/// order; one whose fields do not read is skipped.
pub(super) fn documents(reply: &Value) -> Result<Vec<Document>, RedisCacheError> {
    let Value::Array(items) = reply else {
        return Err(RedisCacheError::Reply);
    };
    let mut out = Vec::new();
    for fields in items.iter().skip(2).step_by(2) {
        let Value::Array(fields) = fields else {
            return Err(RedisCacheError::Reply);
        };
        let (mut dist, mut answer, mut fp, mut expires) = (None, None, None, None);
        for pair in fields.chunks(2) {
            let [name, value] = pair else { continue };
            let (Some(name), Some(value)) = (text(name), text(value)) else {
                continue;
            };
            match name.as_str() {
                "dist" => dist = value.parse::<f32>().ok(),
                "answer" => answer = read_answer(&value),
                "fp" => fp = Fingerprint::from_json(&value),
                "expires" => expires = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(dist), Some(answer), Some(fingerprint), Some(expires)) =
            (dist, answer, fp, expires)
        {
            out.push(Document {
                dist,
                answer,
                fingerprint,
                expires,
            });
        }
    }
    Ok(out)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

fn read_answer(text: &str) -> Option<Answer> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Answer {
        model: v.get("model")?.as_str()?.to_owned(),
        content: v.get("content")?.as_str()?.to_owned(),
        finish_reason: v.get("finish_reason")?.as_str()?.to_owned(),
    })
}

/// An embedding as RediSearch's FLOAT32 vector: little-endian bytes.
pub(super) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_reply_reads_in_order_and_skips_what_does_not_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let fp = Fingerprint::of("capital of NC").to_json();
        let doc = |dist: &str, content: &str| {
            Value::Array(vec![
                bulk("dist"),
                bulk(dist),
                bulk("answer"),
                bulk(&format!(
                    r#"{{"model":"m","content":"{content}","finish_reason":"stop"}}"#
                )),
                bulk("fp"),
                bulk(&fp),
                bulk("expires"),
                bulk("99"),
            ])
        };
        let reply = Value::Array(vec![
            Value::Int(3),
            bulk("k1"),
            doc("0.01", "Raleigh."),
            bulk("k2"),
            Value::Array(vec![bulk("dist"), bulk("0.2")]),
            bulk("k3"),
            doc("0.3", "Columbia."),
        ]);
        let docs = documents(&reply).expect("reads");
        let contents: Vec<&str> = docs.iter().map(|d| d.answer.content.as_str()).collect();
        assert_eq!(contents, ["Raleigh.", "Columbia."]);
        assert!((docs[0].dist - 0.01).abs() < 1e-6);
        assert!(documents(&Value::Okay).is_err());
    }
}
