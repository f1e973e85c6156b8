-- Leased claims (SQLite's 0010_leases): the claiming process's owner token, the lease's end and the owner's
-- last heartbeat (seconds since the epoch). See ../sqlite/0010_leases.sql.

ALTER TABLE jobs ADD COLUMN owner text;
ALTER TABLE jobs ADD COLUMN lease_until double precision;
ALTER TABLE jobs ADD COLUMN heartbeat_at double precision;
CREATE INDEX jobs_leases ON jobs(state, lease_until);
CREATE INDEX jobs_by_owner ON jobs(owner);
