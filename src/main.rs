//! The `semantic-router` binary: wires the library's parts together.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use semantic_router::cache::CacheArgs;
use semantic_router::classify::{HubOptions, ModelSource};
use semantic_router::controller::file_source;
use semantic_router::controller::kube_args::KubeArgs;
use semantic_router::dataplane::admin::AdminState;
use semantic_router::dataplane::extproc::{ExtProc, Limits};
use semantic_router::dataplane::metrics::Metrics;
use semantic_router::dataplane::model_args::ModelArgs;
use semantic_router::dataplane::picker::{EndpointGauges, PolicyPicker};
use semantic_router::dataplane::processor::Processor;
use semantic_router::dataplane::server::{self, TlsFiles};
use semantic_router::routing::SharedTable;
use semantic_router::what_if::explain::ExplainArgs;
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
    Explain(ExplainArgs),
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
        #[arg(long, value_name = "DIR|HUB_ID")]
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

    #[command(flatten)]
    kube: KubeArgs,

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

    #[command(flatten)]
    models: ModelArgs,

    #[command(flatten)]
    cache: CacheArgs,

    /// Seconds open ext_proc streams get to finish after SIGTERM.
    #[arg(long, default_value_t = 10, env = "SR_SHUTDOWN_GRACE_SECONDS")]
    shutdown_grace_seconds: u64,

    /// Threads serving ext_proc, admin and the sources (default: one per CPU the process may
    /// use). The classifier's forward passes run on threads of their own. Beside Envoy on a
    /// small pod, 1 spends less CPU per request: no wake-ups across threads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), env = "SR_WORKER_THREADS")]
    worker_threads: Option<u16>,
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
        Command::Explain(args) => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("reading the request body from stdin")?;
            let (diagnostics, explanation) = args.run(&body)?;
            for line in diagnostics {
                eprintln!("{line}");
            }
            writeln!(std::io::stdout().lock(), "{explanation}")?;
            Ok(())
        }
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
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = args.worker_threads {
                runtime.worker_threads(threads.into());
            }
            let runtime = runtime
                .enable_all()
                .build()
                .context("starting the async runtime")?;
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
    let models = args
        .models
        .load(&shared, &mut registry)
        .context("loading the model signals")?;
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
            let source = args.kube.source(&mut registry).await?;
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
