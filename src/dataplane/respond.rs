//! The one place a refused request becomes what the client sees: the status, the
//! OpenAI-shaped error body, every `x-semantic-router-*` header of a refusal, and the counters.

use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{ImmediateResponse, ProcessingResponse};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;

use super::error::RequestError;
use super::metrics::{ErrorLabels, Metrics, OutcomeLabels};
use super::mutations::{PATH_HEADER, header_mutation, response, set_header};

/// A request the router answers itself with an error instead of sending it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told.
    pub error: RequestError,
    /// Set when the endpoint-picking policy shed the request; said in [`ShedReason::HEADER`].
    pub shed: Option<ShedReason>,
}

impl Refusal {
    /// A request shed by policy, for `reason`.
    pub fn shed(error: RequestError, reason: ShedReason) -> Self {
        Self {
            error,
            shed: Some(reason),
        }
    }
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        Self { error, shed: None }
    }
}

/// Why the router refused a request that had a route, by its endpoint-picking policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// Every endpoint of every pool the request may go to is past its queue depth (429).
    Saturated,
    /// The proxy's subset hint lists no endpoint (503).
    SubsetEmpty,
    /// No endpoint of the pools the request may go to is in the proxy's subset hint (503).
    OutsideSubset,
}

impl ShedReason {
    /// The header that carries the reason.
    pub const HEADER: &'static str = "x-semantic-router-shed-reason";

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Saturated => "saturated",
            ShedReason::SubsetEmpty => "subset-empty",
            ShedReason::OutsideSubset => "outside-subset",
        }
    }
}

/// The immediate response for `refusal`, counted in `metrics`: its status, an OpenAI-shaped
/// body, the router's path (`blocked` for a jailbreak, else `error`), error code and shed
/// reason headers.
pub fn refuse(refusal: &Refusal, metrics: &Metrics) -> ProcessingResponse {
    let error = &refusal.error;
    metrics
        .errors
        .get_or_create(&ErrorLabels {
            reason: error.code(),
        })
        .inc();
    metrics
        .requests
        .get_or_create(&OutcomeLabels::unrouted("error"))
        .inc();
    let path = if matches!(error, RequestError::Blocked) {
        "blocked"
    } else {
        "error"
    };
    let mut headers = vec![
        set_header("content-type", "application/json"),
        set_header(PATH_HEADER, path),
        set_header("x-semantic-router-error", error.code()),
    ];
    if let Some(reason) = refusal.shed {
        headers.push(set_header(ShedReason::HEADER, reason.as_str()));
    }
    response(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(error.status()),
        }),
        headers: header_mutation(headers),
        body: error.to_body(),
        details: format!("semantic_router_{}", error.code()),
        ..ImmediateResponse::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(response: &ProcessingResponse) -> Vec<(String, String)> {
        let Some(Response::ImmediateResponse(immediate)) = &response.response else {
            panic!("an immediate response");
        };
        immediate
            .headers
            .iter()
            .flat_map(|m| &m.set_headers)
            .filter_map(|h| h.header.as_ref())
            .map(|h| {
                (
                    h.key.clone(),
                    String::from_utf8_lossy(&h.raw_value).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_shed_refusal_says_why_and_every_refusal_is_counted() {
        let metrics = Metrics::new();
        let shed = Refusal::shed(
            RequestError::Overloaded {
                reason: "queue full".into(),
            },
            ShedReason::Saturated,
        );
        let answer = refuse(&shed, &metrics);
        let h = headers(&answer);
        assert!(h.contains(&(ShedReason::HEADER.into(), "saturated".into())));
        assert!(h.contains(&("x-semantic-router-error".into(), "overloaded".into())));
        assert!(h.contains(&(PATH_HEADER.into(), "error".into())));

        let blocked = refuse(&RequestError::Blocked.into(), &metrics);
        let h = headers(&blocked);
        assert!(h.contains(&(PATH_HEADER.into(), "blocked".into())));
        assert!(!h.iter().any(|(k, _)| k == ShedReason::HEADER));

        let counted = |reason| metrics.errors.get_or_create(&ErrorLabels { reason }).get();
        assert_eq!(
            (counted("overloaded"), counted("jailbreak_detected")),
            (1, 1)
        );
        assert_eq!(
            metrics
                .requests
                .get_or_create(&OutcomeLabels::unrouted("error"))
                .get(),
            2
        );
    }
}
