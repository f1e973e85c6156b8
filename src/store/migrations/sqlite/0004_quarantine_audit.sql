-- Quarantined files and the audit trail.
-- quarantine.state: held (moved, or being moved, into quarantine/<reason>/) | requeued | purged.

CREATE TABLE quarantine (
    id            INTEGER PRIMARY KEY,
    original_path TEXT NOT NULL,
    path          TEXT NOT NULL,
    reason        TEXT NOT NULL,           -- short slug, also the folder name
    detail        TEXT NOT NULL,           -- one line: what was wrong
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    sha256        TEXT,
    state         TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX quarantine_by_original ON quarantine(original_path);

-- A second file carrying an SOP Instance UID already stored (identical or not); the file itself is quarantined.
CREATE TABLE duplicates (
    id             INTEGER PRIMARY KEY,
    sop_uid        TEXT NOT NULL,
    instance_ref   INTEGER NOT NULL REFERENCES instances(id),
    quarantine_ref INTEGER NOT NULL REFERENCES quarantine(id),
    sha256         TEXT NOT NULL,
    identical      INTEGER NOT NULL,
    received_at    REAL NOT NULL
);

CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,                 -- a UID, a job id or a path
    detail  TEXT NOT NULL DEFAULT '{}'     -- JSON
);
CREATE INDEX audit_by_at ON audit_events(at);
