-- Gap filling: synthetic timepoints and what the DICOM writer needs from their sources.
--
-- synthetic_scans: content_key names the fill by its inputs (both embeddings, target date, model digest, steps,
-- seed), so a rerun finds the row instead of adding one. state: planned | written | delivered | failed |
-- superseded (a newer acquired scan retired it; the row and its files stay). The DICOM output's study and
-- series UIDs, its SOP class and folder are recorded when written.
-- series.snapshot: the JSON snapshot of the patient/study/equipment/frame-of-reference attributes and geometry
-- of an acquired series, taken at intake, so writing works after the source files are gone.

ALTER TABLE synthetic_scans ADD COLUMN content_key TEXT;
ALTER TABLE synthetic_scans ADD COLUMN state TEXT NOT NULL DEFAULT 'written';
ALTER TABLE synthetic_scans ADD COLUMN state_note TEXT;
ALTER TABLE synthetic_scans ADD COLUMN model_id TEXT;
ALTER TABLE synthetic_scans ADD COLUMN model_version TEXT;
ALTER TABLE synthetic_scans ADD COLUMN steps INTEGER;
ALTER TABLE synthetic_scans ADD COLUMN seed INTEGER;
ALTER TABLE synthetic_scans ADD COLUMN dicom_study_uid TEXT;
ALTER TABLE synthetic_scans ADD COLUMN sop_class TEXT;
ALTER TABLE synthetic_scans ADD COLUMN dicom_dir TEXT;
ALTER TABLE synthetic_scans ADD COLUMN updated_at REAL;
CREATE UNIQUE INDEX synthetic_by_content ON synthetic_scans(content_key) WHERE content_key IS NOT NULL;
CREATE INDEX synthetic_by_patient ON synthetic_scans(patient_ref);

ALTER TABLE series ADD COLUMN snapshot TEXT;
