//! The spacing margin of HelpCrunch calls, shared by the two schedules
//! that must agree on it: the limiter's own (one daemon) and the budget
//! row in the store (PostgreSQL, every daemon). Neither depends on the
//! other for it.
//! Also how a pace is checked: the busiest sliding window of calls.

use std::time::Duration;

/// How much slower than the exact limit calls are spaced (1.5%).
pub const SAFETY: f64 = 0.015;

/// The margin inside a `period` already stretched by [`SAFETY`]: a call
/// this late after its slot keeps the schedule, as the margin covers that
/// much jitter.
pub fn slack(period: Duration) -> Duration {
    period.mul_f64(SAFETY / (1.0 + SAFETY))
}

/// The most calls in any sliding window of length `per`, from their
/// times in order: how the demo and the tests check that a pace held.
pub fn busiest_window<T>(times: &[T], per: Duration) -> usize
where
    T: Copy + std::ops::Sub<Output = Duration>,
{
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= per {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
