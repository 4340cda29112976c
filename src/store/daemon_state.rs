//! The `daemon_state` table: what the running daemon reports about
//! itself, for `assignd status`.

use super::{Store, StoreError, now_ms};

impl Store {
    pub async fn daemon_state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM daemon_state WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    pub async fn set_daemon_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO daemon_state (key, value, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn daemon_state(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query_as("SELECT key, value, updated_at FROM daemon_state ORDER BY key")
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().collect())
    }
}
