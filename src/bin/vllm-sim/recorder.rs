//! The requests the simulator received, for tests to inspect (`GET /sim/requests`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use axum::http::{HeaderMap, Method, Uri};
use serde::Serialize;
use serde_json::Value;

/// Requests kept; older ones are dropped first.
pub const CAPACITY: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header name (lower case) to value; repeated headers are joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses, else as a string; null when empty.
    pub body: Value,
    pub received_at_ms: u128,
}

impl RecordedRequest {
    pub fn new(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            map.entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        Self {
            method: method.as_str().to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: map,
            body,
            received_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Recorder {
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub fn push(&self, request: RecordedRequest) {
        let mut q = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        while q.len() >= CAPACITY {
            q.pop_front();
        }
        q.push_back(request);
    }

    /// All kept requests, oldest first.
    pub fn list(&self) -> Vec<RecordedRequest> {
        let q = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        q.iter().cloned().collect()
    }

    /// Forgets every request; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut q = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let n = q.len();
        q.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_requests_and_parses_bodies() {
        let r = Recorder::default();
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let uri: Uri = "/v1/models?x=1".parse().unwrap();
        for i in 0..CAPACITY + 5 {
            let body = format!("{{\"i\":{i}}}");
            r.push(RecordedRequest::new(
                &Method::POST,
                &uri,
                &headers,
                body.as_bytes(),
            ));
        }
        let all = r.list();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].body["i"], 5);
        assert_eq!(all.last().unwrap().body["i"], CAPACITY + 4);
        assert_eq!(all[0].headers["x-a"], "1, 2");
        assert_eq!(all[0].query.as_deref(), Some("x=1"));
        r.push(RecordedRequest::new(
            &Method::GET,
            &uri,
            &headers,
            b"not json",
        ));
        assert_eq!(
            r.list().last().unwrap().body,
            Value::String("not json".into())
        );
        assert_eq!(r.clear(), CAPACITY);
        assert!(r.list().is_empty());
    }
}
