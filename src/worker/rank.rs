//! The rule priority a new queue row takes at intake, before its first
//! claim ([`crate::rules::intake`]): from the listener as it stores a
//! webhook's chat or an enqueue request, and in the claim's transaction
//! for every row no intake ranked (a plain INSERT, `assignd enqueue`).

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::Worker;
use crate::config::FetchChat;
use crate::domain::ChatId;
use crate::helpcrunch::types::Chat;
use crate::rules::intake::{Carried, intake_priority};
use crate::rules::{ChatContext, Rules};
use crate::store::UnrankedRow;

impl Worker {
    /// A new row's rule priority under the rules in force, if what it
    /// carries tells which rule will decide it.
    pub(super) fn intake_priority(
        &self,
        chat_id: ChatId,
        attrs: &Map<String, Value>,
        snapshot: Option<&Chat>,
    ) -> Option<i64> {
        let rules = self.rules();
        let at = Timestamp::now();
        priority_of(
            &rules,
            self.settings.fetch_chat,
            chat_id,
            attrs,
            snapshot,
            at,
        )
    }

    /// [`Worker::intake_priority`] of a row as a producer wrote it. Text
    /// that does not parse carries nothing: malformed attributes get no
    /// rank (the decision dead-letters the row), a malformed snapshot is
    /// ignored (the decision reads the chat instead).
    pub(super) fn rank_row(&self, row: &UnrankedRow) -> Option<i64> {
        let attrs = match row.attrs.as_deref().map(serde_json::from_str::<Value>) {
            None | Some(Ok(Value::Null)) => Map::new(),
            Some(Ok(Value::Object(map))) => map,
            Some(_) => return None,
        };
        let snapshot = row
            .snapshot
            .as_deref()
            .and_then(|s| serde_json::from_str::<Chat>(s).ok());
        let chat_id = ChatId(row.chat_id.unwrap_or_default());
        self.intake_priority(chat_id, &attrs, snapshot.as_ref())
    }
}

/// The rule priority of a row with these attributes and snapshot: a
/// snapshot carries every field the rules read; without one, so do the
/// attributes alone when the daemon never reads the chat (its decision
/// sees nothing more); else only the attributes are known.
fn priority_of(
    rules: &Rules,
    fetch: FetchChat,
    chat_id: ChatId,
    attrs: &Map<String, Value>,
    snapshot: Option<&Chat>,
    at: Timestamp,
) -> Option<i64> {
    let (context, carried) = match snapshot {
        Some(chat) => (chat.rules_context(attrs), Carried::Everything),
        None if fetch == FetchChat::Never => {
            (ChatContext::bare(chat_id, attrs), Carried::Everything)
        }
        None => (ChatContext::bare(chat_id, attrs), Carried::Attrs),
    };
    intake_priority(rules, &context, carried, at)
}
