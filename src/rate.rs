//! The spacing margin of HelpCrunch calls, shared by the two schedules
//! that must agree on it: the limiter's own (one daemon) and the budget
//! row in the store (PostgreSQL, every daemon). Neither depends on the
//! other for it.

use std::time::Duration;

/// How much slower than the exact limit calls are spaced (1.5%).
pub const SAFETY: f64 = 0.015;

/// The margin inside a `period` already stretched by [`SAFETY`]: a call
/// this late after its slot keeps the schedule, as the margin covers that
/// much jitter.
pub fn slack(period: Duration) -> Duration {
    period.mul_f64(SAFETY / (1.0 + SAFETY))
}
