-- tasklane PostgreSQL schema as the first release made it (migration 1). Times are microseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'disabled')),
    max_dispatches_per_second DOUBLE PRECISION NOT NULL,
    max_burst_size INTEGER NOT NULL,
    max_concurrent_dispatches INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    max_retry_duration_us BIGINT,
    min_backoff_us BIGINT NOT NULL,
    max_backoff_us BIGINT NOT NULL,
    max_doublings INTEGER NOT NULL,
    logging_sampling_ratio DOUBLE PRECISION NOT NULL,
    purge_time BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS queues_parent ON queues (parent, name);

-- The hot table: only tasks that still have to run. Finished tasks leave it.
CREATE TABLE IF NOT EXISTS tasks (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'leased')),
    due_at BIGINT NOT NULL,
    lease_id BIGINT NOT NULL DEFAULT 0,
    url TEXT NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('POST', 'GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'OPTIONS')),
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    auth_kind TEXT CHECK (auth_kind IN ('oidc', 'oauth')),
    auth_email TEXT,
    auth_param TEXT,
    schedule_time BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    dispatch_deadline_us BIGINT NOT NULL,
    dispatch_count INTEGER NOT NULL DEFAULT 0,
    response_count INTEGER NOT NULL DEFAULT 0,
    execution_count INTEGER NOT NULL DEFAULT 0,
    last_http_status INTEGER NOT NULL DEFAULT 0,
    first_dispatch_time BIGINT,
    last_schedule_time BIGINT,
    last_dispatch_time BIGINT,
    last_response_time BIGINT,
    last_code INTEGER,
    last_message TEXT,
    UNIQUE (queue, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (queue, due_at);

-- Names of tasks that finished or were deleted, reserved until expires_at.
CREATE TABLE IF NOT EXISTS tombstones (
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (queue, task_id)
);
CREATE INDEX IF NOT EXISTS tombstones_expiry ON tombstones (expires_at);

-- Tasks that gave up, with their last attempt: nothing is lost silently.
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGSERIAL PRIMARY KEY,
    died_at BIGINT NOT NULL,
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    auth_kind TEXT,
    auth_email TEXT,
    auth_param TEXT,
    schedule_time BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    dispatch_deadline_us BIGINT NOT NULL,
    dispatch_count INTEGER NOT NULL,
    response_count INTEGER NOT NULL,
    execution_count INTEGER NOT NULL,
    last_http_status INTEGER NOT NULL,
    first_dispatch_time BIGINT,
    last_schedule_time BIGINT,
    last_dispatch_time BIGINT,
    last_response_time BIGINT,
    last_code INTEGER,
    last_message TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id);

-- Cluster membership and queue ownership: each queue is dispatched by one node at a time.
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS queue_owners (
    queue TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_owners_node ON queue_owners (node_id);

-- Hot tables churn all the time: let autovacuum act on a small fraction of dead rows too.
-- (tasklane also vacuums them itself, as autovacuum looks at a database once a minute.)
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
ALTER TABLE tombstones SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);

-- Jobs: tasks tracked together. Counts change in the same transaction as each task
-- outcome; `seq` numbers the job's events, which copy the job's changing columns.
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    labels TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    policy TEXT NOT NULL CHECK (policy IN ('finish_all', 'fail_fast')),
    callback_url TEXT,
    created_at BIGINT NOT NULL,
    result_ttl_us BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    total BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    percent DOUBLE PRECISION NOT NULL,
    step TEXT NOT NULL,
    step_number INTEGER NOT NULL,
    message TEXT NOT NULL,
    result TEXT,
    error TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    expires_at BIGINT,
    seq BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS job_labels (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX IF NOT EXISTS job_labels_value ON job_labels (key, value);

CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    total BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    percent DOUBLE PRECISION NOT NULL,
    step TEXT NOT NULL,
    step_number INTEGER NOT NULL,
    message TEXT NOT NULL,
    result TEXT,
    error TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (job_id, seq)
);

-- Notifications to jobs' callback URLs, written in the same transaction as what they
-- report and delivered (with retries) by a sender on any node.
CREATE TABLE IF NOT EXISTS callbacks (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    task TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL,
    next_at BIGINT NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS callbacks_job ON callbacks (job_id);

-- Small named documents the API edge keeps (IAM policies, CMEK configs, batch
-- operations, the token signing key); `version` is their etag.
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    version BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX IF NOT EXISTS records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

-- Columns added after the first release, so existing databases gain them too.
ALTER TABLE queues ADD COLUMN IF NOT EXISTS http_target TEXT;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS retry_config TEXT;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS retry_config TEXT;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS job_id TEXT;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS job_id TEXT;
CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id) WHERE job_id IS NOT NULL;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS attempts TEXT;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS attempts TEXT;
ALTER TABLE queues ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'push';
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS tag TEXT;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS env TEXT;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS tag TEXT;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS env TEXT;
CREATE INDEX IF NOT EXISTS tasks_tag ON tasks (queue, tag, due_at) WHERE tag IS NOT NULL;
