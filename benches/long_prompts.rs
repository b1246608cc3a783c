//! Long prompts: what the encoder should read of a prompt over its token budget (256), on the
//! real all-MiniLM-L6-v2 (int8, the default) and the default heads, batch 1. The readings:
//! - `head`: plain truncation, the first 256 tokens (what most tokenizers do);
//! - `head+tail`: the router's truncation, a quarter of the budget from the start and the rest
//!   from the end;
//! - `win N`: the prompt in overlapping windows of N tokens, covering up to 1,024 tokens
//!   (`TextTokenizer::windows`);
//! - `seg N`: runs of whole lines of up to N tokens, a longer line in windows, up to 1,024
//!   tokens (`TextTokenizer::segments`; the router compares a prompt over the budget with
//!   example prompts by its best 64-token segment).
//!
//! A reading in pieces encodes them as one batch; a head's probabilities are averaged over the
//! pieces, while the jailbreak score and example similarity take the piece that scores highest.
//!
//! 1. Each default head on its held-out prompts over the budget (MMLU passages with the question
//!    at the end, conversational wrappers, long jailbreaks): accuracy and time per prompt.
//! 2. A request in a pasted document: each held-out jailbreak or benign request put before or
//!    after a long benign document (an indirect injection hides at the end): the jailbreak
//!    head's accuracy per position.
//! 3. Example-prompt similarity: per domain, ten short training prompts as a route's example
//!    set; each held-out category prompt over the budget is matched to the set it is most
//!    similar to: the share matched to its own domain, and the time.
//!
//! Needs `.models/` (`make tools`) and the held-out sets (`bash hack/heads/prepare.sh`).
//! Prints numbers; asserts nothing. Run: `cargo bench --bench long_prompts` (about two minutes).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use semantic_router::cache::dot;
use semantic_router::classify::dataset::Dataset;
use semantic_router::classify::{Encoder, EncoderOptions, Head, TextTokenizer, Truncation};
use semantic_router::dataplane::signals::JAILBREAK_LABEL;

/// Most windows one prompt is read in.
const WINDOWS: usize = 4;
/// Example prompts per domain in section 3.
const EXAMPLES_PER_SET: usize = 10;
/// Documents (each with four requests) in section 2.
const DOCUMENTS: usize = 40;

/// How a prompt over the budget is read.
#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Head,
    HeadAndTail,
    /// Windows of this many tokens.
    Windows(usize),
    /// Runs of whole lines of up to this many tokens (a longer line in windows).
    Segments(usize),
}

const READINGS: [(Reading, &str); 6] = [
    (Reading::Head, "head"),
    (Reading::HeadAndTail, "head+tail"),
    (Reading::Windows(256), "win 256"),
    (Reading::Windows(64), "win 64"),
    (Reading::Segments(64), "seg 64"),
    (Reading::Segments(128), "seg 128"),
];

/// A labelled prompt.
struct Row {
    text: String,
    label: String,
}

fn read_rows(path: &Path) -> Vec<Row> {
    let data = Dataset::read(path).unwrap_or_else(|e| panic!("{e}"));
    data.examples
        .into_iter()
        .map(|e| Row {
            text: e.text,
            label: data.labels[e.label].clone(),
        })
        .collect()
}

/// The encoder with both truncations at hand.
struct Reader {
    encoder: Encoder,
    head: TextTokenizer,
}

impl Reader {
    /// Whether `text` is over the budget.
    fn is_long(&self, text: &str) -> bool {
        self.encoder.tokenize(text).expect("tokenize").truncated
    }

    /// The embeddings `reading` makes of `text`, and the time it took (tokenizing included).
    fn read(&self, text: &str, reading: Reading) -> (Vec<Arc<[f32]>>, Duration) {
        let started = Instant::now();
        let tokens = match reading {
            Reading::Head => vec![self.head.tokenize(text).expect("tokenize")],
            Reading::HeadAndTail => vec![self.encoder.tokenize(text).expect("tokenize")],
            Reading::Windows(size) | Reading::Segments(size) => {
                let tokenizer = self
                    .encoder
                    .tokenizer()
                    .with_max_tokens(size)
                    .expect("size");
                let limit = WINDOWS * self.encoder.max_tokens() / size;
                let pieces = if matches!(reading, Reading::Windows(_)) {
                    tokenizer.windows(text, limit)
                } else {
                    tokenizer.segments(text, limit)
                };
                pieces
                    .expect("pieces")
                    .iter()
                    .map(|p| tokenizer.tokenize(p).expect("tokenize"))
                    .collect()
            }
        };
        let outputs = self.encoder.encode_tokens(&tokens).expect("encode");
        let elapsed = started.elapsed();
        (outputs.into_iter().map(|o| o.embedding).collect(), elapsed)
    }
}

/// The label `head` gives a prompt read as `embeddings`: the jailbreak head's most
/// jailbreak-like window, any other head's probabilities averaged over the windows.
fn verdict(head: &Head, embeddings: &[Arc<[f32]>]) -> String {
    let per_window: Vec<Vec<f32>> = embeddings
        .iter()
        .map(|e| head.probabilities(e).expect("probabilities"))
        .collect();
    let labels = head.labels();
    let probabilities: Vec<f32> = match labels.iter().position(|l| l == JAILBREAK_LABEL) {
        Some(j) => per_window
            .iter()
            .max_by(|a, b| a[j].total_cmp(&b[j]))
            .cloned()
            .unwrap_or_default(),
        None => (0..labels.len())
            .map(|i| per_window.iter().map(|p| p[i]).sum::<f32>() / per_window.len() as f32)
            .collect(),
    };
    let best = (0..labels.len())
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .unwrap_or(0);
    labels[best].clone()
}

/// Accuracy, p50 and mean time of one reading over `rows`.
struct Tally {
    right: usize,
    times: Vec<Duration>,
    windows: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            right: 0,
            times: Vec::new(),
            windows: 0,
        }
    }

    fn add(&mut self, right: bool, time: Duration, windows: usize) {
        self.right += usize::from(right);
        self.times.push(time);
        self.windows += windows;
    }

    fn line(&mut self, name: &str) -> String {
        let n = self.times.len().max(1);
        self.times.sort();
        let p50 = self
            .times
            .get(self.times.len() / 2)
            .copied()
            .unwrap_or_default();
        let mean = self.times.iter().sum::<Duration>() / n as u32;
        format!(
            "{name:>10} | {:>6.1}% ({:>4}/{:<4}) | {:>7.1} ms {:>7.1} ms | {:>4.1}",
            100.0 * self.right as f64 / n as f64,
            self.right,
            self.times.len(),
            p50.as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            self.windows as f64 / n as f64,
        )
    }
}

fn header(what: &str) {
    println!(
        "{what:>10} | {:>19} | {:>10} {:>10} | {:>4}",
        "accuracy", "p50", "mean", "wins"
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(".models/all-MiniLM-L6-v2");
    let data = root.join(".heads-data");
    if !dir.join("model.safetensors").is_file() || !data.is_dir() {
        eprintln!("needs .models/ (make tools) and .heads-data/ (bash hack/heads/prepare.sh)");
        std::process::exit(1);
    }
    let started = Instant::now();
    let encoder = Encoder::load(&dir, &EncoderOptions::default()).expect("encoder");
    let head = encoder
        .tokenizer()
        .clone()
        .with_truncation(Truncation::Head);
    let reader = Reader { encoder, head };
    let heads = root.join("heads/all-MiniLM-L6-v2");
    println!(
        "long prompts: all-MiniLM-L6-v2 {:?}, budget {} tokens, up to {WINDOWS} windows, batch 1",
        reader.encoder.precision(),
        reader.encoder.max_tokens()
    );

    println!("\n== 1. each head on its held-out prompts over the budget ==");
    let sets = [
        ("category", vec!["test", "test_conversational"]),
        ("complexity", vec!["test"]),
        ("jailbreak", vec!["test"]),
    ];
    let mut long_category = Vec::new();
    for (name, files) in sets {
        let head = Head::load(&heads.join(name)).expect("head");
        let rows: Vec<Row> = files
            .iter()
            .flat_map(|f| read_rows(&data.join(name).join(format!("{f}.jsonl"))))
            .filter(|r| reader.is_long(&r.text))
            .collect();
        println!("{name}: {} prompts over the budget", rows.len());
        if rows.is_empty() {
            continue;
        }
        header("reading");
        for (reading, label) in READINGS {
            let mut tally = Tally::new();
            for row in &rows {
                let (embeddings, time) = reader.read(&row.text, reading);
                tally.add(
                    verdict(&head, &embeddings) == row.label,
                    time,
                    embeddings.len(),
                );
            }
            println!("{}", tally.line(label));
        }
        if name == "category" {
            long_category = rows;
        }
    }

    println!("\n== 2. a request before or after a long pasted document: the jailbreak head ==");
    let jailbreak = Head::load(&heads.join("jailbreak")).expect("head");
    let requests = read_rows(&data.join("jailbreak/test.jsonl"));
    let reader = &reader;
    let short = |label: &'static str| {
        requests
            .iter()
            .filter(move |r| r.label == label && !reader.is_long(&r.text))
            .take(DOCUMENTS)
    };
    let documents: Vec<&Row> = long_category.iter().take(DOCUMENTS).collect();
    header("reading");
    for (reading, name) in READINGS {
        // Attack first, attack last, benign first, benign last.
        let mut tallies: [Tally; 4] = std::array::from_fn(|_| Tally::new());
        for ((document, attack), benign) in documents
            .iter()
            .zip(short(JAILBREAK_LABEL))
            .zip(short("benign"))
        {
            for (i, request) in [attack, benign].into_iter().enumerate() {
                let first = format!("{}\n\n{}", request.text, document.text);
                let last = format!("{}\n\n{}", document.text, request.text);
                for (j, prompt) in [first, last].iter().enumerate() {
                    let (embeddings, time) = reader.read(prompt, reading);
                    let right = verdict(&jailbreak, &embeddings) == request.label;
                    tallies[2 * i + j].add(right, time, embeddings.len());
                }
            }
        }
        let what = ["attack first", "attack last", "benign first", "benign last"];
        for (tally, what) in tallies.iter_mut().zip(what) {
            println!("{}  {what}", tally.line(name));
        }
    }

    println!(
        "\n== 3. example-prompt similarity: held-out category prompts over the budget, {EXAMPLES_PER_SET} examples per domain =="
    );
    let train = read_rows(&data.join("category/train.jsonl"));
    let mut domains: Vec<&str> = train.iter().map(|r| r.label.as_str()).collect();
    domains.sort_unstable();
    domains.dedup();
    let examples: Vec<(&str, Vec<Arc<[f32]>>)> = domains
        .iter()
        .map(|&domain| {
            let prompts: Vec<Arc<[f32]>> = train
                .iter()
                .filter(|r| r.label == domain && r.text.len() < 400)
                .take(EXAMPLES_PER_SET)
                .map(|r| reader.read(&r.text, Reading::HeadAndTail).0.remove(0))
                .collect();
            (domain, prompts)
        })
        .collect();
    let similarity = |embeddings: &[Arc<[f32]>], set: &[Arc<[f32]>]| {
        embeddings
            .iter()
            .flat_map(|e| set.iter().map(move |x| dot(e, x)))
            .fold(f32::NEG_INFINITY, f32::max)
    };
    header("reading");
    for (reading, name) in READINGS {
        let mut tally = Tally::new();
        for row in &long_category {
            let (embeddings, time) = reader.read(&row.text, reading);
            let best = examples
                .iter()
                .max_by(|a, b| {
                    similarity(&embeddings, &a.1).total_cmp(&similarity(&embeddings, &b.1))
                })
                .map(|(domain, _)| *domain);
            tally.add(best == Some(row.label.as_str()), time, embeddings.len());
        }
        println!("{}", tally.line(name));
    }
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}
