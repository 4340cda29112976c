//! What an API answer does to the work it was for (SPEC §6), in one place
//! for queue rows and outbox messages alike, with the retry timings.

use std::time::Duration;

use rand::RngExt;

use crate::helpcrunch::{ApiError, ErrorClass};
use crate::limiter::Closed;
use crate::store::now_ms;

/// How long a chat waits before it is tried again when its rule's target has
/// no available agent.
pub const WAIT_RETRY: Duration = Duration::from_secs(5);
/// The first retry delay after a transient failure; doubles per attempt.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long shutdown lets calls on the wire finish before cutting them off.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a stop waits for the claim loop's turn under way (a database
/// call in it) before it leaves it and drains.
pub(super) const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long shutdown then tries to put rows back (a database that is down
/// must not hold the exit past the 10 s promised; leases expire anyway).
pub(super) const RELEASE_TIMEOUT: Duration = Duration::from_millis(800);
/// How often finished rows past the retention are pruned.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Retrying a failed commit: the first pause, and the longest.
pub(super) const COMMIT_RETRY: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(5));

/// What a failed call means for the row or message it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Not sent because the daemon is stopping: put back untouched.
    Release,
    /// Not sent because HelpCrunch rejected the key: held, the attempt
    /// given back, until a reload.
    HoldForKey,
    /// Try again at `at_ms`; `count_attempt = false` gives back the
    /// attempt the claim counted (429s and 401s are not the row's fault).
    Retry { at_ms: i64, count_attempt: bool },
    /// Repeating cannot help (a 400, a 404), or `max_attempts` is spent.
    Dead { gave_up: bool },
}

/// The one table from an error to what becomes of the work; `attempts`
/// counts the current one.
pub(super) fn dispose(e: &ApiError, attempts: i64, max_attempts: u32) -> Disposition {
    match e {
        ApiError::NotSent(Closed::Stopping) => return Disposition::Release,
        ApiError::NotSent(Closed::Unauthorized) => return Disposition::HoldForKey,
        _ => {}
    }
    match e.class() {
        ErrorClass::AgentRejected | ErrorClass::Permanent => Disposition::Dead { gave_up: false },
        ErrorClass::Unauthorized | ErrorClass::RateLimited => Disposition::Retry {
            at_ms: now_ms(),
            count_attempt: false,
        },
        ErrorClass::Transient if attempts >= i64::from(max_attempts) => {
            Disposition::Dead { gave_up: true }
        }
        ErrorClass::Transient => Disposition::Retry {
            at_ms: now_ms() + retry_delay(attempts).as_millis() as i64,
            count_attempt: true,
        },
    }
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s ... capped at 5 min,
/// each scaled by a random factor in [0.5, 1) so retries spread out.
pub(super) fn retry_delay(attempts: i64) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    let base = FIRST_RETRY.saturating_mul(1 << exp.min(16)).min(MAX_RETRY);
    base.mul_f64(rand::rng().random_range(0.5..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpcrunch::ErrorEntry;

    fn status(status: u16, code: &str) -> ApiError {
        ApiError::Status {
            status,
            errors: vec![ErrorEntry {
                code: code.into(),
                message: String::new(),
            }],
            retry_after: None,
        }
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        for _ in 0..50 {
            let d1 = retry_delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 < Duration::from_secs(1));
            let d4 = retry_delay(4);
            assert!(d4 >= Duration::from_secs(4) && d4 < Duration::from_secs(8));
            assert!(retry_delay(30) <= MAX_RETRY);
        }
    }

    #[test]
    fn every_answer_has_its_disposition() {
        let dead = Disposition::Dead { gave_up: false };
        assert_eq!(dispose(&status(400, "invalid_chat_value"), 1, 10), dead);
        assert_eq!(dispose(&status(404, "not_found"), 1, 10), dead);
        assert!(matches!(
            dispose(&status(429, "too_many_requests"), 3, 10),
            Disposition::Retry {
                count_attempt: false,
                ..
            }
        ));
        assert!(matches!(
            dispose(&status(503, ""), 3, 10),
            Disposition::Retry {
                count_attempt: true,
                ..
            }
        ));
        assert_eq!(
            dispose(&status(503, ""), 10, 10),
            Disposition::Dead { gave_up: true }
        );
        assert_eq!(
            dispose(&ApiError::NotSent(Closed::Stopping), 1, 10),
            Disposition::Release
        );
        assert_eq!(
            dispose(&ApiError::NotSent(Closed::Unauthorized), 1, 10),
            Disposition::HoldForKey
        );
    }
}
