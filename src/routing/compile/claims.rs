//! Which route governs a model alias: routes are taken in precedence order, and the first to
//! claim a model for a set of header matches holds it; a later route asking for the same is
//! told who holds it and why.

use k8s_openapi::jiff::Timestamp;

use super::{Diagnostics, object_key};
use crate::api::{self, SemanticRoute};
use crate::routing::diagnostics::{ConditionType, Kind, ObjectKey, Reason, Severity};

/// Routes with more header conditions are more specific and go first (a namespace's scope
/// counts as one); then the oldest, then by namespace/name, so precedence never depends on
/// the order resources arrived in.
pub(super) fn precedence(
    route: &SemanticRoute,
) -> (std::cmp::Reverse<usize>, Option<Timestamp>, ObjectKey) {
    let matches = &route.spec.r#match;
    let scoped = usize::from(matches.scope == api::AliasScope::Namespace);
    (
        std::cmp::Reverse(matches.headers.len() + scoped),
        creation_time(route),
        object_key(route),
    )
}

/// The header matches a route's models are governed under, lower-cased and sorted: its own,
/// and for a namespace-scoped route the namespace header the gateway sets.
pub(super) fn match_headers(route: &SemanticRoute, key: &ObjectKey) -> Vec<(String, Vec<String>)> {
    let matches = &route.spec.r#match;
    let mut headers: Vec<(String, Vec<String>)> = matches
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.values.clone()))
        .collect();
    if matches.scope == api::AliasScope::Namespace {
        headers.push((api::NAMESPACE_HEADER.into(), vec![key.namespace.clone()]));
    }
    headers.sort();
    headers
}

/// When the API server created `route`.
fn creation_time(route: &SemanticRoute) -> Option<Timestamp> {
    route.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// A model governed for requests with these header matches, by the route that came first.
struct Claim {
    headers: Vec<(String, Vec<String>)>,
    model: String,
    route: ObjectKey,
    created: Option<Timestamp>,
}

/// The models claimed so far while compiling routes in precedence order.
#[derive(Default)]
pub(super) struct Claims(Vec<Claim>);

impl Claims {
    /// Claims each model of `route` under `headers` and returns those it now governs; each
    /// one another route already holds is reported as `Conflicted`, naming the holder.
    pub(super) fn claim(
        &mut self,
        route: &SemanticRoute,
        key: &ObjectKey,
        headers: &[(String, Vec<String>)],
        out: &mut Diagnostics,
    ) -> Vec<String> {
        let created = creation_time(route);
        let mut governed = Vec::new();
        for model in &route.spec.r#match.models {
            let holder = self
                .0
                .iter()
                .find(|c| c.headers == headers && &c.model == model);
            match holder {
                Some(holder) => out.push(
                    Kind::SemanticRoute,
                    key,
                    ConditionType::Accepted,
                    Reason::Conflicted,
                    Severity::Error,
                    format!(
                        "route {} already governs model {model:?} for the same header matches and \
                         takes precedence: {}; route {key} does not govern it; narrow one route's \
                         match or rename the model",
                        holder.route,
                        why_first(holder, key, created)
                    ),
                ),
                None => {
                    self.0.push(Claim {
                        headers: headers.to_vec(),
                        model: model.clone(),
                        route: key.clone(),
                        created,
                    });
                    governed.push(model.clone());
                }
            }
        }
        governed
    }
}

/// Why the route holding `claim` governs its model rather than `key` (created at `created`),
/// whose header matches are the same: the older route wins, then the first by namespace/name.
fn why_first(claim: &Claim, key: &ObjectKey, created: Option<Timestamp>) -> String {
    match (claim.created, created) {
        (Some(first), Some(then)) if first < then => {
            format!("it was created first ({first}; route {key} at {then})")
        }
        _ => format!(
            "both were created at the same moment and {} sorts first by namespace/name",
            claim.route
        ),
    }
}
