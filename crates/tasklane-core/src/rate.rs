//! A continuous token bucket: `rate` tokens a second, holding at most `burst`.

use std::time::Duration;

use crate::clock::Timestamp;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Timestamp) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: rate.max(0.0), burst, tokens: burst, last: now }
    }

    /// Change rate and burst, keeping the tokens already earned (capped at the new burst).
    pub fn reconfigure(&mut self, rate: f64, burst: u32, now: Timestamp) {
        self.refill(now);
        self.rate = rate.max(0.0);
        self.burst = f64::from(burst.max(1));
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Timestamp) {
        if now > self.last {
            let elapsed = now.since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Whole tokens available now.
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        self.tokens.floor() as u32
    }

    /// Take up to `wanted` tokens; returns how many were taken.
    pub fn take(&mut self, wanted: u32, now: Timestamp) -> u32 {
        let n = self.available(now).min(wanted);
        self.tokens -= f64::from(n);
        n
    }

    /// Give back tokens that were taken but not used.
    pub fn give_back(&mut self, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(self.burst);
    }

    /// How long until one whole token is available; `None` if the rate is zero.
    pub fn time_to_next(&mut self, now: Timestamp) -> Option<Duration> {
        self.time_until(1, now)
    }

    /// How long until `n` whole tokens (at most the burst) are available; `None` if the rate is zero.
    pub fn time_until(&mut self, n: u32, now: Timestamp) -> Option<Duration> {
        self.refill(now);
        let n = f64::from(n).min(self.burst);
        if self.tokens >= n {
            return Some(Duration::ZERO);
        }
        if self.rate <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64((n - self.tokens) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_then_refills_at_rate() {
        let t0 = Timestamp::from_secs(0);
        let mut b = TokenBucket::new(10.0, 5, t0);
        assert_eq!(b.take(100, t0), 5);
        assert_eq!(b.take(1, t0), 0);
        assert_eq!(b.time_to_next(t0), Some(Duration::from_millis(100)));
        assert_eq!(b.time_until(3, t0), Some(Duration::from_millis(300)));
        assert_eq!(b.time_until(50, t0), Some(Duration::from_millis(500)), "at most the burst");
        let t1 = t0.saturating_add(Duration::from_millis(250));
        assert_eq!(b.take(100, t1), 2);
        let t2 = t0.saturating_add(Duration::from_secs(60));
        assert_eq!(b.available(t2), 5, "never above burst");
    }

    #[test]
    fn long_run_rate_is_exact() {
        // Taking greedily every 7 ms for 10 s yields burst + rate * 10 tokens, within one.
        let t0 = Timestamp::from_secs(0);
        let mut b = TokenBucket::new(200.0, 40, t0);
        let mut taken = 0u32;
        let mut t = t0;
        while t < t0.saturating_add(Duration::from_secs(10)) {
            taken += b.take(u32::MAX, t);
            t = t.saturating_add(Duration::from_millis(7));
        }
        let expected = 40.0 + 200.0 * 10.0;
        assert!((f64::from(taken) - expected).abs() <= 2.0, "{taken} vs {expected}");
    }

    #[test]
    fn give_back_and_reconfigure() {
        let t0 = Timestamp::from_secs(0);
        let mut b = TokenBucket::new(1.0, 10, t0);
        assert_eq!(b.take(10, t0), 10);
        b.give_back(3);
        assert_eq!(b.available(t0), 3);
        b.reconfigure(1.0, 2, t0);
        assert_eq!(b.available(t0), 2);
        b.reconfigure(0.0, 2, t0);
        b.take(2, t0);
        assert_eq!(b.time_to_next(t0), None);
    }
}
