-- Keys that follow content, series selection and the QC gate, patients keyed properly.
--
-- Patients: keyed by (PatientID, IssuerOfPatientID), so one ID from two issuers is two patients; files without a
-- PatientID get a patient of their own keyed by the StudyInstanceUID (marked as such), never a shared "(none)".
-- patient_key is 'id:' || issuer || '\' || PatientID (a backslash cannot occur in either, both are LO), or
-- 'study:' || StudyInstanceUID. The table is rebuilt (the old UNIQUE (patient_id) must go); the migration runner
-- switches foreign keys off around it and checks them before committing.
--
-- Series states added: skipped (not selected by [select]: converted and stored, not registered; the note names
-- the rule) and needs_review (registered, but the [qc] gate stopped it before encoding; the note says why).

CREATE TABLE patients_new (
    id          INTEGER PRIMARY KEY,
    patient_key TEXT NOT NULL UNIQUE,
    patient_id  TEXT,                      -- DICOM PatientID (never the name); NULL when the files carry none
    issuer      TEXT,                      -- IssuerOfPatientID, when given
    created_at  REAL NOT NULL
);

INSERT INTO patients_new (id, patient_key, patient_id, issuer, created_at)
    SELECT id, 'id:\' || patient_id, patient_id, NULL, created_at FROM patients WHERE patient_id <> '(none)';

-- The old shared "(none)" patient is split: one patient per study it held.
INSERT INTO patients_new (patient_key, patient_id, issuer, created_at)
    SELECT 'study:' || st.study_uid, NULL, NULL, st.created_at
    FROM studies st JOIN patients p ON p.id = st.patient_ref WHERE p.patient_id = '(none)';
UPDATE studies SET patient_ref = (SELECT n.id FROM patients_new n WHERE n.patient_key = 'study:' || studies.study_uid)
    WHERE patient_ref IN (SELECT id FROM patients WHERE patient_id = '(none)');
-- Synthetic scans cannot be split by study; should any name the old "(none)" row, it stays, marked legacy.
INSERT INTO patients_new (id, patient_key, patient_id, issuer, created_at)
    SELECT id, 'legacy:(none)', NULL, NULL, created_at FROM patients
    WHERE patient_id = '(none)' AND EXISTS (SELECT 1 FROM synthetic_scans s WHERE s.patient_ref = patients.id);

DROP TABLE patients;
ALTER TABLE patients_new RENAME TO patients;

-- Volumes: content_key is now the volume key (series content key + converter version + [convert] config, as
-- 0002 describes it); series_key is the series content key the volume was made from.
ALTER TABLE volumes ADD COLUMN series_key TEXT;
UPDATE volumes SET series_key = content_key;

-- Registrations: the numbers the QC gate judged (final metric, fraction of the template brain mask inside the
-- scan's field of view).
ALTER TABLE registrations ADD COLUMN metric REAL;
ALTER TABLE registrations ADD COLUMN brain_coverage REAL;
