//! `GET /metrics`: the registry, with the gauges of state read now, in the
//! format the scraper asks for (see [`crate::metrics::Format`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::App;
use crate::domain::QueueState;
use crate::metrics::{Format, metrics};

pub(super) async fn metrics_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    refresh(&app).await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        metrics().render(format),
    )
        .into_response()
}

/// Reads the gauges of state: queue rows by state, the oldest waiting
/// row's age, open chats per agent, readiness. A gauge the database cannot
/// answer for keeps its last value; readiness then says why.
async fn refresh(app: &App) {
    let s = &app.listener;
    let m = metrics();
    if let Ok(depth) = s.store.queue_depth().await {
        for state in QueueState::ALL {
            let n = depth
                .iter()
                .find(|(k, _)| k == state.as_str())
                .map_or(0, |(_, n)| *n);
            m.queue_rows
                .get_or_create(&vec![("state", state.as_str().to_string())])
                .set(n);
        }
    }
    if let Ok(age) = s.store.oldest_active_age().await {
        m.oldest_pending.set(age.as_secs_f64());
    }
    for (agent, n) in s.health.open_counts() {
        m.open_chats
            .get_or_create(&vec![("agent", agent)])
            .set(n as i64);
    }
    let ready = super::ready::readiness(app).await.is_ok();
    m.ready.set(i64::from(ready));
}
