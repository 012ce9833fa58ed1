//! Wall-clock time at the CLI's edge: RFC 3339 in and out, and "how long ago".
//! The protocol speaks Unix milliseconds; people read dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses an RFC 3339 timestamp (`2025-11-23T08:00:00Z`, `...T08:00:00.250+01:00`)
/// into Unix milliseconds. Sub-millisecond digits are dropped; a leap second
/// counts as the second before it.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in frac.bytes().take(3).take_while(u8::is_ascii_digit).enumerate() {
            millis += i64::from(d - b'0') * 10i64.pow(2 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 || !rest[1..3].bytes().chain(rest[4..6].bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    u64::try_from(secs.checked_mul(1000)?.checked_add(millis)?).ok()
}

/// Formats Unix milliseconds as RFC 3339 UTC to the second; 0 (unset) as "-".
pub fn format_rfc3339(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A rough span for people, two units at most: `3d4h`, `5h12m`, `42s`.
pub fn format_span(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m{}s", s % 60),
        (0, h, m) => format!("{h}h{m}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms (proleptic Gregorian, days since 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56Z", 951_827_696_000),
            ("2025-11-23T08:00:00Z", 1_763_884_800_000),
            ("2100-12-31T23:59:59Z", 4_133_980_799_000),
        ] {
            assert_eq!(parse_rfc3339_ms(text), Some(ms), "{text}");
            if ms > 0 {
                assert_eq!(format_rfc3339(ms), text);
            }
        }
    }

    #[test]
    fn rfc3339_offsets_and_fractions() {
        let utc = parse_rfc3339_ms("2025-11-23T08:00:00Z").unwrap();
        assert_eq!(parse_rfc3339_ms("2025-11-23T09:30:00+01:30"), Some(utc));
        assert_eq!(parse_rfc3339_ms("2025-11-23T03:00:00-05:00"), Some(utc));
        assert_eq!(parse_rfc3339_ms("2025-11-23t08:00:00.25z"), Some(utc + 250));
        assert_eq!(parse_rfc3339_ms("2025-11-23 08:00:00.123456789Z"), Some(utc + 123));
    }

    #[test]
    fn rfc3339_rejects_nonsense() {
        for bad in [
            "",
            "2025-11-23",
            "2025-11-23T08:00:00",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-31T00:00:00Z",
            "2025-11-23T24:00:00Z",
            "2025-11-23T08:00:00.Z",
            "2025-11-23T08:00:00+1:00",
            "2025-11-23T08:00:00+01:0x",
            "1969-12-31T23:59:59Z",
            "+025-11-23T08:00:00Z",
            "2025-11-23T08:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans() {
        assert_eq!(format_span(42_000), "42s");
        assert_eq!(format_span(312_000), "5m12s");
        assert_eq!(format_span(5 * 3_600_000 + 12 * 60_000), "5h12m");
        assert_eq!(format_span(3 * 86_400_000 + 4 * 3_600_000 + 1), "3d4h");
    }
}
