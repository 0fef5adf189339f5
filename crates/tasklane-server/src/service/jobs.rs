//! The jobs service: create a job of one task or a batch, read and list jobs, cancel them,
//! take workers' reports, and read a job's events. Transport-independent, like `CloudTasks`;
//! `v1.rs` is its HTTP edge.

use std::sync::Arc;
use std::time::Duration;

use tasklane_core::job::{self, FailurePolicy, Job, JobStatus, Progress};
use tasklane_core::retry::RetrySpec;
use tasklane_core::task::{PullSpec, TaskSpec};
use tasklane_core::{Clock, QueueKind, QueueName, Status, Timestamp};
use tasklane_store::{JobCreate, JobEvent, JobList, JobReport, JobReportKind, Store, StoreError};

use crate::dispatch::Dispatcher;
use crate::engine::events::Events;
use crate::page_token;
use crate::service::store_status;

pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

/// One task of a job: an HTTP task for a push queue, or a payload for a pull queue.
#[derive(Debug, Clone)]
pub enum JobTask {
    Push(TaskSpec),
    Pull(PullSpec),
}

/// A job as a caller asked for it.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    pub queue: String,
    pub tasks: Vec<JobTask>,
    pub labels: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub result_ttl: Option<Duration>,
    pub policy: FailurePolicy,
    /// Retry settings for every task of the job, replacing the queue's.
    pub retry: Option<RetrySpec>,
    /// Where to POST a notification when the job finishes or one of its tasks dead-letters.
    pub callback_url: Option<String>,
}

/// Filters of a job list, as a caller wrote them.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub queue: Option<String>,
    pub label: Option<(String, String)>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    pub page_size: usize,
    pub page_token: String,
}

/// What a worker reports, and with which token.
pub struct WorkerReport {
    pub job: String,
    pub token: Option<String>,
    pub kind: JobReportKind,
}

#[derive(Clone)]
pub struct Jobs {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    /// Told of every change of a job; streams follow it.
    events: Events,
    /// Which identities job tasks may use; `None`: any.
    access: Option<Arc<crate::access::Access>>,
    /// One permit per open event stream.
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
}

/// Event streams open at once by default (each holds a connection and a task).
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 1024;

/// A queue named in full, or by its id in the default project and location.
pub fn queue_name(s: &str) -> Result<QueueName, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("queue is required"));
    }
    if s.contains('/') {
        return QueueName::parse(s);
    }
    QueueName::parse(&format!("projects/local/locations/local/queues/{s}"))
}

fn new_job_id() -> Result<String, Status> {
    let bytes: [u8; 10] = crate::engine::random_bytes("a job id")?;
    Ok(format!("job_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn not_found(e: StoreError) -> Status {
    match e {
        StoreError::QueueNotFound => Status::failed_precondition("Queue does not exist."),
        other => store_status(other),
    }
}

impl Jobs {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, dispatcher: Dispatcher) -> Jobs {
        Jobs {
            store,
            clock,
            events: dispatcher.events().clone(),
            dispatcher,
            access: None,
            streams: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_EVENT_STREAMS)),
            max_streams: DEFAULT_MAX_EVENT_STREAMS,
        }
    }

    /// Allow at most `n` event streams open at once.
    pub fn with_stream_limit(mut self, n: usize) -> Self {
        self.streams = Arc::new(tokio::sync::Semaphore::new(n));
        self.max_streams = n;
        self
    }

    /// A place for one more event stream, held until the stream ends.
    pub fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::new(
                tasklane_core::Code::ResourceExhausted,
                format!(
                    "{} event streams are open, the most this server allows; close one, or raise --max-event-streams",
                    self.max_streams
                ),
            )
        })
    }

    /// Check the identities job tasks ask tokens for against `access`.
    pub fn with_access(mut self, access: Arc<crate::access::Access>) -> Self {
        self.access = Some(access);
        self
    }

    /// Create a job and its tasks, all or nothing. Returns the job and whether it already
    /// existed (same idempotency key).
    pub async fn create(&self, spec: JobSpec) -> Result<(Job, bool), Status> {
        let queue = queue_name(&spec.queue)?;
        if spec.tasks.is_empty() {
            return Err(Status::invalid_argument("a job needs a task, or tasks with at least one"));
        }
        if spec.tasks.len() > job::MAX_BATCH_TASKS {
            return Err(Status::invalid_argument(format!(
                "tasks has {} entries; a job may have at most {}",
                spec.tasks.len(),
                job::MAX_BATCH_TASKS
            )));
        }
        job::check_labels(&spec.labels)?;
        if let Some(access) = &self.access {
            for t in &spec.tasks {
                if let JobTask::Push(t) = t {
                    access.check_identity(t.auth.as_ref(), &t.url).await?;
                    access.check_target("url", &t.url)?;
                }
            }
            if let Some(url) = &spec.callback_url {
                access.check_target("callback_url", url)?;
            }
        }
        if let Some(key) = &spec.idempotency_key
            && (key.is_empty() || key.len() > 200)
        {
            return Err(Status::invalid_argument("idempotency_key must be 1 to 200 characters"));
        }
        let result_ttl = spec.result_ttl.unwrap_or(job::DEFAULT_RESULT_TTL);
        if result_ttl.is_zero() || result_ttl > job::MAX_RESULT_TTL {
            return Err(Status::invalid_argument("result_ttl must be more than 0 and at most 30 days"));
        }
        let retry_config = spec.retry.as_ref().map(RetrySpec::resolve).transpose()?;
        let kind = match self.store.queue_get(&queue).await.map_err(store_status)? {
            Some(q) => q.kind,
            None => return Err(Status::failed_precondition("Queue does not exist.")),
        };
        if let Some(url) = &spec.callback_url {
            crate::callbacks::check_url(url)?;
        }
        let id = new_job_id()?;
        let now = self.clock.now();
        let mut tasks = Vec::with_capacity(spec.tasks.len());
        for (i, t) in spec.tasks.into_iter().enumerate() {
            let generated = || format!("{id}-{i}");
            let validated = match (t, kind) {
                (JobTask::Push(t), QueueKind::Push) => t.validate(&queue, now, generated),
                (JobTask::Pull(t), QueueKind::Pull) => t.validate(&queue, now, generated),
                (JobTask::Push(_), QueueKind::Pull) => Err(Status::invalid_argument(format!(
                    "{queue} is a pull queue: its tasks have a payload for the workers that lease them, not a url"
                ))),
                (JobTask::Pull(_), QueueKind::Push) => Err(Status::invalid_argument(format!(
                    "{queue} is a push queue: its tasks have a url to deliver to, not a payload"
                ))),
            };
            let mut task = validated.map_err(|e| Status::new(e.code, format!("tasks[{i}]: {}", e.message)))?;
            task.job_id = Some(id.clone());
            if task.retry_config.is_none() {
                task.retry_config = retry_config;
            }
            tasks.push(task);
        }
        let job = Job {
            id,
            queue: queue.clone(),
            status: JobStatus::Pending,
            labels: spec.labels,
            idempotency_key: spec.idempotency_key,
            policy: spec.policy,
            total: tasks.len() as i64,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            running: 0,
            progress: Progress::default(),
            result: None,
            error: None,
            callback_url: spec.callback_url,
            created_at: now,
            started_at: None,
            finished_at: None,
            result_ttl,
        };
        let created = self.store.job_create(JobCreate { job, tasks, now }).await.map_err(|e| match e {
            StoreError::TaskAlreadyExists => Status::already_exists("A task of this job has a name that is taken."),
            other => not_found(other),
        })?;
        if !created.existed {
            self.dispatcher.task_created(&queue);
            self.events.job_changed(&created.job.id);
        }
        Ok((created.job, created.existed))
    }

    pub async fn get(&self, id: &str) -> Result<Job, Status> {
        self.store
            .job_get(id, self.clock.now())
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("Job \"{id}\" was not found; it may have expired.")))
    }

    pub async fn list(&self, q: JobQuery) -> Result<(Vec<Job>, String), Status> {
        let limit = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match q.page_token.as_str() {
            "" => None,
            t => {
                let raw = page_token::decode(t)?;
                let (at, id) = raw.split_once('/').ok_or_else(page_token::invalid)?;
                Some((Timestamp(at.parse().map_err(|_| page_token::invalid())?), id.to_string()))
            }
        };
        let queue = q.queue.as_deref().map(queue_name).transpose()?;
        let mut jobs = self
            .store
            .job_list(JobList {
                status: q.status,
                queue,
                label: q.label,
                created_after: q.created_after,
                created_before: q.created_before,
                after,
                limit: limit + 1,
                now: self.clock.now(),
            })
            .await
            .map_err(store_status)?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| page_token::encode(&format!("{}/{}", j.created_at.0, j.id))).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((jobs, next))
    }

    /// The job's callbacks and how their delivery went.
    pub async fn callbacks(&self, id: &str) -> Result<Vec<tasklane_store::Callback>, Status> {
        self.store.callback_list(id).await.map_err(store_status)
    }

    pub async fn cancel(&self, id: &str) -> Result<Job, Status> {
        let job = self.store.job_cancel(id, self.clock.now()).await.map_err(store_status)?;
        self.events.job_changed(id);
        Ok(job)
    }

    /// A worker's report, checked against the token its task was delivered with.
    pub async fn report(&self, r: WorkerReport) -> Result<Job, Status> {
        let token = r.token.as_deref().unwrap_or("");
        self.dispatcher.signer().verify_job_token(&r.job, token).await?;
        match &r.kind {
            JobReportKind::Progress { progress, .. } => job::check_progress(&Progress::default(), progress, true)?,
            JobReportKind::Result(result) if result.len() > job::MAX_RESULT_BYTES => {
                return Err(Status::invalid_argument(format!(
                    "result is {} bytes; it may be at most {}",
                    result.len(),
                    job::MAX_RESULT_BYTES
                )));
            }
            JobReportKind::Fail(error) if error.len() > job::MAX_MESSAGE_BYTES => {
                return Err(Status::invalid_argument(format!("error is longer than {} bytes", job::MAX_MESSAGE_BYTES)));
            }
            _ => {}
        }
        let job = self
            .store
            .job_report(JobReport { id: r.job.clone(), kind: r.kind, now: self.clock.now() })
            .await
            .map_err(store_status)?;
        self.events.job_changed(&r.job);
        Ok(job)
    }

    pub async fn events(&self, id: &str, after_seq: i64, limit: usize) -> Result<Vec<JobEvent>, Status> {
        self.store.job_events(id, after_seq, limit).await.map_err(store_status)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.events.job_changes()
    }
}
