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
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
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

/// `t` as RFC 3339 in UTC with 0, 3 or 6 fractional digits (`2024-03-01T11:30:00.250Z`), as
/// proto3 JSON and tasklane's own documents write times.
pub fn format_rfc3339(t: Timestamp) -> String {
    let secs = t.0.div_euclid(1_000_000);
    let micros = t.0.rem_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let frac = if micros == 0 {
        String::new()
    } else if micros % 1000 == 0 {
        format!(".{:03}", micros / 1000)
    } else {
        format!(".{micros:06}")
    };
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// An RFC 3339 time (`2024-03-01T12:30:00.25+01:00`, `…Z`), to the microsecond (finer
/// digits are dropped); years 0 to 9999.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let digits = |s: &str, n: usize| -> Option<i64> {
        (s.len() == n && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, mo, da) = (digits(d.next()?, 4)?, digits(d.next()?, 2)?, digits(d.next()?, 2)?);
    if d.next().is_some() {
        return None;
    }
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, frac)) if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) => (hms, frac),
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, s) = (digits(t.next()?, 2)?, digits(t.next()?, 2)?, digits(t.next()?, 2)?);
    if t.next().is_some() {
        return None;
    }
    let micros: i64 =
        frac.bytes().take(6).enumerate().map(|(i, b)| i64::from(b - b'0') * 10i64.pow(5 - i as u32)).sum();
    let offset = match zone {
        "Z" | "z" => 0,
        z => {
            let (oh, om) = z[1..].split_once(':')?;
            let (oh, om) = (digits(oh, 2)?, digits(om, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            if z.starts_with('-') { -(oh * 3600 + om * 60) } else { oh * 3600 + om * 60 }
        }
    };
    let days_in_month = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let month_ok = (1..=12).contains(&mo) && da >= 1 && da <= days_in_month[(mo - 1) as usize];
    if !month_ok || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // A leap second (`23:59:60`) is read as the last microsecond before it, so the time
    // stays within its day (and year 9999 within range) and prints back as it parses.
    let (s, micros) = if s == 60 { (59, 999_999) } else { (s, micros) };
    let days = days_from_civil(y, mo as u32, da as u32);
    let t = (days * 86_400 + h * 3600 + mi * 60 + s - offset) * 1_000_000 + micros;
    // A protobuf timestamp lies in years 1 to 9999 in UTC: an offset may not carry a time
    // written in year 9999 (or 1) past that range, where it would no longer print as it parses.
    let first = days_from_civil(1, 1, 1) * 86_400 * 1_000_000;
    let last = (days_from_civil(9999, 12, 31) + 1) * 86_400 * 1_000_000 - 1;
    (first..=last).contains(&t).then_some(Timestamp(t))
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

/// Signed microseconds as proto3 JSON writes a duration: `"3s"`, `"0.100s"`, `"1.000001s"`.
pub fn format_duration_micros(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        format!("{sign}{secs}s")
    } else if frac % 1000 == 0 {
        format!("{sign}{secs}.{:03}s", frac / 1000)
    } else {
        format!("{sign}{secs}.{frac:06}s")
    }
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
    fn rfc3339_both_ways() {
        let t = parse_rfc3339("2024-03-01T12:30:00.25+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2024-03-01T11:30:00.250Z");
        assert_eq!(format_rfc3339(Timestamp(1)), "1970-01-01T00:00:00.000001Z");
        assert_eq!(format_rfc3339(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(Timestamp(-1)), "1969-12-31T23:59:59.999999Z");
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00.123456789Z"), parse_rfc3339("2024-02-29T00:00:00.123456Z"));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        // A leap second stays in its year (found by the fuzzer at the end of year 9999).
        let leap = parse_rfc3339("9999-12-31T23:59:60Z").unwrap();
        assert_eq!(format_rfc3339(leap), "9999-12-31T23:59:59.999999Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(leap)), Some(leap));
        assert_eq!(parse_rfc3339("1969-12-31t23:00:00-01:00"), Some(Timestamp(0)));
        for bad in [
            "yesterday",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "99999-01-01T00:00:00Z",
            "2024-1-01T00:00:00Z",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01",
            // Out of range in UTC, though within it as written (found by the fuzzer).
            "9999-12-31T20:00:09-05:30",
            "0001-01-01T00:30:00+01:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(format_rfc3339(parse_rfc3339("9999-12-31T18:29:59-05:30").unwrap()), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(parse_rfc3339("0001-01-01T01:00:00+01:00").unwrap()), "0001-01-01T00:00:00Z");
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
