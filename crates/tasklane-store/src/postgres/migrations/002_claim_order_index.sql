-- Claims take due tasks by (due_at, id): with id in the index they come in that order
-- without a sort.
DROP INDEX IF EXISTS tasks_due;
CREATE INDEX tasks_due ON tasks (queue, due_at, id);
