//! A comparison in words: one sentence per measure, and the whole as text.

use std::fmt::Write as _;

use super::{ArmValue, Comparison, Measure, MeasureResult, Options, Statistic};

impl Measure {
    /// What the measure is called in a sentence.
    pub fn label(self) -> &'static str {
        match self {
            Measure::FirstReply => "first reply time",
            Measure::Assignment => "time to assignment",
            Measure::Reassignments => "reassignments",
            Measure::Handbacks => "hand-backs",
            Measure::AfterHoursReplyRate => "after-hours reply rate",
            Measure::LoadSpread => "load spread",
        }
    }

    /// What the better arm does, before its margin.
    fn better_by(self) -> &'static str {
        match self {
            Measure::FirstReply => "answers faster by",
            Measure::Assignment => "assigns faster by",
            Measure::Reassignments => "reassigns less by",
            Measure::Handbacks => "hands back less by",
            Measure::AfterHoursReplyRate => "answers more after-hours chats, by",
            Measure::LoadSpread => "spreads load more evenly, Jain's index higher by",
        }
    }
}

impl Statistic {
    fn name(self) -> &'static str {
        match self {
            Statistic::Median => "median",
            Statistic::Mean => "mean",
            Statistic::Proportion => "share",
            Statistic::Jain => "Jain's index",
        }
    }
}

/// How a measure's numbers are written: divided by `factor`, rounded to
/// `decimals`, followed by `unit`.
struct Scale {
    factor: f64,
    decimals: usize,
    unit: &'static str,
}

impl Scale {
    /// One scale for all the `numbers` of a sentence, from the largest.
    fn of(statistic: Statistic, numbers: &[f64]) -> Self {
        let max = numbers.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        match statistic {
            Statistic::Median => Self::duration(max),
            Statistic::Mean => Scale {
                factor: 1.0,
                decimals: if max < 0.1 { 3 } else { 2 },
                unit: " per chat",
            },
            Statistic::Proportion => Scale {
                factor: 0.01,
                decimals: 1,
                unit: " points",
            },
            Statistic::Jain => Scale {
                factor: 1.0,
                decimals: 3,
                unit: "",
            },
        }
    }

    fn duration(max_s: f64) -> Self {
        let (factor, unit) = match max_s {
            ..90.0 => (1.0, " s"),
            ..5400.0 => (60.0, " min"),
            _ => (3600.0, " h"),
        };
        let decimals = usize::from(factor > 1.0 || max_s < 10.0);
        Scale {
            factor,
            decimals,
            unit,
        }
    }

    /// `x` rounded, with a minus sign (never "−0").
    fn num(&self, x: f64) -> String {
        let v = x / self.factor;
        let text = format!("{:.*}", self.decimals, v.abs());
        if v < 0.0 && text.bytes().any(|b| matches!(b, b'1'..=b'9')) {
            format!("−{text}")
        } else {
            text
        }
    }

    /// `x` rounded, signed when not 0.
    fn signed(&self, x: f64) -> String {
        let text = self.num(x);
        if x > 0.0 && text.bytes().any(|b| matches!(b, b'1'..=b'9')) {
            format!("+{text}")
        } else {
            text
        }
    }
}

/// A duration in seconds for people: "42 s", "3.5 s", "2.5 min", "1.2 h".
pub fn human_seconds(s: f64) -> String {
    let scale = Scale::duration(s.abs());
    format!("{}{}", scale.num(s), scale.unit)
}

/// 1240 as "1,240".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// "95", "97.5": the confidence as a percentage.
fn percent(confidence: f64) -> String {
    let p = (confidence * 1000.0).round() / 10.0;
    format!("{p}")
}

/// The verdict on one measure, from its figures and interval.
pub(super) fn sentence(r: &MeasureResult, names: [&str; 2], o: &Options) -> String {
    let m = r.measure;
    let (Some(i), Some(d)) = (r.interval, r.difference) else {
        return format!(
            "too few chats to compare {} ({}: {}, {}: {}; {} per arm needed)",
            m.label(),
            names[0],
            thousands(r.a.n),
            names[1],
            thousands(r.b.n),
            thousands(o.min_chats),
        );
    };
    let over = thousands(r.a.n + r.b.n);
    let ci = percent(o.confidence);
    match (&r.better, i.sign()) {
        (Some(better), sign) if sign != 0 => {
            // The better arm's margin: b − a turned its way.
            let s = f64::from(sign);
            let (lo, hi) = if sign > 0 {
                (i.low, i.high)
            } else {
                (-i.high, -i.low)
            };
            let f = Scale::of(m.statistic(), &[s * d, lo, hi]);
            format!(
                "{better} {} {}{u} ({ci}% CI {}–{}{u}, over {over} chats)",
                m.better_by(),
                f.num(s * d),
                f.num(lo),
                f.num(hi),
                u = f.unit,
            )
        }
        _ => {
            let f = Scale::of(m.statistic(), &[d, i.low, i.high]);
            format!(
                "no clear difference in {} ({} − {}: {}{u}, {ci}% CI {} to {}{u}, over {over} chats)",
                m.label(),
                names[1],
                names[0],
                f.signed(d),
                f.num(i.low),
                f.num(i.high),
                u = f.unit,
            )
        }
    }
}

/// An arm's figure for people.
fn figure(statistic: Statistic, v: &ArmValue) -> String {
    let Some(x) = v.value else {
        return format!("- ({} chats)", thousands(v.n));
    };
    let shown = match statistic {
        Statistic::Median => human_seconds(x),
        Statistic::Mean => format!("{x:.2} per chat"),
        Statistic::Proportion => format!("{:.1}%", x * 100.0),
        Statistic::Jain => format!("{x:.3}"),
    };
    let mean = v
        .mean
        .map_or(String::new(), |m| format!(", mean {}", human_seconds(m)));
    format!("{shown} ({} chats{mean})", thousands(v.n))
}

/// The comparison as `report --compare` prints it: the headline, then each
/// measure's figures and verdict.
pub fn text(c: &Comparison) -> String {
    let mut out = format!(
        "{} against {} ({} and {} chats; {}% intervals from {} resamples)\n{}\n",
        c.b,
        c.a,
        thousands(c.b_chats),
        thousands(c.a_chats),
        percent(c.options.confidence),
        thousands(c.options.resamples),
        c.headline,
    );
    for r in &c.measures {
        let _ = writeln!(
            out,
            "\n{} ({}): {} {}, {} {}\n  {}",
            r.measure.label(),
            r.statistic.name(),
            c.a,
            figure(r.statistic, &r.a),
            c.b,
            figure(r.statistic, &r.b),
            r.verdict,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_humanly() {
        assert_eq!(human_seconds(42.4), "42 s");
        assert_eq!(human_seconds(3.46), "3.5 s");
        assert_eq!(human_seconds(-0.01), "0.0 s");
        assert_eq!(human_seconds(150.0), "2.5 min");
        assert_eq!(human_seconds(-150.0), "−2.5 min");
        assert_eq!(human_seconds(7200.0), "2.0 h");
    }

    #[test]
    fn one_scale_serves_a_whole_sentence() {
        let f = Scale::of(Statistic::Median, &[40.0, 22.0, 95.0]);
        assert_eq!(
            (f.num(40.0), f.num(95.0), f.unit),
            ("0.7".into(), "1.6".into(), " min")
        );
        let f = Scale::of(Statistic::Proportion, &[0.062, -0.01]);
        assert_eq!(
            (f.signed(0.062), f.num(-0.01), f.unit),
            ("+6.2".into(), "−1.0".into(), " points")
        );
        let f = Scale::of(Statistic::Mean, &[0.05]);
        assert_eq!(f.signed(0.05), "+0.050");
    }

    #[test]
    fn counts_and_levels() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1240), "1,240");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(percent(0.95), "95");
        assert_eq!(percent(0.975), "97.5");
    }
}
