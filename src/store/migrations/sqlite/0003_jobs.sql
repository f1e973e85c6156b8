-- The persistent job queue. state: pending | running | done | dead | cancelled.
-- A pending job with next_at in the future is waiting for a retry (last_error says why).
-- `key` names the job by its content (kind + input hashes), so enqueueing the same work twice is a no-op.

CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL UNIQUE,
    series_ref  INTEGER REFERENCES series(id),
    payload     TEXT NOT NULL DEFAULT '{}',
    state       TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL NOT NULL,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX jobs_runnable ON jobs(state, next_at);
CREATE INDEX jobs_by_series ON jobs(series_ref);
