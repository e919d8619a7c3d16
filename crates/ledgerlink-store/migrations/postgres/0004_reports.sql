-- Reports flows produce (weekly reconciliations, …), kept so the CLI and the API can show them again.
-- One per (flow, period): a re-run of the same period finds the first report instead of adding a second.
CREATE TABLE reports (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    period     TEXT NOT NULL,
    title      TEXT NOT NULL,
    text       TEXT NOT NULL,
    body       JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (flow, period)
);
CREATE INDEX reports_created ON reports (created_at, id);
