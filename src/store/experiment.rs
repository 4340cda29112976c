//! `chat_arms`: each chat's experiment arm, taken once (SPEC §14).

use super::{Arm, ChatId, Store, StoreError, now_ms, vals};

/// The `daemon_state` key naming the mode (`live`, `shadow`) the database
/// was last run in; a database from before shadow mode was run live.
const MODE: &str = "mode";

/// What one mode leaves that the other must not act on: the seats (a
/// shadow's are made up; a live daemon's are not the shadow's), the
/// follow-ups and hand-back marks on them, and the reconciliation's place.
const FORGET_ON_SWITCH: [&str; 4] = [
    "DELETE FROM open_chats",
    "DELETE FROM followups",
    "DELETE FROM handbacks",
    "DELETE FROM daemon_state WHERE key = 'reconcile_since'",
];

const ARM_OF: &str = "SELECT arm FROM chat_arms WHERE chat_id = $1";
/// A chat decided before the experiment began (an outcome in arm `a`, the
/// arm of every chat then) stays in `a`.
const TAKE_ARM: &str = "INSERT INTO chat_arms (chat_id, arm, at)
    SELECT $1, CASE WHEN EXISTS (SELECT 1 FROM outcomes WHERE chat_id = $1 AND arm = 'a')
                    THEN 'a' ELSE $2 END, $3
     WHERE TRUE
    ON CONFLICT (chat_id) DO NOTHING";

impl Store {
    /// The mode the database was last run in: none for a new database (one
    /// that decided nothing yet); `live` for one from before the modes.
    pub async fn last_mode(&self) -> Result<Option<String>, StoreError> {
        if let Some(mode) = self.daemon_state_value(MODE).await? {
            return Ok(Some(mode));
        }
        let sql = "SELECT chat_id FROM outcomes LIMIT 1";
        let decided: Option<(ChatId,)> = self.db.first(sql, vals![]).await?;
        Ok(decided.map(|_| "live".to_string()))
    }

    /// Records that the database now runs in `mode`; coming from the other
    /// mode, forgets what that mode left ([`FORGET_ON_SWITCH`]) in the same
    /// transaction. Whether it switched.
    pub async fn enter_mode(&self, mode: &str) -> Result<bool, StoreError> {
        let switched = self.last_mode().await?.is_some_and(|was| was != mode);
        let mut tx = self.begin_write().await?;
        if switched {
            for sql in FORGET_ON_SWITCH {
                tx.run(sql, vals![]).await?;
            }
        }
        let set = super::daemon_state::UPSERT_STATE;
        tx.run(set, vals![MODE, mode, now_ms()]).await?;
        tx.commit().await?;
        Ok(switched)
    }

    /// The arm `chat` is in: the one recorded at its first decision, or
    /// `new`, recorded now (`a` for a chat decided before the experiment).
    /// Two daemons that choose at once agree on the first one written.
    pub async fn chat_arm(&self, chat: ChatId, new: Arm) -> Result<Arm, StoreError> {
        if let Some((arm,)) = self.db.first::<(Arm,)>(ARM_OF, vals![chat]).await? {
            return Ok(arm);
        }
        let mut tx = self.begin_write().await?;
        tx.run(TAKE_ARM, vals![chat, new, now_ms()]).await?;
        let kept: Vec<(Arm,)> = tx.all(ARM_OF, vals![chat]).await?;
        tx.commit().await?;
        Ok(kept.first().map_or(new, |(arm,)| *arm))
    }
}
