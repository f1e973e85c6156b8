-- What a crash can leave half done, so that the next start finishes or refuses it instead of repeating it.

-- A file whose header is being parsed: the row is committed before the parse starts and deleted when it ends.
-- A row found on start means the process died during that parse (a poison pill): `crashes` counts such deaths,
-- and at `intake.max_parse_crashes` the file is quarantined (`crashed_parser`) instead of being read again.
CREATE TABLE parsing (
    path        TEXT PRIMARY KEY,
    drop_folder TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    crashes     INTEGER NOT NULL DEFAULT 0
);

-- quarantine.state gains `requeuing`: the operator asked for it back; the move to `requeue_to` may not have
-- happened yet (it is finished, and the row closed as `requeued`, by the next `ldae serve` or intake).
ALTER TABLE quarantine ADD COLUMN requeue_to TEXT;

-- How many times the process died while this job was running (a stage that aborts the process): at
-- `jobs.max_crashes` the job is dead-lettered on start instead of being run again.
ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
