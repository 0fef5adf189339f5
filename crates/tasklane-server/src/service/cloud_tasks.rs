//! The Cloud Tasks operations, independent of transport: REST (and later gRPC) parse
//! their input into core types, call these methods, and render the result. One code
//! path per operation means the transports cannot disagree on a result or an error.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tasklane_core::queue::QueueSpec;
use tasklane_core::target::HttpTarget;
use tasklane_core::task::TaskSpec;
use tasklane_core::{
    Clock, LocationName, Queue, QueueKind, QueueName, QueueState, Status, Task, TaskName, TaskView, Timestamp,
};
use tasklane_store::{
    QueueCreate, QueueDelete, QueueList, QueuePurge, QueueSettingsPut, QueueStateSet, Store, StoreError,
    TaskClaimByName, TaskCreate, TaskDelete, TaskList, TaskLookup,
};

use crate::access::Access;
use crate::dispatch::Dispatcher;
use crate::engine::events::Events;
use crate::page_token;

pub const DEFAULT_PAGE_SIZE: usize = 1000;
pub const MAX_QUEUE_PAGE_SIZE: usize = 9800;
pub const MAX_TASK_PAGE_SIZE: usize = 1000;

use tasklane_core::queue::texts::{NOT_FOUND, QUEUE_MISSING, TASK_GONE, TASK_TOO_RECENT};

/// The Cloud Tasks v2 service over a store and a dispatcher. Cloned for every request
/// (router state), so its parts sit behind one `Arc`: a clone is one reference count, not
/// one per part, which cores otherwise fight over.
#[derive(Clone)]
pub struct CloudTasks(Arc<Parts>);

#[derive(Clone)]
pub struct Parts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    /// Told of jobs whose tasks were removed.
    events: Events,
    tombstone_window: Duration,
    /// How long a deleted queue's name cannot be used again (zero: at once).
    queue_tombstone_window: Duration,
    /// Which identities tasks may use; `None` (tests of a bare service): any.
    access: Option<Arc<Access>>,
}

impl std::ops::Deref for CloudTasks {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

pub use crate::engine::errors::store_status;

/// `request` names the list in the error, as the real service does (`ListQueuesRequest`).
fn page_size(request: &str, requested: i32, max: usize) -> Result<usize, Status> {
    match requested {
        n if n < 0 => Err(Status::invalid_argument(format!("{request}.pageSize cannot be negative."))),
        0 => Ok(DEFAULT_PAGE_SIZE.min(max)),
        n => Ok((n as usize).min(max)),
    }
}

/// What a create that the store refused answers.
pub(crate) fn create_status(e: StoreError) -> Status {
    match e {
        StoreError::TaskTombstoned => Status::already_exists(TASK_TOO_RECENT),
        other => store_status(other),
    }
}

/// The real service gives every non-empty page a token, the last one included; the page
/// after the last is empty and has none.
fn next_page_token(last: Option<String>) -> String {
    last.map(|name| page_token::encode(&name)).unwrap_or_default()
}

/// Only GetTask tells a recently finished task from one never made; DeleteTask and
/// RunTask answer plain NOT_FOUND for both, as the real service does.
fn gone_is_not_found(e: StoreError) -> Status {
    match e {
        StoreError::TaskTombstoned | StoreError::TaskNotFound => Status::not_found(NOT_FOUND),
        other => store_status(other),
    }
}

impl CloudTasks {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Dispatcher,
        tombstone_window: Duration,
    ) -> Self {
        CloudTasks(Arc::new(Parts {
            store,
            clock,
            events: dispatcher.events().clone(),
            dispatcher,
            tombstone_window,
            queue_tombstone_window: Duration::ZERO,
            access: None,
        }))
    }

    /// Keep a deleted queue's name from being used again for `window`, as the real service
    /// does for up to three days.
    pub fn with_queue_tombstone_window(mut self, window: Duration) -> Self {
        Arc::make_mut(&mut self.0).queue_tombstone_window = window;
        self
    }

    fn queue_tombstone_key(name: &QueueName) -> String {
        format!("queue-deleted:{name}")
    }

    /// Refuse a name whose queue was deleted within the window.
    async fn check_queue_name_free(&self, name: &QueueName) -> Result<(), Status> {
        if self.queue_tombstone_window.is_zero() {
            return Ok(());
        }
        let key = Self::queue_tombstone_key(name);
        match self.store.record_get(&key, self.now()).await.map_err(store_status)? {
            Some(_) => Err(Status::failed_precondition(tasklane_core::queue::texts::QUEUE_TOO_RECENT)),
            None => Ok(()),
        }
    }

    /// Check the identities tasks and queues ask tokens for against `access`.
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        Arc::make_mut(&mut self.0).access = Some(access);
        self
    }

    /// Whether a queue's `http_target` names an allowed identity and host.
    async fn check_queue_target(&self, queue: &Queue) -> Result<(), Status> {
        let Some(target) = &queue.http_target else { return Ok(()) };
        self.check_identity(target.auth.as_ref(), "").await?;
        if let (Some(a), Some(host)) = (&self.access, target.uri_override.as_ref().and_then(|o| o.host.as_deref())) {
            a.check_target_host("http_target.uri_override.host", host)?;
        }
        Ok(())
    }

    /// Whether a task (or a queue's target) may carry `auth` to `url`.
    pub async fn check_identity(&self, auth: Option<&tasklane_core::AuthToken>, url: &str) -> Result<(), Status> {
        match &self.access {
            Some(a) => a.check_identity(auth, url).await,
            None => Ok(()),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn generate_id(&self) -> String {
        new_id(self.clock.now())
    }

    async fn queue_required(&self, name: &QueueName) -> Result<Queue, Status> {
        self.store.queue_get(name).await.map_err(store_status)?.ok_or_else(|| Status::not_found(QUEUE_MISSING))
    }

    pub async fn create_queue(&self, parent: &str, name: &str, spec: QueueSpec) -> Result<Queue, Status> {
        self.create_queue_of_kind(parent, name, spec, QueueKind::Push).await
    }

    /// Create a push or a pull queue (the kind is fixed from then on).
    pub async fn create_queue_of_kind(
        &self,
        parent: &str,
        name: &str,
        spec: QueueSpec,
        kind: QueueKind,
    ) -> Result<Queue, Status> {
        let parent = LocationName::parse(parent)?;
        // Without a name, the real service answers as for a malformed one.
        let queue_name = QueueName::parse(name)?;
        if queue_name.parent != parent {
            return Err(Status::invalid_argument(format!("{name} must begin with {parent}.")));
        }
        spec.check_request()?;
        self.check_queue_name_free(&queue_name).await?;
        let mut queue = spec.resolve(queue_name, QueueState::Running, None)?;
        self.check_queue_target(&queue).await?;
        queue.kind = kind;
        let queue = self.store.queue_create(QueueCreate { queue, now: self.now() }).await.map_err(store_status)?;
        self.dispatcher.queue_changed(queue.clone());
        Ok(queue)
    }

    pub async fn get_queue(&self, name: &str) -> Result<Queue, Status> {
        self.queue_required(&QueueName::parse(name)?).await
    }

    pub async fn list_queues(
        &self,
        parent: &str,
        filter: &str,
        requested_page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Queue>, String), Status> {
        let parent = LocationName::parse(parent)?;
        let filter = tasklane_core::filter::QueueFilter::parse(filter)?;
        let limit = page_size("ListQueuesRequest", requested_page_size, MAX_QUEUE_PAGE_SIZE)?;
        let mut after = match page_token {
            "" => None,
            t => Some(QueueName::parse(&page_token::decode(t)?).map_err(|_| page_token::invalid())?),
        };
        let mut out = Vec::new();
        // Filtering happens after the read, so keep reading until the page is full.
        loop {
            let batch = self
                .store
                .queue_list(QueueList { parent: Some(parent.clone()), after: after.clone(), limit })
                .await
                .map_err(store_status)?;
            let exhausted = batch.len() < limit;
            for q in batch {
                after = Some(q.name.clone());
                if filter.matches(&q) {
                    out.push(q);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if out.len() == limit || exhausted {
                break;
            }
        }
        let next = next_page_token(out.last().map(|q| q.name.to_string()));
        Ok((out, next))
    }

    /// `UpdateQueue`: an upsert; `mask` of `None` replaces every settable field.
    pub async fn update_queue(&self, name: &str, patch: QueueSpec, mask: Option<Vec<String>>) -> Result<Queue, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("queue.name is required"));
        }
        tasklane_core::mask::check(mask.as_deref())?;
        let queue_name = QueueName::parse(name)?;
        patch.check_request()?;
        let existing = self.store.queue_get(&queue_name).await.map_err(store_status)?;
        if existing.is_none() {
            self.check_queue_name_free(&queue_name).await?;
        }
        let base = existing.as_ref().map(QueueSpec::of).unwrap_or_default();
        let merged = tasklane_core::mask::apply(base, patch, mask.as_deref());
        let (state, purge_time) = existing.map_or((QueueState::Running, None), |q| (q.state, q.purge_time));
        let queue = merged.resolve(queue_name, state, purge_time)?;
        self.check_queue_target(&queue).await?;
        let queue = self
            .store
            .queue_settings_put(QueueSettingsPut { queue, create_if_missing: true, now: self.now() })
            .await
            .map_err(store_status)?;
        self.dispatcher.queue_changed(queue.clone());
        Ok(queue)
    }

    pub async fn delete_queue(&self, name: &str) -> Result<(), Status> {
        let name = QueueName::parse(name)?;
        let jobs =
            self.store.queue_delete(QueueDelete { name: name.clone(), now: self.now() }).await.map_err(
                |e| match e {
                    StoreError::QueueNotFound => Status::not_found(NOT_FOUND),
                    other => store_status(other),
                },
            )?;
        self.dispatcher.queue_removed(&name);
        jobs.iter().for_each(|job| self.events.job_changed(job));
        self.forget_queue_policy(&name).await?;
        if !self.queue_tombstone_window.is_zero() {
            let now = self.now();
            let put = tasklane_store::RecordPut {
                key: Self::queue_tombstone_key(&name),
                value: Vec::new(),
                condition: tasklane_store::RecordCondition::Always,
                expires_at: Some(now.saturating_add(self.queue_tombstone_window)),
                now,
            };
            self.store.record_put(put).await.map_err(store_status)?;
        }
        Ok(())
    }

    async fn set_state(&self, name: &str, state: QueueState) -> Result<Queue, Status> {
        let name = QueueName::parse(name)?;
        let queue =
            self.store.queue_state_set(QueueStateSet { name, state, now: self.now() }).await.map_err(store_status)?;
        self.dispatcher.queue_changed(queue.clone());
        Ok(queue)
    }

    pub async fn pause_queue(&self, name: &str) -> Result<Queue, Status> {
        self.set_state(name, QueueState::Paused).await
    }

    pub async fn resume_queue(&self, name: &str) -> Result<Queue, Status> {
        self.set_state(name, QueueState::Running).await
    }

    pub async fn purge_queue(&self, name: &str) -> Result<Queue, Status> {
        let name = QueueName::parse(name)?;
        let now = self.now();
        let purged = self
            .store
            .queue_purge(QueuePurge { name, tombstone_until: now.saturating_add(self.tombstone_window), now })
            .await
            .map_err(store_status)?;
        purged.jobs.iter().for_each(|job| self.events.job_changed(job));
        Ok(purged.queue)
    }

    pub async fn create_task(&self, parent: &str, spec: TaskSpec, view: TaskView) -> Result<Task, Status> {
        let queue_name = QueueName::parse(parent)?;
        let now = self.now();
        let target = self.queue_target(&queue_name).await?;
        let task = self.new_task(&queue_name, target.as_ref(), spec, now).await?;
        let task = self.store.task_create(TaskCreate { task, now }).await.map_err(create_status)?;
        self.dispatcher.task_created(&queue_name);
        Ok(task.with_view(view))
    }

    /// The `http_target` of a queue that must exist (NOT_FOUND with the real text otherwise):
    /// from the dispatcher's copy when this node runs the queue (it hears of every change),
    /// else read from the store. A copy a moment old only changes the token a task is shown
    /// with: the dispatcher sends the queue's current one.
    pub(crate) async fn queue_target(&self, queue: &QueueName) -> Result<Option<HttpTarget>, Status> {
        if let Some(known) = self.dispatcher.known_queue(queue) {
            return Ok(known.http_target.clone());
        }
        Ok(self.queue_required(queue).await?.http_target)
    }

    /// A new task of `queue` checked as `CreateTask` checks it, not yet stored. A queue
    /// with a token gives it to the task as the real service does: completed from the
    /// task's URL as sent, and an OAuth token only for a Google API.
    pub(crate) async fn new_task(
        &self,
        queue: &QueueName,
        target: Option<&HttpTarget>,
        spec: TaskSpec,
        now: Timestamp,
    ) -> Result<Task, Status> {
        let mut task = spec.validate(queue, now, || self.generate_id())?;
        self.check_identity(task.http_request.auth.as_ref(), &task.http_request.url).await?;
        if let Some(a) = &self.access {
            a.check_target("http_request.url", &task.http_request.url)?;
        }
        if let Some(auth) = target.and_then(|t| t.auth.clone()) {
            tasklane_core::task::check_oauth_url(Some(&auth), &task.http_request.url)?;
            task.http_request.auth = Some(auth.with_defaults(&task.http_request.url));
        }
        Ok(task)
    }

    /// Store checked tasks of `queue` in one write, so a crash keeps all or none of them;
    /// each succeeds or fails alone otherwise.
    pub(crate) async fn store_tasks(
        &self,
        queue: &QueueName,
        tasks: Vec<Task>,
        now: Timestamp,
    ) -> Vec<Result<Task, Status>> {
        let creates = tasks.into_iter().map(|task| TaskCreate { task, now }).collect();
        let results: Vec<_> =
            self.store.task_create_many(creates).await.into_iter().map(|r| r.map_err(create_status)).collect();
        if results.iter().any(Result::is_ok) {
            self.dispatcher.task_created(queue);
        }
        results
    }

    pub async fn get_task(&self, name: &str, view: TaskView) -> Result<Task, Status> {
        let name = TaskName::parse(name)?;
        match self.store.task_get(&name, self.now()).await.map_err(store_status)? {
            TaskLookup::Found(task) => Ok(task.with_view(view)),
            TaskLookup::Tombstoned => Err(Status::not_found(TASK_GONE)),
            TaskLookup::Missing => Err(Status::not_found(NOT_FOUND)),
        }
    }

    pub async fn list_tasks(
        &self,
        parent: &str,
        requested_page_size: i32,
        page_token: &str,
        view: TaskView,
    ) -> Result<(Vec<Task>, String), Status> {
        let queue = QueueName::parse(parent)?;
        self.queue_required(&queue).await?;
        let limit = page_size("ListTasksRequest", requested_page_size, MAX_TASK_PAGE_SIZE)?;
        let after = match page_token {
            "" => None,
            t => Some(page_token::decode(t)?),
        };
        let tasks = self.store.task_list(TaskList { queue, after, limit }).await.map_err(store_status)?;
        let next = next_page_token(tasks.last().map(|t| t.name.task.clone()));
        Ok((tasks.into_iter().map(|t| t.with_view(view)).collect(), next))
    }

    pub async fn delete_task(&self, name: &str) -> Result<(), Status> {
        let name = TaskName::parse(name)?;
        let now = self.now();
        let job = self
            .store
            .task_delete(TaskDelete { name, tombstone_until: now.saturating_add(self.tombstone_window), now })
            .await
            .map_err(gone_is_not_found)?;
        job.iter().for_each(|job| self.events.job_changed(job));
        Ok(())
    }

    /// `RunTask`: dispatch now, even when the queue is paused or at its limits.
    pub async fn run_task(&self, name: &str, view: TaskView) -> Result<Task, Status> {
        let name = TaskName::parse(name)?;
        let queue = self.queue_required(&name.queue).await?;
        let now = self.now();
        let claimed = self
            .store
            .task_claim_by_name(TaskClaimByName { name, grace: self.dispatcher.lease_grace(), now })
            .await
            .map_err(gone_is_not_found)?;
        // The answer is the task as dispatched, before the worker answers, as the real
        // service shows it: the attempt counted, and of the attempts only the last one's
        // schedule time.
        let mut task = claimed.task.clone();
        task.first_attempt = None;
        task.last_attempt =
            Some(tasklane_core::Attempt { schedule_time: Some(task.schedule_time), ..Default::default() });
        self.dispatcher.run_now(queue, claimed, now);
        Ok(task.with_view(view))
    }
}

/// A numeric id like the ones the real service gives tasks and operations: 63 bits of a
/// process-wide counter and the time, hashed under a random key, so never repeated in this
/// process and not guessable from the one before.
pub(crate) fn new_id(now: Timestamp) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(now.0);
    format!("{}", h.finish() >> 1)
}
