//! This process's own schedule (one daemon; a shared budget keeps the same
//! one in the database): a GCRA that may hand a slot out up to `ahead`
//! before it is due. Admitting at `now` a call that goes at `due` moves the
//! schedule exactly as admitting it at `due` would, so reserving early
//! never lets two calls closer together than the plain GCRA does.

use std::time::Duration;

use tokio::time::Instant;

/// What one ask of a budget got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The slot is the caller's, to be sent this long from now (zero: at
    /// once) and not before.
    Admitted(Duration),
    /// No slot yet: ask again after this long.
    Wait(Duration),
}

pub(super) struct Gcra {
    period: Duration,
    /// How far ahead of its time a call may go: the burst, as time.
    tau: Duration,
    /// The theoretical arrival time of the next call; `None` before the first.
    tat: Option<Instant>,
}

impl Gcra {
    pub(super) fn new(period: Duration, tau: Duration) -> Self {
        Self {
            period,
            tau,
            tat: None,
        }
    }

    /// Takes the next slot if it is due by `now + ahead`.
    pub(super) fn take(&mut self, now: Instant, ahead: Duration) -> Take {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let due = tat.checked_sub(self.tau).map_or(now, |d| d.max(now));
        let early = due - now;
        if early > ahead {
            return Take::Wait(early - ahead);
        }
        self.tat = Some(tat + self.period);
        Take::Admitted(early)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn a_burst_then_one_slot_a_period() {
        let now = Instant::now();
        let mut g = Gcra::new(T, T * 2);
        for _ in 0..3 {
            assert_eq!(g.take(now, Duration::ZERO), Take::Admitted(Duration::ZERO));
        }
        assert_eq!(g.take(now, Duration::ZERO), Take::Wait(T));
        assert_eq!(
            g.take(now + T, Duration::ZERO),
            Take::Admitted(Duration::ZERO)
        );
    }

    #[test]
    fn a_slot_taken_ahead_is_sent_when_due_and_moves_the_schedule_alike() {
        let now = Instant::now();
        let mut early = Gcra::new(T, Duration::ZERO);
        let mut plain = Gcra::new(T, Duration::ZERO);
        assert_eq!(early.take(now, T), Take::Admitted(Duration::ZERO));
        plain.take(now, Duration::ZERO);
        // 30 ms before the next slot: handed out now, to go in 30 ms.
        let ask = now + T - Duration::from_millis(30);
        assert_eq!(
            early.take(ask, Duration::from_millis(40)),
            Take::Admitted(Duration::from_millis(30))
        );
        assert_eq!(
            plain.take(now + T, Duration::ZERO),
            Take::Admitted(Duration::ZERO)
        );
        assert_eq!(early.tat, plain.tat);
        // Not further ahead than asked: the wait is until it would be.
        assert_eq!(
            early.take(ask, Duration::from_millis(40)),
            Take::Wait(T + Duration::from_millis(30) - Duration::from_millis(40))
        );
    }

    #[test]
    fn an_idle_budget_does_not_bank_slots() {
        let now = Instant::now();
        let mut g = Gcra::new(T, Duration::ZERO);
        g.take(now, Duration::ZERO);
        let later = now + T * 10;
        assert_eq!(
            g.take(later, Duration::ZERO),
            Take::Admitted(Duration::ZERO)
        );
        assert_eq!(g.take(later, Duration::ZERO), Take::Wait(T));
    }
}
