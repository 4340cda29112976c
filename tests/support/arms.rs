//! What the experiment tests share: arm a's and arm b's rules, the arm
//! the hash gives a chat, and the arm each chat was decided in, as the
//! database keeps it (`chat_arms`, and the `arm` of its outcomes).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use assignd::domain::ChatId;
use assignd::experiment::Split;

use crate::backend::Db;
use crate::common::TestApp;

pub const RULES: &str = r#"
[agents]
alice = { id = 4188 }
bob   = { id = 4761 }
carol = { id = 6694 }

[pools.support]
agents = ["alice", "bob"]
strategy = "round-robin"

[[rule]]
name = "all"
assign = "pool:support"
"#;

/// Arm b's rules: everything to carol.
pub const RULES_B: &str = r#"
[agents]
carol = { id = 6694 }

[[rule]]
name = "all to carol"
assign = "carol"
"#;

/// An app of [`RULES`] that reads every chat before deciding it, with
/// [`RULES_B`] in `rules-b.toml` and an `[experiment]` of `lines`.
pub async fn experiment_app(lines: &str) -> TestApp {
    let app = TestApp::builder()
        .rules(RULES)
        .worker("fetch_chat = \"always\"")
        .build()
        .await;
    std::fs::write(app.dir.path().join("rules-b.toml"), RULES_B).unwrap();
    app.edit_config(|c| format!("{c}\n[experiment]\n{lines}"));
    app
}

/// The arm `split` draws for each of `chats`.
pub fn expected(split: Split, chats: RangeInclusive<i64>) -> BTreeMap<i64, String> {
    chats
        .map(|c| (c, split.arm_of(ChatId(c)).as_str().to_string()))
        .collect()
}

/// Each chat's arm as its outcomes record it (one arm per chat, or the
/// test fails).
pub async fn outcome_arms(db: &Db) -> BTreeMap<i64, String> {
    let rows: Vec<(i64, String)> = db
        .rows("SELECT DISTINCT chat_id, arm FROM outcomes ORDER BY chat_id")
        .await;
    let mut out = BTreeMap::new();
    for (chat, arm) in rows {
        let before = out.insert(chat, arm);
        assert!(before.is_none(), "chat {chat} in two arms");
    }
    out
}

/// Each chat's arm as `chat_arms` keeps it.
pub async fn stored_arms(db: &Db) -> BTreeMap<i64, String> {
    let rows: Vec<(i64, String)> = db.rows("SELECT chat_id, arm FROM chat_arms").await;
    rows.into_iter().collect()
}
