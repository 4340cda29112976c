//! The `daemon_state` table: what the running daemon reports about
//! itself, for `assignd status`.

use super::{Store, StoreError, now_ms, vals};

pub(super) const UPSERT_STATE: &str =
    "INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

impl Store {
    pub async fn daemon_state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.text_by_key("SELECT value FROM daemon_state WHERE key = $1", key)
            .await
    }

    pub async fn set_daemon_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db
            .run(UPSERT_STATE, vals![key, value, now_ms()])
            .await?;
        Ok(())
    }

    pub async fn daemon_state(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = "SELECT key, value, updated_at FROM daemon_state ORDER BY key";
        Ok(self.db.all(sql, vals![]).await?)
    }
}
