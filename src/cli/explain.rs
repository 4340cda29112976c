//! `assignd explain`: the decision for one chat, without assigning it.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;

use super::{Failure, open_store};
use crate::config::{Config, DatabaseLocation};
use crate::domain::ChatId;
use crate::helpcrunch::Client;
use crate::helpcrunch::types::Chat;
use crate::limiter::{Limiter, Priority};
use crate::rules::{self, ChatContext, RoutingState};
use crate::simulate::SimChat;

pub(super) struct Args {
    pub chat_id: Option<i64>,
    pub chat_file: Option<String>,
    pub at: Option<Timestamp>,
    pub json: bool,
    pub attrs: serde_json::Map<String, serde_json::Value>,
}

/// Reads a chat object from a file, or from stdin for `-`. Like a line of
/// `simulate --chats`, it may carry `attrs` and `at` beside the chat's fields.
pub(super) fn read_chat(source: &str) -> Result<SimChat, Failure> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the chat from stdin")?;
        s
    } else {
        std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?
    };
    SimChat::parse(text.trim())
        .map_err(|e| Failure::Invalid(anyhow::anyhow!("{source}: not a chat object: {e}")))
}

pub(super) async fn run(config_path: &Path, args: Args) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(|e| Failure::Invalid(e.into()))?;
    let rules = rules::load_path(&config.rules.path).map_err(|e| Failure::Invalid(e.into()))?;
    let (chat, mut attrs, file_at) = match (&args.chat_file, args.chat_id) {
        (Some(file), _) => {
            let c = read_chat(file)?;
            (c.chat, c.attrs, c.at)
        }
        (None, Some(id)) => (fetch(&config, id).await?, serde_json::Map::new(), None),
        (None, None) => {
            return Err(Failure::Invalid(anyhow::anyhow!(
                "give a CHAT_ID or --chat FILE"
            )));
        }
    };
    attrs.extend(args.attrs);
    let mut context = chat.rules_context(&attrs);
    let now = args.at.or(file_at).unwrap_or_else(Timestamp::now);
    let state = routing_state(&config, &mut context, now).await?;
    let (_, explanation) = rules::explain::explain(&rules, &context, &state, now);
    let skip = crate::explain::skip_note(&chat, config.worker.reassign);
    if args.json {
        let mut value = serde_json::to_value(&explanation).context("cannot serialise")?;
        value["skip"] = skip.map_or(serde_json::Value::Null, serde_json::Value::String);
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("cannot serialise")?
        );
    } else {
        print!("{}", explanation.to_text());
        if let Some(s) = skip {
            println!("note: {s}");
        }
    }
    Ok(())
}

/// The daemon's routing state from the database, if there is one, with
/// the assignments of the hour before `now`; a fresh state otherwise.
/// Nothing is written.
async fn routing_state(
    config: &Config,
    context: &mut ChatContext,
    now: Timestamp,
) -> Result<RoutingState, Failure> {
    if let DatabaseLocation::Sqlite(path) = config.database()
        && !path.exists()
    {
        return Ok(RoutingState::default());
    }
    let store = open_store(config).await?;
    let state = crate::explain::routing_state(&store, context, now)
        .await
        .context("cannot read the routing state")?;
    store.close().await;
    Ok(state)
}

/// One `GET /chats/{id}`: a single call, well inside any budget.
async fn fetch(config: &Config, chat_id: i64) -> Result<Chat, Failure> {
    let key = config
        .api_key()
        .map_err(|e| Failure::Invalid(e.into()))?
        .ok_or_else(|| {
            Failure::Invalid(anyhow::anyhow!(
                "no HelpCrunch API key to fetch the chat with (or give --chat FILE)"
            ))
        })?;
    let limiter = Arc::new(Limiter::new(
        NonZeroU32::MIN,
        Duration::from_secs(1),
        NonZeroU32::MIN,
    ));
    let client = Client::new(
        &config.helpcrunch.base_url,
        &key,
        config.helpcrunch.timeout.0,
        limiter,
    )
    .map_err(|e| Failure::Invalid(e.into()))?;
    client
        .chat(ChatId(chat_id), Priority::Background)
        .await
        .result
        .with_context(|| format!("cannot fetch chat {chat_id}"))
        .map_err(Failure::Runtime)
}
