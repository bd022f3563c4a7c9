//! Per-identity rate limiting (token bucket) and the watch for token enumeration:
//! one compromised checkout must not flood the store or walk the token space.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Misses {
    window_start: Instant,
    count: u64,
    reported: bool,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    misses: Mutex<HashMap<String, Misses>>,
    miss_threshold: u64,
    miss_window: Duration,
}

impl RateLimiter {
    /// `rate` requests per second with bursts of `burst`; a rate of 0 disables it.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            miss_threshold: 20,
            miss_window: Duration::from_secs(10),
        }
    }

    /// Takes one request from `identity`'s bucket. `Err(seconds)`: refused, retry
    /// after that many seconds.
    pub fn check(&self, identity: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(identity.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    /// Counts `n` detokenizes of unknown tokens (single or in a batch); true once
    /// per window when an identity crosses the threshold (a possible
    /// enumeration, to be audited).
    pub fn note_misses(&self, identity: &str, n: u64) -> bool {
        let now = Instant::now();
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        let m = misses.entry(identity.to_owned()).or_insert(Misses {
            window_start: now,
            count: 0,
            reported: false,
        });
        if now.duration_since(m.window_start) > self.miss_window {
            *m = Misses {
                window_start: now,
                count: 0,
                reported: false,
            };
        }
        m.count = m.count.saturating_add(n);
        if m.count >= self.miss_threshold && !m.reported {
            m.reported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(1.0, 3.0);
        assert!((0..3).all(|_| limiter.check("a").is_ok()));
        assert_eq!(limiter.check("a"), Err(1));
        assert!(limiter.check("b").is_ok(), "buckets are per identity");
        assert!(RateLimiter::new(0.0, 1.0).check("a").is_ok());
    }

    #[test]
    fn misses_are_reported_once_per_window() {
        let limiter = RateLimiter::new(0.0, 1.0);
        let reports = (0..50).filter(|_| limiter.note_misses("a", 1)).count();
        assert_eq!(reports, 1);
    }
}
