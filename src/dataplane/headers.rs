//! A request's headers as the proxy sent them, read in place rather than copied into a map:
//! a request carries a dozen headers and the router reads a handful of them.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};

use crate::routing::Headers;

/// A request's headers in the order the proxy sent them.
///
/// Names match without regard to case; for a repeated header the last value wins. A value
/// that is not UTF-8 reads as absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestHeaders(Vec<HeaderValue>);

impl RequestHeaders {
    /// The headers of a proxy's headers message, taken without copying.
    pub fn from_proxy(map: Option<HeaderMap>) -> Self {
        Self(map.map(|m| m.headers).unwrap_or_default())
    }

    /// Headers from name and value pairs (the admin API, the what-if, tests).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(key, value)| HeaderValue {
                    key: key.as_ref().to_ascii_lowercase(),
                    raw_value: value.as_ref().as_bytes().to_vec(),
                    ..HeaderValue::default()
                })
                .collect(),
        )
    }

    /// Every header name, in the order sent.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|h| h.key.as_str())
    }
}

impl Headers for RequestHeaders {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .and_then(header_text)
    }
}

/// A header's value as text: `raw_value` when set (Envoy's default), else `value`; `None`
/// when it is not UTF-8.
pub fn header_text(header: &HeaderValue) -> Option<&str> {
    if header.raw_value.is_empty() {
        Some(&header.value)
    } else {
        std::str::from_utf8(&header.raw_value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_the_last_repeat_wins() {
        let headers = RequestHeaders::from_proxy(Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "x-team".into(),
                    raw_value: b"a".to_vec(),
                    ..HeaderValue::default()
                },
                HeaderValue {
                    key: ":path".into(),
                    value: "/v1/chat/completions".into(),
                    ..HeaderValue::default()
                },
                HeaderValue {
                    key: "x-team".into(),
                    raw_value: b"b".to_vec(),
                    ..HeaderValue::default()
                },
                HeaderValue {
                    key: "x-bin".into(),
                    raw_value: vec![0xff, 0xfe],
                    ..HeaderValue::default()
                },
            ],
        }));
        assert_eq!(headers.get("x-team"), Some("b"));
        assert_eq!(headers.get("X-Team"), Some("b"));
        assert_eq!(headers.get(":path"), Some("/v1/chat/completions"));
        assert_eq!(headers.get("x-bin"), None);
        assert_eq!(headers.get("x-absent"), None);
        assert_eq!(
            headers.names().collect::<Vec<_>>(),
            ["x-team", ":path", "x-team", "x-bin"]
        );
    }

    #[test]
    fn pairs_are_read_like_the_proxys_headers() {
        let headers = RequestHeaders::from_pairs([("X-Session", "s-1")]);
        assert_eq!(headers.get("x-session"), Some("s-1"));
        assert_eq!(headers.names().collect::<Vec<_>>(), ["x-session"]);
    }
}
