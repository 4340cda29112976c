//! Weekly opening hours in a time zone, with holidays.
//!
//! Hours are wall-clock times: "09:00-18:00" means nine to six on the local
//! clock, whatever the UTC offset is that day, so DST changes need no special
//! rule. A range whose end is not after its start ("22:00-06:00") runs past
//! midnight into the next day. A holiday closes every range that *starts* on
//! that date.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// One opening range on a weekday, in minutes after local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u16,
    /// Exclusive; `end <= start` means the range ends the next day.
    pub end: u16,
}

impl Range {
    fn crosses_midnight(self) -> bool {
        self.end <= self.start
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub tz: TimeZone,
    /// Index 0 is Monday.
    pub days: [Vec<Range>; 7],
    pub holidays: BTreeSet<Date>,
}

/// Parses `"HH:MM-HH:MM"`; `24:00` is allowed as an end.
pub fn parse_range(text: &str) -> Result<Range, String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("time range `{text}` must look like \"09:00-18:00\""))?;
    let start = parse_clock(a.trim(), false).map_err(|e| format!("time range `{text}`: {e}"))?;
    let end = parse_clock(b.trim(), true).map_err(|e| format!("time range `{text}`: {e}"))?;
    if start == end || (start == 0 && end == 1440) {
        if start == 0 && end == 1440 {
            return Ok(Range { start: 0, end: 0 });
        }
        return Err(format!("time range `{text}` is empty (start equals end)"));
    }
    Ok(Range {
        start,
        end: end % 1440,
    })
}

fn parse_clock(text: &str, allow_24: bool) -> Result<u16, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a time like 09:30"))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(h) && h.len() <= 2 && digits(m) && m.len() == 2) {
        return Err(format!("`{text}` is not a time like 09:30"));
    }
    let (h, m): (u16, u16) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
    if (h == 24 && m == 0 && allow_24) || (h < 24 && m < 60) {
        Ok(h * 60 + m)
    } else {
        Err(format!("`{text}` is not a valid time of day"))
    }
}

/// Parses a day key: `mon`..`sun`, a range such as `mon-fri` (may wrap,
/// `fri-mon`), or `all`. Returns the weekday indexes, Monday = 0.
pub fn parse_days(key: &str) -> Result<Vec<usize>, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let index = |d: &str| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(d.trim()))
            .ok_or_else(|| format!("`{d}` is not a day (use mon, tue, wed, thu, fri, sat, sun, a range like mon-fri, or all)"))
    };
    if key.eq_ignore_ascii_case("all") {
        return Ok((0..7).collect());
    }
    match key.split_once('-') {
        None => Ok(vec![index(key)?]),
        Some((a, b)) => {
            let (a, b) = (index(a)?, index(b)?);
            let mut days = vec![a];
            let mut d = a;
            while d != b {
                d = (d + 1) % 7;
                days.push(d);
            }
            Ok(days)
        }
    }
}

impl Schedule {
    fn minute_of(t: &DateTime) -> u16 {
        t.hour() as u16 * 60 + t.minute() as u16
    }

    fn weekday(date: Date) -> usize {
        date.weekday().to_monday_zero_offset() as usize
    }

    /// Whether the schedule is open at instant `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        // A civil date-time, not a Zoned: no clone of the zone per call.
        let local = self.tz.to_datetime(t);
        let date = local.date();
        let minute = Self::minute_of(&local);
        if !self.holidays.contains(&date) {
            let today = &self.days[Self::weekday(date)];
            if today
                .iter()
                .any(|r| minute >= r.start && (r.crosses_midnight() || minute < r.end))
            {
                return true;
            }
        }
        match date.yesterday() {
            Ok(yesterday) if !self.holidays.contains(&yesterday) => self.days
                [Self::weekday(yesterday)]
            .iter()
            .any(|r| r.crosses_midnight() && minute < r.end),
            _ => false,
        }
    }

    /// The first instant at or after `t` when the schedule is open, in the
    /// schedule's zone; `None` if it never opens within a year and a week.
    pub fn next_open(&self, t: Timestamp) -> Option<Zoned> {
        let local = t.to_zoned(self.tz.clone());
        if self.is_open(t) {
            return Some(local);
        }
        let mut date = local.date();
        for _ in 0..=372 {
            if !self.holidays.contains(&date) {
                let mut starts: Vec<u16> = self.days[Self::weekday(date)]
                    .iter()
                    .map(|r| r.start)
                    .collect();
                starts.sort_unstable();
                for start in starts {
                    let clock = Time::new((start / 60) as i8, (start % 60) as i8, 0, 0).ok()?;
                    // A start inside a DST gap resolves to the first valid
                    // instant after it ("compatible" disambiguation).
                    let at = self
                        .tz
                        .to_ambiguous_zoned(date.to_datetime(clock))
                        .compatible()
                        .ok()?;
                    if at.timestamp() > t {
                        return Some(at);
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// Whether any range exists on a day that is not a holiday. A schedule
    /// with no ranges at all is never open.
    pub fn ever_open(&self) -> bool {
        self.days.iter().any(|d| !d.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(tz: &str, hours: &[(&str, &str)], holidays: &[&str]) -> Schedule {
        let mut days: [Vec<Range>; 7] = Default::default();
        for (k, v) in hours {
            for d in parse_days(k).unwrap() {
                days[d].push(parse_range(v).unwrap());
            }
        }
        Schedule {
            name: "t".into(),
            tz: TimeZone::get(tz).unwrap(),
            days,
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_days_parse() {
        assert_eq!(
            parse_range("09:00-18:00").unwrap(),
            Range {
                start: 540,
                end: 1080
            }
        );
        assert_eq!(
            parse_range("22:00-06:00").unwrap(),
            Range {
                start: 1320,
                end: 360
            }
        );
        assert_eq!(
            parse_range("00:00-24:00").unwrap(),
            Range { start: 0, end: 0 }
        );
        assert_eq!(
            parse_range("18:00-24:00").unwrap(),
            Range {
                start: 1080,
                end: 0
            }
        );
        for bad in [
            "9-18",
            "09:00",
            "25:00-26:00",
            "09:60-10:00",
            "10:00-10:00",
            "ab:cd-ef:gh",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_days("mon-fri").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_days("fri-mon").unwrap(), vec![4, 5, 6, 0]);
        assert_eq!(parse_days("all").unwrap().len(), 7);
        assert!(parse_days("funday").is_err());
    }

    #[test]
    fn office_hours_in_kyiv_across_dst() {
        let s = schedule("Europe/Kyiv", &[("mon-fri", "09:00-18:00")], &[]);
        // Friday 2026-03-27, winter time (UTC+2): 09:00 local is 07:00Z.
        assert!(!s.is_open(at("2026-03-27T06:59:00Z")));
        assert!(s.is_open(at("2026-03-27T07:00:00Z")));
        assert!(s.is_open(at("2026-03-27T15:59:00Z")));
        assert!(!s.is_open(at("2026-03-27T16:00:00Z")));
        // DST starts Sunday 2026-03-29. Monday 2026-03-30 is UTC+3: 09:00 is 06:00Z.
        assert!(!s.is_open(at("2026-03-30T05:59:00Z")));
        assert!(s.is_open(at("2026-03-30T06:00:00Z")));
        assert!(!s.is_open(at("2026-03-30T15:00:00Z")));
        // Autumn: DST ends Sunday 2026-10-25; Monday 26th is UTC+2 again.
        assert!(s.is_open(at("2026-10-23T06:00:00Z"))); // Fri, UTC+3
        assert!(!s.is_open(at("2026-10-26T06:30:00Z"))); // Mon 08:30 local
        assert!(s.is_open(at("2026-10-26T07:00:00Z")));
    }

    #[test]
    fn night_range_crosses_midnight() {
        let s = schedule("Europe/Kyiv", &[("all", "22:00-06:00")], &[]);
        assert!(s.is_open(at("2026-06-01T19:00:00Z"))); // 22:00 local
        assert!(s.is_open(at("2026-06-01T23:30:00Z"))); // 02:30 next day
        assert!(!s.is_open(at("2026-06-02T03:00:00Z"))); // 06:00 local
        assert!(!s.is_open(at("2026-06-01T12:00:00Z")));
        // Across the spring-forward night (03:00 -> 04:00 local on 2026-03-29).
        assert!(s.is_open(at("2026-03-29T01:30:00Z"))); // 04:30 local
        assert!(!s.is_open(at("2026-03-29T03:00:00Z"))); // 06:00 local
    }

    #[test]
    fn holidays_close_ranges_that_start_on_them() {
        let s = schedule(
            "Europe/Kyiv",
            &[("mon-fri", "09:00-18:00"), ("fri", "22:00-02:00")],
            &["2026-12-25"],
        );
        assert!(!s.is_open(at("2026-12-25T10:00:00Z"))); // Friday holiday
        assert!(!s.is_open(at("2026-12-25T21:00:00Z")));
        assert!(s.is_open(at("2026-12-24T10:00:00Z")));
    }

    #[test]
    fn next_open_skips_weekends_and_holidays() {
        let s = schedule(
            "Europe/Kyiv",
            &[("mon-fri", "09:00-18:00")],
            &["2026-12-28"],
        );
        // Friday 2026-12-25 at 19:00 local -> Tuesday 29th 09:00 (Monday is a holiday).
        let next = s.next_open(at("2026-12-25T17:00:00Z")).unwrap();
        assert_eq!(next.to_string(), "2026-12-29T09:00:00+02:00[Europe/Kyiv]");
        // Open now -> now.
        let now = at("2026-12-29T08:00:00Z");
        assert_eq!(s.next_open(now).unwrap().timestamp(), now);
        let never = schedule("UTC", &[], &[]);
        assert!(never.next_open(now).is_none());
        assert!(!never.ever_open());
    }

    #[test]
    fn dst_overlap_hours_are_open_both_times_round() {
        // New York falls back at 02:00 on 2026-11-01: 01:00-02:00 happens twice.
        let s = schedule("America/New_York", &[("sun", "01:30-01:45")], &[]);
        assert!(s.is_open(at("2026-11-01T05:35:00Z"))); // 01:35 EDT
        assert!(s.is_open(at("2026-11-01T06:35:00Z"))); // 01:35 EST, the second time
        assert!(!s.is_open(at("2026-11-01T06:50:00Z")));
        // The next opening in the overlap is the earlier of the two instants.
        let next = s.next_open(at("2026-11-01T04:00:00Z")).unwrap(); // 00:00 EDT
        assert_eq!(next.timestamp(), at("2026-11-01T05:30:00Z"));
        // Kyiv falls back at 04:00 on 2026-10-25: a night range spans the longer night.
        let night = schedule("Europe/Kyiv", &[("all", "22:00-06:00")], &[]);
        assert!(night.is_open(at("2026-10-25T00:30:00Z"))); // 03:30 EEST
        assert!(night.is_open(at("2026-10-25T01:30:00Z"))); // 03:30 EET
        assert!(!night.is_open(at("2026-10-25T04:00:00Z"))); // 06:00 EET
    }

    #[test]
    fn next_open_in_a_dst_gap_moves_forward() {
        // New York springs forward at 02:00 on 2026-03-08; a 02:30 opening does not exist.
        let s = schedule("America/New_York", &[("sun", "02:30-05:00")], &[]);
        let next = s.next_open(at("2026-03-08T05:00:00Z")).unwrap(); // 00:00 EST
        assert_eq!(
            next.to_string(),
            "2026-03-08T03:30:00-04:00[America/New_York]"
        );
    }
}
