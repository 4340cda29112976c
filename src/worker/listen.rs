//! New queue rows wake the claim loop at once, whichever daemon or
//! producer inserted them: through LISTEN/NOTIFY on PostgreSQL, through
//! the database file's changes on SQLite (`store/watch.rs`). Polling
//! stays as the fallback while neither works, and for good where LISTEN
//! cannot work (a pooler in transaction mode): the daemon says so once,
//! in the log and in `assignd status`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::store::StoreError;

/// How soon a listener that failed is opened again.
const RELISTEN: Duration = Duration::from_secs(2);
/// How soon a file watch that could not start is tried again (inotify's
/// limits reached, a filesystem without it): rarely, polling meanwhile.
const REWATCH: Duration = Duration::from_secs(60);
/// How soon LISTEN is tried again where it cannot work: rarely, polling
/// meanwhile.
const RELISTEN_UNAVAILABLE: Duration = Duration::from_secs(600);

/// The `daemon_state` key saying why LISTEN is unavailable (empty while
/// it works): `assignd status` shows it.
const LISTEN_STATE: &str = "listen";

impl Worker {
    /// One round of the listen job: listens until `stop` or an error.
    pub(super) async fn listen_round(&self, stop: &CancellationToken) -> Duration {
        let mut listener = match self.store.listen_queue().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return Duration::from_secs(3600),
            Err(StoreError::ListenUnavailable(why)) => {
                self.listen_unavailable(&why).await;
                return RELISTEN_UNAVAILABLE;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for new rows; polling meanwhile");
                return match self.store.backend() {
                    crate::store::Backend::Sqlite => REWATCH,
                    crate::store::Backend::Postgres => RELISTEN,
                };
            }
        };
        tracing::info!(
            how = listener.how(),
            "new rows of other processes wake the claim loop"
        );
        self.listen_available().await;
        self.listening.store(true, Ordering::Release);
        // A row may have come between the loop's last look and the start
        // of this watch: one more look, after which every row wakes it.
        self.wake();
        let every = self.settings.poll_interval;
        // After a failover the listening connection may be the old
        // primary's, which hears nothing more: a new one is opened.
        let mut failovers = self.store.failovers();
        failovers.mark_unchanged();
        let ended = loop {
            tokio::select! {
                _ = stop.cancelled() => break Duration::ZERO,
                _ = failovers.changed() => {
                    tracing::info!("listening again, on a new connection, after a failover");
                    break Duration::ZERO;
                }
                next = listener.next(every) => match next {
                    Ok(()) => self.wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the listening connection; polling meanwhile");
                        break RELISTEN;
                    }
                },
            }
        };
        self.listening.store(false, Ordering::Release);
        // The claim loop polls again from now on.
        self.wake();
        ended
    }

    /// Says once, in the log and for `status`, that new rows are found by
    /// polling only, and why.
    async fn listen_unavailable(&self, why: &str) {
        if self.listen_unavailable.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = self.settings.poll_interval;
        let text = format!(
            "unavailable: {why}; new rows are found by polling the queue every {every:?} \
             ([worker] poll_interval)"
        );
        tracing::warn!("LISTEN/NOTIFY {text}");
        if self
            .store
            .set_daemon_state(LISTEN_STATE, &text)
            .await
            .is_err()
        {
            // Said again at the next try, when the database may take it.
            self.listen_unavailable.store(false, Ordering::Release);
        }
    }

    /// Clears what [`Worker::listen_unavailable`] said, by this process or
    /// an earlier one, once LISTEN works.
    async fn listen_available(&self) {
        let said = self.listen_unavailable.swap(false, Ordering::AcqRel);
        if said {
            tracing::info!("LISTEN/NOTIFY works again");
        }
        let stale = matches!(
            self.store.daemon_state_value(LISTEN_STATE).await,
            Ok(Some(v)) if !v.is_empty()
        );
        if said || stale {
            let _ = self.store.set_daemon_state(LISTEN_STATE, "").await;
        }
    }
}
