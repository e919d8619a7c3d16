-- The web UI's people and sessions.
-- A user is an administrator of one workspace (the platform tenant whose integrations they manage). Only the
-- argon2 hash of the password is kept.
CREATE TABLE web_users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace     TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- Server-side sessions. The cookie carries a random token; only its SHA-256 is stored, so a copy of the database
-- does not let anyone sign in. `idle_expires_at` moves forward on use, `absolute_expires_at` never does.
-- `pending` holds short-lived per-session state (the OAuth `state` of a sign-in in progress) as JSON.
CREATE TABLE web_sessions (
    token_hash          TEXT PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
    csrf_token          TEXT NOT NULL,
    pending             TEXT,
    created_at          TEXT NOT NULL,
    last_seen_at        TEXT NOT NULL,
    idle_expires_at     TEXT NOT NULL,
    absolute_expires_at TEXT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- Flows switched off from the UI. Flows come from the config file; this only remembers which ones an admin
-- paused, so a restart keeps them paused.
CREATE TABLE flow_switches (
    flow       TEXT PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
