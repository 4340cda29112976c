//! The percentile bootstrap of one measure: each arm's chats resampled with
//! replacement, the arms independently, and the statistic recomputed on
//! every resample. A resample's statistic is drawn in one step instead of
//! one draw per chat, so that 50,000 chats cost what 50 do, and exactly:
//!
//! - the median (nearest rank `r` of `n`) of a resample of sorted values `x`
//!   is `x[⌊n·U⌋]`, where `U` is the `r`-th smallest of `n` uniforms, which
//!   is Beta(r, n − r + 1) distributed (a draw is `x[⌊n·u⌋]`, monotone in `u`);
//! - how many times a resample holds each distinct value (or each agent) is
//!   multinomial, drawn as one binomial per value given those before it.

use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::{Beta, Binomial, Distribution};
use serde::Serialize;

/// A confidence interval of the difference (second arm − first arm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// Whether the whole interval lies on one side of 0: the sign of the
    /// difference is then clear (1 above, -1 below), else 0.
    pub fn sign(&self) -> i8 {
        if self.low > 0.0 {
            1
        } else if self.high < 0.0 {
            -1
        } else {
            0
        }
    }
}

/// One arm's values of one measure, kept in the shape its statistic
/// resamples from.
#[derive(Debug, Clone)]
pub(crate) enum Sample {
    /// Ascending; the statistic is the median by nearest rank.
    Sorted {
        values: Vec<f64>,
        /// The rank's uniform order statistic; `None` without values.
        order: Option<Beta<f64>>,
    },
    /// Distinct values and how many chats have each; the statistic is the
    /// mean per chat.
    Tally { values: Vec<f64>, counts: Vec<u64> },
    /// Chats per agent, in a fixed order; the statistic is Jain's index.
    Agents(Vec<u64>),
}

impl Sample {
    pub(crate) fn median(mut values: Vec<f64>) -> Self {
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len();
        let order = median_rank(n).and_then(|r| Beta::new(r as f64, (n + 1 - r) as f64).ok());
        Sample::Sorted { values, order }
    }

    /// The mean of whole counts (reassignments, hand-backs, 0/1 for a rate).
    pub(crate) fn mean(values: impl Iterator<Item = u32>) -> Self {
        let mut tally = std::collections::BTreeMap::<u32, u64>::new();
        for v in values {
            *tally.entry(v).or_default() += 1;
        }
        Sample::Tally {
            values: tally.keys().map(|&v| f64::from(v)).collect(),
            counts: tally.into_values().collect(),
        }
    }

    pub(crate) fn agents(counts: Vec<u64>) -> Self {
        Sample::Agents(counts)
    }

    /// How many chats the statistic is over.
    pub(crate) fn n(&self) -> usize {
        match self {
            Sample::Sorted { values, .. } => values.len(),
            Sample::Tally { counts, .. } | Sample::Agents(counts) => {
                counts.iter().sum::<u64>() as usize
            }
        }
    }

    /// The statistic of the arm itself; `None` without chats.
    pub(crate) fn estimate(&self) -> Option<f64> {
        match self {
            Sample::Sorted { values, .. } => values.get(median_rank(values.len())? - 1).copied(),
            Sample::Tally { values, counts } => mean_of(values, counts),
            Sample::Agents(counts) => (!counts.is_empty()).then(|| jain(counts)),
        }
    }

    /// The plain mean of sorted values (times), beside their median.
    pub(crate) fn values_mean(&self) -> Option<f64> {
        match self {
            Sample::Sorted { values, .. } if !values.is_empty() => {
                Some(values.iter().sum::<f64>() / values.len() as f64)
            }
            _ => None,
        }
    }

    /// The statistic of one resample of the arm's chats. `counts` is
    /// scratch space, reused across calls.
    pub(crate) fn draw(&self, rng: &mut Xoshiro256PlusPlus, counts: &mut Vec<u64>) -> f64 {
        match self {
            Sample::Sorted { values, order } => {
                let Some(order) = order else { return f64::NAN };
                let u = order.sample(rng);
                let i = (values.len() as f64 * u) as usize;
                values[i.min(values.len() - 1)]
            }
            Sample::Tally {
                values,
                counts: have,
            } => {
                multinomial(have, rng, counts);
                mean_of(values, counts).unwrap_or(f64::NAN)
            }
            Sample::Agents(have) => {
                multinomial(have, rng, counts);
                jain(counts)
            }
        }
    }
}

/// The 1-based rank of the median among `n` values by nearest rank, as
/// `report`'s p50 takes it; `None` for no values.
fn median_rank(n: usize) -> Option<usize> {
    (n > 0).then(|| n.div_ceil(2))
}

fn mean_of(values: &[f64], counts: &[u64]) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    let sum: f64 = values.iter().zip(counts).map(|(v, &c)| v * c as f64).sum();
    (n > 0).then(|| sum / n as f64)
}

/// Jain's index of chats per agent, as `report` gives a pool's.
fn jain(counts: &[u64]) -> f64 {
    let counts: Vec<u32> = counts
        .iter()
        .map(|&c| u32::try_from(c).unwrap_or(u32::MAX))
        .collect();
    crate::report::fairness("", &counts).jain
}

/// Resampled counts into `out`: as many draws as `have` holds in all, each
/// category drawn with probability of its share of `have`.
fn multinomial(have: &[u64], rng: &mut Xoshiro256PlusPlus, out: &mut Vec<u64>) {
    out.clear();
    let mut left_draws: u64 = have.iter().sum();
    let mut left_have = left_draws;
    for &c in have {
        // The last category (c == left_have) takes every draw left.
        let k = if c >= left_have {
            left_draws
        } else {
            binomial(left_draws, c as f64 / left_have as f64, rng)
        };
        out.push(k);
        left_draws -= k;
        left_have -= c;
    }
}

fn binomial(n: u64, p: f64, rng: &mut Xoshiro256PlusPlus) -> u64 {
    // p is a share in [0, 1] by construction; `new` refuses only NaN or
    // a p outside it, which the clamp rules out.
    Binomial::new(n, p.clamp(0.0, 1.0))
        .map(|b| b.sample(rng).min(n))
        .unwrap_or(0)
}

/// The percentile interval of second − first at `confidence`: the
/// `resamples` resampled differences, sorted, less the `k` lowest and the
/// `k` highest, `k = round(resamples · (1 − confidence) / 2)`.
pub(crate) fn interval(
    first: &Sample,
    second: &Sample,
    resamples: usize,
    confidence: f64,
    rng: &mut Xoshiro256PlusPlus,
) -> Interval {
    let mut scratch = Vec::new();
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| {
            let a = first.draw(rng, &mut scratch);
            second.draw(rng, &mut scratch) - a
        })
        .collect();
    diffs.sort_unstable_by(f64::total_cmp);
    let k = (resamples as f64 * (1.0 - confidence) / 2.0).round() as usize;
    let k = k.min(resamples.saturating_sub(1) / 2);
    Interval {
        low: diffs[k],
        high: diffs[resamples - 1 - k],
    }
}
