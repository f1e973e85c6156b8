-- Leased claims: several `ldae serve` processes share the queue. A claim records the claiming process's owner
-- token and `lease_until` (seconds since the epoch); the owner's heartbeat moves `lease_until` forward
-- (`heartbeat_at` = its last beat). A running job whose lease has run out goes back to pending (counted in
-- `crashes`), and a result is recorded only by the owner of an unexpired lease.
-- Rows running before this migration have no lease: they count as expired (the process that ran them is gone).

ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;
CREATE INDEX jobs_leases ON jobs(state, lease_until);
CREATE INDEX jobs_by_owner ON jobs(owner);
