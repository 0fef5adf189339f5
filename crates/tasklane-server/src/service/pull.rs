//! Pull queues: workers lease tasks (with long polling), renew their leases while they
//! work, and acknowledge, fail or give back each task, fenced by its lease id. A failure
//! counts as an attempt under the same backoff and give-up rules as a push task; tasks that
//! give up become dead letters; tasks of jobs count toward their jobs.

use std::sync::Arc;
use std::time::Duration;

use tasklane_core::task::PullSpec;
use tasklane_core::{Clock, Queue, QueueKind, QueueName, Status, Task, TaskName, Timestamp};
use tasklane_store::{
    ClaimedTask, Store, TaskCreate, TaskFinish, TaskLease, TaskLookup, TaskOutcome, TaskRelease, TaskRenew,
};

use crate::dispatch::{Dispatcher, JOB_TOKEN_SLACK};
use crate::engine::events::Events;
use crate::jobs::queue_name;
use crate::service::store_status;
use tasklane_core::outcome::{Answer, decide};

pub const MAX_LEASE_TASKS: usize = 1000;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_WAIT: Duration = Duration::from_secs(60);
pub const MAX_CREATE_BATCH: usize = 10_000;
/// How often a long poll looks again while the queue has due tasks it cannot lease.
const RECHECK: Duration = Duration::from_millis(100);

/// A lease request.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub queue: String,
    pub max_tasks: usize,
    pub lease: Duration,
    pub tag: Option<String>,
    pub wait: Duration,
}

/// A leased task, with what the worker needs to report on it.
#[derive(Debug, Clone)]
pub struct Leased {
    pub task: Task,
    pub lease_id: i64,
    pub lease_expires_at: Timestamp,
    pub job_token: Option<String>,
}

/// A task named with the lease a worker holds on it.
#[derive(Debug, Clone)]
pub struct LeaseRef {
    pub name: String,
    pub lease_id: i64,
}

/// What became of a failed task.
#[derive(Debug, Clone, PartialEq)]
pub enum Failed {
    Retry { at: Timestamp },
    DeadLettered,
}

#[derive(Clone)]
pub struct Pull {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    /// Told of job changes; long polls follow its queue activity.
    events: Events,
    tombstone_window: Duration,
    /// Long polls waiting now for a task to come.
    parked: Arc<std::sync::atomic::AtomicUsize>,
}

fn stale(name: &TaskName, lease_id: i64) -> Status {
    Status::failed_precondition(format!(
        "The lease {lease_id} on task {name} is no longer held: it expired and the task was leased again, or it \
         was acknowledged, failed or given back already"
    ))
}

impl Pull {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Dispatcher,
        tombstone_window: Duration,
    ) -> Pull {
        Pull { store, clock, events: dispatcher.events().clone(), dispatcher, tombstone_window, parked: Arc::default() }
    }

    /// How many long polls are waiting now for a task to come (for tests: a create made
    /// after this counts one is sure to exercise the wake-up).
    pub fn parked_polls(&self) -> usize {
        self.parked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The pull queue a request names (a push queue is refused with what to do instead).
    pub async fn queue(&self, queue: &str) -> Result<Queue, Status> {
        let name = queue_name(queue)?;
        let q = self
            .store
            .queue_get(&name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("Queue \"{name}\" was not found.")))?;
        if q.kind != QueueKind::Pull {
            return Err(Status::failed_precondition(format!(
                "Queue \"{name}\" is a push queue: tasklane delivers its tasks over HTTP. Create a pull queue with \
                 POST /v1/queues and \"type\": \"pull\" for workers that lease tasks"
            )));
        }
        Ok(q)
    }

    fn task_name(&self, queue: &QueueName, name: &str) -> Result<TaskName, Status> {
        if name.contains('/') { TaskName::parse(name) } else { queue.task(name.to_string()) }
    }

    /// Create pull tasks; each succeeds or fails alone.
    pub async fn create(&self, queue: &str, specs: Vec<PullSpec>) -> Result<Vec<Result<Task, Status>>, Status> {
        let q = self.queue(queue).await?;
        if specs.len() > MAX_CREATE_BATCH {
            return Err(Status::invalid_argument(format!(
                "tasks has {} entries; one request may create at most {MAX_CREATE_BATCH}",
                specs.len()
            )));
        }
        let now = self.clock.now();
        // Valid tasks go to the store in one call; invalid ones keep their error and place.
        let mut results: Vec<Option<Result<Task, Status>>> = Vec::with_capacity(specs.len());
        let mut creates = Vec::new();
        for spec in specs {
            let id = super::cloud_tasks::new_id(now);
            match spec.validate(&q.name, now, || id) {
                Err(e) => results.push(Some(Err(e))),
                Ok(task) => {
                    results.push(None);
                    creates.push(TaskCreate { task, now });
                }
            }
        }
        let mut created = self.store.task_create_many(creates).await.into_iter();
        let results: Vec<Result<Task, Status>> = results
            .into_iter()
            .map(|r| match r {
                Some(invalid) => invalid,
                None => match created.next() {
                    Some(Ok(task)) => Ok(task),
                    Some(Err(e)) => Err(crate::service::create_status(e)),
                    None => Err(Status::internal("the store answered fewer creates than it was given")),
                },
            })
            .collect();
        self.dispatcher.task_created(&q.name);
        Ok(results)
    }

    /// Lease up to `max_tasks` due tasks; with `wait`, return as soon as any is due.
    pub async fn lease(&self, r: LeaseRequest) -> Result<Vec<Leased>, Status> {
        if r.max_tasks == 0 || r.max_tasks > MAX_LEASE_TASKS {
            return Err(Status::invalid_argument(format!("max_tasks must be between 1 and {MAX_LEASE_TASKS}")));
        }
        if r.lease < Duration::from_secs(1) || r.lease > MAX_LEASE {
            return Err(Status::invalid_argument("lease_duration must be between 1s and 7d"));
        }
        if r.wait > MAX_WAIT {
            return Err(Status::invalid_argument("wait may be at most 60s"));
        }
        let queue = self.queue(&r.queue).await?;
        // Subscribe before the first look, so a create in between still wakes this poll.
        let mut activity = self.events.queue_activity();
        let mut stopping = self.dispatcher.stopping();
        let deadline = self.clock.now().saturating_add(r.wait);
        loop {
            let now = self.clock.now();
            let lease =
                TaskLease { queue: queue.name.clone(), limit: r.max_tasks, lease: r.lease, tag: r.tag.clone(), now };
            let leased = self.store.task_lease(lease).await.map_err(store_status)?;
            // A shutting-down server answers a long poll at once (with nothing, most likely)
            // rather than hold its shutdown for the rest of the wait.
            if !leased.is_empty() || now >= deadline || *stopping.borrow() {
                return self.with_tokens(leased, now, r.lease).await;
            }
            // Sleep until a create wakes this queue, a delayed task or a lease comes due, or the wait ends.
            // Tasks already due that this request did not get (another tag, a paused queue) say
            // nothing about when the next one comes: look again shortly.
            let until = match self.store.task_next_due(&queue.name).await.map_err(store_status)? {
                Some(t) if t > now => t.min(deadline),
                Some(_) => now.saturating_add(RECHECK).min(deadline),
                None => deadline,
            };
            let nap = until.since(now).max(Duration::from_millis(1));
            let name = queue.name.clone();
            let woken = async {
                loop {
                    match activity.recv().await {
                        Ok(q) if q == name => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            self.parked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::timeout(nap, woken) => {}
                _ = stopping.changed() => {}
            }
            self.parked.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn with_tokens(
        &self,
        leased: Vec<ClaimedTask>,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Vec<Leased>, Status> {
        let expires = now.saturating_add(lease);
        let mut out = Vec::with_capacity(leased.len());
        for c in leased {
            let job_token = match &c.task.job_id {
                Some(job) => {
                    self.events.job_changed(job);
                    Some(self.dispatcher.signer().job_token(job, expires.saturating_add(JOB_TOKEN_SLACK)).await?)
                }
                None => None,
            };
            out.push(Leased { task: c.task, lease_id: c.lease_id, lease_expires_at: expires, job_token });
        }
        Ok(out)
    }

    /// Acknowledge: the task is done.
    pub async fn acknowledge(&self, q: &Queue, r: &LeaseRef) -> Result<TaskName, Status> {
        let name = self.task_name(&q.name, &r.name)?;
        let now = self.clock.now();
        let outcome = TaskOutcome::Succeeded { tombstone_until: now.saturating_add(self.tombstone_window) };
        // One store call checks the lease, records the outcome and names the task's job.
        let finish = TaskFinish { name: name.clone(), lease_id: r.lease_id, outcome, now };
        match self.store.task_finish_job(finish).await.map_err(store_status)? {
            None => Err(stale(&name, r.lease_id)),
            Some(job) => {
                if let Some(job) = job {
                    self.events.job_changed(&job);
                }
                Ok(name)
            }
        }
    }

    /// Fail: counts as an attempt; the task is retried by the backoff or gives up.
    pub async fn fail(&self, q: &Queue, r: &LeaseRef, reason: &str) -> Result<(TaskName, Failed), Status> {
        let name = self.task_name(&q.name, &r.name)?;
        let now = self.clock.now();
        let task = match self.store.task_get(&name, now).await.map_err(store_status)? {
            TaskLookup::Found(task) => task,
            _ => return Err(stale(&name, r.lease_id)),
        };
        let reason: String = reason.chars().take(2048).collect();
        let outcome = decide(q, &task, &Answer::failed_by_worker(reason), now, self.tombstone_window);
        let failed = match &outcome {
            TaskOutcome::Retry { retry_at, .. } => Failed::Retry { at: *retry_at },
            _ => Failed::DeadLettered,
        };
        self.finish(&name, r.lease_id, outcome, task.job_id, now).await?;
        // A retry comes due later: long polls re-read when the next task is due.
        self.dispatcher.task_created(&q.name);
        Ok((name, failed))
    }

    /// Record an outcome under the worker's lease; tell the task's job's watchers.
    async fn finish(
        &self,
        name: &TaskName,
        lease_id: i64,
        outcome: TaskOutcome,
        job: Option<String>,
        now: Timestamp,
    ) -> Result<(), Status> {
        let finish = TaskFinish { name: name.clone(), lease_id, outcome, now };
        if !self.store.task_finish(finish).await.map_err(store_status)? {
            return Err(stale(name, lease_id));
        }
        if let Some(job) = job {
            self.events.job_changed(&job);
        }
        Ok(())
    }

    /// Renew: the lease now ends `lease` from now.
    pub async fn renew(&self, q: &Queue, r: &LeaseRef, lease: Duration) -> Result<(TaskName, Timestamp), Status> {
        if lease < Duration::from_secs(1) || lease > MAX_LEASE {
            return Err(Status::invalid_argument("lease_duration must be between 1s and 7d"));
        }
        let name = self.task_name(&q.name, &r.name)?;
        let until = self.clock.now().saturating_add(lease);
        let renew = TaskRenew { name: name.clone(), lease_id: r.lease_id, until };
        if !self.store.task_renew(renew).await.map_err(store_status)? {
            return Err(stale(&name, r.lease_id));
        }
        Ok((name, until))
    }

    /// Give the task back now, without counting the attempt.
    pub async fn cancel_lease(&self, q: &Queue, r: &LeaseRef) -> Result<TaskName, Status> {
        let name = self.task_name(&q.name, &r.name)?;
        let release = TaskRelease { name: name.clone(), lease_id: r.lease_id, now: self.clock.now() };
        if !self.store.task_release(release).await.map_err(store_status)? {
            return Err(stale(&name, r.lease_id));
        }
        self.dispatcher.task_created(&q.name);
        Ok(name)
    }
}
