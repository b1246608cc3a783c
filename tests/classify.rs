//! The classifier module against models it can load: tiny random-weight models of every
//! architecture built by `classify::tiny` (shapes, truncation, batching, the service's queue,
//! cache and shedding), and the real all-MiniLM-L6-v2 from `.models/` (`make tools`) for
//! semantics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use semantic_router::classify::cascade::{HeadQuery, LabelGroup};
use semantic_router::classify::{
    Architecture, ClassifierService, ClassifyError, DistillOptions, Encoder, EncoderOptions,
    HubOptions, ModelSource, Precision, Ranking, ServiceConfig, StaticModel, StaticTier, Tier,
    classify_report, tiny,
};
use tempfile::TempDir;

#[path = "support/fake_hub.rs"]
mod fake_hub;
use fake_hub::FakeHub;

const ARCHS: [Architecture; 3] = [
    Architecture::Bert,
    Architecture::ModernBert,
    Architecture::DebertaV2,
];
const LABELS: &[&str] = &["jailbreak", "benign", "unsure"];

/// A tiny model folder inside a temporary directory (kept alive by the returned guard).
fn tiny_model(arch: Architecture, labels: Option<&[&str]>) -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join(format!("tiny-{}", arch.as_str()));
    tiny::write_model(&dir, arch, labels).expect("write tiny model");
    (tmp, dir)
}

/// The encoder in `dir` at the default precision (int8 for BERT, f32 for the others).
fn load(dir: &Path, max_tokens: usize) -> Encoder {
    load_at(dir, max_tokens, Precision::default())
}

fn load_at(dir: &Path, max_tokens: usize, precision: Precision) -> Encoder {
    let options = EncoderOptions {
        max_tokens,
        precision,
        ..EncoderOptions::default()
    };
    Encoder::load(dir, &options).expect("load encoder")
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The service's metrics as Prometheus text.
fn metrics_text(service: &ClassifierService) -> String {
    let mut registry = Registry::default();
    service.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode metrics");
    text
}

fn sum(ranked: &Ranking) -> f32 {
    ranked.iter().map(|(_, p)| p).sum()
}

#[test]
fn loads_every_architecture_with_and_without_a_head() {
    for arch in ARCHS {
        for labels in [None, Some(LABELS)] {
            let (_tmp, dir) = tiny_model(arch, labels);
            let encoder = load(&dir, 64);
            assert_eq!(encoder.architecture(), arch);
            assert_eq!(encoder.dimension(), tiny::HIDDEN);
            let out = encoder
                .encode(&["hello there", "what is two plus two ?"])
                .unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].tokens, 4, "[CLS] hello there [SEP]");
            for o in &out {
                assert_eq!(o.embedding.len(), tiny::HIDDEN);
                assert!(
                    (norm(&o.embedding) - 1.0).abs() < 1e-4,
                    "{arch}: unit length"
                );
                assert!(o.embedding.iter().all(|v| v.is_finite()));
            }
            match labels {
                None => {
                    assert!(encoder.checkpoint_head().is_none());
                    assert!(out[0].class_probabilities.is_none());
                }
                Some(labels) => {
                    let (name, got) = encoder.checkpoint_head().expect("checkpoint head");
                    assert_eq!(name, dir.file_name().and_then(|n| n.to_str()).unwrap_or(""));
                    assert_eq!(got, labels);
                    for o in &out {
                        let p = o.class_probabilities.as_deref().expect("probabilities");
                        assert_eq!(p.len(), labels.len());
                        assert!(
                            (p.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                            "{arch}: sums to 1"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn truncation_keeps_the_start_and_the_end() {
    let long = "what is two plus three times four minus five equals x and tell me about \
                the weather today please thanks";
    for arch in ARCHS {
        let (_tmp, dir) = tiny_model(arch, Some(LABELS));
        let encoder = load(&dir, 8);
        let cut = encoder.encode(&[long]).expect("long").remove(0);
        // 8 tokens = [CLS] + the first word + the last five + [SEP].
        let kept = encoder
            .encode(&["what the weather today please thanks"])
            .expect("kept")
            .remove(0);
        assert_eq!(cut.tokens, 8);
        assert!(cut.truncated);
        assert!(!kept.truncated);
        assert!(
            max_diff(&cut.embedding, &kept.embedding) < 1e-6,
            "{arch}: a long text embeds as its start and end"
        );
    }
}

#[test]
fn a_budget_beyond_the_model_is_capped() {
    let (_tmp, dir) = tiny_model(Architecture::Bert, None);
    assert_eq!(load(&dir, 10_000).max_tokens(), tiny::MAX_POSITIONS);
}

/// The int8 body is BERT's: on the tiny model its embeddings and checkpoint head stay near
/// f32's, batched or not; other architectures are served in f32 whatever is asked.
#[test]
fn the_int8_encoder_stays_near_f32_and_only_bert_takes_it() {
    let texts = [
        "hi",
        "solve for x : two x plus three equals five",
        "tell me about the weather today , please",
    ];
    let (_tmp, dir) = tiny_model(Architecture::Bert, Some(LABELS));
    let exact = load_at(&dir, 64, Precision::F32);
    let int8 = load_at(&dir, 64, Precision::Int8);
    assert_eq!(exact.precision(), Precision::F32);
    assert_eq!(int8.precision(), Precision::Int8);
    let want = exact.encode(&texts).expect("f32");
    let got = int8.encode(&texts).expect("int8");
    for ((text, want), got) in texts.iter().zip(&want).zip(&got) {
        let cosine = cosine(&want.embedding, &got.embedding);
        assert!(cosine > 0.99, "{text:?}: cosine {cosine}");
        let diff = max_diff(
            want.class_probabilities.as_deref().expect("head"),
            got.class_probabilities.as_deref().expect("head"),
        );
        assert!(diff < 0.05, "{text:?}: probabilities differ by {diff}");
        assert_eq!((want.tokens, want.truncated), (got.tokens, got.truncated));
    }
    for arch in [Architecture::ModernBert, Architecture::DebertaV2] {
        let (_tmp, dir) = tiny_model(arch, None);
        assert_eq!(
            load_at(&dir, 64, Precision::Int8).precision(),
            Precision::F32
        );
    }
}

#[test]
fn batching_gives_the_same_numbers_as_one_by_one() {
    let texts = [
        "hi",
        "good morning , how are you ?",
        "solve for x : two x plus three equals five",
        "tell me about the weather today",
        "what is the integral of x times x and the derivative of x",
    ];
    for arch in ARCHS {
        let (_tmp, dir) = tiny_model(arch, Some(LABELS));
        let encoder = load(&dir, 64);
        let batched = encoder.encode(&texts).expect("batch");
        for (text, b) in texts.iter().zip(&batched) {
            let single = encoder.encode(&[text]).expect("single").remove(0);
            let diff = max_diff(&single.embedding, &b.embedding);
            assert!(
                diff < 1e-4,
                "{arch}: {text:?} differs by {diff} when padded"
            );
            let (p1, p2) = (single.class_probabilities, b.class_probabilities.clone());
            let diff = max_diff(&p1.expect("p"), &p2.expect("p"));
            assert!(diff < 1e-4, "{arch}: head differs by {diff}");
            assert_eq!(single.tokens, b.tokens);
        }
    }
}

#[test]
fn encoding_is_deterministic_across_loads() {
    for arch in ARCHS {
        let (_tmp, dir) = tiny_model(arch, None);
        let a = load(&dir, 64)
            .encode(&["hello there , good evening"])
            .expect("a");
        let b = load(&dir, 64)
            .encode(&["hello there , good evening"])
            .expect("b");
        assert_eq!(a, b, "{arch}: same weights, same text, same bits");
    }
}

#[test]
fn load_errors_name_the_problem() {
    let tmp = tempfile::tempdir().expect("tmp");
    let missing = Encoder::load(&tmp.path().join("nope"), &EncoderOptions::default());
    assert_eq!(missing.expect_err("missing").kind(), "io");

    let (_t, dir) = tiny_model(Architecture::Bert, None);
    std::fs::write(dir.join("config.json"), r#"{"model_type":"t5"}"#).expect("write");
    let err = Encoder::load(&dir, &EncoderOptions::default()).expect_err("t5");
    assert_eq!(err.kind(), "unsupported_architecture");

    let (_t, dir) = tiny_model(Architecture::Bert, None);
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let err = Encoder::load(&dir, &EncoderOptions::default()).expect_err("no weights");
    assert!(err.to_string().contains("safetensors"), "{err}");

    let (_t, dir) = tiny_model(Architecture::Bert, Some(LABELS));
    let config = tiny::config_json(Architecture::Bert, Some(&["only-one"]));
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
    let err = Encoder::load(&dir, &EncoderOptions::default()).expect_err("label count");
    assert!(err.to_string().contains("id2label has 1 labels"), "{err}");
}

/// A service over a tiny BERT with a checkpoint head, a linear head and an MLP head.
fn tiny_service(config: ServiceConfig) -> (TempDir, ClassifierService) {
    let (tmp, dir) = tiny_model(Architecture::Bert, Some(LABELS));
    let encoder = load(&dir, 64);
    let heads = vec![
        tiny::random_head(
            "topic",
            tiny::HIDDEN,
            &["math", "greeting", "weather"],
            None,
        )
        .expect("linear head"),
        tiny::random_head("jailbreak", tiny::HIDDEN, &["yes", "no"], Some(16)).expect("mlp"),
    ];
    let service = ClassifierService::start(encoder, heads, config).expect("service");
    (tmp, service)
}

fn config() -> ServiceConfig {
    ServiceConfig {
        workers: 1,
        max_batch_size: 8,
        max_wait: Duration::from_micros(200),
        queue_capacity: 64,
        cache_capacity: 128,
        default_timeout: None,
    }
}

#[tokio::test]
async fn one_pass_feeds_every_head_and_probabilities_sum_to_one() {
    let (_tmp, service) = tiny_service(config());
    assert_eq!(
        service.head_names(),
        vec!["jailbreak", "tiny-bert", "topic"]
    );
    let heads = ["topic", "jailbreak", "tiny-bert"];
    let analysis = service
        .analyze("tell me about the weather today", &heads)
        .await
        .expect("analysis");
    assert_eq!(
        service.encoded_texts(),
        1,
        "one encoder pass for three heads"
    );
    assert_eq!(analysis.embedding.len(), tiny::HIDDEN);
    for head in heads {
        let ranked = analysis.head(head).expect("asked for");
        assert!((sum(ranked) - 1.0).abs() < 1e-5, "{head} sums to 1");
        let probabilities: Vec<f32> = ranked.iter().map(|(_, p)| p).collect();
        assert!(
            probabilities.windows(2).all(|w| w[0] >= w[1]),
            "most probable first"
        );
    }
    let mut labels: Vec<&str> = analysis
        .head("tiny-bert")
        .expect("the checkpoint's head")
        .iter()
        .map(|(l, _)| l)
        .collect();
    labels.sort_unstable();
    assert_eq!(labels, vec!["benign", "jailbreak", "unsure"]);

    let topic = service
        .classify("hello there", "topic")
        .await
        .expect("classify");
    assert_eq!(topic.len(), 3);
    let err = service
        .classify("hello", "nope")
        .await
        .expect_err("unknown head");
    assert!(matches!(err, ClassifyError::UnknownHead(ref h) if h == "nope"));
}

#[tokio::test]
async fn the_service_batch_matches_the_encoder() {
    let (_tmp, service) = tiny_service(ServiceConfig {
        max_wait: Duration::from_millis(100),
        ..config()
    });
    // Similar lengths: texts whose padding would more than double run in separate passes.
    let texts = ["hi there", "good morning", "two plus two", "solve for x"];
    let results = futures::future::join_all(texts.iter().map(|t| service.embed(t))).await;
    for (text, result) in texts.iter().zip(results) {
        let direct = service.encoder().encode(&[text]).expect("direct").remove(0);
        let served = result.expect("served");
        assert!(max_diff(&direct.embedding, &served) < 1e-4, "{text}");
    }
    assert_eq!(service.encoded_texts(), 4);
    let text = metrics_text(&service);
    // All four arrived within max_wait, so one forward pass ran them.
    assert!(
        text.contains("semantic_router_classifier_batch_size_count 1"),
        "{text}"
    );
    assert!(
        text.contains("semantic_router_classifier_batch_size_sum 4.0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_cache_hit_skips_the_model() {
    let (_tmp, service) = tiny_service(config());
    let first = service
        .analyze("hello there", &["topic"])
        .await
        .expect("first");
    let again = service
        .analyze("hello there", &["topic"])
        .await
        .expect("again");
    assert!(!first.cached && again.cached);
    assert_eq!(first.embedding, again.embedding);
    assert_eq!(first.heads, again.heads);
    assert_eq!(
        service.encoded_texts(),
        1,
        "the second call never reached the model"
    );
    service.embed("hello there !").await.expect("other text");
    assert_eq!(service.encoded_texts(), 2);
}

/// Configuration that holds a lone request in the queue for `hold` waiting for company.
fn holding(hold: Duration, queue_capacity: usize) -> ServiceConfig {
    ServiceConfig {
        max_batch_size: 32,
        max_wait: hold,
        queue_capacity,
        cache_capacity: 0,
        ..config()
    }
}

#[tokio::test]
async fn a_full_queue_sheds_at_once() {
    let (_tmp, service) = tiny_service(holding(Duration::from_secs(1), 2));
    let waiting: Vec<_> = ["hi", "hello"]
        .into_iter()
        .map(|t| {
            let s = service.clone();
            tokio::spawn(async move { s.embed(t).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started = Instant::now();
    let err = service
        .embed("good morning")
        .await
        .expect_err("queue is full");
    assert!(
        matches!(err, ClassifyError::Overloaded { capacity: 2 }),
        "{err}"
    );
    assert!(err.is_shed());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused without waiting"
    );
    for w in waiting {
        w.await.expect("task").expect("queued calls still succeed");
    }
    let mut registry = Registry::default();
    service.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(r#"semantic_router_classifier_shed_total{reason="overloaded"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_deadline_returns_at_once_and_the_job_is_skipped() {
    let (_tmp, service) = tiny_service(holding(Duration::from_secs(1), 8));
    let patient = {
        let s = service.clone();
        tokio::spawn(async move { s.embed("hello there").await })
    };
    let started = Instant::now();
    let deadline = Some(Instant::now() + Duration::from_millis(40));
    let err = service
        .analyze_until("good morning", &[], deadline)
        .await
        .expect_err("deadline");
    assert!(matches!(err, ClassifyError::DeadlineExceeded));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(800),
        "returned at the deadline, not with the batch: {waited:?}"
    );

    let passed = service.analyze_until("hi", &[], Some(Instant::now())).await;
    assert!(matches!(passed, Err(ClassifyError::DeadlineExceeded)));

    patient
        .await
        .expect("task")
        .expect("the patient caller is served");
    assert_eq!(service.encoded_texts(), 1, "the expired request never ran");
    assert_eq!(service.metrics().abandoned.get(), 1);
}

#[tokio::test]
async fn dropped_callers_are_skipped_before_their_batch_runs() {
    let (_tmp, service) = tiny_service(holding(Duration::from_secs(1), 8));
    let spawn = |text: &'static str| {
        let s = service.clone();
        tokio::spawn(async move { s.embed(text).await })
    };
    let gone = [spawn("hi"), spawn("hello")];
    let kept = spawn("good evening");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for task in &gone {
        task.abort();
    }
    kept.await.expect("task").expect("served");
    assert_eq!(service.encoded_texts(), 1);
    assert_eq!(service.metrics().abandoned.get(), 2);
}

#[tokio::test]
async fn shutdown_answers_waiting_callers() {
    let (_tmp, service) = tiny_service(holding(Duration::from_secs(5), 8));
    let waiting = {
        let s = service.clone();
        tokio::spawn(async move { s.embed("hello").await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    service.shutdown();
    let result = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("answered promptly")
        .expect("task");
    assert!(matches!(result, Err(ClassifyError::ShutDown)));
    assert!(matches!(
        service.embed("hi").await,
        Err(ClassifyError::ShutDown)
    ));
}

#[test]
fn the_service_checks_its_configuration() {
    let (_tmp, dir) = tiny_model(Architecture::ModernBert, None);
    let wrong = tiny::random_head("wide", 48, &["a", "b"], None).expect("head");
    let err = ClassifierService::start(load(&dir, 32), vec![wrong], config()).expect_err("dim");
    assert_eq!(err.kind(), "head_dimension");
    let zero = ServiceConfig {
        workers: 0,
        ..config()
    };
    let err = ClassifierService::start(load(&dir, 32), vec![], zero).expect_err("workers");
    assert_eq!(err.kind(), "config");
}

#[test]
fn cli_report_shows_tokens_embedding_and_heads() {
    let (tmp, dir) = tiny_model(Architecture::DebertaV2, Some(LABELS));
    let head_dir = tmp.path().join("topic");
    tiny::random_head("ignored", tiny::HIDDEN, &["math", "greeting"], Some(8))
        .expect("head")
        .save(&head_dir)
        .expect("save head");
    let report = classify_report(&dir, &[head_dir], "what is two plus two", 256).expect("report");
    for needle in [
        "deberta-v2",
        "tokens:     7 of max 64",
        "dimension 32, norm 1.0000",
        "head tiny-deberta-v2 (checkpoint):",
        "jailbreak",
        "head topic:",
        "greeting",
        "latency:",
    ] {
        assert!(
            report.contains(needle),
            "{needle:?} missing from:\n{report}"
        );
    }
}

// ---- models named by a Hugging Face Hub id ---------------------------------------------------

fn hub_options(cache: &Path, endpoint: &str, offline: bool) -> HubOptions {
    HubOptions {
        cache_dir: cache.to_path_buf(),
        endpoint: endpoint.to_string(),
        offline,
        token: None,
    }
}

#[test]
fn a_hub_model_is_downloaded_once_then_served_from_the_cache_offline() {
    let (_model_tmp, model_dir) = tiny_model(Architecture::Bert, Some(LABELS));
    let hub = FakeHub::start("acme/tiny-bert", &model_dir);
    let cache = tempfile::tempdir().expect("cache dir");
    let source = ModelSource::parse("acme/tiny-bert");

    let dir = source
        .resolve(&hub_options(cache.path(), &hub.endpoint, false))
        .expect("downloaded");
    let repo = cache.path().join("models--acme--tiny-bert");
    assert_eq!(dir, repo.join("snapshots").join(fake_hub::COMMIT));
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(dir.join(file).is_file(), "{file} in the snapshot");
    }
    assert!(
        !dir.join("README.md").exists(),
        "only what the encoder needs"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).expect("ref"),
        fake_hub::COMMIT
    );
    let text = ["hello there , good evening"];
    assert_eq!(
        load(&dir, 64).encode(&text).expect("downloaded model"),
        load(&model_dir, 64).encode(&text).expect("original"),
        "the downloaded model is the served one"
    );

    // The next start needs no network: offline, and the Hub is never asked.
    let served = hub.requests();
    let again = source
        .resolve(&hub_options(cache.path(), &hub.endpoint, true))
        .expect("from the cache");
    assert_eq!(again, dir);
    let online = source
        .resolve(&hub_options(cache.path(), &hub.endpoint, false))
        .expect("complete cache");
    assert_eq!(online, dir);
    assert_eq!(hub.requests(), served, "a complete cache is not re-checked");

    // The binary reads the same settings as huggingface_hub.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_semantic-router"))
        .args([
            "classify",
            "--model",
            "acme/tiny-bert",
            "what is two plus two",
        ])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run semantic-router classify");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("jailbreak"),
        "checkpoint head labels:\n{report}"
    );
    assert!(report.contains(&dir.display().to_string()), "{report}");
}

#[test]
fn hub_failures_name_the_model_and_the_fix() {
    let (_model_tmp, model_dir) = tiny_model(Architecture::Bert, None);
    let hub = FakeHub::start("acme/tiny-bert", &model_dir);
    let cache = tempfile::tempdir().expect("cache dir");

    let err = ModelSource::parse("acme/tiny-bert")
        .resolve(&hub_options(cache.path(), &hub.endpoint, true))
        .expect_err("offline with an empty cache");
    assert_eq!(err.kind(), "not_cached");
    let message = err.to_string();
    assert!(message.contains("acme/tiny-bert@main"), "{message}");
    assert!(
        message.contains(&cache.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert_eq!(hub.requests(), 0, "offline means no request");

    let err = ModelSource::parse("acme/missing")
        .resolve(&hub_options(cache.path(), &hub.endpoint, false))
        .expect_err("unknown repository");
    assert_eq!(err.kind(), "hub");
    let message = err.to_string();
    assert!(message.contains("acme/missing@main"), "{message}");
    assert!(message.contains(&hub.endpoint), "{message}");

    // A folder that is not there stays a folder error, not a Hub lookup.
    let err = Encoder::load(
        &ModelSource::parse("./no-such-model")
            .resolve(&hub_options(cache.path(), &hub.endpoint, true))
            .expect("a folder resolves to itself"),
        &EncoderOptions::default(),
    )
    .expect_err("missing folder");
    assert_eq!(err.kind(), "io");

    // A cached snapshot missing its tokenizer is reported by file, offline.
    ModelSource::parse("acme/tiny-bert")
        .resolve(&hub_options(cache.path(), &hub.endpoint, false))
        .expect("downloaded");
    let snapshot = cache
        .path()
        .join("models--acme--tiny-bert/snapshots")
        .join(fake_hub::COMMIT);
    std::fs::remove_file(snapshot.join("tokenizer.json")).expect("rm tokenizer");
    let err = ModelSource::parse("acme/tiny-bert")
        .resolve(&hub_options(cache.path(), &hub.endpoint, true))
        .expect_err("incomplete cache");
    assert!(err.to_string().contains("missing: tokenizer.json"), "{err}");
    // Online, the missing file is fetched again.
    ModelSource::parse("acme/tiny-bert")
        .resolve(&hub_options(cache.path(), &hub.endpoint, false))
        .expect("repaired");
    assert!(snapshot.join("tokenizer.json").is_file());

    let err = ModelSource::parse("acme/tiny-bert")
        .resolve(&hub_options(
            tempfile::tempdir().expect("empty cache").path(),
            "http://127.0.0.1:1",
            false,
        ))
        .expect_err("unreachable Hub");
    assert_eq!(err.kind(), "hub");
}

// ---- the real all-MiniLM-L6-v2 -------------------------------------------------------------

fn minilm_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `make tools` (hack/fetch-minilm.sh)",
        dir.display()
    );
    dir
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Embeddings are unit length.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn minilm_loads_and_ranks_paraphrases_above_unrelated_prompts() {
    let encoder = load(&minilm_dir(), 256);
    assert_eq!(encoder.architecture(), Architecture::Bert);
    assert_eq!(encoder.dimension(), 384);
    let cases = [
        (
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "What is the capital of France?",
        ),
        (
            "Write a poem about the ocean.",
            "Compose some verses about the sea.",
            "How do I configure a Kubernetes ingress?",
        ),
        (
            "What is the derivative of x squared?",
            "Differentiate x^2 with respect to x.",
            "Recommend a good Italian restaurant.",
        ),
    ];
    let texts: Vec<&str> = cases.iter().flat_map(|(a, b, c)| [*a, *b, *c]).collect();
    let out = encoder.encode(&texts).expect("encode");
    for (i, (a, b, c)) in cases.iter().enumerate() {
        let (ea, eb, ec) = (
            &out[3 * i].embedding,
            &out[3 * i + 1].embedding,
            &out[3 * i + 2].embedding,
        );
        let (close, far) = (cosine(ea, eb), cosine(ea, ec));
        assert!((norm(ea) - 1.0).abs() < 1e-4);
        eprintln!("{a:?}: paraphrase {close:.3}, unrelated {far:.3}");
        assert!(
            close > far + 0.2,
            "{a:?}~{b:?} = {close}, {a:?}~{c:?} = {far}"
        );
    }
}

#[tokio::test]
async fn minilm_tells_math_from_greetings_by_example() {
    let encoder = load(&minilm_dir(), 128);
    let service =
        ClassifierService::start(encoder, vec![], ServiceConfig::default()).expect("service");
    let examples = [
        ("math", "What is 12 times 7?"),
        ("math", "Solve for x: 2x + 3 = 11"),
        ("math", "Compute the derivative of x^2 + 3x"),
        ("math", "What is the integral of sin(x)?"),
        ("greeting", "Hello, how are you?"),
        ("greeting", "Good morning!"),
        ("greeting", "Hi there, nice to meet you"),
        ("greeting", "Hey, what's up?"),
    ];
    let unseen = [
        ("math", "Calculate 45 divided by 9."),
        ("math", "Find the roots of x^2 - 5x + 6 = 0"),
        ("math", "What is the square root of 144?"),
        ("greeting", "Good evening, my friend!"),
        ("greeting", "Hello there, how is it going?"),
        ("greeting", "Hi! Hope you are doing well."),
    ];
    let embed_all = |texts: Vec<&'static str>| {
        let s = service.clone();
        async move {
            let calls = texts.into_iter().map(|t| {
                let s = s.clone();
                async move { s.embed(t).await.expect("embed") }
            });
            futures::future::join_all(calls).await
        }
    };
    let example_vecs: Vec<Arc<[f32]>> = embed_all(examples.iter().map(|e| e.1).collect()).await;
    let unseen_vecs = embed_all(unseen.iter().map(|u| u.1).collect()).await;
    for ((want, text), v) in unseen.iter().zip(&unseen_vecs) {
        let (best, score) = examples
            .iter()
            .zip(&example_vecs)
            .map(|((label, _), e)| (*label, cosine(v, e)))
            .fold(("", f32::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
        eprintln!("{text:?} -> {best} ({score:.3})");
        assert_eq!(best, *want, "{text:?} matched {best} ({score})");
    }
    // Served embeddings are the encoder's.
    let direct = service
        .encoder()
        .encode(&[unseen[0].1])
        .expect("direct")
        .remove(0);
    assert!(max_diff(&direct.embedding, &unseen_vecs[0]) < 1e-4);
}

/// First values of the embedding, from an independent float64 NumPy implementation of the
/// BERT forward pass, mean pooling and L2 normalisation over the same weights and tokenizer
/// (the first row also matches sentence-transformers' published output).
#[test]
fn minilm_matches_reference_values() {
    let encoder = load_at(&minilm_dir(), 256, Precision::F32);
    let int8 = load(&minilm_dir(), 256);
    let references: [(&str, usize, [f32; 8]); 2] = [
        (
            "This is an example sentence",
            7,
            [
                0.067657, 0.063496, 0.048713, 0.079305, 0.037448, 0.002653, 0.039375, -0.007098,
            ],
        ),
        (
            "What is the derivative of x squared?",
            10,
            [
                0.05318, 0.035396, 0.009343, 0.057287, -0.044931, 0.013883, -0.01378, 0.020086,
            ],
        ),
    ];
    let texts: Vec<&str> = references.iter().map(|r| r.0).collect();
    let out = encoder.encode(&texts).expect("encode");
    let near = int8.encode(&texts).expect("int8");
    for (((text, tokens, want), got), near) in references.iter().zip(&out).zip(&near) {
        assert_eq!(got.tokens, *tokens, "{text}");
        let diff = max_diff(&got.embedding[..8], want);
        assert!(diff < 1e-4, "{text}: {:?} vs {want:?}", &got.embedding[..8]);
        // int8: the same direction to within a few degrees.
        let cosine = cosine(&got.embedding, &near.embedding);
        assert!(cosine > 0.99, "{text}: int8 cosine {cosine}");
    }
}

#[test]
fn minilm_truncates_by_tokens() {
    let encoder = load(&minilm_dir(), 16);
    let long = "The quick brown fox jumps over the lazy dog while the cat watches from the \
                window and the bird sings in the old oak tree behind the house.";
    let tokens = encoder.tokenize(long).expect("tokens");
    assert_eq!(tokens.len(), 16);
    assert!(tokens.truncated);
    let full = encoder.encode(&[long]).expect("long").remove(0);
    assert_eq!(full.tokens, 16);
    assert!(full.truncated);
}

/// `semantic-router` with `args`: (success, stdout, stderr).
fn router(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_semantic-router"))
        .args(args)
        .output()
        .expect("run semantic-router");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Six distinct texts of random-weight embeddings: a high learning rate so the head fits them
/// whatever the weights drawn.
const TRAIN: [&str; 6] = [
    "--max-epochs",
    "300",
    "--learning-rate",
    "0.05",
    "--positive",
    "math",
];

#[test]
fn train_then_eval_a_head_on_tiny_data_and_refuse_bad_input() {
    let (tmp, model) = tiny_model(Architecture::Bert, None);
    let data = tmp.path().join("train.jsonl");
    let mut lines = String::new();
    for i in 0..60 {
        let (text, label) = match i % 2 {
            0 => (
                [
                    "solve x plus two",
                    "integral of x",
                    "derivative of x times three",
                ][i % 3],
                "math",
            ),
            _ => (
                ["hello there", "good morning", "thanks , how are you ?"][i % 3],
                "chat",
            ),
        };
        lines.push_str(&format!(
            "{{\"text\": \"{text}\", \"label\": \"{label}\"}}\n"
        ));
    }
    std::fs::write(&data, &lines).unwrap();
    let head = tmp.path().join("head");
    let cache = tmp.path().join("cache");
    let common = [
        "--encoder",
        model.to_str().unwrap(),
        "--embedding-cache",
        cache.to_str().unwrap(),
        "--quiet",
    ];
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            head.to_str().unwrap(),
        ];
        args.extend(extra);
        args.extend(common);
        router(&args)
    };
    let (ok, stdout, stderr) = train(&TRAIN);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("validation"), "{stdout}");
    for file in ["head.safetensors", "labels.json", "report.json"] {
        assert!(head.join(file).is_file(), "{file}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["labels"], serde_json::json!(["chat", "math"]));
    assert!(report["temperature"].as_f64().unwrap() > 0.0);
    assert!(report["validation"]["binary"]["auc"]["value"].is_number());
    let first = std::fs::read(head.join("head.safetensors")).unwrap();
    let (ok, _, stderr) = train(&TRAIN);
    assert!(ok, "{stderr}");
    assert_eq!(
        std::fs::read(head.join("head.safetensors")).unwrap(),
        first,
        "same seed and data, same head (embeddings from the store)"
    );

    let mut eval = vec![
        "eval",
        "--head",
        head.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ];
    eval.extend(common);
    let (ok, stdout, stderr) = router(&eval);
    assert!(ok, "{stderr}");
    let evaluation: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(evaluation["examples"], 60);
    assert!(
        evaluation["accuracy"]["value"].as_f64().unwrap() > 0.7,
        "{stdout}"
    );

    // Bad input: the line is named; a label the head lacks; a head for another width.
    std::fs::write(&data, format!("{lines}{{\"text\": 7}}\n")).unwrap();
    let (ok, _, stderr) = train(&[]);
    assert!(!ok && stderr.contains("train.jsonl:61"), "{stderr}");
    std::fs::write(&data, "{\"text\": \"hi\", \"label\": \"weather\"}\n").unwrap();
    let (ok, _, stderr) = router(&eval);
    assert!(
        !ok && stderr.contains("\"weather\" is not one of"),
        "{stderr}"
    );
    let wide = tmp.path().join("wide");
    tiny::random_head("wide", 48, &["chat", "math"], None)
        .unwrap()
        .save(&wide)
        .unwrap();
    let mut eval_wide = eval.clone();
    eval_wide[2] = wide.to_str().unwrap();
    let (ok, _, stderr) = router(&eval_wide);
    assert!(!ok && stderr.contains("48-wide"), "{stderr}");
    let (ok, _, stderr) = router(&[
        "run",
        "--manifests",
        "config/samples",
        "--encoder",
        model.to_str().unwrap(),
        "--category-head",
        wide.to_str().unwrap(),
        "--admin-listen",
        "127.0.0.1:0",
        "--extproc-listen",
        "127.0.0.1:0",
    ]);
    assert!(
        !ok && stderr.contains("48-wide"),
        "the router refuses a mismatched head: {stderr}"
    );
}

/// The committed default heads still give the figures recorded beside them (`make heads`
/// writes `eval-<set>.json`): on the hand-written realistic prompts, and on a fixed quarter
/// of the held-out MMLU, conversational, complexity and injection sets that `make tools`
/// rebuilds from registry packages into `.heads-data/` (hack/heads/prepare.sh): the whole
/// sets take ~6 minutes to embed in a debug build, so there the recorded whole-set figure
/// must fall inside the quarter's 95% interval.
#[test]
fn the_committed_heads_keep_their_recorded_figures() {
    use semantic_router::classify::Head;
    use semantic_router::classify::dataset::Dataset;
    use semantic_router::classify::embedding_store::EmbeddingStore;
    use semantic_router::classify::evaluate::{Estimate, Evaluation};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let held_out = root.join(".heads-data");
    assert!(
        held_out.join("category/test.jsonl").is_file(),
        "{} is missing: run `make tools` (hack/heads/prepare.sh)",
        held_out.display()
    );
    // Recorded on the exact (f32) embeddings they were trained on (hack/heads/train.sh).
    let encoder = load_at(
        &minilm_dir(),
        semantic_router::classify::DEFAULT_MAX_TOKENS,
        Precision::F32,
    );
    // Batches of like lengths, as `eval` embeds them: a fraction of the padding.
    let store_dir = tempfile::tempdir().unwrap();
    let mut store = EmbeddingStore::open(store_dir.path(), &encoder).unwrap();
    for (name, positive, sets) in [
        ("category", None, &["test", "test_conversational"][..]),
        ("complexity", Some("reasoning"), &["test"][..]),
        ("jailbreak", Some("jailbreak"), &["test"][..]),
    ] {
        let dir = root.join("heads/all-MiniLM-L6-v2").join(name);
        let head = Head::load(&dir).expect("a committed head");
        let files = std::iter::once((
            "realistic",
            root.join(format!("hack/heads/realistic/{name}.jsonl")),
        ))
        .chain(
            sets.iter()
                .map(|set| (*set, held_out.join(name).join(format!("{set}.jsonl")))),
        );
        for (set, file) in files {
            let mut data = Dataset::read_for(&file, head.labels()).unwrap();
            let whole = set == "realistic";
            if !whole {
                data.examples = data.examples.into_iter().step_by(4).collect();
            }
            let probabilities: Vec<Vec<f32>> = store
                .embed_all(&encoder, &data.texts(), false)
                .unwrap()
                .iter()
                .map(|embedding| head.probabilities(embedding).unwrap())
                .collect();
            let positive = positive.and_then(|p| head.labels().iter().position(|l| l == p));
            let now = Evaluation::new(head.labels(), &probabilities, &data.targets(), positive);
            let recorded: Evaluation = serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("eval-{set}.json"))).unwrap(),
            )
            .unwrap();
            let agrees = |now: &Estimate, recorded: &Estimate, tolerance: f64| {
                if whole {
                    (now.value - recorded.value).abs() <= tolerance
                } else {
                    (now.low..=now.high).contains(&recorded.value)
                }
            };
            assert!(
                agrees(&now.accuracy, &recorded.accuracy, 0.02),
                "{name} on {set}: accuracy {} now, {} recorded",
                now.accuracy,
                recorded.accuracy
            );
            if let (Some(a), Some(b)) = (&now.binary, &recorded.binary) {
                assert!(
                    agrees(&a.auc, &b.auc, 0.01),
                    "{name} on {set}: AUC {} now, {} recorded",
                    a.auc,
                    b.auc
                );
            }
        }
    }
}

/// The default heads on the int8 encoder (the default) against the f32 embeddings they
/// were trained on, over the hand-written realistic prompts: each head's verdicts agree on
/// at least 95% of them and its accuracy moves by at most one prompt (the whole held-out
/// sets, measured with `eval --precision`, are in the README).
#[test]
fn int8_keeps_the_default_heads_verdicts() {
    use semantic_router::classify::Head;
    use semantic_router::classify::dataset::Dataset;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exact = load_at(&minilm_dir(), 256, Precision::F32);
    let int8 = load_at(&minilm_dir(), 256, Precision::Int8);
    for name in ["category", "complexity", "jailbreak"] {
        let head = Head::load(&root.join("heads/all-MiniLM-L6-v2").join(name)).expect("head");
        let file = root.join(format!("hack/heads/realistic/{name}.jsonl"));
        let data = Dataset::read_for(&file, head.labels()).unwrap();
        let verdicts = |encoder: &Encoder| -> Vec<usize> {
            data.texts()
                .chunks(16)
                .flat_map(|batch| encoder.encode(batch).expect("encode"))
                .map(|out| {
                    let p = head.probabilities(&out.embedding).expect("probabilities");
                    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
                })
                .collect()
        };
        let (want, got) = (verdicts(&exact), verdicts(&int8));
        let targets = data.targets();
        let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
        let right = |v: &[usize]| v.iter().zip(&targets).filter(|(a, b)| a == b).count();
        assert!(
            agree * 100 >= 95 * want.len(),
            "{name}: int8 agrees with f32 on {agree} of {}",
            want.len()
        );
        assert!(
            right(&want).abs_diff(right(&got)) <= 1,
            "{name}: {} right in f32, {} in int8",
            right(&want),
            right(&got)
        );
    }
}

/// `eval --manifests` replays a request log through the sample policy with the default heads,
/// and `--compare` sets it beside a policy that never reasons.
#[test]
fn the_policy_what_if_replays_a_log_and_compares_two_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let heads = root.join("heads/all-MiniLM-L6-v2");
    let tmp = tempfile::tempdir().unwrap();
    // B: the sample policy without its reasoning decision (the research one needs a header
    // no line sends), so everything not blocked goes to the small model.
    let b = tmp.path().join("b");
    std::fs::create_dir(&b).unwrap();
    std::fs::copy(root.join("config/samples/pools.yaml"), b.join("pools.yaml")).unwrap();
    let mut route: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("config/samples/route.yaml")).unwrap(),
    )
    .unwrap();
    let decisions = route["spec"]["decisions"].as_sequence_mut().unwrap();
    decisions.retain(|d| d["name"] != "reasoning");
    std::fs::write(b.join("route.yaml"), serde_yaml::to_string(&route).unwrap()).unwrap();
    let log = tmp.path().join("log.jsonl");
    let mut lines =
        std::fs::read_to_string(root.join("hack/heads/realistic/complexity.jsonl")).unwrap();
    lines.push_str("{\"messages\": \"not a list\"}\n");
    std::fs::write(&log, lines).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let args = [
        "eval".to_owned(),
        "--manifests".to_owned(),
        path(&root.join("config/samples")),
        "--data".to_owned(),
        path(&log),
        "--encoder".to_owned(),
        path(&minilm_dir()),
        "--category-head".to_owned(),
        path(&heads.join("category")),
        "--complexity-head".to_owned(),
        path(&heads.join("complexity")),
        "--jailbreak-head".to_owned(),
        path(&heads.join("jailbreak")),
        "--labels".to_owned(),
        "reasoning".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, table, err) = router(&args);
    assert!(ok, "{err}");
    assert!(
        table.contains("Qwen/Qwen3-30B-A3B @ qwen3-large-h100 (reasoning on)"),
        "{table}"
    );
    assert!(table.contains("(invalid body: 400)"), "{table}");
    assert!(table.contains("300 output tokens"), "{table}");

    let b_dir = path(&b);
    let compare = [&args[..], &["--compare", &b_dir, "--json"]].concat();
    let (ok, out, err) = router(&compare);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (a, b) = (&json["a"], &json["b"]);
    assert_eq!(a["requests"], 61);
    let agreed = |r: &serde_json::Value| r["agreement"]["agreed"]["value"].as_f64().unwrap();
    assert!(
        agreed(a) >= 0.85,
        "the sample policy reasons where the labels say: {a}"
    );
    assert_eq!(b["reasoning_share"], 0.0);
    assert!(agreed(b) < agreed(a));
    assert!(b["cost_per_1000"].as_f64() < a["cost_per_1000"].as_f64());
    let changed = json["changed"].as_u64().unwrap();
    let reasoned = (a["reasoning_share"].as_f64().unwrap() * 61.0).round() as u64;
    assert_eq!(changed, reasoned, "exactly the reasoning requests move");

    let (ok, _, err) = router(&["eval", "--data", "x.jsonl", "--encoder", "x"]);
    assert!(!ok && err.contains("--head"), "{err}");
}

/// A tiny service with a static tier distilled from its encoder, whose `topic` twin answers
/// at `margin` or above.
fn cascaded_service(margin: f32) -> (TempDir, ClassifierService) {
    let (tmp, dir) = tiny_model(Architecture::Bert, None);
    let encoder = load(&dir, 64);
    let model = StaticModel::distill(
        &encoder,
        &DistillOptions {
            dims: 8,
            ..DistillOptions::default()
        },
    )
    .expect("distill");
    let twin = tiny::random_head("topic", 8, &["math", "greeting"], None).expect("twin");
    let tier = StaticTier::new(model)
        .with_head("topic", twin, margin)
        .expect("tier");
    let head = tiny::random_head("topic", tiny::HIDDEN, &["math", "greeting"], None).expect("head");
    let service =
        ClassifierService::start_with(encoder, vec![head], Some(tier), config()).expect("service");
    (tmp, service)
}

#[tokio::test]
async fn a_sure_static_tier_answers_without_the_encoder_and_an_unsure_one_defers() {
    let (_tmp, sure) = cascaded_service(0.0);
    let analysis = sure
        .analyze_heads_until("two plus two", &[HeadQuery::ranking("topic")], None, |_| {
            true
        })
        .await
        .expect("static answer");
    assert_eq!(analysis.tier, Tier::Static);
    assert_eq!(analysis.embedding.len(), 8, "the static model's width");
    assert!((sum(analysis.head("topic").expect("asked for")) - 1.0).abs() < 1e-5);
    assert_eq!(sure.encoded_texts(), 0, "no forward pass");
    // A caller that needs the embedding always gets the encoder's.
    let full = sure
        .analyze("two plus two", &["topic"])
        .await
        .expect("encoder");
    assert_eq!(full.tier, Tier::Encoder);
    assert_eq!(full.embedding.len(), tiny::HIDDEN);

    let (_tmp, unsure) = cascaded_service(2.0);
    let deferred = unsure
        .analyze_heads_until("two plus two", &[HeadQuery::ranking("topic")], None, |_| {
            true
        })
        .await
        .expect("encoder answer");
    assert_eq!(deferred.tier, Tier::Encoder);
    assert_eq!(unsure.encoded_texts(), 1);
    assert_eq!(unsure.metrics().tier_answers("encoder"), 1);
    assert_eq!(sure.metrics().tier_answers("static"), 1);
    // Asked only whether the label is one of a group, a twin unsure of the label is sure:
    // every label is in it, whatever their split.
    let (_tmp, strict) = cascaded_service(0.99);
    let ranked = strict
        .analyze_heads_until("two plus two", &[HeadQuery::ranking("topic")], None, |_| {
            true
        })
        .await
        .expect("encoder answer");
    assert_eq!(ranked.tier, Tier::Encoder);
    let labels = ["math".to_owned(), "greeting".to_owned()];
    let group = HeadQuery {
        head: "topic",
        groups: vec![LabelGroup {
            labels: &labels,
            threshold: 0.5,
        }],
    };
    let settled = strict
        .analyze_heads_until("two plus two", std::slice::from_ref(&group), None, |_| true)
        .await
        .expect("static answer");
    assert_eq!(settled.tier, Tier::Static);
    assert_eq!(strict.encoded_texts(), 1, "no second forward pass");
    // A sure answer the caller finds not enough (a decision that hangs on an example prompt,
    // say) goes to the encoder after all.
    let refused = strict
        .analyze_heads_until("three plus three", &[group], None, |answer| {
            answer.tier != Tier::Static
        })
        .await
        .expect("encoder answer");
    assert_eq!(refused.tier, Tier::Encoder);
    assert_eq!(strict.encoded_texts(), 2);
    let text = metrics_text(&sure);
    assert!(
        text.contains("semantic_router_classifier_cascade_answers_total{tier=\"static\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn when_the_encoder_sheds_a_deferred_text_the_unsure_static_answer_is_taken() {
    // Margin 2: the twin is never sure, so every text is deferred to the encoder.
    let (_tmp, unsure) = cascaded_service(2.0);
    let passed = Instant::now() - Duration::from_secs(1);
    let guess = unsure
        .analyze_heads_until(
            "a prompt past its budget",
            &[HeadQuery::ranking("topic")],
            Some(passed),
            |_| true,
        )
        .await
        .expect("the static guess");
    assert_eq!(guess.tier, Tier::StaticGuess);
    assert!((sum(guess.head("topic").expect("asked for")) - 1.0).abs() < 1e-5);
    assert_eq!(unsure.encoded_texts(), 0, "the encoder never ran it");
    assert_eq!(unsure.metrics().tier_answers("encoder"), 1);
    assert_eq!(unsure.metrics().tier_answers("static_guess"), 1);
    // Without a static tier a shed text is still an error: the caller decides without signals.
    let (_tmp, dir) = tiny_model(Architecture::Bert, None);
    let plain = ClassifierService::start(load(&dir, 64), Vec::new(), config()).expect("service");
    let shed = plain
        .analyze_heads_until("a prompt past its budget", &[], Some(passed), |_| true)
        .await
        .expect_err("shed");
    assert!(shed.is_shed(), "{shed}");
}

#[test]
fn a_static_twin_must_name_a_head_the_service_runs() {
    let (_tmp, dir) = tiny_model(Architecture::Bert, None);
    let encoder = load(&dir, 64);
    let model = StaticModel::distill(&encoder, &DistillOptions::default()).expect("distill");
    let twin = tiny::random_head("x", model.dimension(), &["a", "b"], None).expect("twin");
    let tier = StaticTier::new(model)
        .with_head("nope", twin, 0.5)
        .expect("tier");
    let err = ClassifierService::start_with(encoder, Vec::new(), Some(tier), config())
        .expect_err("unknown head");
    assert!(
        matches!(err, ClassifyError::UnknownHead(ref h) if h == "nope"),
        "{err}"
    );
}

#[test]
fn distill_train_a_static_twin_and_eval_the_cascade() {
    let (tmp, model) = tiny_model(Architecture::Bert, None);
    let data = tmp.path().join("train.jsonl");
    let mut lines = String::new();
    for i in 0..60 {
        let (text, label) = if i % 2 == 0 {
            (["solve x plus two", "integral of x"][i % 4 / 2], "math")
        } else {
            (["hello there", "good morning"][i % 4 / 2], "chat")
        };
        lines.push_str(&format!(
            "{{\"text\": \"{text}\", \"label\": \"{label}\"}}\n"
        ));
    }
    std::fs::write(&data, &lines).unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    let (statics, head, twin, cache) = (path("static"), path("head"), path("twin"), path("cache"));
    let distill = |extra: &[&str]| {
        let mut args = vec![
            "distill",
            "--encoder",
            model.to_str().unwrap(),
            "--out",
            &statics,
            "--dims",
            "8",
            "--quiet",
        ];
        args.extend(extra);
        router(&args)
    };
    let (ok, stdout, stderr) = distill(&[]);
    assert!(ok && stdout.contains("× 8 dims"), "{stdout}{stderr}");
    let common = [
        "--encoder",
        model.to_str().unwrap(),
        "--embedding-cache",
        &cache,
        "--static-model",
        &statics,
        "--quiet",
    ];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(common);
        router(&all)
    };
    let (ok, _, stderr) = run(&[
        "train",
        "--data",
        path("train.jsonl").as_str(),
        "--out",
        &head,
        "--max-epochs",
        "300",
        "--learning-rate",
        "0.05",
    ]);
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = run(&[
        "train",
        "--data",
        path("train.jsonl").as_str(),
        "--out",
        &twin,
        "--tier",
        "static",
        "--cascade-head",
        &head,
        "--max-epochs",
        "300",
        "--learning-rate",
        "0.05",
    ]);
    assert!(
        ok && stdout.contains("cascade on validation"),
        "{stdout}{stderr}"
    );
    let cascade: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("twin/cascade.json")).unwrap(),
    )
    .unwrap();
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("static/static.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cascade["static_model"], info["id"]);
    assert!(
        cascade["validation"]["deferred_share"].is_number(),
        "{cascade}"
    );

    let (ok, stdout, stderr) = run(&[
        "eval",
        "--head",
        &head,
        "--cascade",
        &twin,
        "--data",
        path("train.jsonl").as_str(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["cascade"]["examples"], 60);
    assert!(
        report["evaluation"]["accuracy"]["value"].as_f64().unwrap() > 0.7,
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(&[
        "eval",
        "--head",
        &twin,
        "--tier",
        "static",
        "--data",
        path("train.jsonl").as_str(),
    ]);
    assert!(ok && stdout.contains("accuracy"), "{stdout}{stderr}");

    // A twin over another distillation is refused, naming both.
    let (ok, _, _) = distill(&["--sif-coefficient", "0.01"]);
    assert!(ok);
    let (ok, _, stderr) = run(&[
        "eval",
        "--head",
        &twin,
        "--tier",
        "static",
        "--data",
        path("train.jsonl").as_str(),
    ]);
    assert!(
        !ok && stderr.contains("was trained on static model"),
        "{stderr}"
    );
    // --tier static needs the model.
    let (ok, _, stderr) = router(&[
        "eval",
        "--head",
        &twin,
        "--tier",
        "static",
        "--data",
        path("train.jsonl").as_str(),
        "--encoder",
        model.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("--static-model"), "{stderr}");
}
