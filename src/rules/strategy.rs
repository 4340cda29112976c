//! How a pool picks one agent among its candidates. Every function here is
//! pure: the state it reads is passed in, and what it changes is returned.

use std::collections::HashMap;

/// What a strategy knows about one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Index into `Rules::agents`.
    pub index: usize,
    pub name: &'a str,
    pub open: u32,
    pub weight: u32,
}

/// Round-robin by name: the first candidate whose name comes after the
/// agent who got the pool's last chat, wrapping around. Because it is keyed
/// by name and not by position, a restart, a reload, or members joining and
/// leaving never resets the rotation or skips anyone.
///
/// `candidates` must be in name order.
pub fn round_robin<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    last: Option<&str>,
) -> Option<&'c Candidate<'a>> {
    match last {
        Some(last) => candidates
            .iter()
            .find(|c| c.name > last)
            .or_else(|| candidates.first()),
        None => candidates.first(),
    }
}

/// The candidates in round-robin order: starting after `last`, wrapping.
fn rotation<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    last: Option<&str>,
) -> impl Iterator<Item = &'c Candidate<'a>> {
    let start = last.map_or(0, |l| {
        candidates.iter().position(|c| c.name > l).unwrap_or(0)
    });
    candidates[start..].iter().chain(candidates[..start].iter())
}

/// The fewest open chats; ties go to whoever is next in the rotation.
pub fn least_open<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    last: Option<&str>,
) -> Option<&'c Candidate<'a>> {
    // min_by_key keeps the first of equal minimums, i.e. the rotation order.
    rotation(candidates, last).min_by_key(|c| c.open)
}

/// Smooth weighted round-robin (as in nginx): every candidate's current
/// weight grows by its weight, the largest is picked and loses the total.
/// Over any `sum(weights)` consecutive picks each agent gets exactly its
/// weight, and picks are spread out rather than bunched.
///
/// Returns the pick and the new current weights of the candidates.
pub fn weighted<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    current: Option<&HashMap<String, i64>>,
) -> Option<(&'c Candidate<'a>, Vec<(String, i64)>)> {
    if candidates.is_empty() {
        return None;
    }
    let total: i64 = candidates.iter().map(|c| c.weight as i64).sum();
    let mut next: Vec<(String, i64)> = candidates
        .iter()
        .map(|c| {
            let now = current.and_then(|m| m.get(c.name)).copied().unwrap_or(0);
            (c.name.to_string(), now + c.weight as i64)
        })
        .collect();
    // The first of equal maximums, i.e. name order.
    let (best, _) =
        next.iter().enumerate().fold(
            (0, i64::MIN),
            |(bi, bv), (i, (_, v))| if *v > bv { (i, *v) } else { (bi, bv) },
        );
    next[best].1 -= total;
    Some((&candidates[best], next))
}

/// Uniform, from `entropy` supplied by the caller (the worker draws it at
/// random; `simulate` seeds it, so a replay is repeatable).
pub fn random<'c, 'a>(candidates: &'c [Candidate<'a>], entropy: u64) -> Option<&'c Candidate<'a>> {
    if candidates.is_empty() {
        return None;
    }
    // Multiply-shift maps the 64 bits evenly onto the candidates.
    let i = ((entropy as u128 * candidates.len() as u128) >> 64) as usize;
    candidates.get(i)
}

/// The customer's previous agent when a candidate, else round-robin.
pub fn sticky<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    previous: Option<&str>,
    last: Option<&str>,
) -> Option<&'c Candidate<'a>> {
    previous
        .and_then(|p| candidates.iter().find(|c| c.name == p))
        .or_else(|| round_robin(candidates, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(list: &[(&'static str, u32, u32)]) -> Vec<Candidate<'static>> {
        list.iter()
            .enumerate()
            .map(|(index, &(name, open, weight))| Candidate {
                index,
                name,
                open,
                weight,
            })
            .collect()
    }

    #[test]
    fn round_robin_continues_after_the_last_by_name() {
        let c = cands(&[("alice", 0, 1), ("bob", 0, 1), ("carol", 0, 1)]);
        let pick = |last| round_robin(&c, last).map(|c| c.name);
        assert_eq!(pick(None), Some("alice"));
        assert_eq!(pick(Some("alice")), Some("bob"));
        assert_eq!(pick(Some("carol")), Some("alice"));
        // The last agent left the pool: continue after where they were.
        assert_eq!(pick(Some("barbara")), Some("bob"));
        assert_eq!(round_robin(&[], Some("x")), None);
    }

    #[test]
    fn least_open_breaks_ties_by_rotation() {
        let c = cands(&[("alice", 2, 1), ("bob", 1, 1), ("carol", 1, 1)]);
        assert_eq!(least_open(&c, None).unwrap().name, "bob");
        assert_eq!(least_open(&c, Some("bob")).unwrap().name, "carol");
        assert_eq!(least_open(&c, Some("carol")).unwrap().name, "bob");
    }

    #[test]
    fn weighted_is_smooth() {
        let c = cands(&[("a", 0, 5), ("b", 0, 1), ("c", 0, 1)]);
        let mut current: HashMap<String, i64> = HashMap::new();
        let mut picks = String::new();
        for _ in 0..7 {
            let (p, next) = weighted(&c, Some(&current)).unwrap();
            picks.push_str(p.name);
            current = next.into_iter().collect();
        }
        assert_eq!(picks, "aabacaa");
    }

    #[test]
    fn random_and_sticky() {
        let c = cands(&[("a", 0, 1), ("b", 0, 1)]);
        assert_eq!(random(&c, 0).unwrap().name, "a");
        assert_eq!(random(&c, u64::MAX).unwrap().name, "b");
        assert_eq!(sticky(&c, Some("b"), Some("b")).unwrap().name, "b");
        assert_eq!(sticky(&c, Some("zed"), Some("a")).unwrap().name, "b");
    }
}
