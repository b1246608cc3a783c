//! The `semantic-router` binary: wires the library's parts together.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use semantic_router::cache::CacheArgs;
use semantic_router::classify::{HubOptions, ModelSource};
use semantic_router::controller::kube_source::KubeSource;
use semantic_router::controller::{file_source, leader};
use semantic_router::dataplane::admin::AdminState;
use semantic_router::dataplane::extproc::{ExtProc, Limits};
use semantic_router::dataplane::metrics::Metrics;
use semantic_router::dataplane::picker::{EndpointGauges, PolicyPicker};
use semantic_router::dataplane::processor::Processor;
use semantic_router::dataplane::server::{self, TlsFiles};
use semantic_router::routing::SharedTable;
use semantic_router::routing::{ModelSignals, NoModels};
use tokio::sync::watch;

/// Semantic routing for LLM inference: picks the model, reasoning mode and GPU pool each
/// prompt needs, as an Envoy ext_proc data plane driven by SemanticRoute and ModelPool
/// resources.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "SR_LOG_FORMAT")]
    log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info,semantic_router=debug`).
    #[arg(long, default_value = "info", global = true, env = "RUST_LOG")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router: load routing policy and keep the routing table live.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions for SemanticRoute and ModelPool as YAML.
    Crds,
    /// Explain how a policy routes one OpenAI request body read from stdin: the decision, the
    /// rule that fired, the target and every signal's value, as JSON. No model signals.
    Explain {
        /// Directory of SemanticRoute and ModelPool manifests.
        #[arg(long, value_name = "DIR")]
        manifests: PathBuf,
        /// A request header, `name: value`; repeatable.
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The API the body is for.
        #[arg(long, value_enum, default_value_t = Api::Chat)]
        api: Api,
    },
    /// Train a classification head over an encoder's embeddings from labelled JSONL; writes
    /// head.safetensors, labels.json and report.json (validation scores, calibration).
    Train(Box<semantic_router::classify::heads_cli::TrainArgs>),
    /// Distill an encoder into static token vectors (the static tier: a lookup and a
    /// weighted mean per text, no forward pass); heads train on it with `train --tier static`.
    Distill(Box<semantic_router::classify::distill_cli::DistillArgs>),
    /// Measure a head on labelled JSONL (--head): accuracy, macro-F1, per-class table,
    /// confusion matrix; for a binary head AUC and recall at 1/2/5% false positives. Or replay
    /// a request log through a policy (--manifests, optionally --compare DIR2): share per
    /// decision and target, reasoning and blocked shares, cost per 1,000 requests, agreement
    /// with labels. 95% intervals.
    Eval(Box<EvalCommand>),
    /// Run the classifier on one text and print labels, scores and the embedding norm: handy
    /// for debugging a policy's thresholds.
    Classify {
        /// Encoder: a directory (config.json, tokenizer.json, *.safetensors) or a Hugging Face
        /// model id `org/name[@revision]`, read from the Hub cache (HF_HUB_CACHE, HF_HOME) or
        /// downloaded into it unless HF_HUB_OFFLINE is set.
        #[arg(long, value_name = "DIR|HUB_ID", value_parser = parse_model_source)]
        model: ModelSource,
        /// Classification head directory (head.safetensors + labels.json); repeatable.
        #[arg(long, value_name = "DIR")]
        head: Vec<PathBuf>,
        /// Longest input in tokens; longer texts are truncated.
        #[arg(long, default_value_t = semantic_router::classify::DEFAULT_MAX_TOKENS)]
        max_tokens: usize,
        /// The text to classify.
        text: String,
    },
}

/// `eval`: a head, or a whole policy.
#[derive(Args)]
struct EvalCommand {
    #[command(flatten)]
    head: semantic_router::classify::heads_cli::EvalArgs,
    #[command(flatten)]
    policy: semantic_router::what_if::PolicyArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Directory of SemanticRoute and ModelPool manifests (YAML, searched recursively);
    /// watched, and the table swapped on every change. No cluster needed. Without it the
    /// router watches the Kubernetes API (in-cluster config, or KUBECONFIG / ~/.kube/config).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,

    /// Kubernetes mode: watch only this namespace (default: all namespaces).
    #[arg(long, env = "SR_WATCH_NAMESPACE", conflicts_with = "manifests")]
    watch_namespace: Option<String>,

    /// Kubernetes mode: the Lease used to elect the one replica that writes status.
    #[arg(long, default_value = "semantic-router", env = "SR_LEASE_NAME")]
    lease_name: String,

    /// Kubernetes mode: namespace of the Lease (usually the router's own).
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    lease_namespace: String,

    /// Kubernetes mode: this replica's identity in the Lease (default: the host name) and
    /// in the Events it records.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Kubernetes mode: write status without electing a leader (a single replica only).
    #[arg(long, conflicts_with = "manifests")]
    no_leader_election: bool,

    /// Address of the Envoy ext_proc gRPC server (and gRPC health). Use 0.0.0.0 only to
    /// serve Envoy on another host.
    #[arg(long, default_value = "127.0.0.1:50051", env = "SR_EXTPROC_LISTEN")]
    extproc_listen: SocketAddr,

    /// Address of the admin HTTP server: /metrics, /healthz, /readyz, POST /v1/explain.
    #[arg(long, default_value = "127.0.0.1:9190", env = "SR_ADMIN_LISTEN")]
    admin_listen: SocketAddr,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 8 << 20, env = "SR_MAX_BODY_BYTES")]
    max_body_bytes: usize,

    /// PEM certificate for TLS on the ext_proc port (with --tls-key).
    #[arg(long, requires = "tls_key", env = "SR_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", env = "SR_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// PEM CA that client certificates must chain to (turns on mTLS).
    #[arg(long, requires = "tls_cert", env = "SR_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,

    /// Encoder for model signals (example-prompt similarity, categories, jailbreak): a
    /// directory with config.json, tokenizer.json and *.safetensors (BERT, MiniLM, ModernBERT,
    /// DeBERTa-v2), or a Hugging Face model id `org/name[@revision]` taken from the Hub cache
    /// (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub) and downloaded into it
    /// when missing, unless HF_HUB_OFFLINE=1. Without it, decisions that need a model signal
    /// do not match.
    #[arg(long, value_name = "DIR|HUB_ID", env = "SR_ENCODER", value_parser = parse_model_source)]
    encoder: Option<ModelSource>,

    /// Head for `category` signals (head.safetensors + labels.json over the encoder).
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_CATEGORY_HEAD"
    )]
    category_head: Option<PathBuf>,

    /// Complexity head behind `categories` signals with `classifier: complexity` (its labels:
    /// `reasoning`, `simple`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_COMPLEXITY_HEAD"
    )]
    complexity_head: Option<PathBuf>,

    /// Head for jailbreak policies; its `jailbreak` label's probability is the score.
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_JAILBREAK_HEAD"
    )]
    jailbreak_head: Option<PathBuf>,

    /// Static tier (`semantic-router distill --out DIR`) in front of the encoder: a head with a
    /// static twin (`<head>/static/`, trained by `train --tier static`) is answered by it
    /// when it is sure, in microseconds; otherwise, and for routes with example prompts or
    /// the semantic cache, the encoder answers. A folder without a static model gets one
    /// distilled from the encoder at start (about a minute on two cores), read from then on.
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_STATIC_MODEL"
    )]
    static_model: Option<PathBuf>,

    /// Longest prompt the encoder reads, in tokens (the last user turn, truncated).
    #[arg(long, default_value_t = semantic_router::classify::DEFAULT_MAX_TOKENS, env = "SR_CLASSIFY_MAX_TOKENS")]
    classify_max_tokens: usize,

    /// Most prompts in one forward pass (1 disables batching).
    #[arg(long, default_value_t = 16, env = "SR_CLASSIFY_MAX_BATCH")]
    classify_max_batch: usize,

    /// Microseconds a prompt may wait for others to share its forward pass.
    #[arg(long, default_value_t = 500, env = "SR_CLASSIFY_MAX_WAIT_US")]
    classify_max_wait_us: u64,

    /// Prompts waiting for the model beyond which requests go on without model signals.
    #[arg(long, default_value_t = 128, env = "SR_CLASSIFY_QUEUE")]
    classify_queue: usize,

    /// Milliseconds a request waits for model signals before it is decided without them
    /// (counted in semantic_router_model_signal_fallbacks_total).
    #[arg(long, default_value_t = 200, env = "SR_CLASSIFY_BUDGET_MS")]
    classify_budget_ms: u64,

    #[command(flatten)]
    cache: CacheArgs,

    /// Seconds open ext_proc streams get to finish after SIGTERM.
    #[arg(long, default_value_t = 10, env = "SR_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Api {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            write!(
                std::io::stdout().lock(),
                "{}",
                semantic_router::api::crds_yaml()?
            )?;
            Ok(())
        }
        Command::Explain {
            manifests,
            headers,
            api,
        } => explain(&manifests, &headers, api),
        Command::Classify {
            model,
            head,
            max_tokens,
            text,
        } => {
            init_logging(cli.log_format, &cli.log, LogTo::Stderr)?;
            let dir = model
                .resolve(&HubOptions::from_env())
                .with_context(|| format!("finding the model {model}"))?;
            let report = semantic_router::classify::classify_report(&dir, &head, &text, max_tokens)
                .with_context(|| format!("classifying with {model}"))?;
            write!(std::io::stdout().lock(), "{report}")?;
            Ok(())
        }
        Command::Train(args) => {
            init_logging(cli.log_format, &cli.log, LogTo::Stderr)?;
            let summary = args.run()?;
            writeln!(std::io::stdout().lock(), "{summary}")?;
            Ok(())
        }
        Command::Distill(args) => {
            init_logging(cli.log_format, &cli.log, LogTo::Stderr)?;
            let summary = args.run()?;
            writeln!(std::io::stdout().lock(), "{summary}")?;
            Ok(())
        }
        Command::Eval(args) => {
            init_logging(cli.log_format, &cli.log, LogTo::Stderr)?;
            let EvalCommand { head, policy } = *args;
            let report = match &policy.manifests {
                Some(dir) => policy.run(dir, &head.data, &head.encoder, head.json)?,
                None => head.run()?,
            };
            writeln!(std::io::stdout().lock(), "{report}")?;
            Ok(())
        }
        Command::Run(args) => {
            init_logging(cli.log_format, &cli.log, LogTo::Stdout)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run(*args))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.manifests {
        anyhow::ensure!(
            dir.is_dir(),
            "--manifests {} is not a directory",
            dir.display()
        );
    }
    let extproc_listener = server::bind(args.extproc_listen).await?;
    let admin_listener = server::bind(args.admin_listen).await?;
    tracing::info!(
        extproc = %extproc_listener.local_addr()?, admin = %admin_listener.local_addr()?,
        tls = args.tls_cert.is_some(), "listening"
    );

    let shared = SharedTable::default();
    let metrics = Arc::new(Metrics::new());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    // Endpoint picking follows the live table and scrapes model-server metrics.
    let picker = Arc::new(PolicyPicker::new());
    tokio::spawn(picker.clone().maintain(shared.clone()));
    registry.register_collector(Box::new(EndpointGauges::new(
        shared.clone(),
        picker.clone(),
    )));
    let models = load_models(&args, &shared, &mut registry)?;
    let cache = args
        .cache
        .backend(&mut registry)
        .context("semantic cache")?;
    let processor =
        Arc::new(Processor::new(shared.clone(), picker.clone(), models).with_cache(cache));

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    tokio::spawn(track_generation(shared.subscribe(), metrics.clone()));

    let tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
        cert,
        key,
        client_ca: args.tls_client_ca,
    });
    let until_stopped = {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let source: futures::future::BoxFuture<'_, anyhow::Result<()>> = match args.manifests {
        Some(dir) => {
            let shared = shared.clone();
            Box::pin(async move { Ok(file_source::run(dir, shared, until_stopped).await?) })
        }
        None => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration (in-cluster or KUBECONFIG); pass --manifests DIR to run without a cluster")?;
            let watch_errors = prometheus_client::metrics::counter::Counter::<u64>::default();
            registry.register(
                "semantic_router_kube_watch_errors",
                "Failed Kubernetes watch attempts (retried with backoff; the last table keeps serving)",
                watch_errors.clone(),
            );
            let leader = if args.no_leader_election {
                watch::channel(true).1
            } else {
                leader::elect(
                    client.clone(),
                    &args.lease_namespace,
                    &args.lease_name,
                    args.identity.clone(),
                )
                .await?
            };
            let source = KubeSource {
                client,
                namespace: args.watch_namespace,
                leader,
                on_watch_error: Arc::new(move || {
                    watch_errors.inc();
                }),
                instance: args.identity,
            };
            let shared = shared.clone();
            Box::pin(async move { Ok(source.run(shared, until_stopped).await?) })
        }
    };
    let extproc = server::serve_extproc(
        extproc_listener,
        ExtProc::new(
            processor.clone(),
            metrics,
            Limits {
                max_body_bytes: args.max_body_bytes,
            },
        ),
        tls,
        shared.subscribe(),
        stopped.clone(),
        Duration::from_secs(args.shutdown_grace_seconds),
    );
    let admin = server::serve_admin(
        admin_listener,
        Arc::new(AdminState {
            registry,
            processor,
            max_body_bytes: args.max_body_bytes,
        }),
        stopped,
    );
    tokio::try_join!(
        source,
        async { extproc.await.map_err(anyhow::Error::from) },
        async { admin.await.map_err(anyhow::Error::from) },
    )?;
    tracing::info!("shut down");
    Ok(())
}

/// `semantic-router explain`: the decision for a body on stdin under the policy in `dir`.
fn explain(dir: &std::path::Path, headers: &[String], api: Api) -> anyhow::Result<()> {
    use semantic_router::controller::manifests::load_dir;
    use semantic_router::dataplane::headers::RequestHeaders;
    use semantic_router::dataplane::openai::ApiKind;
    use semantic_router::dataplane::processor::RequestView;
    use std::io::Read;

    let resources = load_dir(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("cannot load {}:\n{}", dir.display(), lines.join("\n"))
    })?;
    let compiled = semantic_router::routing::compile(&resources);
    for d in &compiled.diagnostics {
        eprintln!("{d}");
    }
    let shared = SharedTable::default();
    shared.publish(compiled.table);
    let headers = headers
        .iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not `name: value`"))?;
            Ok((name.trim(), value.trim()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let headers = RequestHeaders::from_pairs(headers);
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the request body from stdin")?;
    let kind = match api {
        Api::Chat => ApiKind::Chat,
        Api::Completions => ApiKind::Completions,
    };
    let processor = Processor::new(shared, Arc::new(PolicyPicker::new()), Arc::new(NoModels));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let explanation = runtime
        .block_on(processor.explain(RequestView {
            kind,
            headers: &headers,
            body: &body,
        }))
        .context("the request body cannot be routed")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?;
    Ok(())
}

/// The model signals `run` was asked for: the Candle classifier service with its heads, or
/// none. Models load once, before the router turns ready.
fn load_models(
    args: &RunArgs,
    shared: &SharedTable,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Arc<dyn ModelSignals>> {
    use semantic_router::classify::ServiceConfig;
    use semantic_router::dataplane::signals::{CandleSignals, ModelFiles};

    let Some(source) = &args.encoder else {
        return Ok(Arc::new(NoModels));
    };
    let started = std::time::Instant::now();
    let dir = source
        .resolve(&HubOptions::from_env())
        .with_context(|| format!("finding the encoder {source}"))?;
    let files = ModelFiles {
        encoder: dir.clone(),
        max_tokens: args.classify_max_tokens,
        category_head: args.category_head.clone(),
        complexity_head: args.complexity_head.clone(),
        jailbreak_head: args.jailbreak_head.clone(),
        static_model: args.static_model.clone(),
    };
    let (signals, capabilities) = CandleSignals::load(
        &files,
        ServiceConfig {
            max_batch_size: args.classify_max_batch,
            max_wait: Duration::from_micros(args.classify_max_wait_us),
            queue_capacity: args.classify_queue,
            ..ServiceConfig::default()
        },
        Duration::from_millis(args.classify_budget_ms),
    )
    .with_context(|| format!("loading the models from {}", dir.display()))?;
    signals.register(registry);
    shared.set_models(capabilities);
    tracing::info!(encoder = %source, dir = %dir.display(), elapsed = ?started.elapsed(), "models loaded");
    tokio::spawn(signals.index_examples(shared.clone()));
    Ok(Arc::new(signals))
}

/// Keeps the table-generation gauge current.
async fn track_generation(mut generation: watch::Receiver<u64>, metrics: Arc<Metrics>) {
    loop {
        let current = *generation.borrow_and_update();
        metrics
            .table_generation
            .set(i64::try_from(current).unwrap_or(i64::MAX));
        if generation.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// clap's reading of a model argument: a folder or a Hub id (never an error here; a missing
/// folder is reported when it is loaded).
fn parse_model_source(value: &str) -> Result<ModelSource, std::convert::Infallible> {
    Ok(ModelSource::parse(value))
}

/// Where logs go: `run` logs to stdout (a service's log stream); commands whose stdout is
/// their answer log to stderr.
#[derive(Clone, Copy)]
enum LogTo {
    Stdout,
    Stderr,
}

fn init_logging(format: LogFormat, filter: &str, to: LogTo) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, to) {
        (LogFormat::Text, LogTo::Stdout) => builder.init(),
        (LogFormat::Text, LogTo::Stderr) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, LogTo::Stdout) => builder.json().init(),
        (LogFormat::Json, LogTo::Stderr) => builder.json().with_writer(std::io::stderr).init(),
    }
    Ok(())
}
