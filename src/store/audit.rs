//! The `audit` table: who changed what, from the CLI or the console.
//! Written in the same transaction as the change it records, so a change
//! is never without its line and a line never without its change.

use super::db::Tx;
use super::{AuditAction, Store, StoreError, now_ms, vals};

const INSERT: &str = "INSERT INTO audit (at, actor, action, subject, until, detail)
    VALUES ($1, $2, $3, $4, $5, $6)";

const SINCE: &str = "SELECT id, at AS at_ms, actor, action, subject, until AS until_ms, detail
    FROM audit WHERE at >= $1 ORDER BY id DESC LIMIT $2";

const AWAY_SINCE: &str = "SELECT id, at AS at_ms, actor, action, subject, until AS until_ms, detail
    FROM audit WHERE at >= $1 AND action IN ('away', 'back') ORDER BY at, id";

/// A change to record: `actor` is who made it (`cli:USER@HOST`,
/// `console:NAME`), `subject` what it was made to (an agent, rows).
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: AuditAction,
    pub subject: &'a str,
    pub until_ms: Option<i64>,
    pub detail: &'a str,
}

/// A recorded change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: AuditAction,
    pub subject: String,
    pub until_ms: Option<i64>,
    pub detail: String,
}

impl NewAudit<'_> {
    pub(super) async fn write(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        let v = vals![
            now_ms(),
            self.actor,
            self.action,
            self.subject,
            self.until_ms,
            self.detail
        ];
        tx.run(INSERT, v).await?;
        Ok(())
    }
}

impl Store {
    /// Records a change that has no other row of its own (a sign-in).
    pub async fn record_audit(&self, entry: &NewAudit<'_>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        entry.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` changes made at or after `since_ms`, newest first.
    pub async fn audit_since(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self.db.all(SINCE, vals![since_ms, limit]).await?)
    }

    /// Every `away` and `back` made at or after `since_ms`, oldest first:
    /// the history of absences.
    pub async fn absences_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(self.db.all(AWAY_SINCE, vals![since_ms]).await?)
    }
}
