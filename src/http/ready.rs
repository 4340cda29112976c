//! `GET /readyz`: ready only when the database takes a write, the rules
//! are loaded and HelpCrunch accepts the API key.
//!
//! The write probe runs one at a time and its verdict is kept for
//! [`PROBE_CACHE`], so a storm of scrapes costs at most one write a
//! second. A probe is never cancelled (a cancelled `BEGIN` would leave
//! work queued on the single writer connection); when it takes longer
//! than [`PROBE_WAIT`] the answer is 503 "locked" at once, and the next
//! scrape waits on the same probe rather than starting another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{App, reject};
use crate::store::Store;

/// How long a scrape waits for the write probe before answering 503.
pub const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// How long a probe's verdict is reused.
pub const PROBE_CACHE: Duration = Duration::from_secs(1);

type Verdict = Result<(), String>;

#[derive(Default)]
pub(super) struct WriteProbe {
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    checked: Option<(Instant, Verdict)>,
    running: Option<JoinHandle<Verdict>>,
}

impl WriteProbe {
    /// The database's write health, probed at most once per [`PROBE_CACHE`].
    async fn check(&self, store: &Store) -> Verdict {
        let mut state = self.state.lock().await;
        if let Some((at, verdict)) = &state.checked
            && at.elapsed() < PROBE_CACHE
        {
            return verdict.clone();
        }
        let mut probe = state.running.take().unwrap_or_else(|| {
            let store = store.clone();
            tokio::spawn(async move { store.probe_write().await.map_err(|e| e.to_string()) })
        });
        let verdict = match tokio::time::timeout(PROBE_WAIT, &mut probe).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(join)) => Err(format!("database write probe failed: {join}")),
            Err(_) => {
                state.running = Some(probe);
                Err(format!(
                    "database locked: a write waited over {PROBE_WAIT:?} for the lock"
                ))
            }
        };
        state.checked = Some((Instant::now(), verdict.clone()));
        verdict
    }
}

/// Ready: the database takes a write, rules are loaded, no job of the
/// worker has failed, and HelpCrunch has not rejected the API key.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    match readiness(&app).await {
        Ok(()) => {
            let rules = app.listener.health.rules();
            let line = format!(
                "ready: {} rules, {} agents\n",
                rules.rules.len(),
                rules.agents.len()
            );
            (StatusCode::OK, line).into_response()
        }
        Err(why) => reject(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Why the daemon is not ready, if it is not: `/readyz` and `assignd_ready`.
pub(super) async fn readiness(app: &App) -> Verdict {
    let s = &app.listener;
    app.write_probe.check(&s.store).await?;
    match s.health.problem() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
