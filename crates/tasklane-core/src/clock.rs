//! Time as an input: timestamps are plain microseconds since the Unix epoch and the
//! current time always comes from a `Clock` that callers pass in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_micros(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_micros(d)))
    }

    /// Time elapsed from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// The civil date of a day counted from 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days from 1970-01-01 to a civil date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The day of the `nth` Sunday of a month (1 = the first).
fn nth_sunday(year: i64, month: u32, nth: i64) -> i64 {
    let first = days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday: day 0 has weekday 4 (Sunday = 0).
    let weekday = (first + 4).rem_euclid(7);
    first + (7 - weekday) % 7 + 7 * (nth - 1)
}

/// `t` in US Pacific time with its offset, as the real service writes times in its errors:
/// `2099-12-31T16:00:00-08:00`, with a fraction only when there is one (`…:00.5-08:00`).
/// Daylight time runs from the second Sunday of March, 2:00 local, to the first Sunday of
/// November, 2:00 local.
pub fn pacific_time(t: Timestamp) -> String {
    let secs = t.0.div_euclid(1_000_000);
    let micros = t.0.rem_euclid(1_000_000);
    let (year, _, _) = civil_from_days(secs.div_euclid(86_400));
    let dst_start = nth_sunday(year, 3, 2) * 86_400 + 10 * 3600;
    let dst_end = nth_sunday(year, 11, 1) * 86_400 + 9 * 3600;
    let offset_hours: i64 = if (dst_start..dst_end).contains(&secs) { -7 } else { -8 };
    let local = secs + offset_hours * 3600;
    let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
    let of_day = local.rem_euclid(86_400);
    let mut frac = if micros == 0 { String::new() } else { format!(".{micros:06}") };
    while frac.ends_with('0') {
        frac.pop();
    }
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{frac}-{:02}:00",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        -offset_hours
    )
}

/// A duration in whole microseconds, saturating at `i64::MAX`.
pub fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A wait on a clock: resolves once the clock reads the time it was made for.
pub type Sleep = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// The source of the current time. Production uses `SystemClock`; tests use `ManualClock`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// A wait until this clock reads `at`, for a clock that keeps its own time (a test's,
    /// which moves when told). `None` for the wall clock: the caller waits on its runtime's
    /// timer for `at.since(now())`, which this crate, having no runtime, cannot.
    fn sleep_until(&self, at: Timestamp) -> Option<Sleep> {
        let _ = at;
        None
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(duration_micros(since))
    }
}

/// A clock that only moves when told to; clones share the same time, and the waits made on
/// it end when it is advanced past them.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
    sleepers: Arc<Mutex<Vec<(Timestamp, std::task::Waker)>>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { micros: Arc::new(AtomicI64::new(start.0)), sleepers: Arc::default() }
    }

    pub fn advance(&self, d: Duration) {
        let now = Timestamp(self.micros.fetch_add(duration_micros(d), Ordering::SeqCst)).saturating_add(d);
        let due: Vec<std::task::Waker> = match self.sleepers.lock() {
            Ok(mut sleepers) => {
                let (due, waiting): (Vec<_>, Vec<_>) = sleepers.drain(..).partition(|(at, _)| *at <= now);
                *sleepers = waiting;
                due.into_iter().map(|(_, waker)| waker).collect()
            }
            Err(_) => Vec::new(),
        };
        due.into_iter().for_each(std::task::Waker::wake);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, at: Timestamp) -> Option<Sleep> {
        let clock = self.clone();
        Some(Box::pin(std::future::poll_fn(move |cx| {
            if clock.now() >= at {
                return std::task::Poll::Ready(());
            }
            if let Ok(mut sleepers) = clock.sleepers.lock() {
                sleepers.push((at, cx.waker().clone()));
            }
            // Advanced between the check and the push: look again rather than sleep on.
            if clock.now() >= at { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let shared = clock.clone();
        assert_eq!(clock.now(), Timestamp::from_secs(100));
        shared.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp(101_500_000));
    }

    #[test]
    fn a_manual_clock_ends_the_waits_it_passes() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Count(woken.clone())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut sleep = clock.sleep_until(Timestamp::from_secs(102)).expect("a manual clock waits");
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(1));
        assert_eq!(woken.load(Ordering::SeqCst), 0, "not yet");
        clock.advance(Duration::from_secs(1));
        assert_eq!(woken.load(Ordering::SeqCst), 1, "woken once it is time");
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        let mut past = clock.sleep_until(Timestamp::from_secs(50)).unwrap();
        assert!(past.as_mut().poll(&mut cx).is_ready(), "a time already passed does not wait");
        assert!(SystemClock.sleep_until(Timestamp::from_secs(1)).is_none(), "the wall clock waits on a runtime");
    }

    #[test]
    fn since_never_goes_negative() {
        let a = Timestamp::from_secs(10);
        let b = Timestamp::from_secs(12);
        assert_eq!(b.since(a), Duration::from_secs(2));
        assert_eq!(a.since(b), Duration::ZERO);
    }

    #[test]
    fn pacific_time_follows_daylight_saving() {
        let at = |secs: i64, micros: i64| pacific_time(Timestamp(secs * 1_000_000 + micros));
        // 2100-01-01T00:00:00Z, in winter.
        assert_eq!(at(4_102_444_800, 0), "2099-12-31T16:00:00-08:00");
        assert_eq!(at(4_102_444_800, 500_000), "2099-12-31T16:00:00.5-08:00");
        // 2100-07-01T00:00:00Z, in summer.
        assert_eq!(at(4_118_083_200, 0), "2100-06-30T17:00:00-07:00");
        // 2026-03-08 is the second Sunday of March: 10:00Z starts daylight time.
        assert_eq!(at(1_772_963_999, 0), "2026-03-08T01:59:59-08:00");
        assert_eq!(at(1_772_964_000, 0), "2026-03-08T03:00:00-07:00");
        // 2026-11-01 is the first Sunday of November: 09:00Z ends it.
        assert_eq!(at(1_793_523_599, 0), "2026-11-01T01:59:59-07:00");
        assert_eq!(at(1_793_523_600, 0), "2026-11-01T01:00:00-08:00");
    }
}
