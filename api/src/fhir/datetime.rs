//! FHIR date, dateTime and instant values as UTC ranges, for indexing and searching.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// The instants `[low, high]` a FHIR date/dateTime/instant value covers, in UTC.
pub fn range(raw: &str) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let micro = Duration::microseconds(1);
    let day_range = |d: NaiveDate, end: NaiveDate| {
        Some((
            d.and_time(NaiveTime::MIN),
            end.and_time(NaiveTime::MIN) - micro,
        ))
    };
    match raw.len() {
        4 => {
            let y: i32 = raw.parse().ok()?;
            day_range(
                NaiveDate::from_ymd_opt(y, 1, 1)?,
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?,
            )
        }
        7 => {
            let (y, m) = raw.split_once('-')?;
            let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
            let start = NaiveDate::from_ymd_opt(y, m, 1)?;
            let end = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)?
            };
            day_range(start, end)
        }
        10 => {
            let d = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
            day_range(d, d.succ_opt()?)
        }
        _ => datetime_range(raw),
    }
}

fn datetime_range(raw: &str) -> Option<(NaiveDateTime, NaiveDateTime)> {
    // Split off the zone: Z, +hh:mm or -hh:mm after the time part.
    let t_pos = raw.find('T')?;
    let (date_part, rest) = raw.split_at(t_pos);
    let time_and_zone = &rest[1..];
    let (time, zone) = match time_and_zone.find(['Z', '+', '-']) {
        Some(i) => time_and_zone.split_at(i),
        None => (time_and_zone, ""),
    };
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    let (naive_time, width) = match time.len() {
        5 => (
            NaiveTime::parse_from_str(time, "%H:%M").ok()?,
            Duration::minutes(1),
        ),
        8 => (
            NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?,
            Duration::seconds(1),
        ),
        n if n > 9 && time.as_bytes()[8] == b'.' => {
            let digits = n - 9;
            if digits > 9 || !time[9..].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let t = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;
            let width =
                Duration::nanoseconds(10_i64.pow(9 - digits as u32)).max(Duration::microseconds(1));
            (t, width)
        }
        _ => return None,
    };
    let local = date.and_time(naive_time);
    let utc = match zone {
        "" => local,
        "Z" => local,
        z => {
            let stamp = format!("{}T{}{}", date_part, naive_time.format("%H:%M:%S%.f"), z);
            DateTime::parse_from_rfc3339(&stamp)
                .ok()?
                .with_timezone(&Utc)
                .naive_utc()
        }
    };
    Some((utc, utc + width - Duration::microseconds(1)))
}

/// Whether a value is a valid FHIR `date` (YYYY, YYYY-MM or YYYY-MM-DD).
pub fn is_date(raw: &str) -> bool {
    matches!(raw.len(), 4 | 7 | 10) && range(raw).is_some()
}

/// Whether a value is a valid FHIR `dateTime` (a date, or a date and time with a zone).
pub fn is_datetime(raw: &str) -> bool {
    if is_date(raw) {
        return true;
    }
    let has_zone = raw.ends_with('Z')
        || raw
            .get(raw.len().saturating_sub(6)..)
            .is_some_and(|z| z.starts_with('+') || z.starts_with('-'));
    has_zone && raw.len() >= 19 && datetime_range(raw).is_some()
}

/// An instant as FHIR writes it (`2026-11-23T10:00:00.123456Z`).
pub fn instant(t: NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The date in the UK (Europe/London) at a UTC instant: the day a patient sees.
pub fn uk_date(t: NaiveDateTime) -> NaiveDate {
    in_uk(t)
        .and_then(|z| {
            let d = z.date();
            NaiveDate::from_ymd_opt(
                i32::from(d.year()),
                d.month().unsigned_abs().into(),
                d.day().unsigned_abs().into(),
            )
        })
        .unwrap_or(t.date())
}

/// A UTC instant in the UK's time (Europe/London: GMT or BST), if the time zone is known.
pub fn in_uk(t: NaiveDateTime) -> Option<jiff::Zoned> {
    let tz = jiff::tz::TimeZone::get("Europe/London").ok()?;
    let at = jiff::Timestamp::from_second(t.and_utc().timestamp()).ok()?;
    Some(at.to_zoned(tz))
}

/// An HTTP date (for `Last-Modified`).
pub fn http_date(t: NaiveDateTime) -> String {
    t.and_utc().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_dates_follow_british_summer_time() {
        let at =
            |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").expect("an instant");
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a date");
        // 23:30 UTC is the next day in summer (BST, UTC+1), the same day in winter (GMT).
        assert_eq!(uk_date(at("2026-07-01T23:30:00")), d("2026-07-02"));
        assert_eq!(uk_date(at("2026-12-01T23:30:00")), d("2026-12-01"));
    }

    #[test]
    fn ranges() {
        let (lo, hi) = range("1980").expect("year");
        assert_eq!(lo.to_string(), "1980-01-01 00:00:00");
        assert_eq!(hi.to_string(), "1980-12-31 23:59:59.999999");
        let (lo, hi) = range("2024-02").expect("month");
        assert_eq!(lo.to_string(), "2024-02-01 00:00:00");
        assert_eq!(hi.to_string(), "2024-02-29 23:59:59.999999");
        let (lo, hi) = range("2026-11-23T10:00:00+01:00").expect("dt");
        assert_eq!(lo.to_string(), "2026-11-23 09:00:00");
        assert_eq!(hi.to_string(), "2026-11-23 09:00:00.999999");
        let (lo, _) = range("2026-11-23T10:00:00.5Z").expect("fraction");
        assert_eq!(lo.to_string(), "2026-11-23 10:00:00.500");
        assert!(range("2026-13-01").is_none());
        assert!(range("19800").is_none());
        assert!(range("2026-11-23T25:00").is_none());
    }

    #[test]
    fn lexical_checks() {
        assert!(is_date("1980-05-03"));
        assert!(!is_date("1980-5-3"));
        assert!(is_datetime("2026-11-23T10:00:00Z"));
        assert!(!is_datetime("2026-11-23T10:00:00"));
    }
}
