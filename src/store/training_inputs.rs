//! The registered model inputs the store knows, for `ldae train --from-store`: one path per registered volume
//! (its newest registration), in registration order.

use super::sql::{params, Exec, SqlError};
use super::{Store, StoreError};

impl Store {
    /// The newest registration's model-input path of every registered volume, oldest volume first.
    pub fn model_input_paths(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let rows = conn.query_map(
            "SELECT r.model_input_path FROM registrations r \
             WHERE r.id = (SELECT MAX(r2.id) FROM registrations r2 WHERE r2.volume_ref = r.volume_ref) \
             ORDER BY r.id",
            &params![],
            |r| Ok::<String, SqlError>(r.get(0)?),
        )?;
        Ok(rows)
    }
}
