-- Named leases: at most one owner per name until `held_until`; an expired lease may be taken over by anyone.
-- `connection:<name>` leases a connection to one worker; `refresh:<name>` serialises a connection's token
-- refresh across processes; `worker:<id>` is a live worker's heartbeat (so workers can share connections fairly).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    held_until  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX leases_owner ON leases (owner);

-- Workers holding connection leases ask which connections have due jobs.
CREATE INDEX jobs_connection_status ON jobs (connection, status, run_at);
