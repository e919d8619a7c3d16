-- ledgerlink store, PostgreSQL backend. Timestamps are TIMESTAMPTZ, JSON is JSONB.

CREATE TABLE connections (
    name                TEXT PRIMARY KEY,
    system              TEXT NOT NULL,
    config              JSONB NOT NULL,
    -- Sealed with the master key (v1:base64(nonce || ciphertext)); never plaintext.
    credentials         TEXT NOT NULL,
    credentials_version BIGINT NOT NULL DEFAULT 1,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    flow            TEXT,
    connection      TEXT,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'dead', 'parked')),
    run_at          TIMESTAMPTZ NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    review_id       BIGINT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_status_run_at ON jobs (status, run_at);
CREATE INDEX jobs_running_lease_until ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_flow ON jobs (flow, id);

CREATE TABLE links (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (a_connection, a_object, a_id, b_connection, b_object)
);
-- The unique constraint above serves look-ups from the a-side; this one serves the b-side.
CREATE INDEX links_b_side ON links (b_connection, b_object, b_id, a_connection, a_object);

CREATE TABLE write_intents (
    key          TEXT PRIMARY KEY,
    flow         TEXT NOT NULL,
    job_id       BIGINT,
    connection   TEXT NOT NULL,
    object       TEXT NOT NULL,
    action       TEXT NOT NULL,
    payload      JSONB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'done')),
    result_id    TEXT,
    response     JSONB,
    attempts     INTEGER NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ
);

CREATE TABLE change_cursors (
    connection TEXT NOT NULL,
    object     TEXT NOT NULL,
    flow       TEXT NOT NULL,
    position   TIMESTAMPTZ NOT NULL,
    seen       JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (connection, object, flow)
);

CREATE TABLE runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow        TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome     JSONB
);
CREATE INDEX runs_flow_started ON runs (flow, started_at);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    flow       TEXT,
    job_id     BIGINT,
    connection TEXT NOT NULL,
    object     TEXT NOT NULL,
    record_id  TEXT,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    before     JSONB,
    after      JSONB,
    error      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_record ON audit_log (connection, object, record_id);
CREATE INDEX audit_log_flow ON audit_log (flow, at);

CREATE TABLE review_items (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow               TEXT,
    job_id             BIGINT,
    kind               TEXT NOT NULL,
    reason             TEXT NOT NULL,
    subject_connection TEXT,
    subject_object     TEXT,
    subject_id         TEXT,
    details            JSONB NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution         JSONB,
    created_at         TIMESTAMPTZ NOT NULL,
    resolved_at        TIMESTAMPTZ
);
CREATE INDEX review_items_status ON review_items (status, id);
