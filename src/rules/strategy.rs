//! How a pool picks one agent among its candidates.

/// Round-robin by name: the first candidate whose name comes after the
/// agent who got the pool's last chat, wrapping around. Because it is keyed
/// by name and not by position, a restart, a reload, or members joining and
/// leaving never resets the rotation or skips anyone.
///
/// `candidates` must be in name order.
pub fn round_robin<'a, 'n, T>(
    candidates: &'a [T],
    name: impl Fn(&T) -> &'n str,
    last: Option<&str>,
) -> Option<&'a T> {
    match last {
        Some(last) => candidates
            .iter()
            .find(|c| name(c) > last)
            .or_else(|| candidates.first()),
        None => candidates.first(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_after_the_last_by_name() {
        let c = ["alice", "bob", "carol"];
        let pick = |last| round_robin(&c, |s: &&str| *s, last).copied();
        assert_eq!(pick(None), Some("alice"));
        assert_eq!(pick(Some("alice")), Some("bob"));
        assert_eq!(pick(Some("carol")), Some("alice"));
        // The last agent left the pool: continue after where they were.
        assert_eq!(pick(Some("barbara")), Some("bob"));
        assert_eq!(round_robin::<&str>(&[], |s: &&str| *s, Some("x")), None);
    }
}
