//! In shadow mode the limiter paces every call as a live daemon's would be,
//! the assignments it only records included, while the requests it really
//! sends (reads) keep to their share of the account's limit: the account's
//! own routing and people use the rest.
//!
//! The cap spaces what is *sent*, not what is admitted: a request waits for
//! its turn here, then for its rate slot, and its send time is noted as it
//! leaves. Were the turns handed out first, a request held at the limiter
//! could leave right before the next one and crowd a window past the share.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rate::SAFETY;

pub(super) struct SendCap {
    period: Duration,
    /// When the last request left; held by the one request taking its turn.
    last_sent: Mutex<Option<Instant>>,
}

/// A request's turn: held while it waits for its rate slot, noted as sent
/// when dropped (right before the request goes).
pub struct SendTurn<'a> {
    last_sent: MutexGuard<'a, Option<Instant>>,
}

impl Drop for SendTurn<'_> {
    fn drop(&mut self) {
        *self.last_sent = Some(Instant::now());
    }
}

impl SendCap {
    /// At most `requests` a `per` in any window (no burst: the share is a
    /// ceiling, not a budget to spend at once).
    pub(super) fn new(requests: NonZeroU32, per: Duration) -> Self {
        let period = per
            .div_f64(f64::from(requests.get()))
            .mul_f64(1.0 + SAFETY)
            .max(Duration::from_nanos(1));
        Self {
            period,
            last_sent: Mutex::new(None),
        }
    }

    /// Waits for the next request's turn; `None` if `stopping` ended the
    /// wait (or had already).
    pub(super) async fn turn(&self, stopping: &CancellationToken) -> Option<SendTurn<'_>> {
        if stopping.is_cancelled() {
            return None;
        }
        let wait = async {
            let last_sent = self.last_sent.lock().await;
            if let Some(last) = *last_sent {
                tokio::time::sleep_until(last + self.period).await;
            }
            SendTurn { last_sent }
        };
        tokio::select! {
            turn = wait => Some(turn),
            () = stopping.cancelled() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_leave_a_period_apart_and_none_after_a_stop() {
        let per = Duration::from_millis(200);
        let cap = SendCap::new(NonZeroU32::new(4).unwrap(), per);
        let stopping = CancellationToken::new();
        let mut sent = Vec::new();
        for i in 0..9 {
            let turn = cap.turn(&stopping).await.expect("a turn");
            // A request held after its turn (at the limiter) still leaves
            // a period after the one before it.
            if i == 3 {
                tokio::time::sleep(per).await;
            }
            drop(turn);
            sent.push(Instant::now());
        }
        for pair in sent.windows(2) {
            assert!(pair[1] - pair[0] >= per / 4, "{sent:?}");
        }
        stopping.cancel();
        assert!(cap.turn(&stopping).await.is_none());
    }
}
