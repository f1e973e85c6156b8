-- What the pipeline produced: volumes (convert), registrations and model inputs (preprocess),
-- embeddings (encode) and synthetic scans (gap filling). Each row is keyed by the content it came from.

CREATE TABLE volumes (
    id          INTEGER PRIMARY KEY,
    series_ref  INTEGER NOT NULL REFERENCES series(id),
    content_key TEXT NOT NULL,             -- the series content key + converter version and config
    file_stem   TEXT NOT NULL,
    path        TEXT NOT NULL,
    sidecar     TEXT,
    sha256      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    UNIQUE (content_key, file_stem)
);

CREATE TABLE registrations (
    id               INTEGER PRIMARY KEY,
    volume_ref       INTEGER NOT NULL REFERENCES volumes(id),
    preprocess_hash  TEXT NOT NULL,        -- hash of the preprocessing config + template
    transform_path   TEXT NOT NULL,
    model_input_path TEXT NOT NULL,
    created_at       REAL NOT NULL,
    UNIQUE (volume_ref, preprocess_hash)
);

CREATE TABLE embeddings (
    id               INTEGER PRIMARY KEY,
    registration_ref INTEGER NOT NULL REFERENCES registrations(id),
    model_id         TEXT NOT NULL,
    model_version    TEXT NOT NULL,
    preprocess_hash  TEXT NOT NULL,
    path             TEXT NOT NULL,        -- codes file (y_sem, x_T, latent)
    y_sem            BLOB,                 -- little-endian f32, for similarity look-ups
    created_at       REAL NOT NULL,
    UNIQUE (registration_ref, model_id, model_version)
);

CREATE TABLE synthetic_scans (
    id             INTEGER PRIMARY KEY,
    patient_ref    INTEGER NOT NULL REFERENCES patients(id),
    from_embedding INTEGER REFERENCES embeddings(id),
    to_embedding   INTEGER REFERENCES embeddings(id),
    alpha          REAL,
    target_date    TEXT,
    path           TEXT NOT NULL,
    dicom_series_uid TEXT,
    created_at     REAL NOT NULL
);
