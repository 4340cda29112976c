//! `assignd report --compare`: two arms (`a` against `b`, or `shadow`
//! against `live`), each a list of chats, compared measure by measure: each
//! arm's figure, the difference (second arm − first), its bootstrap
//! confidence interval and a verdict in words. Pure: the store reads the
//! chats, the CLI prints the [`Comparison`]. How to read one:
//! `docs/experiments.md`.

pub mod html;
mod resample;
mod verdict;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

pub use resample::Interval;
pub use verdict::{human_seconds, text};

use resample::Sample;

/// The seed of a report's resampling unless one is given: a fixed seed makes
/// the same chats give the same intervals.
pub const DEFAULT_SEED: u64 = 0x0a55_16ad;
/// Resamples per measure. Each costs a draw or two per arm whatever its
/// size, and for the load spread a draw per agent.
pub const DEFAULT_RESAMPLES: usize = 5_000;
/// Fewer resamples make the interval's ends themselves noisy.
pub const MIN_RESAMPLES: usize = 1_000;
/// Below this many chats in an arm a measure gets no verdict.
pub const DEFAULT_MIN_CHATS: usize = 20;

/// One chat of an arm: what is known of it. A measure a chat has no value
/// for leaves the chat out of that measure alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatSample {
    /// Seconds to the first agent reply; `None`: no reply.
    pub first_reply_s: Option<f64>,
    /// Seconds to the assignment; `None`: not assigned.
    pub assignment_s: Option<f64>,
    /// Reassignment hops of the chat; `None`: unknown.
    pub reassignments: Option<u32>,
    /// Hand-backs of the chat; `None`: unknown.
    pub handbacks: Option<u32>,
    /// Assigned after hours. Such a chat counts in the after-hours reply
    /// rate, as replied when it has a `first_reply_s`.
    pub after_hours: bool,
    /// The agent who has the chat, for the load spread; `None`: nobody.
    pub agent: Option<String>,
}

/// One arm: its name (`a`, `b`, `shadow`, `live`, …) and its chats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub chats: Vec<ChatSample>,
}

/// How a comparison is computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Options {
    /// Bootstrap resamples per measure.
    pub resamples: usize,
    pub seed: u64,
    /// Of the interval, strictly between 0 and 1.
    pub confidence: f64,
    /// Chats an arm needs in a measure for a verdict on it.
    pub min_chats: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_SEED,
            confidence: 0.95,
            min_chats: DEFAULT_MIN_CHATS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("a comparison needs at least {MIN_RESAMPLES} resamples, not {0}")]
    TooFewResamples(usize),
    #[error("the confidence level must lie strictly between 0 and 1, not {0}")]
    Confidence(f64),
    #[error("a verdict needs at least 1 chat per arm, not {0}")]
    MinChats(usize),
    #[error("arm {arm:?}, chat {index}: {field} is {value}, not a number of seconds")]
    NotFinite {
        arm: String,
        index: usize,
        field: &'static str,
        value: f64,
    },
}

/// What is compared. The first reply time is the measure that the
/// headline speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    FirstReply,
    Assignment,
    Reassignments,
    Handbacks,
    AfterHoursReplyRate,
    LoadSpread,
}

impl Measure {
    pub const ALL: [Measure; 6] = [
        Measure::FirstReply,
        Measure::Assignment,
        Measure::Reassignments,
        Measure::Handbacks,
        Measure::AfterHoursReplyRate,
        Measure::LoadSpread,
    ];

    pub fn statistic(self) -> Statistic {
        match self {
            Measure::FirstReply | Measure::Assignment => Statistic::Median,
            Measure::Reassignments | Measure::Handbacks => Statistic::Mean,
            Measure::AfterHoursReplyRate => Statistic::Proportion,
            Measure::LoadSpread => Statistic::Jain,
        }
    }

    /// Whether a higher figure is the better one (a faster reply is lower).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Measure::AfterHoursReplyRate | Measure::LoadSpread)
    }

    /// This measure's values of an arm's chats.
    fn sample(self, chats: &[ChatSample]) -> Sample {
        match self {
            Measure::FirstReply => {
                Sample::median(chats.iter().filter_map(|c| c.first_reply_s).collect())
            }
            Measure::Assignment => {
                Sample::median(chats.iter().filter_map(|c| c.assignment_s).collect())
            }
            Measure::Reassignments => Sample::mean(chats.iter().filter_map(|c| c.reassignments)),
            Measure::Handbacks => Sample::mean(chats.iter().filter_map(|c| c.handbacks)),
            Measure::AfterHoursReplyRate => Sample::mean(
                chats
                    .iter()
                    .filter(|c| c.after_hours)
                    .map(|c| u32::from(c.first_reply_s.is_some())),
            ),
            Measure::LoadSpread => Sample::agents(chats_per_agent(chats)),
        }
    }
}

/// The figure a measure compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// Of times in seconds, by nearest rank.
    Median,
    /// Per chat.
    Mean,
    /// A share between 0 and 1.
    Proportion,
    /// Jain's index of chats per agent: 1 when every agent has as many.
    Jain,
}

/// One arm's figure of one measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmValue {
    /// Chats the figure is over.
    pub n: usize,
    /// The statistic; `None` without chats.
    pub value: Option<f64>,
    /// For times, their plain mean beside the median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

/// What the interval says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// The interval excludes 0: `better` names the arm that does better.
    Clear,
    /// The interval includes 0.
    NoClearDifference,
    /// An arm has fewer than `min_chats` chats in the measure: no interval.
    TooFewChats,
}

/// One measure compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureResult {
    pub measure: Measure,
    pub statistic: Statistic,
    /// The first arm's figure, then the second's.
    pub a: ArmValue,
    pub b: ArmValue,
    /// Second arm − first arm; `None` when either has no chats.
    pub difference: Option<f64>,
    /// Of the difference, at the comparison's confidence; `None` with too
    /// few chats.
    pub interval: Option<Interval>,
    pub finding: Finding,
    /// The arm that does better, when the finding is clear.
    pub better: Option<String>,
    pub verdict: String,
}

/// Everything `report --compare` shows; `--json` prints it as it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The first arm's name and the second's; differences are b − a.
    pub a: String,
    pub b: String,
    /// Chats in each arm.
    pub a_chats: usize,
    pub b_chats: usize,
    pub options: Options,
    /// The verdict on the first reply time (or, when it cannot be
    /// compared, on the first measure that can).
    pub headline: String,
    /// One per [`Measure::ALL`], in that order.
    pub measures: Vec<MeasureResult>,
}

/// Compares arm `b` against arm `a` on every measure.
pub fn compare(a: &Arm, b: &Arm, options: &Options) -> Result<Comparison, CompareError> {
    check(options)?;
    check_times(a)?;
    check_times(b)?;
    let measures: Vec<MeasureResult> = Measure::ALL
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            // A stream per measure: one measure's draws never shift another's.
            let seed = options.seed.wrapping_add(i as u64);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let samples = [m.sample(&a.chats), m.sample(&b.chats)];
            measure(m, [&a.name, &b.name], &samples, options, &mut rng)
        })
        .collect();
    Ok(Comparison {
        a: a.name.clone(),
        b: b.name.clone(),
        a_chats: a.chats.len(),
        b_chats: b.chats.len(),
        options: *options,
        headline: headline(&measures),
        measures,
    })
}

/// The first reply time's verdict; when it cannot be compared (a shadow's
/// assignees were never asked, so no reply of theirs is known), the first
/// measure's in [`Measure::ALL`] order that can.
fn headline(measures: &[MeasureResult]) -> String {
    measures
        .iter()
        .find(|m| m.finding != Finding::TooFewChats)
        .unwrap_or(&measures[0])
        .verdict
        .clone()
}

fn check(o: &Options) -> Result<(), CompareError> {
    if o.resamples < MIN_RESAMPLES {
        return Err(CompareError::TooFewResamples(o.resamples));
    }
    if !(o.confidence > 0.0 && o.confidence < 1.0) {
        return Err(CompareError::Confidence(o.confidence));
    }
    if o.min_chats == 0 {
        return Err(CompareError::MinChats(0));
    }
    Ok(())
}

fn check_times(arm: &Arm) -> Result<(), CompareError> {
    for (index, c) in arm.chats.iter().enumerate() {
        for (field, v) in [
            ("first_reply_s", c.first_reply_s),
            ("assignment_s", c.assignment_s),
        ] {
            if let Some(value) = v.filter(|v| !v.is_finite()) {
                return Err(CompareError::NotFinite {
                    arm: arm.name.clone(),
                    index,
                    field,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Chats per agent, agents by name (a fixed order keeps draws repeatable).
fn chats_per_agent(chats: &[ChatSample]) -> Vec<u64> {
    let mut per: BTreeMap<&str, u64> = BTreeMap::new();
    for agent in chats.iter().filter_map(|c| c.agent.as_deref()) {
        *per.entry(agent).or_default() += 1;
    }
    per.into_values().collect()
}

fn measure(
    m: Measure,
    names: [&str; 2],
    samples: &[Sample; 2],
    o: &Options,
    rng: &mut Xoshiro256PlusPlus,
) -> MeasureResult {
    let [a, b] = samples.each_ref().map(|s| ArmValue {
        n: s.n(),
        value: s.estimate(),
        mean: s.values_mean(),
    });
    let enough = a.n >= o.min_chats && b.n >= o.min_chats;
    let interval = enough
        .then(|| resample::interval(&samples[0], &samples[1], o.resamples, o.confidence, rng));
    let sign = interval.map_or(0, |i| i.sign());
    // b − a above 0 favours b when higher is better, a when lower is.
    let better = match (sign, m.higher_is_better()) {
        (0, _) => None,
        (1, true) | (-1, false) => Some(names[1].to_string()),
        _ => Some(names[0].to_string()),
    };
    let finding = match (interval, &better) {
        (None, _) => Finding::TooFewChats,
        (Some(_), None) => Finding::NoClearDifference,
        (Some(_), Some(_)) => Finding::Clear,
    };
    let mut r = MeasureResult {
        measure: m,
        statistic: m.statistic(),
        difference: a.value.zip(b.value).map(|(x, y)| y - x),
        a,
        b,
        interval,
        finding,
        better,
        verdict: String::new(),
    };
    r.verdict = verdict::sentence(&r, names, o);
    r
}
