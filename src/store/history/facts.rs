//! What measuring routing needs of a chat, on its `chat_history` row: its
//! first assignment (by assignd or by someone else) and its first agent
//! reply. Each is written once, the first time it is seen, inside the
//! transaction that learns it (a settle, a webhook, a reconciliation), and
//! never overwritten; a close erases none of it, retention prunes it with
//! the row.

use std::time::Duration;

use crate::domain::{ChatId, OutcomeResult};

use super::super::db::{Stmt, Tx, Vals};
use super::super::{NewOutcome, vals};

/// The row a fact starts for a chat with no history row yet: arrived when
/// its waiting queue row was enqueued (`queued`: the decision will fill in
/// the rest), or, without one, when the fact is seen (`seen`: a chat that
/// arrived before assignd saw it; kept simple, and counted nowhere since
/// its arrival is not known). `$1` the chat, `$2` now; `$enqueued` reads
/// the row's enqueue time in the dialect's way.
macro_rules! first_seen {
    ($enqueued:expr) => {
        concat!(
            "SELECT CAST($1 AS BIGINT) AS chat_id, COALESCE(q.at, $2) AS arrived_at,
                    CASE WHEN q.at IS NULL THEN 'seen' ELSE 'queued' END AS arrival
               FROM (SELECT MIN(",
            $enqueued,
            ") AS at FROM queue
                      WHERE chat_id = $1 AND state IN ('pending', 'leased')) AS q"
        )
    };
}

/// SQLite: a producer's `enqueued_at` of the wrong type is no time.
macro_rules! sqlite_enqueued {
    () => {
        "CASE WHEN typeof(enqueued_at) = 'integer' THEN enqueued_at END"
    };
}

/// Who made the first assignment of chat `$1` to `$3`: assignd when `$4`
/// says so, or when assignd called for it (a call in doubt, or an outcome:
/// HelpCrunch reports assignd's own assignment too, maybe before the call
/// settles), else someone else.
macro_rules! assigned_by {
    () => {
        "CASE WHEN $4 = 'assignd'
               OR EXISTS (SELECT 1 FROM assign_intents i WHERE i.chat_id = $1 AND i.agent = $3)
               OR EXISTS (SELECT 1 FROM outcomes o WHERE o.chat_id = $1
                             AND o.result = 'assigned' AND o.agent = $3)
             THEN 'assignd' ELSE 'other' END"
    };
}

/// The first assignment of chat `$1`, at `$2`, to `$3`, of a chat with no
/// history row yet.
macro_rules! assigned_first {
    ($enqueued:expr) => {
        concat!(
            "INSERT INTO chat_history (chat_id, arrived_at, arrival, assigned_at, assigned_agent,
                                       assigned_by)
             SELECT n.chat_id, n.arrived_at, n.arrival, $2, $3, ",
            assigned_by!(),
            " FROM (",
            first_seen!($enqueued),
            ") AS n WHERE true ON CONFLICT (chat_id) DO NOTHING
             RETURNING arrived_at, arrival, assigned_by"
        )
    };
}

/// [`ASSIGNED_FIRST`] of a chat that has a row: only if no assignment was
/// recorded (a row that has one is not even locked).
const ASSIGNED: &str = concat!(
    "UPDATE chat_history SET assigned_at = $2, assigned_agent = $3, assigned_by = ",
    assigned_by!(),
    " WHERE chat_id = $1 AND assigned_at IS NULL
     RETURNING arrived_at, arrival, assigned_by"
);

/// A message whose text `$4` is a reply assignd sent to chat `$1` (a
/// rule's `reply`, which HelpCrunch may report as the agent's) is no
/// agent reply; one a shadow daemon recorded and never posted (done, with
/// its reason) is no reply of assignd's.
macro_rules! not_own {
    () => {
        "NOT EXISTS (SELECT 1 FROM outbox WHERE chat_id = $1 AND kind = 'message' AND text = $4
                      AND NOT (state = 'done' AND last_error IS NOT NULL))"
    };
}

/// The first agent reply in chat `$1`, at `$2`, by `$3` (else the chat's
/// assignee), of a chat with no history row yet.
macro_rules! replied_first {
    ($enqueued:expr) => {
        concat!(
            "INSERT INTO chat_history (chat_id, arrived_at, arrival, first_reply_at,
                                       first_reply_agent)
             SELECT n.chat_id, n.arrived_at, n.arrival, $2,
                    COALESCE($3, (SELECT agent FROM open_chats WHERE chat_id = $1))
               FROM (",
            first_seen!($enqueued),
            ") AS n WHERE ",
            not_own!(),
            " ON CONFLICT (chat_id) DO NOTHING RETURNING arrived_at, arrival, 'reply'"
        )
    };
}

/// [`REPLIED_FIRST`] of a chat that has a row: only if no reply was
/// recorded.
const REPLIED: &str = concat!(
    "UPDATE chat_history SET first_reply_at = $2,
        first_reply_agent = COALESCE($3, (SELECT agent FROM open_chats WHERE chat_id = $1))
      WHERE chat_id = $1 AND first_reply_at IS NULL AND ",
    not_own!(),
    " RETURNING arrived_at, arrival, 'reply'"
);

const ASSIGNED_FIRST: Stmt = Stmt::each(
    assigned_first!(sqlite_enqueued!()),
    assigned_first!("enqueued_at"),
);
const REPLIED_FIRST: Stmt = Stmt::each(
    replied_first!(sqlite_enqueued!()),
    replied_first!("enqueued_at"),
);

/// A chat's first assignment or first agent reply, just recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFact {
    /// The first agent reply, this long after the chat arrived.
    Reply(Duration),
    /// The first assignment, this long after the chat arrived; whether
    /// assignd made it.
    Assignment { after: Duration, by_assignd: bool },
}

/// The fact a write returned, if it set one on a chat whose arrival is
/// known: (arrived_at, arrival, what).
fn first_fact(rows: Vec<(i64, String, String)>, at_ms: i64) -> Option<FirstFact> {
    let (arrived_at, arrival, what) = rows.into_iter().next()?;
    if arrival == "seen" {
        return None;
    }
    let after = Duration::from_millis(u64::try_from(at_ms - arrived_at).unwrap_or(0));
    Some(match what.as_str() {
        "reply" => FirstFact::Reply(after),
        by => FirstFact::Assignment {
            after,
            by_assignd: by == "assignd",
        },
    })
}

/// Runs `first` (a new row); if the chat has a row, `update` instead.
/// The insert goes first: on PostgreSQL it waits for a row another
/// transaction is inserting, which the update then sees.
async fn first_or_update(
    tx: &mut Tx,
    (first, update): (Stmt, Stmt),
    values: impl Fn() -> Vals,
    at_ms: i64,
) -> Result<Option<FirstFact>, sqlx::Error> {
    let mut rows = tx.all(first, values()).await?;
    if rows.is_empty() {
        rows = tx.all(update, values()).await?;
    }
    Ok(first_fact(rows, at_ms))
}

/// Records that `agent` (a name, or `#<id>`) has chat `chat_id` as of
/// `at_ms`, if nothing assigned it before: as assignd's own assignment
/// with `by_assignd`, else as assignd's if it called for it (see
/// [`ASSIGNED`]), else as someone else's.
pub(in crate::store) async fn record_assignee(
    tx: &mut Tx,
    chat_id: ChatId,
    agent: &str,
    at_ms: i64,
    by_assignd: bool,
) -> Result<Option<FirstFact>, sqlx::Error> {
    let by = by_assignd.then_some("assignd");
    let values = || vals![chat_id, at_ms, agent, by];
    first_or_update(tx, (ASSIGNED_FIRST, ASSIGNED.into()), values, at_ms).await
}

/// Records outcome `o` as the chat's first assignment, if it is an
/// assignment (written in its transaction, right after it).
pub(in crate::store) async fn record_outcome(
    tx: &mut Tx,
    o: &NewOutcome,
    now: i64,
) -> Result<(), sqlx::Error> {
    if o.result != OutcomeResult::Assigned {
        return Ok(());
    }
    let agent = o
        .agent
        .clone()
        .or_else(|| o.agent_id.map(|id| format!("#{}", id.0)));
    if let Some(agent) = agent {
        record_assignee(tx, o.chat_id, &agent, now, true).await?;
    }
    Ok(())
}

/// Records an agent's message in `chat_id` at `at_ms` as its first reply,
/// if none was recorded: `agent` (a name, or `#<id>`; without one, the
/// chat's assignee), `text` the message's, to tell assignd's own reply.
pub(in crate::store) async fn record_reply(
    tx: &mut Tx,
    chat_id: ChatId,
    agent: Option<&str>,
    text: Option<&str>,
    at_ms: i64,
) -> Result<Option<FirstFact>, sqlx::Error> {
    let values = || vals![chat_id, at_ms, agent, text];
    first_or_update(tx, (REPLIED_FIRST, REPLIED.into()), values, at_ms).await
}
