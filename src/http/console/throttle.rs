//! Sign-in throttling, per client: a few wrong tokens are free, then each
//! next try must wait twice as long as the last, and a client tries at most
//! [`IN_FLIGHT`] sign-ins at once. A client that comes too early is told
//! at once how long to wait (429 with `Retry-After`): nothing sleeps and
//! nothing is shared between clients, so one guesser neither slows the
//! others nor keeps a connection busy. Pure: the caller passes the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong tokens a client may give before it has to wait.
pub const FREE: u32 = 5;

/// The longest wait between two tries.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// A client's wrong tokens are forgotten this long after the last one.
pub const FORGET: Duration = Duration::from_secs(3600);

/// Sign-ins one client may have under way at once (a form being read, a
/// token being checked): guesses sent in parallel wait their turn too.
pub const IN_FLIGHT: u32 = 2;

/// Clients remembered at most; past it, the one whose last wrong token is
/// oldest is forgotten, so many addresses cannot grow memory for ever.
pub const CAPACITY: usize = 10_000;

/// How a sign-in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The right token: the client's record is cleared.
    Right,
    /// A wrong token: counted.
    Wrong,
    /// Neither (a form that never arrived, a bad name): not counted.
    Neither,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    wrong: u32,
    last_wrong: Instant,
    in_flight: u32,
}

/// The sign-in record of every recent client, by [`crate::http::ClientAddr::key`].
#[derive(Debug)]
pub struct Throttle {
    clients: HashMap<IpAddr, Client>,
    capacity: usize,
}

/// The wait after `wrong` wrong tokens: none for the first [`FREE`], then
/// 1 s, 2 s, 4 s, ... up to [`MAX_WAIT`].
pub fn wait_after(wrong: u32) -> Duration {
    match wrong.checked_sub(FREE) {
        None | Some(0) => Duration::ZERO,
        Some(n) => Duration::from_secs(1u64 << (n - 1).min(20)).min(MAX_WAIT),
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl Throttle {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            clients: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Starts a sign-in by `who` at `now`, or says how long it must wait.
    /// Every started sign-in is ended with [`Throttle::end`].
    pub fn begin(&mut self, who: IpAddr, now: Instant) -> Result<(), Duration> {
        if let Some(c) = self.clients.get_mut(&who) {
            if c.in_flight == 0 && now.saturating_duration_since(c.last_wrong) >= FORGET {
                c.wrong = 0;
            }
            let ready = c.last_wrong + wait_after(c.wrong);
            if now < ready {
                return Err(ready - now);
            }
            if c.in_flight >= IN_FLIGHT {
                return Err(Duration::from_secs(1));
            }
            c.in_flight += 1;
            return Ok(());
        }
        self.make_room(now);
        let fresh = Client {
            wrong: 0,
            last_wrong: now,
            in_flight: 1,
        };
        self.clients.insert(who, fresh);
        Ok(())
    }

    /// Ends a sign-in [`Throttle::begin`] started.
    pub fn end(&mut self, who: IpAddr, now: Instant, outcome: Outcome) {
        let Some(c) = self.clients.get_mut(&who) else {
            return; // forgotten to make room meanwhile
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Right => c.wrong = 0,
            Outcome::Wrong => {
                c.wrong = c.wrong.saturating_add(1);
                c.last_wrong = now;
            }
            Outcome::Neither => {}
        }
        if c.in_flight == 0 && c.wrong == 0 {
            self.clients.remove(&who);
        }
    }

    /// Drops the forgotten clients when full; if still full, the one whose
    /// last wrong token is oldest.
    fn make_room(&mut self, now: Instant) {
        if self.clients.len() < self.capacity {
            return;
        }
        self.clients
            .retain(|_, c| c.in_flight > 0 || now.saturating_duration_since(c.last_wrong) < FORGET);
        if self.clients.len() < self.capacity {
            return;
        }
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(_, c)| c.last_wrong)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.clients.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    /// One sign-in with the given outcome; its refusal if it had to wait.
    fn attempt(t: &mut Throttle, who: IpAddr, now: Instant, outcome: Outcome) -> Option<Duration> {
        t.begin(who, now).err().or_else(|| {
            t.end(who, now, outcome);
            None
        })
    }

    #[test]
    fn waits_double_after_the_free_tries_and_are_capped() {
        let waits: Vec<u64> = (0..=20).map(|n| wait_after(n).as_secs()).collect();
        assert_eq!(&waits[..9], &[0, 0, 0, 0, 0, 0, 1, 2, 4]);
        assert_eq!(waits[15], 512);
        assert_eq!(waits[16], MAX_WAIT.as_secs());
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn a_guesser_is_told_to_wait_and_others_are_not() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..=FREE {
            assert_eq!(attempt(&mut t, ip(1), t0, Outcome::Wrong), None);
        }
        // Six wrong: the next try waits a second, counted from the last.
        let half = t0 + Duration::from_millis(500);
        assert_eq!(
            attempt(&mut t, ip(1), half, Outcome::Right),
            Some(Duration::from_millis(500))
        );
        assert_eq!(attempt(&mut t, ip(2), half, Outcome::Wrong), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(attempt(&mut t, ip(1), t1, Outcome::Wrong), None);
        assert_eq!(
            attempt(&mut t, ip(1), t1, Outcome::Wrong),
            Some(Duration::from_secs(2))
        );
        // The right token clears the record.
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(attempt(&mut t, ip(1), t3, Outcome::Right), None);
        assert_eq!(attempt(&mut t, ip(1), t3, Outcome::Wrong), None);
        assert_eq!(attempt(&mut t, ip(1), t3, Outcome::Wrong), None);
    }

    #[test]
    fn wrong_tokens_are_forgotten_after_a_while() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..=FREE {
            assert_eq!(attempt(&mut t, ip(1), t0, Outcome::Wrong), None);
        }
        assert!(t.begin(ip(1), t0 + Duration::from_millis(500)).is_err());
        let later = t0 + FORGET;
        for _ in 0..=FREE {
            assert_eq!(attempt(&mut t, ip(1), later, Outcome::Wrong), None);
        }
    }

    #[test]
    fn parallel_tries_of_one_client_are_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..IN_FLIGHT {
            t.begin(ip(1), now).unwrap();
        }
        assert_eq!(t.begin(ip(1), now), Err(Duration::from_secs(1)));
        t.begin(ip(2), now).unwrap();
        t.end(ip(1), now, Outcome::Neither);
        t.begin(ip(1), now).unwrap();
    }

    #[test]
    fn memory_is_bounded_however_many_clients() {
        let mut t = Throttle::with_capacity(100);
        let t0 = Instant::now();
        for n in 0..1000u32 {
            let who = IpAddr::from(n.to_be_bytes());
            let now = t0 + Duration::from_millis(n.into());
            let _ = attempt(&mut t, who, now, Outcome::Wrong);
        }
        assert_eq!(t.clients.len(), 100);
        // The newest are kept: the last client's record still counts.
        let last = IpAddr::from(999u32.to_be_bytes());
        t.begin(last, t0 + Duration::from_secs(2)).unwrap();
    }
}
