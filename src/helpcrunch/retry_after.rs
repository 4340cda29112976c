//! `Retry-After` (RFC 9110 §10.2.3): a number of seconds, or an HTTP date
//! in any of its three forms. Whatever bytes arrive, the answer is a pause
//! no longer than [`MAX_RETRY_AFTER`], or `None` (the limiter's own backoff).

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// The longest pause a `Retry-After` can impose. HelpCrunch counts calls
/// per minute, so anything much longer is a broken header; this matches
/// the limiter's own cap on a pause, so the two never disagree.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The pause a `Retry-After` value asks for, at most [`MAX_RETRY_AFTER`].
/// `None` when it is unreadable or asks for no wait at all (`0`, or a date
/// not in the future): a 429 that says "retry now" contradicts itself, and
/// the limiter's doubling backoff is the safer reading.
pub fn parse(value: &[u8], now: Timestamp) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let pause = match text.bytes().next()? {
        b'0'..=b'9' => seconds(text)?,
        _ => until(http_date(text, now)?, now)?,
    };
    (!pause.is_zero()).then(|| pause.min(MAX_RETRY_AFTER))
}

/// `delay-seconds`, also with a decimal fraction; any size is accepted
/// and capped, never overflowing.
fn seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let cap = MAX_RETRY_AFTER.as_secs();
    let whole = whole.trim_start_matches('0');
    if whole.len() > cap.to_string().len() {
        return Some(MAX_RETRY_AFTER);
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let millis = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    Some(Duration::from_secs(secs.min(cap)) + Duration::from_millis(millis))
}

/// How long from `now` to `date`; `None` when it is not in the future.
fn until(date: Timestamp, now: Timestamp) -> Option<Duration> {
    let ms = date.as_millisecond().checked_sub(now.as_millisecond())?;
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// An HTTP date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or the
/// obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms that RFC 9110 still has recipients
/// accept. The weekday is not checked; `now` places a two-digit year.
pub fn http_date(text: &str, now: Timestamp) -> Option<Timestamp> {
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    match fields.as_slice() {
        [wkday, day, month, year, time, "GMT"] if wkday.ends_with(',') => {
            at(four_digits(year)?, month, day, time)
        }
        [wkday, date, time, "GMT"] if wkday.ends_with(',') => {
            let mut parts = date.split('-');
            let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || yy.len() != 2 {
                return None;
            }
            let date = at(1900 + number(yy)?, month, day, time)?;
            Some(rfc850_century(date, now))
        }
        [_, month, day, time, year] => at(four_digits(year)?, month, day, time),
        _ => None,
    }
}

/// RFC 9110 §5.6.7: a two-digit year that would put the date more than 50
/// years in the future means the most recent such year in the past.
fn rfc850_century(mut date: Timestamp, now: Timestamp) -> Timestamp {
    let fifty_years = jiff::SignedDuration::from_hours(24 * 366 * 50);
    // Read as 19yy; move forward by centuries while that stays plausible.
    while let Ok(next) = date
        .to_zoned(TimeZone::UTC)
        .checked_add(jiff::Span::new().years(100))
    {
        let next = next.timestamp();
        if next.duration_since(now) > fifty_years {
            break;
        }
        date = next;
    }
    date
}

fn at(year: i16, month: &str, day: &str, time: &str) -> Option<Timestamp> {
    let month = month_number(month)?;
    if day.is_empty() || day.len() > 2 {
        return None;
    }
    let date = Date::new(year, month, number(day)?.try_into().ok()?).ok()?;
    let mut hms = time.split(':');
    let mut next = || -> Option<i8> {
        let part = hms.next().filter(|p| p.len() == 2)?;
        number(part)?.try_into().ok()
    };
    let (h, m, s) = (next()?, next()?, next()?);
    if hms.next().is_some() {
        return None;
    }
    // jiff has no leap seconds: 23:59:60 is read as 23:59:59.
    let time = Time::new(h, m, s.min(59), 0).ok()?;
    DateTime::from_parts(date, time)
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

fn month_number(name: &str) -> Option<i8> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let i = MONTHS.iter().position(|m| *m == name)?;
    i8::try_from(i + 1).ok()
}

fn four_digits(year: &str) -> Option<i16> {
    (year.len() == 4).then(|| number(year))?
}

/// A short run of ASCII digits (at most 4) as a number.
fn number(digits: &str) -> Option<i16> {
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-10-21T07:28:00Z".parse().unwrap()
    }

    fn secs(value: &str) -> Option<u64> {
        parse(value.as_bytes(), now()).map(|d| d.as_secs())
    }

    #[test]
    fn seconds_of_any_size() {
        assert_eq!(secs("7"), Some(7));
        assert_eq!(secs(" 120 "), Some(120));
        assert_eq!(parse(b"1.5", now()), Some(Duration::from_millis(1500)));
        assert_eq!(secs("99999999999999999999"), Some(600));
        assert_eq!(secs("000000000000000000000000003"), Some(3));
        assert_eq!(secs("601"), Some(600));
        assert_eq!(secs("0"), None);
    }

    #[test]
    fn nonsense_is_no_value() {
        for v in [
            "", " ", "-5", "NaN", "inf", "1e3", "+3", "3s", "1.2.3", ".5", "٣",
        ] {
            assert_eq!(secs(v), None, "{v:?}");
        }
        assert_eq!(parse(&[0xff, b'1'], now()), None);
        assert_eq!(
            parse("Wed, 21 Oct 2026 07:28:00 GMT\u{e9}".as_bytes(), now()),
            None
        );
    }

    #[test]
    fn dates_in_every_form() {
        for v in [
            "Wed, 21 Oct 2026 07:28:30 GMT",
            "Wednesday, 21-Oct-26 07:28:30 GMT",
            "Wed Oct 21 07:28:30 2026",
        ] {
            assert_eq!(secs(v), Some(30), "{v}");
        }
        assert_eq!(secs("Wed Oct  1 07:28:30 2026"), None, "in the past");
        assert_eq!(secs("Thu, 22 Oct 2026 07:28:00 GMT"), Some(600), "capped");
    }

    #[test]
    fn dates_in_the_past_and_broken_dates_are_no_value() {
        for v in [
            "Wed, 21 Oct 2026 07:28:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Wed, 31 Feb 2026 07:28:30 GMT",
            "Wed, 21 Oct 2026 25:28:30 GMT",
            "Wed, 21 Oct 2026 07:28:30 UTC",
            "Wed, 21 Foo 2026 07:28:30 GMT",
            "Wed, 21 Oct 20266 07:28:30 GMT",
            "Wed, 21 Oct 2026 7:28:30 GMT",
            "Wed, 21 Oct 2026 07:28:30:00 GMT",
            "Wed, 21-Oct-2026 07:28:30 GMT",
            "Wed, 9999-Oct-26 07:28:30 GMT",
        ] {
            assert_eq!(secs(v), None, "{v}");
        }
    }

    #[test]
    fn two_digit_years_are_the_nearest_plausible_century() {
        let ts = |s: &str| -> Timestamp { s.parse().unwrap() };
        let now = ts("2026-01-01T00:00:00Z");
        for (parsed, meant) in [
            ("1994-11-06T08:49:37Z", "1994-11-06T08:49:37Z"),
            ("1926-10-21T07:28:30Z", "2026-10-21T07:28:30Z"),
            ("1975-01-01T00:00:00Z", "2075-01-01T00:00:00Z"),
            ("1977-01-01T00:00:00Z", "1977-01-01T00:00:00Z"),
        ] {
            assert_eq!(rfc850_century(ts(parsed), now), ts(meant), "{parsed}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any bytes at all: no panic, and never more than the cap.
        #[test]
        fn any_bytes_give_a_bounded_pause(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Some(d) = parse(&bytes, now()) {
                proptest::prop_assert!(d <= MAX_RETRY_AFTER && !d.is_zero());
            }
        }

        /// Text shaped like the header's forms, with fields out of range.
        #[test]
        fn header_shaped_text_gives_a_bounded_pause(
            n in "[0-9]{0,30}(\\.[0-9]{0,30})?",
            wkday in "(Mon|Sunday|X)(,)?",
            day in "[0-9]{1,3}",
            month in "(Jan|Feb|Oct|Dec|Foo)",
            year in "[0-9]{1,5}",
            time in "[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}",
        ) {
            for v in [
                n.clone(),
                format!("{wkday} {day} {month} {year} {time} GMT"),
                format!("{wkday} {day}-{month}-{year} {time} GMT"),
                format!("{wkday} {month} {day} {time} {year}"),
            ] {
                if let Some(d) = parse(v.as_bytes(), now()) {
                    proptest::prop_assert!(d <= MAX_RETRY_AFTER && !d.is_zero(), "{}", v);
                }
            }
        }
    }
}
