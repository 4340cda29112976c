//! The `agent_away` table: `assignd agent away` / `back`.

use std::collections::HashMap;

use super::routing::wake_waiting;
use super::{AuditAction, NewAudit, Store, StoreError, now_ms, vals};

const UPSERT_AWAY: &str = "INSERT INTO agent_away (agent, until, since) VALUES ($1, $2, $3)
    ON CONFLICT (agent) DO UPDATE SET until = excluded.until, since = excluded.since";

impl Store {
    /// Agents marked away, with the end of their absence (Unix ms).
    pub async fn load_away(&self) -> Result<HashMap<String, Option<i64>>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = self
            .db
            .all("SELECT agent, until FROM agent_away", vals![])
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Marks an agent away (until `until_ms`, or until marked back), as
    /// `actor` asked.
    pub async fn set_away(
        &self,
        agent: &str,
        until_ms: Option<i64>,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.run(UPSERT_AWAY, vals![agent, until_ms, now_ms()])
            .await?;
        let audit = NewAudit {
            actor,
            action: AuditAction::Away,
            subject: agent,
            until_ms,
            detail: "",
        };
        audit.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks an agent back and makes every waiting chat due now, so it is
    /// tried again at once rather than at its next timed retry. Returns
    /// whether the agent was away. Recorded as `actor`'s only when it was.
    pub async fn set_back(&self, agent: &str, actor: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let was = tx
            .run("DELETE FROM agent_away WHERE agent = $1", vals![agent])
            .await?
            > 0;
        wake_waiting(&mut tx).await?;
        if was {
            let audit = NewAudit {
                actor,
                action: AuditAction::Back,
                subject: agent,
                until_ms: None,
                detail: "",
            };
            audit.write(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(was)
    }
}
