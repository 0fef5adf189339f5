-- What the previous release's code added to a new embedded database after its schema file
-- (migration 1): columns SQLite cannot add with IF NOT EXISTS, and their indexes.
ALTER TABLE queues ADD COLUMN http_target TEXT;
ALTER TABLE tasks ADD COLUMN retry_config TEXT;
ALTER TABLE dead_letters ADD COLUMN retry_config TEXT;
ALTER TABLE tasks ADD COLUMN job_id TEXT;
ALTER TABLE dead_letters ADD COLUMN job_id TEXT;
ALTER TABLE tasks ADD COLUMN attempts TEXT;
ALTER TABLE dead_letters ADD COLUMN attempts TEXT;
ALTER TABLE queues ADD COLUMN kind TEXT NOT NULL DEFAULT 'push';
ALTER TABLE tasks ADD COLUMN tag TEXT;
ALTER TABLE tasks ADD COLUMN env TEXT;
ALTER TABLE dead_letters ADD COLUMN tag TEXT;
ALTER TABLE dead_letters ADD COLUMN env TEXT;
ALTER TABLE tasks ADD COLUMN body_apart INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS tasks_job ON tasks (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_tag ON tasks (queue, tag, due_at) WHERE tag IS NOT NULL;
CREATE TABLE IF NOT EXISTS task_bodies (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS task_bodies_go_with_their_task AFTER DELETE ON tasks
WHEN old.body_apart = 1 BEGIN DELETE FROM task_bodies WHERE id = old.id; END;
