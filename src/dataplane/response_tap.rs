//! What the router watches of a routed request's response as it passes, never holding it
//! back: the usage to count, the answer to keep for the semantic cache, the endpoint's
//! in-flight accounting, and the usage it asked for on the client's behalf to hide again.
//! Whatever frame ends the response (headers, the last body chunk or trailers), it ends
//! here once.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;

use super::metrics::{Metrics, RouteLabels, TokenLabels};
use super::mutations::{CACHE_HEADER, route_headers, set_header};
use super::picker::InFlight;
use super::processor::Routed;
use super::usage::{Usage, note_usage, usage_from_json};
use super::usage_strip::UsageStripper;
use crate::cache::{Answer, Pending, SseAnswer};
use crate::routing::Labels;
use crate::stream::{Bounded, SseLines};

/// Largest non-streamed response body read for its usage figures; larger ones are not counted.
const MAX_USAGE_BODY: usize = 1 << 20;
/// Largest response read for the semantic cache; larger answers are not cached.
const MAX_CACHED_RESPONSE: usize = 256 << 10;

/// The response headers the tap reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseHead {
    /// `:status`, when the proxy sent it.
    pub status: Option<u16>,
    /// The content type is `text/event-stream`.
    pub sse: bool,
    /// The endpoint the proxy reports as served.
    pub served: Option<SocketAddr>,
    /// No body follows.
    pub end_of_stream: bool,
}

/// One routed request's response, as the router watches it.
pub struct ResponseTap {
    labels: Labels,
    generation: u64,
    metric_labels: RouteLabels,
    /// The client asked for a stream.
    stream: bool,
    /// The router asked for the stream's usage itself.
    hide_usage: bool,
    in_flight: Option<InFlight>,
    cache_fill: Option<Pending>,
    reading: Reading,
    stripper: Option<UsageStripper>,
    ended: bool,
}

/// How the body is read, once the headers said what it is.
enum Reading {
    /// Headers not seen yet.
    Unknown,
    /// A JSON body, kept up to a limit and read at the end.
    Json(Bounded),
    /// An SSE stream, read event by event.
    Sse {
        lines: SseLines,
        usage: Option<Usage>,
        /// The answer being read for the cache, when the request fills it.
        answer: Option<SseAnswer>,
    },
}

impl ResponseTap {
    /// The tap for `routed`, taking its cache miss to fill and starting `in_flight`'s
    /// accounting now that the request is sent.
    pub fn new(routed: &mut Routed, in_flight: Option<InFlight>) -> Self {
        Self {
            metric_labels: RouteLabels::from(&routed.labels),
            labels: routed.labels.clone(),
            generation: routed.generation,
            stream: routed.stream,
            hide_usage: routed.hide_usage,
            in_flight,
            cache_fill: routed.cache_fill.take(),
            reading: Reading::Unknown,
            stripper: None,
            ended: false,
        }
    }

    /// The labels metrics count this request under.
    pub fn metric_labels(&self) -> &RouteLabels {
        &self.metric_labels
    }

    /// The response headers arrived: the headers to set and to remove on their way to the
    /// client.
    pub fn headers(
        &mut self,
        head: ResponseHead,
        metrics: &Metrics,
    ) -> (Vec<HeaderValueOption>, Vec<String>) {
        if let Some(in_flight) = &mut self.in_flight {
            in_flight.respond(head.status.unwrap_or(200), head.served);
        }
        let status_ok = head.status.is_none_or(|s| s == 200);
        let body_follows = status_ok && !head.end_of_stream;
        let mut set = route_headers(&self.labels, self.generation, "upstream");
        let mut remove = Vec::new();
        if self.hide_usage && head.sse && body_follows {
            self.stripper = Some(UsageStripper::default());
            // The body the client gets is shorter than the one the server announced.
            remove.push("content-length".to_owned());
        }
        if self.cache_fill.is_some() {
            set.push(set_header(CACHE_HEADER, "miss"));
            if !body_follows {
                self.cache_fill = None;
            }
        }
        self.reading = if head.sse || self.stream {
            Reading::Sse {
                lines: SseLines::default(),
                usage: None,
                answer: (head.sse && self.cache_fill.is_some())
                    .then(|| SseAnswer::new(MAX_CACHED_RESPONSE)),
            }
        } else {
            Reading::Json(Bounded::new(MAX_USAGE_BODY))
        };
        if head.end_of_stream {
            self.end(metrics);
        }
        (set, remove)
    }

    /// A body chunk passed: the chunk the client gets instead, when it differs.
    pub fn body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        metrics: &Metrics,
    ) -> Option<Vec<u8>> {
        match &mut self.reading {
            Reading::Unknown => {}
            Reading::Json(body) => {
                body.push(chunk);
            }
            Reading::Sse {
                lines,
                usage,
                answer,
            } => lines.feed(chunk, &mut |data| read_event(data, usage, answer)),
        }
        let replaced = self
            .stripper
            .as_mut()
            .and_then(|s| s.chunk(chunk, end_of_stream));
        if end_of_stream {
            self.end(metrics);
        }
        replaced
    }

    /// Trailers arrived: the response is over.
    pub fn trailers(&mut self, metrics: &Metrics) {
        self.end(metrics);
    }

    /// The response ended (once, whichever frame ended it): count its usage, keep its answer,
    /// end its endpoint's accounting.
    fn end(&mut self, metrics: &Metrics) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.in_flight = None;
        let (usage, answer) = match std::mem::replace(&mut self.reading, Reading::Unknown) {
            Reading::Unknown => (None, None),
            Reading::Json(body) => {
                let body = body.bytes().unwrap_or_default();
                let answer = (self.cache_fill.is_some() && body.len() <= MAX_CACHED_RESPONSE)
                    .then(|| Answer::from_json(body))
                    .flatten();
                (usage_from_json(body), answer)
            }
            Reading::Sse {
                mut lines,
                mut usage,
                mut answer,
            } => {
                lines.finish(&mut |data| read_event(data, &mut usage, &mut answer));
                (usage, answer.and_then(SseAnswer::finish))
            }
        };
        if let Some(usage) = usage {
            self.count(usage, metrics);
        }
        if let (Some(fill), Some(answer)) = (self.cache_fill.take(), answer) {
            fill.fill(answer);
        }
    }

    fn count(&self, usage: Usage, metrics: &Metrics) {
        for (kind, tokens) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            metrics
                .tokens
                .get_or_create(&TokenLabels {
                    route: self.metric_labels.clone(),
                    kind,
                })
                .inc_by(tokens);
        }
    }
}

/// One SSE event: its usage, if it carries one, and its part of the answer being read.
fn read_event(data: &[u8], usage: &mut Option<Usage>, answer: &mut Option<SseAnswer>) {
    note_usage(data, usage);
    if let Some(answer) = answer {
        answer.event(data);
    }
}
