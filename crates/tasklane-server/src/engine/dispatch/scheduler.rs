//! One scheduler for every queue loop's next timed wake-up: a heap of (time, loop) that a
//! single task works through, waiting on the dispatcher's `Clock` until the earliest entry
//! and then waking that loop. A queue whose next task is due tomorrow costs one heap entry
//! and nothing more until then, whatever the number of queues; with a `ManualClock`, a test
//! moves every queue's time by advancing the clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use tasklane_core::{Clock, Timestamp};
use tokio::sync::{Notify, watch};

pub struct Scheduler {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// A new earliest entry: the scheduler looks again.
    earlier: Notify,
}

#[derive(Default)]
struct State {
    /// (when, entry number): entries in time order.
    heap: BinaryHeap<Reverse<(Timestamp, u64)>>,
    entries: HashMap<u64, (usize, Weak<Notify>)>,
    /// Each loop's earliest pending wake-up, by the address of its `Notify`.
    next: HashMap<usize, Timestamp>,
    numbered: u64,
}

impl Scheduler {
    pub fn new(clock: Arc<dyn Clock>) -> Scheduler {
        Scheduler { clock, state: Mutex::new(State::default()), earlier: Notify::new() }
    }

    /// Wake `wake` at `at`. A loop has one pending wake-up: a later one is kept only once the
    /// earlier has fired (the loop, woken early, asks again), so an idle queue never piles up
    /// entries however often it is woken otherwise.
    pub fn wake_at(&self, wake: &Arc<Notify>, at: Timestamp) {
        let key = Arc::as_ptr(wake) as usize;
        let Ok(mut state) = self.state.lock() else { return };
        if state.next.get(&key).is_some_and(|pending| *pending <= at) {
            return;
        }
        state.next.insert(key, at);
        state.numbered += 1;
        let n = state.numbered;
        state.entries.insert(n, (key, Arc::downgrade(wake)));
        let earliest = state.heap.peek().is_none_or(|Reverse((first, _))| at < *first);
        state.heap.push(Reverse((at, n)));
        drop(state);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// `wake` needs no timed wake-up any more: forget the one it had (its heap entry, when its
    /// time comes, wakes nobody).
    pub fn cancel(&self, wake: &Arc<Notify>) {
        if let Ok(mut state) = self.state.lock() {
            state.next.remove(&(Arc::as_ptr(wake) as usize));
        }
    }

    /// Wake every loop whose time has come; returns when the next one is due.
    fn fire_due(&self) -> Option<Timestamp> {
        let now = self.clock.now();
        let mut due = Vec::new();
        let next = {
            let Ok(mut state) = self.state.lock() else { return None };
            while let Some(Reverse((at, n))) = state.heap.peek().copied() {
                if at > now {
                    break;
                }
                state.heap.pop();
                if let Some((key, wake)) = state.entries.remove(&n) {
                    // A superseded entry (the loop asked for an earlier time since) wakes nobody.
                    if state.next.get(&key) == Some(&at) {
                        state.next.remove(&key);
                        due.push(wake);
                    }
                }
            }
            state.heap.peek().map(|Reverse((at, _))| *at)
        };
        for wake in due.iter().filter_map(Weak::upgrade) {
            wake.notify_one();
        }
        next
    }

    /// Work through the heap until `stop` is set.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let next = self.fire_due();
            let sleep = async {
                match next {
                    Some(at) => sleep_until(&*self.clock, at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.earlier.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// How many wake-ups are pending (for tests and the idle-cost measure).
    pub fn pending(&self) -> usize {
        self.state.lock().map_or(0, |s| s.next.len())
    }

    /// Whether a wake-up is due and not yet given.
    pub fn any_due(&self) -> bool {
        let now = self.clock.now();
        self.state.lock().map_or(true, |s| s.next.values().any(|at| *at <= now))
    }
}

/// Wait until `clock` reads `at`: on the clock itself when it keeps its own time (a test's),
/// else on the runtime's timer.
pub async fn sleep_until(clock: &dyn Clock, at: Timestamp) {
    match clock.sleep_until(at) {
        Some(sleep) => sleep.await,
        None => tokio::time::sleep(at.since(clock.now())).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tasklane_core::ManualClock;

    #[tokio::test]
    async fn loops_are_woken_at_their_times_on_a_stepped_clock() {
        let clock = ManualClock::new(Timestamp::from_secs(1_000));
        let scheduler = Arc::new(Scheduler::new(Arc::new(clock.clone())));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(scheduler.clone().run(stop));
        let (a, b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        scheduler.wake_at(&a, Timestamp::from_secs(1_002));
        scheduler.wake_at(&b, Timestamp::from_secs(1_005));
        // A later time for a loop that already waits for an earlier one is not kept.
        scheduler.wake_at(&a, Timestamp::from_secs(1_900));
        assert_eq!(scheduler.pending(), 2);
        clock.advance(Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(5), a.notified()).await.expect("a is woken at 1002");
        assert_eq!(scheduler.pending(), 1, "b still waits");
        // An earlier time replaces b's pending one; the superseded entry wakes nobody.
        scheduler.wake_at(&b, Timestamp::from_secs(1_003));
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), b.notified()).await.expect("b is woken at 1003");
        clock.advance(Duration::from_secs(10));
        let spurious = tokio::time::timeout(Duration::from_millis(50), b.notified()).await;
        assert!(spurious.is_err(), "b's superseded 1005 entry woke it");
        assert_eq!(scheduler.pending(), 0);
        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
