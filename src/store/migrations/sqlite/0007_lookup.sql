-- What the researcher look-ups (`ldae similar`, `ldae export`) show beside each embedding.
--
-- Series: SeriesDescription and the acquisition date (AcquisitionDate, else SeriesDate), from the first instance.
-- Studies: the patient's age in years at the study, from PatientAge, or computed at intake from PatientBirthDate
-- and the study date (the birth date itself is not stored).
-- Embeddings: the number of encoding steps the codes were made with.

ALTER TABLE series ADD COLUMN description TEXT;
ALTER TABLE series ADD COLUMN acquisition_date TEXT;
ALTER TABLE studies ADD COLUMN patient_age_years REAL;
ALTER TABLE embeddings ADD COLUMN steps INTEGER;
CREATE INDEX embeddings_by_model ON embeddings(model_id);
