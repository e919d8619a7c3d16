-- The platform connector (ledgerlink-platform): a host platform's workspaces, tokens, settings and pushed
-- records as JSON documents, plus its own durable task queue (sync to QuickBooks, outgoing webhooks) and the
-- record of every task attempt. Timestamps are fixed-width RFC 3339 text, as in 0001.

-- One document per (workspace, kind, id). `rev` is bumped on every write (compare-and-swap for updates).
-- Workspaces themselves are documents of kind `workspace` in workspace ''; token hashes are ids of kind `token`.
CREATE TABLE platform_docs (
    workspace_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    id           TEXT NOT NULL,
    body         TEXT NOT NULL,
    rev          INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, kind, id)
);
-- Look-ups of an id across workspaces (a bearer token's hash names its workspace).
CREATE INDEX platform_docs_kind_id ON platform_docs (kind, id);

CREATE TABLE platform_tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    -- Unique: enqueueing the same work twice is a no-op.
    dedupe_key   TEXT NOT NULL UNIQUE,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead', 'paused')),
    run_at       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  TEXT,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX platform_tasks_due ON platform_tasks (status, run_at);
CREATE INDEX platform_tasks_workspace ON platform_tasks (workspace_id, kind, id);

CREATE TABLE platform_task_attempts (
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          TEXT NOT NULL,
    ok          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
