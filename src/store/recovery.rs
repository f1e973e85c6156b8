//! What a crash can leave half done, recorded so the next start finishes or refuses it instead of repeating it:
//! files in flight through the header parser (poison pills), quarantine requeues between "move back" and "close
//! the row", instance files moved by a stage whose job was cancelled; and the durable barrier that every
//! destructive file step waits for.

use std::path::Path;

use super::sql::{params, Exec, SqlError, Tx};

use super::intake::ArrivedFile;
use super::{audit, now, path_text, Store, StoreError};

/// A file that was being parsed when the process died.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseInFlight {
    pub file: ArrivedFile,
    /// Deaths during its parse, this one included.
    pub crashes: i64,
}

impl Store {
    /// Record that the header of `f` is about to be parsed (committed before the parse starts). A row left from
    /// an earlier death keeps its crash count.
    pub fn parse_begin(&self, f: &ArrivedFile) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO parsing (path, drop_folder, size, mtime_ns, sha256, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (path) DO UPDATE SET drop_folder = ?2, size = ?3, mtime_ns = ?4, sha256 = ?5, started_at = ?6",
            &params![path_text(&f.path), path_text(&f.drop_folder), f.size as i64, f.mtime_ns, f.sha256, now()],
        )?;
        Ok(())
    }

    /// The parse of the file at `path` ended (whatever its outcome).
    pub fn parse_end(&self, path: &Path) -> Result<(), StoreError> {
        self.lock().execute("DELETE FROM parsing WHERE path = ?1", &params![path_text(path)])?;
        Ok(())
    }

    /// On start: every file that was being parsed when the process died, with its death count incremented.
    pub fn parses_interrupted(&self) -> Result<Vec<ParseInFlight>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        tx.execute("UPDATE parsing SET crashes = crashes + 1", &[])?;
        let mut rows =
            tx.query_map("SELECT path, drop_folder, size, mtime_ns, sha256, crashes FROM parsing", &[], |r| {
                Ok::<_, SqlError>(ParseInFlight {
                    file: ArrivedFile {
                        path: r.get::<String>(0)?.into(),
                        drop_folder: r.get::<String>(1)?.into(),
                        size: r.get::<i64>(2)?.max(0) as u64,
                        mtime_ns: r.get(3)?,
                        sha256: r.get(4)?,
                    },
                    crashes: r.get(5)?,
                })
            })?;
        // Byte order of the paths, whatever the backend's collation.
        rows.sort_by(|a, b| a.file.path.as_os_str().cmp(b.file.path.as_os_str()));
        tx.commit()?;
        Ok(rows)
    }

    /// Make every commit so far durable (one `synchronous = FULL` commit of an audit event): called right before
    /// a destructive file step, so that what the step relies on (a converted series, a quarantine row) cannot
    /// roll back in a power loss after the files are gone.
    pub fn durable_barrier(&self, why: &str, subject: &str) -> Result<(), StoreError> {
        self.lock().durably(|tx| audit(tx, why, subject, &serde_json::json!({})))
    }

    /// An instance file now lives at `path` (moved to the archive; `""`: deleted). Recorded right after each
    /// move by the stage itself, so it holds even when the job that moved it is cancelled or fails later.
    pub fn instance_moved(&self, instance_id: i64, path: &str) -> Result<(), StoreError> {
        self.lock().execute("UPDATE instances SET path = ?2 WHERE id = ?1", &params![instance_id, path])?;
        Ok(())
    }

    /// `ldae quarantine requeue`, step 1: durably mark a held entry `requeuing` towards `dest` (before the move,
    /// so that a crash after it is finished as a requeue, never mistaken for an unfinished quarantine move).
    pub fn quarantine_begin_requeue(&self, id: i64, dest: &Path) -> Result<(), StoreError> {
        self.lock().durably(|tx| {
            let n = tx.execute(
                "UPDATE quarantine SET state = 'requeuing', requeue_to = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'held'",
                &params![id, path_text(dest), now()],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "quarantine entry {id} is not held (already requeued or purged)"
                )));
            }
            audit(tx, "quarantine_requeuing", &id.to_string(), &serde_json::json!({}))
        })
    }

    /// Requeues begun but not closed: (id, held path, destination).
    pub fn requeues_unfinished(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            "SELECT id, path, COALESCE(requeue_to, '') FROM quarantine WHERE state = 'requeuing' ORDER BY id",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// A file arrived at `path`: close a requeue that moved it there (returns its id, if any).
    pub fn requeue_landed(&self, path: &Path) -> Result<Option<i64>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        let id: Option<i64> = tx.query_value(
            "SELECT id FROM quarantine WHERE state = 'requeuing' AND requeue_to = ?1 ORDER BY id DESC LIMIT 1",
            &params![path_text(path)],
        )?;
        if let Some(id) = id {
            close_requeue(&tx, id)?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// `ldae quarantine requeue`, last step: the file is back at its destination.
    pub fn quarantine_finish_requeue(&self, id: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        close_requeue(&tx, id)?;
        tx.commit()?;
        Ok(())
    }
}

fn close_requeue(tx: &Tx<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE quarantine SET state = 'requeued', path = COALESCE(requeue_to, path), updated_at = ?2 \
         WHERE id = ?1 AND state = 'requeuing'",
        &params![id, now()],
    )?;
    audit(tx, "quarantine_requeued", &id.to_string(), &serde_json::json!({}))
}
