-- ledgerlink store, SQLite backend.
-- Timestamps are TEXT in RFC 3339 UTC with a fixed width (%Y-%m-%dT%H:%M:%S.ffffffZ), so that comparing the
-- text compares the instants. JSON is TEXT.

CREATE TABLE connections (
    name                TEXT PRIMARY KEY NOT NULL,
    system              TEXT NOT NULL,
    config              TEXT NOT NULL,
    -- Sealed with the master key (v1:base64(nonce || ciphertext)); never plaintext.
    credentials         TEXT NOT NULL,
    credentials_version INTEGER NOT NULL DEFAULT 1,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    flow            TEXT,
    connection      TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead', 'parked')),
    run_at          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    last_error      TEXT,
    review_id       INTEGER,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX jobs_status_run_at ON jobs (status, run_at);
CREATE INDEX jobs_status_lease_until ON jobs (status, lease_until);
CREATE INDEX jobs_flow ON jobs (flow, id);

CREATE TABLE links (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    a_connection  TEXT NOT NULL,
    a_object      TEXT NOT NULL,
    a_id          TEXT NOT NULL,
    b_connection  TEXT NOT NULL,
    b_object      TEXT NOT NULL,
    b_id          TEXT NOT NULL,
    a_version     TEXT,
    b_version     TEXT,
    a_hash        TEXT,
    b_hash        TEXT,
    flow          TEXT,
    updated_at    TEXT NOT NULL,
    UNIQUE (a_connection, a_object, a_id, b_connection, b_object)
);
-- The unique constraint above serves look-ups from the a-side; this one serves the b-side.
CREATE INDEX links_b_side ON links (b_connection, b_object, b_id, a_connection, a_object);

CREATE TABLE write_intents (
    key          TEXT PRIMARY KEY NOT NULL,
    flow         TEXT NOT NULL,
    job_id       INTEGER,
    connection   TEXT NOT NULL,
    object       TEXT NOT NULL,
    action       TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    result_id    TEXT,
    response     TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    completed_at TEXT
);

CREATE TABLE change_cursors (
    connection TEXT NOT NULL,
    object     TEXT NOT NULL,
    flow       TEXT NOT NULL,
    position   TEXT NOT NULL,
    seen       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (connection, object, flow)
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    flow        TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT
);
CREATE INDEX runs_flow_started ON runs (flow, started_at);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    flow       TEXT,
    job_id     INTEGER,
    connection TEXT NOT NULL,
    object     TEXT NOT NULL,
    record_id  TEXT,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    before     TEXT,
    after      TEXT,
    error      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_record ON audit_log (connection, object, record_id);
CREATE INDEX audit_log_flow ON audit_log (flow, at);

CREATE TABLE review_items (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    flow               TEXT,
    job_id             INTEGER,
    kind               TEXT NOT NULL,
    reason             TEXT NOT NULL,
    subject_connection TEXT,
    subject_object     TEXT,
    subject_id         TEXT,
    details            TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution         TEXT,
    created_at         TEXT NOT NULL,
    resolved_at        TEXT
);
CREATE INDEX review_items_status ON review_items (status, id);
