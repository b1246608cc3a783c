//! The bounded queue in front of the encoder and the OS threads that drain it in batches.
//!
//! Callers push a [`Job`] and wait on its one-shot channel; a full queue refuses the job at
//! once, and so does one whose deadline the queue ahead of it would overrun (judged from the
//! recent time per text), so that its caller can fall back at once instead of at the
//! deadline.
//!
//! A worker takes the oldest job, waits until `max_wait` after that job arrived or the worker
//! became free, whichever is later (or until `max_batch` jobs are queued), skips jobs whose
//! caller has gone or whose deadline passed, tokenizes the rest, and runs them in as few
//! forward passes as padding allows: texts are sorted by length and a pass never pads a text
//! to more than twice its length.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cache::{EmbeddingCache, TextKey};
use super::encoder::{Encoder, EncoderOutput};
use super::error::{ClassifyError, Result};
use super::metrics::ClassifierMetrics;
use super::tokenize::Tokens;

/// The reply a caller waits for.
pub(crate) type Reply = Result<Arc<EncoderOutput>>;

/// One text waiting for the encoder.
pub(crate) struct Job {
    pub text: String,
    pub key: TextKey,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Reply>,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Moving average of the encoder's seconds per text over recent passes; 0 before any.
    seconds_per_text: f64,
}

/// Weight of the newest pass in [`State::seconds_per_text`].
const RECENT: f64 = 0.2;

/// A bounded FIFO of jobs shared by the callers and the workers.
pub(crate) struct BatchQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    workers: usize,
    metrics: ClassifierMetrics,
}

impl BatchQueue {
    pub fn new(capacity: usize, workers: usize, metrics: ClassifierMetrics) -> Self {
        Self {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(capacity),
                closed: false,
                seconds_per_text: 0.0,
            }),
            ready: Condvar::new(),
            capacity,
            workers: workers.max(1),
            metrics,
        }
    }

    /// Notes that a forward pass over `texts` texts took `elapsed`.
    pub fn record(&self, texts: usize, elapsed: Duration) {
        if texts == 0 {
            return;
        }
        let per_text = elapsed.as_secs_f64() / texts as f64;
        let mut state = self.lock();
        state.seconds_per_text = if state.seconds_per_text == 0.0 {
            per_text
        } else {
            RECENT * per_text + (1.0 - RECENT) * state.seconds_per_text
        };
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, or refuses it at once when the queue is full or closed.
    pub fn push(&self, job: Job) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(ClassifyError::ShutDown);
        }
        if state.jobs.len() >= self.capacity {
            // Make room by dropping jobs nobody waits for before refusing a live caller.
            self.prune(&mut state, Instant::now());
            if state.jobs.len() >= self.capacity {
                return Err(ClassifyError::Overloaded {
                    capacity: self.capacity,
                });
            }
        }
        if let Some(deadline) = job.deadline
            && state.seconds_per_text > 0.0
        {
            // The jobs ahead and this one, shared by the workers, at the recent pace.
            let ahead =
                (state.jobs.len() + 1) as f64 * state.seconds_per_text / self.workers as f64;
            if Instant::now() + Duration::from_secs_f64(ahead) > deadline {
                return Err(ClassifyError::DeadlineExceeded);
            }
        }
        state.jobs.push_back(job);
        self.metrics.queue_depth.set(state.jobs.len() as i64);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Stops accepting jobs; queued ones are answered with [`ClassifyError::ShutDown`] and the
    /// workers exit once idle.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for job in state.jobs.drain(..) {
            let _ = job.reply.send(Err(ClassifyError::ShutDown));
        }
        self.metrics.queue_depth.set(0);
        drop(state);
        self.ready.notify_all();
    }

    /// Drops jobs whose caller has gone; answers jobs whose deadline passed.
    fn prune(&self, state: &mut State, now: Instant) {
        let before = state.jobs.len();
        let mut abandoned = 0;
        state.jobs.retain_mut(|job| {
            if job.reply.is_closed() {
                abandoned += 1;
                return false;
            }
            if job.deadline.is_some_and(|d| now >= d) {
                abandoned += 1;
                // Swap out the sender to answer it; the job is removed right after.
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut job.reply, tx);
                let _ = reply.send(Err(ClassifyError::DeadlineExceeded));
                return false;
            }
            true
        });
        if state.jobs.len() != before {
            self.metrics.abandoned.inc_by(abandoned);
            self.metrics.queue_depth.set(state.jobs.len() as i64);
        }
    }

    /// Blocks until a batch is ready: up to `max_batch` live jobs, taken once `max_batch` are
    /// queued or `max_wait` after the later of the oldest job's arrival and this call. `None`
    /// once closed.
    ///
    /// Counting from this call too matters under load: when a worker comes back from a long
    /// forward pass, the callers it just answered resubmit within microseconds; waiting
    /// `max_wait` for them keeps a closed loop of N callers in one batch of N instead of
    /// alternating between the jobs that queued during the pass and the ones that return.
    pub fn next_batch(&self, max_batch: usize, max_wait: Duration) -> Option<Vec<Job>> {
        let ready = Instant::now();
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            let now = Instant::now();
            self.prune(&mut state, now);
            let Some(oldest) = state.jobs.front() else {
                state = self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let due = oldest.enqueued.max(ready) + max_wait;
            if state.jobs.len() >= max_batch || now >= due {
                let take = state.jobs.len().min(max_batch);
                let batch: Vec<Job> = state.jobs.drain(..take).collect();
                self.metrics.queue_depth.set(state.jobs.len() as i64);
                let more = !state.jobs.is_empty();
                drop(state);
                if more {
                    self.ready.notify_one();
                }
                return Some(batch);
            }
            state = self
                .ready
                .wait_timeout(state, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What a worker thread needs.
pub(crate) struct Worker {
    pub queue: Arc<BatchQueue>,
    pub encoder: Arc<Encoder>,
    pub cache: Arc<EmbeddingCache>,
    pub metrics: ClassifierMetrics,
    pub max_batch: usize,
    pub max_wait: Duration,
}

impl Worker {
    /// The thread's loop: batches until the queue closes.
    pub fn run(self) {
        while let Some(batch) = self.queue.next_batch(self.max_batch, self.max_wait) {
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, batch: Vec<Job>) {
        // One encoding per distinct text: identical texts in a batch share it.
        let mut first_of: HashMap<TextKey, usize> = HashMap::new();
        let mut distinct: Vec<(TextKey, Tokens)> = Vec::new();
        let mut waiting: Vec<(Job, usize)> = Vec::new();
        for job in batch {
            if job.reply.is_closed() {
                // The caller left while the batch was forming.
                self.metrics.abandoned.inc();
                continue;
            }
            if let Some(&i) = first_of.get(&job.key) {
                waiting.push((job, i));
                continue;
            }
            match self.encoder.tokenize(&job.text) {
                Ok(tokens) => {
                    let i = distinct.len();
                    first_of.insert(job.key, i);
                    distinct.push((job.key, tokens));
                    waiting.push((job, i));
                }
                Err(err) => {
                    let _ = job.reply.send(Err(err));
                }
            }
        }
        let results = self.encode_all(&distinct);
        for ((key, _), result) in distinct.iter().zip(&results) {
            if let Ok(output) = result {
                let kept = self.cache.insert(*key, output.clone());
                self.metrics.cache_entries.set(kept as i64);
            }
        }
        for (job, i) in waiting {
            let _ = job.reply.send(results[i].clone());
        }
    }

    /// Encodes the distinct texts in length-sorted passes, in input order.
    fn encode_all(&self, distinct: &[(TextKey, Tokens)]) -> Vec<Reply> {
        let mut order: Vec<usize> = (0..distinct.len()).collect();
        order.sort_by_key(|&i| distinct[i].1.len());
        let lengths: Vec<usize> = order.iter().map(|&i| distinct[i].1.len()).collect();
        let mut results: Vec<Reply> = vec![Err(ClassifyError::ShutDown); distinct.len()];
        for range in split_by_length(&lengths) {
            let members = &order[range];
            let tokens: Vec<Tokens> = members.iter().map(|&i| distinct[i].1.clone()).collect();
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| self.encoder.encode_tokens(&tokens)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(ClassifyError::inference(candle_core::Error::Msg(format!(
                        "encoder panicked: {what}"
                    ))))
                });
            let elapsed = started.elapsed();
            self.queue.record(tokens.len(), elapsed);
            self.metrics
                .inference_seconds
                .observe(elapsed.as_secs_f64());
            self.metrics.batch_size.observe(tokens.len() as f64);
            self.metrics.encoded.inc_by(tokens.len() as u64);
            match outcome {
                Ok(outputs) => {
                    for (&i, output) in members.iter().zip(outputs) {
                        results[i] = Ok(Arc::new(output));
                    }
                }
                Err(err) => {
                    for &i in members {
                        results[i] = Err(err.clone());
                    }
                }
            }
        }
        results
    }
}

/// Splits ascending `lengths` into consecutive runs whose longest is at most twice the
/// shortest, so padding never more than doubles a text's cost.
pub(crate) fn split_by_length(lengths: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, &len) in lengths.iter().enumerate() {
        if len > lengths[start].max(1) * 2 {
            runs.push(start..i);
            start = i;
        }
    }
    if start < lengths.len() {
        runs.push(start..lengths.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_when_padding_would_more_than_double() {
        assert_eq!(split_by_length(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(split_by_length(&[10, 12, 20]), vec![0..3]);
        assert_eq!(
            split_by_length(&[8, 9, 17, 30, 200]),
            vec![0..2, 2..4, 4..5]
        );
    }

    fn key() -> TextKey {
        EmbeddingCache::new(0).key("t")
    }

    fn job(queue_key: TextKey, deadline: Option<Instant>) -> (Job, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            text: "t".into(),
            key: queue_key,
            deadline,
            enqueued: Instant::now(),
            reply: tx,
        };
        (job, rx)
    }

    #[test]
    fn refuses_at_once_a_deadline_the_queue_ahead_would_overrun() {
        let queue = BatchQueue::new(64, 2, ClassifierMetrics::default());
        let soon = || Some(Instant::now() + Duration::from_millis(200));
        // No pass measured yet: nothing to judge by, so everything is taken.
        let (first, _r1) = job(key(), soon());
        queue.push(first).expect("no pace known yet");
        // 50 ms a text over two workers: 9 jobs ahead of a tenth take 250 ms.
        queue.record(4, Duration::from_millis(200));
        for _ in 0..8 {
            let (waiting, rx) = job(key(), None);
            queue.push(waiting).expect("no deadline, no judgement");
            std::mem::forget(rx);
        }
        let (late, _r2) = job(key(), soon());
        let err = queue
            .push(late)
            .expect_err("it would wait past its deadline");
        assert_eq!(err.kind(), "deadline_exceeded");
        let (patient, _r3) = job(key(), Some(Instant::now() + Duration::from_secs(1)));
        queue.push(patient).expect("a second is enough");
    }

    #[test]
    fn refuses_when_full_but_makes_room_from_gone_callers() {
        let queue = BatchQueue::new(2, 1, ClassifierMetrics::default());
        let (a, _ra) = job(key(), None);
        let (b, rb) = job(key(), None);
        let (c, _rc) = job(key(), None);
        queue.push(a).expect("a");
        queue.push(b).expect("b");
        let (c2, _rc2) = job(key(), None);
        let err = queue.push(c2).expect_err("full");
        assert_eq!(err.kind(), "overloaded");
        drop(rb);
        queue.push(c).expect("b's caller left, so c fits");
    }

    #[test]
    fn batches_after_max_wait_and_answers_expired_jobs() {
        let metrics = ClassifierMetrics::default();
        let queue = BatchQueue::new(8, 1, metrics.clone());
        let (live, _r1) = job(key(), None);
        let (expired, mut r2) = job(key(), Some(Instant::now()));
        queue.push(live).expect("live");
        queue.push(expired).expect("expired");
        let started = Instant::now();
        let batch = queue
            .next_batch(4, Duration::from_millis(20))
            .expect("a batch");
        assert_eq!(batch.len(), 1, "the expired job is not run");
        assert!(
            started.elapsed() >= Duration::from_millis(15),
            "waited for company"
        );
        assert!(matches!(
            r2.try_recv(),
            Ok(Err(ClassifyError::DeadlineExceeded))
        ));
        assert_eq!(metrics.abandoned.get(), 1);
        queue.close();
        assert!(queue.next_batch(4, Duration::ZERO).is_none());
    }
}
