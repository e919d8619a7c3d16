-- Reports flows produce (weekly reconciliations, …), kept so the CLI and the API can show them again.
-- One per (flow, period): a re-run of the same period finds the first report instead of adding a second.
CREATE TABLE reports (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    flow       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    period     TEXT NOT NULL,
    title      TEXT NOT NULL,
    text       TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (flow, period)
);
CREATE INDEX reports_created ON reports (created_at, id);
