//! PostgreSQL only: new queue rows wake the claim loop at once, through
//! LISTEN/NOTIFY, whichever daemon or producer inserted them; polling stays
//! as the fallback when the listening connection is down.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;

/// How soon a listener that failed is opened again.
const RELISTEN: Duration = Duration::from_secs(2);

impl Worker {
    /// One round of the listen job: listens until `stop` or an error.
    pub(super) async fn listen_round(&self, stop: &CancellationToken) -> Duration {
        let mut listener = match self.store.listen_queue().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return Duration::from_secs(3600),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new rows; polling meanwhile");
                return RELISTEN;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Duration::ZERO,
                next = listener.next() => match next {
                    Ok(()) => self.wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the listening connection; polling meanwhile");
                        return RELISTEN;
                    }
                },
            }
        }
    }
}
