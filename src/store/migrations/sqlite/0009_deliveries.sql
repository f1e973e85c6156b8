-- Delivery of synthetic series to the PACS: one row per instance the peer confirmed (status Success or Warning),
-- written only after its C-STORE-RSP arrived. delivery_key is the deliver job's key: a retry of the same job skips
-- the instances already confirmed under it; `ldae synthetic resend` makes a new key and sends everything again.
-- peer: `AET@host:port`; status: the peer's DIMSE status (0 = Success, B000–BFFF and a few others = Warning).

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    synthetic_ref    INTEGER NOT NULL REFERENCES synthetic_scans(id),
    delivery_key     TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    peer             TEXT NOT NULL,
    status           INTEGER NOT NULL,
    at               REAL NOT NULL,
    UNIQUE (delivery_key, peer, sop_instance_uid)
);
CREATE INDEX deliveries_by_synthetic ON deliveries(synthetic_ref);
