//! The dispatcher: one loop per queue that leases due tasks within the queue's rate
//! and concurrency limits and pushes them to their workers.
//!
//! Each loop keeps a token bucket (rate + burst) and an in-flight count. It claims as
//! many due tasks as both allow, spawns one delivery per task, then waits to be woken:
//! by the one `Scheduler` when its next task is due or a token is earned (every timed wait
//! goes through the dispatcher's `Clock`, so a test can step it), or by a finished
//! delivery, a create or a configuration change. An idle queue costs nothing. A lease is taken before each delivery and the outcome
//! is written with a guarded update, so a crash at any point only causes a retry.

mod hosts;
pub mod push;
mod scheduler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasklane_core::outcome::decide;
use tasklane_core::rate::TokenBucket;
use tasklane_core::{Clock, Queue, QueueKind, QueueName, QueueState, Timestamp};
use tasklane_store::{ClaimedTask, Store, StoreError, TaskClaim, TaskFinish, TaskOutcome};
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::engine::events::Events;
use crate::oidc::TokenSigner;
use push::PushResult;

/// Most tasks leased by one claim.
const CLAIM_BATCH: usize = 256;
/// How long a loop waits when due tasks exist but the store leased none.
const REFUSED_CLAIM_WAIT: Duration = Duration::from_millis(100);
/// Marks a wake-up that asks the owner to reload the queue's settings.
const RELOAD_PREFIX: &str = "reload:";
pub const JOB_ID_HEADER: &str = "X-Tasklane-Job-Id";
pub const JOB_TOKEN_HEADER: &str = "X-Tasklane-Job-Token";
/// How long after its lease a job token still works (a worker's last report may be late).
pub(crate) const JOB_TOKEN_SLACK: Duration = Duration::from_secs(15 * 60);
/// A queue's deliveries waiting (for a connection slot, or for the store to record their
/// outcome) beyond which it stops claiming: its tasks stay in the store (free for other
/// nodes) rather than queue up in memory, a slow worker holds back only the queues that
/// send to it, and pushes never run ahead of the store.
const MAX_WAITING: usize = 64;
/// How long a loop waits before looking again when too many of its deliveries wait.
const WAITING_RECHECK: Duration = Duration::from_millis(10);
/// Fewest tasks a loop limited by its rate waits to claim together, for at most
/// `RATE_TICK` after its last claim: claims are batches, and the bucket (burst 10 or
/// more) loses no tokens meanwhile.
const MIN_CLAIM: usize = 16;
const RATE_TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Added to a task's dispatch deadline to form its lease.
    pub lease_grace: Duration,
    /// How long a finished task's name stays reserved.
    pub tombstone_window: Duration,
    /// The `iss` of the tokens tasks carry: tasklane's public base URL.
    pub token_issuer: String,
    /// Most requests in flight to one destination (scheme, host, port); 0: no cap.
    pub max_connections_per_host: usize,
    /// Where pushes may go. The client's resolver checks names; this checks a URL whose
    /// host is an address, which no resolver sees.
    pub egress: crate::egress::EgressGate,
    /// Seals the signing keys in the store (`--secret-key-file`).
    pub sealer: Option<Arc<crate::sealing::Sealer>>,
    /// In a cluster, this node: its claims lease only from queues it owns at that moment.
    pub node_id: Option<String>,
}

/// Enough to keep a local worker busy without overflowing a default listen backlog.
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 256;

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            lease_grace: Duration::from_secs(30),
            tombstone_window: Duration::from_secs(3600),
            token_issuer: "http://127.0.0.1:8790".into(),
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            egress: crate::egress::EgressGate::open(),
            sealer: None,
            node_id: None,
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    /// Told of changed jobs and queues with new tasks. In a cluster its relay also wakes
    /// other queues' owners; then this node runs only the queues the ownership keeper hands it.
    events: Events,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    urls: push::ParsedUrls,
    hosts: hosts::HostLimits,
    config: DispatchConfig,
    signer: Arc<TokenSigner>,
    queues: Mutex<HashMap<QueueName, QueueHandle>>,
    /// Every loop's next timed wake-up.
    scheduler: Arc<scheduler::Scheduler>,
    /// The scheduler's task starts with the first loop (inside the runtime).
    scheduler_started: std::sync::Once,
    /// Queue loops waiting to be woken (the others are working).
    parked: AtomicUsize,
    /// Queue settings being read from the store before a loop starts or changes.
    reloading: AtomicUsize,
    /// In a cluster, the queues this node holds leases for; a loop starts only for these.
    owned: Mutex<std::collections::HashSet<QueueName>>,
    stop: watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: Notify,
}

struct QueueHandle {
    config: watch::Sender<Arc<Queue>>,
    wake: Arc<Notify>,
}

/// A pooled HTTP client with no egress limits: a loopback server's, and tools' and tests'.
pub fn http_client() -> Result<reqwest::Client, String> {
    crate::egress::http_client(crate::egress::EgressGate::open())
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, client: reqwest::Client, config: DispatchConfig) -> Self {
        Dispatcher::build(store, clock, client, config, Events::new(None))
    }

    fn build(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        client: reqwest::Client,
        config: DispatchConfig,
        events: Events,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let scheduler = Arc::new(scheduler::Scheduler::new(clock.clone()));
        let signer = Arc::new(
            TokenSigner::new(store.clone(), clock.clone(), config.token_issuer.clone())
                .sealed_with(config.sealer.clone()),
        );
        Dispatcher {
            shared: Arc::new(Shared {
                events,
                store,
                clock,
                client,
                urls: push::ParsedUrls::new(),
                hosts: hosts::HostLimits::new(config.max_connections_per_host),
                config,
                signer,
                queues: Mutex::new(HashMap::new()),
                scheduler,
                scheduler_started: std::sync::Once::new(),
                parked: AtomicUsize::new(0),
                reloading: AtomicUsize::new(0),
                owned: Mutex::new(std::collections::HashSet::new()),
                stop,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// A dispatcher for one node of a cluster (`events` has the relay): it runs only the
    /// queues given to `set_owned`, and wakes the owners of others through the relay.
    pub fn clustered(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        client: reqwest::Client,
        config: DispatchConfig,
        events: Events,
    ) -> Self {
        Dispatcher::build(store, clock, client, config, events)
    }

    /// The event bus this dispatcher publishes on.
    pub fn events(&self) -> &Events {
        &self.shared.events
    }

    /// The signer of the tasks' tokens, whose keys `/.well-known/jwks.json` publishes.
    pub fn signer(&self) -> Arc<TokenSigner> {
        self.shared.signer.clone()
    }

    /// How many queue loops wait for a timed wake-up (one scheduler holds them all).
    pub fn scheduled_wakeups(&self) -> usize {
        self.shared.scheduler.pending()
    }

    /// Whether nothing is happening now: every queue loop waits to be woken, no delivery is in
    /// flight, and no timed wake-up is due. On a `ManualClock` nothing happens again until the
    /// clock is advanced or work arrives, so a test can assert what did not happen.
    pub fn quiet(&self) -> bool {
        self.parked() && self.shared.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Whether every queue loop waits to be woken, no queue's settings are being read, and no
    /// timed wake-up is due (deliveries may be in flight).
    pub fn parked(&self) -> bool {
        let loops = self.shared.queues.lock().map_or(usize::MAX, |q| q.len());
        self.shared.parked.load(Ordering::SeqCst) == loops
            && self.shared.reloading.load(Ordering::SeqCst) == 0
            && !self.shared.scheduler.any_due()
    }

    fn clustered_mode(&self) -> bool {
        self.shared.events.clustered()
    }

    /// Wake `queue` at its owner, another node maybe; `reload` when its settings changed.
    fn notify_owner(&self, queue: &QueueName, reload: bool) {
        if self.clustered_mode() {
            let prefix = if reload { RELOAD_PREFIX } else { "" };
            self.shared.events.relay(format!("{prefix}{queue}"));
        }
    }

    /// The queues this node now owns: start loops for new ones, stop the others.
    pub fn set_owned(&self, owned: &[QueueName]) {
        if let Ok(mut set) = self.shared.owned.lock() {
            *set = owned.iter().cloned().collect();
        }
        let mut to_load = Vec::new();
        if let Ok(mut queues) = self.shared.queues.lock() {
            queues.retain(|name, _| owned.contains(name));
            to_load.extend(owned.iter().filter(|q| !queues.contains_key(*q)).cloned());
        }
        for name in to_load {
            self.reload(name);
        }
    }

    /// The queues this node runs loops for.
    pub fn owned(&self) -> Vec<QueueName> {
        self.shared.queues.lock().map(|q| q.keys().cloned().collect()).unwrap_or_default()
    }

    /// Read a queue's settings from the store and apply them to its loop (starting it if needed).
    fn reload(&self, name: QueueName) {
        let this = self.clone();
        this.shared.reloading.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            match this.shared.store.queue_get(&name).await {
                Ok(Some(queue)) => this.start_or_update(queue, true),
                Ok(None) => this.drop_loop(&name),
                Err(e) => tracing::warn!(queue = %name, error = %e, "reload queue settings"),
            }
            this.shared.reloading.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// A wake-up from another node: a queue name (new tasks), the name after
    /// `RELOAD_PREFIX` (settings changed), or nothing (anything may have changed).
    pub fn woken(&self, payload: &str) {
        if self.shared.events.received(payload) {
            return;
        }
        if payload.is_empty() {
            for name in self.owned() {
                self.reload(name);
            }
            return;
        }
        let (reload, queue) = match payload.strip_prefix(RELOAD_PREFIX) {
            Some(q) => (true, q),
            None => (false, payload),
        };
        let Ok(name) = QueueName::parse(queue) else { return };
        if !reload {
            self.shared.events.tasks_arrived(&name);
        }
        if reload {
            if self.owned().contains(&name) {
                self.reload(name);
            }
        } else if let Ok(queues) = self.shared.queues.lock()
            && let Some(handle) = queues.get(&name)
        {
            handle.wake.notify_one();
        }
    }

    pub fn lease_grace(&self) -> Duration {
        self.shared.config.lease_grace
    }

    /// Start a loop for every queue in the store.
    pub async fn start(&self) -> Result<(), tasklane_store::StoreError> {
        let mut after = None;
        loop {
            let page = self
                .shared
                .store
                .queue_list(tasklane_store::QueueList { parent: None, after: after.clone(), limit: 1000 })
                .await?;
            let done = page.len() < 1000;
            for queue in page {
                after = Some(queue.name.clone());
                self.queue_changed(queue);
            }
            if done {
                return Ok(());
            }
        }
    }

    /// A queue was created or its settings or state changed (by this node's API).
    pub fn queue_changed(&self, queue: Queue) {
        if self.clustered_mode() {
            // The owner, maybe another node, reloads the settings from the store.
            self.notify_owner(&queue.name, true);
        }
        self.start_or_update(queue, !self.clustered_mode());
    }

    /// Apply settings to a queue's loop; start the loop only if `may_start`.
    fn start_or_update(&self, queue: Queue, may_start: bool) {
        if *self.shared.stop.borrow() {
            return;
        }
        let Ok(mut queues) = self.shared.queues.lock() else { return };
        let queue = Arc::new(queue);
        if let Some(handle) = queues.get(&queue.name) {
            handle.config.send_replace(queue);
            handle.wake.notify_one();
            return;
        }
        // A reload may finish after the queue was handed over: start only what is held now.
        let held = !self.clustered_mode() || self.shared.owned.lock().is_ok_and(|o| o.contains(&queue.name));
        // Pull queues have no loop: workers lease their tasks.
        if !may_start || !held || queue.kind == QueueKind::Pull {
            return;
        }
        self.shared.scheduler_started.call_once(|| {
            tokio::spawn(self.shared.scheduler.clone().run(self.shared.stop.subscribe()));
        });
        let (config_tx, config_rx) = watch::channel(queue.clone());
        let wake = Arc::new(Notify::new());
        queues.insert(queue.name.clone(), QueueHandle { config: config_tx, wake: wake.clone() });
        let shared = self.shared.clone();
        let span = tracing::info_span!("queue", queue = %queue.name);
        tokio::spawn(run_queue(shared, config_rx, wake).instrument(span));
    }

    /// A queue was deleted (by this node's API): stop its loop here and at its owner.
    pub fn queue_removed(&self, name: &QueueName) {
        self.drop_loop(name);
        self.notify_owner(name, true);
    }

    fn drop_loop(&self, name: &QueueName) {
        if let Ok(mut queues) = self.shared.queues.lock() {
            // Dropping the sender ends the queue's loop.
            queues.remove(name);
        }
    }

    /// A task was created: wake its queue's loop, here or at its owner.
    /// The settings of a queue this node runs a loop for, as the loop has them (every push
    /// queue on an embedded store; a cluster node's own). `None` says nothing either way.
    pub fn known_queue(&self, queue: &QueueName) -> Option<Arc<Queue>> {
        let queues = self.shared.queues.lock().ok()?;
        queues.get(queue).map(|handle| handle.config.borrow().clone())
    }

    pub fn task_created(&self, queue: &QueueName) {
        self.shared.events.tasks_arrived(queue);
        if let Ok(queues) = self.shared.queues.lock()
            && let Some(handle) = queues.get(queue)
        {
            handle.wake.notify_one();
            return;
        }
        self.notify_owner(queue, false);
    }

    /// Deliver a task leased by `RunTask` at `claimed_at` at once, outside the queue's limits.
    pub fn run_now(&self, queue: Queue, claimed: ClaimedTask, claimed_at: Timestamp) {
        let shared = self.shared.clone();
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let queue = Arc::new(queue);
        tokio::spawn(async move {
            // Not counted against the queue's loop: RunTask is outside the queue's limits.
            deliver(&shared, &queue, claimed, claimed_at, &AtomicUsize::new(0)).await;
            shared.finish_one();
        });
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Turns true when the server shuts down, so waits on behalf of clients (long polls)
    /// can end at once.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shared.stop.subscribe()
    }

    /// Stop claiming, then wait up to `grace` for deliveries in flight. Tasks still in
    /// flight afterwards keep their leases and are delivered again after a restart.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.stop.send_replace(true);
        if let Ok(mut queues) = self.shared.queues.lock() {
            queues.clear();
        }
        let wait_idle = async {
            loop {
                let notified = self.shared.idle.notified();
                if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait_idle).await.is_err() {
            tracing::warn!(in_flight = self.in_flight(), "shutdown grace ended with deliveries in flight");
        }
    }
}

/// Counts one delivery in a counter while it lives (also when its future is dropped).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn finish_one(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Take new settings for a queue's loop: its rate limits reshape the token bucket.
fn apply(queue: &mut Arc<Queue>, bucket: &mut TokenBucket, new: Arc<Queue>, now: Timestamp) {
    bucket.reconfigure(new.rate_limits.max_dispatches_per_second, new.rate_limits.max_burst_size.max(1) as u32, now);
    *queue = new;
}

async fn run_queue(shared: Arc<Shared>, mut config: watch::Receiver<Arc<Queue>>, wake: Arc<Notify>) {
    let mut queue = config.borrow_and_update().clone();
    let mut bucket = TokenBucket::new(
        queue.rate_limits.max_dispatches_per_second,
        queue.rate_limits.max_burst_size.max(1) as u32,
        shared.clock.now(),
    );
    let in_flight = Arc::new(AtomicUsize::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut stop = shared.stop.subscribe();
    let mut failures: u32 = 0;
    let mut last_claim = Timestamp::default();
    loop {
        if *stop.borrow() {
            break;
        }
        // A wake-up may win the select below over a config change: read it here too.
        match config.has_changed() {
            Err(_) => break,
            Ok(true) => apply(&mut queue, &mut bucket, config.borrow_and_update().clone(), shared.clock.now()),
            Ok(false) => {}
        }
        // When to look again by itself; `None`: only when woken (a create, a finished
        // delivery, a settings change).
        let mut wait: Option<Duration> = None;
        if queue.state == QueueState::Running {
            let now = shared.clock.now();
            let limit = queue.rate_limits.max_concurrent_dispatches.max(1) as usize;
            let free = limit.saturating_sub(in_flight.load(Ordering::SeqCst));
            let tokens = bucket.available(now) as usize;
            let burst = queue.rate_limits.max_burst_size.max(1) as usize;
            if free == 0 {
                // A finishing delivery wakes the loop.
            } else if waiting.load(Ordering::Relaxed) >= MAX_WAITING {
                // This queue's workers or the store are saturated: leave its tasks in the store for now.
                wait = Some(WAITING_RECHECK);
            } else if tokens == 0 {
                wait = bucket.time_to_next(now);
            } else if tokens < MIN_CLAIM.min(free).min(burst) && now.since(last_claim) < RATE_TICK {
                // The rate binds: gather tokens for a batch (at most one tick) rather than
                // claim a task or two on every wake-up. Never more than the bucket holds: a
                // burst under the batch size would make that wait zero, a spin.
                let tick_left = RATE_TICK.saturating_sub(now.since(last_claim));
                wait = Some(bucket.time_until(MIN_CLAIM as u32, now).map_or(tick_left, |t| t.min(tick_left)));
            } else {
                last_claim = now;
                let want = free.min(tokens).min(CLAIM_BATCH);
                let claim = TaskClaim {
                    queue: queue.name.clone(),
                    limit: want,
                    grace: shared.config.lease_grace,
                    now,
                    owner: shared.config.node_id.clone(),
                };
                match shared.store.task_claim(claim).await {
                    Ok(claimed) => {
                        failures = 0;
                        let n = claimed.len();
                        bucket.take(n as u32, now);
                        for c in claimed {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            shared.in_flight.fetch_add(1, Ordering::SeqCst);
                            let (shared, queue, in_flight, waiting, wake) =
                                (shared.clone(), queue.clone(), in_flight.clone(), waiting.clone(), wake.clone());
                            tokio::spawn(async move {
                                deliver(&shared, &queue, c, now, &waiting).await;
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                wake.notify_one();
                                shared.finish_one();
                            });
                        }
                        if n == want {
                            continue;
                        }
                        match shared.store.task_next_due(&queue.name).await {
                            Ok(Some(due)) => wait = Some(due.since(shared.clock.now())),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "read next due time"),
                        }
                        if n == 0 && wait == Some(Duration::ZERO) {
                            // Tasks are due but the store leased none: the queue is paused there
                            // (our view is stale) or another claim holds them. Re-read the queue
                            // and look again shortly instead of spinning.
                            wait = Some(REFUSED_CLAIM_WAIT);
                            if let Ok(Some(fresh)) = shared.store.queue_get(&queue.name).await
                                && fresh != *queue
                            {
                                apply(&mut queue, &mut bucket, Arc::new(fresh), shared.clock.now());
                            }
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let backoff = Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)));
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "claim tasks");
                        wait = Some(backoff);
                    }
                }
            }
        }
        match wait {
            Some(Duration::ZERO) => continue,
            Some(wait) => shared.scheduler.wake_at(&wake, shared.clock.now().saturating_add(wait)),
            None => shared.scheduler.cancel(&wake),
        }
        shared.parked.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = wake.notified() => {}
            changed = config.changed() => {
                if changed.is_err() {
                    shared.parked.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                apply(&mut queue, &mut bucket, config.borrow_and_update().clone(), shared.clock.now());
            }
            _ = stop.changed() => {}
        }
        shared.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why an attempt got no answer, for its log line (a worker's own body is not logged).
fn detail(result: &PushResult) -> &str {
    if result.responded { "" } else { &result.excerpt }
}

/// An event about one delivery, naming its task and attempt. Deliveries have no span
/// below debug level: at info, one span per push cost ~3% of the push drain's CPU.
macro_rules! attempt_event {
    ($level:ident, $task:expr, $($rest:tt)*) => {
        tracing::$level!(task = %$task.name, attempt = $task.dispatch_count, $($rest)*)
    };
}

/// Push one claimed task and record its outcome. `claimed_at` is when its lease began;
/// `waiting` counts the delivery while it waits for a connection slot and while its
/// outcome is written.
async fn deliver(shared: &Shared, queue: &Queue, claimed: ClaimedTask, claimed_at: Timestamp, waiting: &AtomicUsize) {
    let task = &claimed.task;
    let span = tracing::debug_span!("dispatch", task = %task.name, attempt = task.dispatch_count);
    async {
        let request = match &queue.http_target {
            Some(target) => std::borrow::Cow::Owned(target.apply(&task.http_request)),
            None => std::borrow::Cow::Borrowed(&task.http_request),
        };
        // Wait for a slot to the destination first, so the time spent waiting comes out
        // of the lease below rather than past it.
        let slot = shared.hosts.acquire(&request.url, waiting).await;
        // An attempt must end before its lease does, or another node could start the
        // task while this attempt still runs. A delivery that starts late gets less time.
        let lease_end = claimed_at.saturating_add(task.dispatch_deadline + shared.config.lease_grace);
        let left = lease_end.since(shared.clock.now()).saturating_sub(shared.config.lease_grace / 2);
        let timeout = task.dispatch_deadline.min(left);
        if timeout.is_zero() {
            attempt_event!(
                warn,
                task,
                "lease ended before the attempt could start; the task runs again after its lease"
            );
            return;
        }
        let bearer = match &request.auth {
            None => Ok(None),
            Some(auth) => shared.signer.token(auth, &request.url).await.map(Some),
        };
        // A job's task carries its job id and a token to report progress with until its lease ends.
        let mut job_headers = Vec::new();
        if let Some(job) = &task.job_id {
            shared.events.job_changed(job);
            match shared.signer.job_token(job, lease_end.saturating_add(JOB_TOKEN_SLACK)).await {
                Ok(token) => {
                    job_headers.push((JOB_ID_HEADER.to_string(), job.clone()));
                    job_headers.push((JOB_TOKEN_HEADER.to_string(), token));
                }
                Err(e) => attempt_event!(warn, task, error = %e.message, "no job token for this attempt"),
            }
        }
        let clock = shared.clock.clone();
        let result = match &bearer {
            Ok(bearer) => {
                let attempt = push::Attempt {
                    task,
                    request: &request,
                    bearer: bearer.as_deref(),
                    extra: &job_headers,
                    url: shared.urls.get(&request.url),
                    egress: &shared.config.egress.current(),
                };
                push::push(&shared.client, attempt, timeout, move || clock.now()).await
            }
            // Without its token the request would be refused: count a failed attempt.
            Err(e) => push::PushResult {
                http_status: 0,
                responded: false,
                retry_after: None,
                message: format!("could not sign the task's token: {}", e.message),
                excerpt: String::new(),
            },
        };
        // The connection is free once the exchange ends; the outcome's write does not need it.
        drop(slot);
        let _recording = Counted::new(waiting);
        let now = shared.clock.now();
        let outcome = decide(queue, task, &result, now, shared.config.tombstone_window);
        match &outcome {
            TaskOutcome::Succeeded { .. } => tracing::debug!(status = result.http_status, "delivered"),
            TaskOutcome::Retry { retry_at, .. } => attempt_event!(
                info,
                task,
                status = result.http_status,
                message = %result.message,
                detail = %detail(&result),
                retry_in_ms = retry_at.since(now).as_millis() as u64,
                "attempt failed, will retry"
            ),
            TaskOutcome::GaveUp { .. } => {
                attempt_event!(
                    warn,
                    task,
                    status = result.http_status,
                    message = %result.message,
                    detail = %detail(&result),
                    "attempt failed, giving up"
                )
            }
        }
        let finish = TaskFinish { name: task.name.clone(), lease_id: claimed.lease_id, outcome, now };
        // A store that cannot write for a while (a full disk, a database restarting) gets the
        // outcome again, fenced by its lease id, until the lease ends or the node stops:
        // otherwise the task would wait out its lease and run again.
        let mut stop = shared.stop.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            match shared.store.task_finish(finish.clone()).await {
                Ok(true) => {
                    if let Some(job) = &task.job_id {
                        shared.events.job_changed(job);
                    }
                }
                Ok(false) => attempt_event!(info, task, "outcome dropped: the lease was lost"),
                Err(StoreError::Full(_) | StoreError::Unavailable(_))
                    if shared.clock.now().saturating_add(backoff) < lease_end && !*stop.borrow() =>
                {
                    tokio::select! {
                        _ = scheduler::sleep_until(&*shared.clock, shared.clock.now().saturating_add(backoff)) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => {
                    attempt_event!(error, task, error = %e, "record outcome; the task will run again after its lease")
                }
            }
            break;
        }
    }
    .instrument(span)
    .await
}
