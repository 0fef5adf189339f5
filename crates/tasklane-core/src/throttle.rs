//! At most one of something per interval, counting the rest: for a warning that a stuck
//! condition (a full disk, say) would otherwise log hundreds of times a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new((None, 0)) }
    }

    /// `Some(n)` when the next one may go out, `n` being how many were held back since the
    /// last; `None` while within the interval (counted).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let Ok(mut state) = self.state.lock() else { return Some(0) };
        let (last, held) = &mut *state;
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }

    /// Start over: the next one goes out at once (the condition ended).
    pub fn reset(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = (None, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_rest_counted() {
        let t = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(t.allow(start), Some(0));
        assert_eq!(t.allow(start + Duration::from_secs(1)), None);
        assert_eq!(t.allow(start + Duration::from_secs(59)), None);
        assert_eq!(t.allow(start + Duration::from_secs(60)), Some(2));
        assert_eq!(t.allow(start + Duration::from_secs(61)), None);
        t.reset();
        assert_eq!(t.allow(start + Duration::from_secs(62)), Some(0));
    }
}
