-- Patients, studies, series and the instances (files) that make them up, plus duplicates seen on intake.
-- Times are Unix seconds (REAL). Paths are stored as UTF-8 text (lossy for non-UTF-8 names).

CREATE TABLE patients (
    id          INTEGER PRIMARY KEY,
    patient_id  TEXT NOT NULL UNIQUE,      -- DICOM PatientID (never the name)
    created_at  REAL NOT NULL
);

CREATE TABLE studies (
    id          INTEGER PRIMARY KEY,
    study_uid   TEXT NOT NULL UNIQUE,
    patient_ref INTEGER NOT NULL REFERENCES patients(id),
    study_date  TEXT,
    created_at  REAL NOT NULL
);

-- state: receiving | ready | converted | registered | encoded | stored_without_codes | failed
CREATE TABLE series (
    id               INTEGER PRIMARY KEY,
    series_uid       TEXT NOT NULL UNIQUE,
    study_ref        INTEGER NOT NULL REFERENCES studies(id),
    modality         TEXT,
    drop_folder      TEXT NOT NULL,
    state            TEXT NOT NULL,
    expected_count   INTEGER,
    instance_count   INTEGER NOT NULL DEFAULT 0,
    commit_requested INTEGER NOT NULL DEFAULT 0,
    first_seen_at    REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    ready_at         REAL,
    finished_at      REAL,
    content_key      TEXT,                 -- SHA-256 over the sorted instance hashes when it became ready
    note             TEXT
);
CREATE INDEX series_by_state ON series(state);

CREATE TABLE instances (
    id              INTEGER PRIMARY KEY,
    sop_uid         TEXT NOT NULL UNIQUE,
    series_ref      INTEGER NOT NULL REFERENCES series(id),
    instance_number INTEGER,
    received_path   TEXT NOT NULL,         -- where it arrived
    path            TEXT NOT NULL,         -- where it is now (archive, or received_path)
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    received_at     REAL NOT NULL
);
CREATE INDEX instances_by_series ON instances(series_ref);
CREATE INDEX instances_by_received_path ON instances(received_path);
