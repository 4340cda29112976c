//! `chat_arms`: each chat's experiment arm, taken once; and the one mode
//! (live, shadow) the database runs in (SPEC §14).

use std::time::Duration;

use super::db::Stmt;
use super::{Arm, Backend, ChatId, Store, StoreError, Tx, now_ms, vals};

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

/// How many daemons other than `$3` were heard from within `$2` ms of now:
/// `$1` on SQLite, the server's clock (the one heartbeats use) on
/// PostgreSQL.
const OTHERS_LIVE: Stmt = Stmt::each(
    "SELECT COUNT(*) FROM daemons WHERE owner <> $3 AND heartbeat_at > $1 - $2",
    "SELECT COUNT(*) FROM daemons WHERE owner <> $3 AND heartbeat_at > assignd_now_ms() - $2",
);

/// What [`Store::enter_mode`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeEntry {
    /// The database runs in the mode now; `from` the other one it last ran
    /// in, if it switched.
    Entered { from: Option<String> },
    /// The database last ran in this mode, the other one, and another
    /// daemon of it is alive: nothing was changed.
    Refused(String),
}

/// The mode the database was last run in: none for a new database (one
/// that decided nothing yet); `live` for one from before the modes.
async fn last_mode(tx: &mut Tx) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT value FROM daemon_state WHERE key = $1";
    let set: Vec<(String,)> = tx.all(sql, vals![MODE]).await?;
    if let Some((mode,)) = set.into_iter().next() {
        return Ok(Some(mode));
    }
    let sql = "SELECT chat_id FROM outcomes LIMIT 1";
    let decided: Vec<(ChatId,)> = tx.all(sql, vals![]).await?;
    Ok(decided.first().map(|_| "live".to_string()))
}

impl Store {
    /// Records that the database now runs in `mode`, unless it last ran in
    /// the other and a daemon besides `owner` was heard from `within`
    /// (every daemon of a database runs in one mode); coming from the other
    /// mode, forgets what that mode left ([`FORGET_ON_SWITCH`]). Check and
    /// record are one transaction that one daemon at a time runs (SQLite's
    /// write lock; on PostgreSQL a lock on `daemon_state` that every writer
    /// of it waits for): of two daemons starting at once in different
    /// modes, the second sees the first's mode and its heartbeat.
    pub async fn enter_mode(
        &self,
        mode: &str,
        owner: &str,
        within: Duration,
    ) -> Result<ModeEntry, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            let lock = "LOCK TABLE daemon_state IN SHARE ROW EXCLUSIVE MODE";
            tx.run(lock, vals![]).await?;
        }
        let from = last_mode(&mut tx).await?.filter(|was| was != mode);
        if let Some(was) = &from {
            let within = within.as_millis() as i64;
            let others: Vec<(i64,)> = tx.all(OTHERS_LIVE, vals![now_ms(), within, owner]).await?;
            if others.first().is_some_and(|(n,)| *n > 0) {
                return Ok(ModeEntry::Refused(was.clone()));
            }
            for sql in FORGET_ON_SWITCH {
                tx.run(sql, vals![]).await?;
            }
        }
        let set = super::daemon_state::UPSERT_STATE;
        tx.run(set, vals![MODE, mode, now_ms()]).await?;
        tx.commit().await?;
        Ok(ModeEntry::Entered { from })
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
