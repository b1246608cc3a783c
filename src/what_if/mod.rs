//! The policy what-if: how a policy (a directory of `SemanticRoute` and `ModelPool`
//! manifests, with the router's encoder and heads) would route a log of requests: the share
//! of each decision and target, reasoning and blocked shares, the estimated cost per 1,000
//! requests, and agreement with labels, for one policy or two side by side
//! (`semantic-router eval --manifests DIR [--compare DIR2]`). What a platform team runs
//! before applying a policy change.
//!
//! Requests are decided exactly as the router decides them ([`Processor::explain`]), with
//! every model signal computed; endpoints' load and health are not replayed: every pool is
//! taken to be able to serve.

mod compare;
pub mod explain;
mod report;
pub mod requests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::classify::heads_cli::EncoderArgs;
use crate::classify::{ClassifyError, HubOptions, ServiceConfig};
use crate::controller::manifests::load_dir;
use crate::dataplane::openai::InferenceRequest;
use crate::dataplane::picker::{Attempt, EndpointPicker, Pick, PickRequest, Unavailable};
use crate::dataplane::processor::{Processor, RequestView};
use crate::dataplane::signals::{CandleSignals, ModelFiles};
use crate::routing::{Pool, PoolBackend, Resources, SharedTable, compile};

pub use compare::Comparison;
pub use report::{Assumptions, LabelKind, Outcome, Report};
use requests::{LoggedRequest, RequestLogError};

/// Requests decided at once (the classifier batches them).
const CONCURRENCY: usize = 32;

/// Why a what-if cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    /// The request log is unusable.
    #[error(transparent)]
    Requests(#[from] RequestLogError),
    /// A policy directory does not load.
    #[error("cannot load the policy {dir}:\n{errors}")]
    Manifests {
        /// The directory.
        dir: PathBuf,
        /// One line per problem.
        errors: String,
    },
    /// The encoder or a head does not load.
    #[error(transparent)]
    Model(#[from] ClassifyError),
    /// The async runtime does not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The report cannot be serialised.
    #[error("cannot write the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The policy half of `semantic-router eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Replay --data (a request log) through this policy instead of measuring one head: a
    /// directory of SemanticRoute and ModelPool manifests, as `run --manifests` reads it.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["head", "positive"])]
    pub manifests: Option<PathBuf>,
    /// A second policy to replay the same requests through, printed beside the first with the
    /// differences.
    #[arg(long, value_name = "DIR", requires = "manifests")]
    pub compare: Option<PathBuf>,
    /// Head for `category` signals (as `run --category-head`).
    #[arg(long, value_name = "DIR", requires = "manifests")]
    pub category_head: Option<PathBuf>,
    /// Head for `classifier: complexity` signals (as `run --complexity-head`).
    #[arg(long, value_name = "DIR", requires = "manifests")]
    pub complexity_head: Option<PathBuf>,
    /// Head for jailbreak policies (as `run --jailbreak-head`).
    #[arg(long, value_name = "DIR", requires = "manifests")]
    pub jailbreak_head: Option<PathBuf>,
    /// Model written into plain-prompt lines and bodies that name none (the alias a route
    /// matches).
    #[arg(long, default_value = "auto")]
    pub model: String,
    /// Output tokens assumed per request, for the cost estimate.
    #[arg(long, default_value_t = 300)]
    pub output_tokens: u32,
    /// What a line's `label` names: the expected decision, model, reasoning (`reasoning`,
    /// `on`, `true` mean on) or block (`jailbreak`, `blocked`, `true` mean blocked).
    #[arg(long, value_enum, default_value_t = LabelKind::Model)]
    pub labels: LabelKind,
}

impl PolicyArgs {
    /// Replays `data` through the policy in `first` (and the one to compare), returning the
    /// table or JSON.
    pub fn run(
        &self,
        first: &Path,
        data: &Path,
        encoder: &EncoderArgs,
        json: bool,
    ) -> Result<String, WhatIfError> {
        let log = requests::read(data, &self.model)?;
        let assumptions = Assumptions {
            output_tokens: self.output_tokens,
            chars_per_token: report::CHARS_PER_TOKEN,
        };
        let files = ModelFiles {
            encoder: encoder.encoder.resolve(&HubOptions::from_env())?,
            max_tokens: encoder.max_tokens,
            precision: encoder.precision,
            category_head: self.category_head.clone(),
            complexity_head: self.complexity_head.clone(),
            jailbreak_head: self.jailbreak_head.clone(),
            static_model: encoder.static_model.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(WhatIfError::Runtime)?;
        let replay = |dir: &Path| -> Result<Report, WhatIfError> {
            let resources = load_policy(dir)?;
            let outcomes = runtime.block_on(decide_all(&resources, &files, &log))?;
            Ok(Report::new(
                dir,
                &resources,
                &log,
                &outcomes,
                &assumptions,
                self.labels,
            ))
        };
        let a = replay(first)?;
        let Some(second) = &self.compare else {
            return Ok(if json {
                serde_json::to_string_pretty(&a)?
            } else {
                format!("{data}\n{a}", data = header(data, &log))
            });
        };
        let b = replay(second)?;
        let comparison = Comparison::new(a, b);
        Ok(if json {
            serde_json::to_string_pretty(&comparison)?
        } else {
            format!("{}\n{comparison}", header(data, &log))
        })
    }
}

fn header(data: &Path, log: &[LoggedRequest]) -> String {
    format!("{} requests from {}", log.len(), data.display())
}

/// The manifests of `dir`.
fn load_policy(dir: &Path) -> Result<Resources, WhatIfError> {
    load_dir(dir).map_err(|errors| WhatIfError::Manifests {
        dir: dir.to_owned(),
        errors: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Decides every request of `log` under `resources`, with the models of `files`.
async fn decide_all(
    resources: &Resources,
    files: &ModelFiles,
    log: &[LoggedRequest],
) -> Result<Vec<Outcome>, WhatIfError> {
    let (signals, capabilities) = CandleSignals::load(
        files,
        ServiceConfig {
            max_batch_size: CONCURRENCY,
            ..ServiceConfig::default()
        },
        // No request budget: the what-if shows the policy with every signal computed.
        Duration::from_secs(3600),
    )?;
    let shared = SharedTable::default();
    let mut resources = resources.clone();
    resources.models = capabilities.clone();
    shared.set_models(capabilities);
    let compiled = compile(&resources);
    for d in &compiled.diagnostics {
        tracing::warn!("{d}");
    }
    signals.index_table(&compiled.table).await;
    shared.publish(compiled.table);
    let processor = Processor::new(shared, Arc::new(EveryPoolServes), Arc::new(signals));
    let outcomes = futures::stream::iter(log)
        .map(|request| decide(&processor, request))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    Ok(outcomes)
}

/// One request's outcome.
async fn decide(processor: &Processor, request: &LoggedRequest) -> Outcome {
    let explained = processor
        .explain(RequestView {
            kind: request.kind,
            headers: &request.headers,
            body: &request.body,
        })
        .await;
    let input_chars = InferenceRequest::parse(request.kind, &request.body)
        .map(|r| r.prompt_pieces().iter().map(|p| p.chars().count()).sum())
        .unwrap_or(0);
    Outcome::of(explained, input_chars)
}

/// A picker for the what-if: every pool serves every request (from its first listed
/// endpoint, if any), whatever its load or health.
struct EveryPoolServes;

impl EndpointPicker for EveryPoolServes {
    fn pick(&self, pool: &Pool, _: &PickRequest<'_>) -> Result<Pick, Unavailable> {
        let endpoints = match &pool.backend {
            PoolBackend::Endpoints(e) => e.iter().take(1).copied().collect(),
            PoolBackend::Gateway { .. } => Vec::new(),
        };
        Ok(Pick::new(pool.key.clone(), endpoints))
    }

    fn started(&self, _: &Pick, _: std::net::SocketAddr) {}

    fn finished(&self, _: &Pick, _: std::net::SocketAddr) {}

    fn attempted(&self, _: &Pick, _: std::net::SocketAddr, _: Attempt) {}
}
