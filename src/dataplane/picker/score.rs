//! The load of one endpoint: figures scraped from its model server, blended with what this
//! router sent it, as one score that load-aware picking minimises and one queue depth that
//! saturation compares.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::api::LoadScore;

/// Figures read from a model server's `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    /// Requests queued, not yet running.
    pub waiting: u32,
    /// Requests in the running batch.
    pub running: u32,
    /// KV-cache use, 0.0 to 1.0.
    pub kv_cache: f64,
}

/// The last scrape of one endpoint; lock-free (a reader may see fields of two scrapes for a
/// moment, which shifts one score once and never breaks anything).
#[derive(Debug, Default)]
pub struct Scraped {
    waiting: AtomicU32,
    running: AtomicU32,
    /// KV-cache use in millionths.
    kv_cache_ppm: AtomicU32,
    /// The endpoint's `started` counter when the scrape was taken.
    started_then: AtomicU64,
    /// Milliseconds on the picker's clock when it was taken; 0: never.
    at: AtomicU64,
    /// Milliseconds after `at` when the figures no longer count.
    valid_for: AtomicU64,
}

impl Scraped {
    /// Stores a fresh scrape taken at `now`, when the endpoint had been sent `started`
    /// requests in all; it counts for `valid_for` milliseconds.
    pub fn store(&self, figures: Figures, started: u64, now: u64, valid_for: u64) {
        self.waiting.store(figures.waiting, Ordering::Relaxed);
        self.running.store(figures.running, Ordering::Relaxed);
        let ppm = (figures.kv_cache.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.kv_cache_ppm.store(ppm, Ordering::Relaxed);
        self.started_then.store(started, Ordering::Relaxed);
        self.valid_for.store(valid_for, Ordering::Relaxed);
        self.at.store(now.max(1), Ordering::Relaxed);
    }

    /// The figures, if a scrape is still fresh at `now`, with the `started` count it saw.
    fn fresh(&self, now: u64) -> Option<(Figures, u64)> {
        let at = self.at.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) > self.valid_for.load(Ordering::Relaxed) {
            return None;
        }
        Some((
            Figures {
                waiting: self.waiting.load(Ordering::Relaxed),
                running: self.running.load(Ordering::Relaxed),
                kv_cache: f64::from(self.kv_cache_ppm.load(Ordering::Relaxed)) / 1e6,
            },
            self.started_then.load(Ordering::Relaxed),
        ))
    }
}

/// The load of an endpoint at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// Lower is better; see [`LoadScore`].
    pub score: f64,
    /// Requests waiting, by the model server's last fresh figures plus those this router
    /// sent since; without fresh figures, the requests this router has in flight.
    pub queue: u32,
}

/// The load of an endpoint that has `in_flight` requests from this router, has been sent
/// `started` in all, and was last scraped as `scraped`.
pub fn load(scraped: &Scraped, in_flight: u32, started: u64, now: u64, w: &LoadScore) -> Load {
    match scraped.fresh(now) {
        Some((figures, started_then)) => {
            // Sent since the scrape and not finished yet: the scrape could not see them.
            let since = u32::try_from(started.saturating_sub(started_then))
                .unwrap_or(u32::MAX)
                .min(in_flight);
            let queue = figures.waiting.saturating_add(since);
            Load {
                score: w.waiting_weight * f64::from(queue)
                    + w.running_weight * f64::from(figures.running)
                    + w.kv_cache_weight * figures.kv_cache,
                queue,
            }
        }
        None => Load {
            score: w.waiting_weight * f64::from(in_flight),
            queue: in_flight,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> LoadScore {
        LoadScore {
            waiting_weight: 1.0,
            running_weight: 0.5,
            kv_cache_weight: 4.0,
        }
    }

    #[test]
    fn without_figures_the_score_is_in_flight() {
        let s = Scraped::default();
        let l = load(&s, 3, 10, 1000, &weights());
        assert_eq!(
            l,
            Load {
                score: 3.0,
                queue: 3
            }
        );
    }

    #[test]
    fn fresh_figures_blend_with_requests_sent_since() {
        let s = Scraped::default();
        let f = Figures {
            waiting: 4,
            running: 6,
            kv_cache: 0.5,
        };
        s.store(f, 100, 1000, 3000);
        // Nothing sent since the scrape: the figures alone.
        let l = load(&s, 2, 100, 1500, &weights());
        assert_eq!(l.queue, 4);
        assert!((l.score - (4.0 + 3.0 + 2.0)).abs() < 1e-9, "{l:?}");
        // Three sent since, two of them still in flight: two more waiting.
        let l = load(&s, 2, 103, 1500, &weights());
        assert_eq!(l.queue, 6);
        assert!((l.score - (6.0 + 3.0 + 2.0)).abs() < 1e-9);
    }

    #[test]
    fn stale_figures_age_out() {
        let s = Scraped::default();
        let f = Figures {
            waiting: 50,
            running: 50,
            kv_cache: 1.0,
        };
        s.store(f, 0, 1000, 3000);
        assert_eq!(load(&s, 1, 0, 4000, &weights()).queue, 50);
        assert_eq!(
            load(&s, 1, 0, 4001, &weights()),
            Load {
                score: 1.0,
                queue: 1
            },
            "older than its validity: only the router's own count"
        );
    }

    #[test]
    fn weights_decide_what_counts() {
        let s = Scraped::default();
        s.store(
            Figures {
                waiting: 0,
                running: 0,
                kv_cache: 0.9,
            },
            0,
            1,
            1000,
        );
        let kv_only = LoadScore {
            waiting_weight: 0.0,
            running_weight: 0.0,
            kv_cache_weight: 10.0,
        };
        assert!((load(&s, 0, 0, 2, &kv_only).score - 9.0).abs() < 1e-9);
    }
}
