//! `chat_arms`: each chat's experiment arm, taken once (SPEC §14).

use super::{Arm, ChatId, Store, StoreError, now_ms, vals};

const ARM_OF: &str = "SELECT arm FROM chat_arms WHERE chat_id = $1";
const TAKE_ARM: &str = "INSERT INTO chat_arms (chat_id, arm, at) VALUES ($1, $2, $3)
    ON CONFLICT (chat_id) DO NOTHING";

impl Store {
    /// The arm `chat` is in: the one recorded at its first decision, or
    /// `new`, recorded now. Two daemons that choose at once agree on the
    /// first one written, whatever each chose.
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
