-- Named leases: at most one owner per name until `held_until`; an expired lease may be taken over by anyone.
-- `connection:<name>` leases a connection to one worker; `refresh:<name>` serialises a connection's token
-- refresh; `worker:<id>` is a live worker's heartbeat. Timestamps are fixed-width RFC 3339 text, as in 0001.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    held_until  TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);
CREATE INDEX leases_owner ON leases (owner);

CREATE INDEX jobs_connection_status ON jobs (connection, status, run_at);
