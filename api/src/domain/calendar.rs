//! Working days in England, where e-RS runs: Monday to Friday, except the bank holidays of
//! England and Wales. The statutory ones, and the special ones announced up to its release,
//! come from the `bankholidays` crate; an operator adds any announced later
//! (`ERS_BANK_HOLIDAYS`).

use chrono::{Datelike, NaiveDate, Weekday};
use std::collections::BTreeSet;

/// The working-day calendar: the bank holidays of England and Wales and `extra` days off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkingDays {
    extra: BTreeSet<NaiveDate>,
}

impl WorkingDays {
    /// The calendar with these days off as well as the bank holidays it knows.
    pub fn with_days_off(extra: impl IntoIterator<Item = NaiveDate>) -> Self {
        WorkingDays {
            extra: extra.into_iter().collect(),
        }
    }

    /// The days off named beyond the bank holidays it knows, in order.
    pub fn days_off(&self) -> impl Iterator<Item = &NaiveDate> {
        self.extra.iter()
    }

    /// Whether `day` is a working day: a weekday that is neither a bank holiday nor a day off.
    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
            && !bankholidays::uk::is_bankholiday(&day)
            && !self.extra.contains(&day)
    }

    /// The day `days` working days after `from`: the date by which a deferred patient is
    /// contacted. `from` itself need not be a working day.
    pub fn after(&self, from: NaiveDate, days: u32) -> NaiveDate {
        let mut day = from;
        let mut left = days;
        while left > 0 {
            let Some(next) = day.succ_opt() else {
                break;
            };
            day = next;
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn weekends_are_not_working_days() {
        let cal = WorkingDays::default();
        assert_eq!(cal.after(d("2026-12-07"), 0), d("2026-12-07"));
        assert_eq!(cal.after(d("2026-12-07"), 2), d("2026-12-09"));
        assert_eq!(cal.after(d("2026-12-07"), 5), d("2026-12-14"));
        // From a Friday, a Saturday and a Sunday, the next working day is Monday.
        for from in ["2026-12-11", "2026-12-12", "2026-12-13"] {
            assert_eq!(cal.after(d(from), 1), d("2026-12-14"), "{from}");
        }
    }

    #[test]
    fn bank_holidays_of_england_and_wales_are_not_working_days() {
        let cal = WorkingDays::default();
        // gov.uk's list for England and Wales, 2026 and 2027 (Christmas 2026 on a Friday:
        // Boxing Day's substitute is Monday 28 December; Christmas 2027 on a Saturday).
        let listed = [
            "2026-01-01",
            "2026-04-03",
            "2026-04-06",
            "2026-05-04",
            "2026-05-25",
            "2026-08-31",
            "2026-12-25",
            "2026-12-28",
            "2027-01-01",
            "2027-03-26",
            "2027-03-29",
            "2027-05-03",
            "2027-05-31",
            "2027-08-30",
            "2027-12-27",
            "2027-12-28",
        ];
        let off: Vec<String> = d("2026-01-01")
            .iter_days()
            .take_while(|day| *day <= d("2027-12-31"))
            .filter(|day| !matches!(day.weekday(), Weekday::Sat | Weekday::Sun))
            .filter(|day| !cal.is_working_day(*day))
            .map(|day| day.to_string())
            .collect();
        assert_eq!(off, listed);
        // URGENT's 10 working days from Wednesday 23 December 2026 skip Christmas, Boxing
        // Day's substitute and New Year's Day.
        assert_eq!(cal.after(d("2026-12-23"), 10), d("2027-01-11"));
        // 40 working days from 7 December 2026: eight weeks and the three bank holidays.
        assert_eq!(cal.after(d("2026-12-07"), 40), d("2027-02-04"));
    }

    #[test]
    fn an_operator_adds_days_off() {
        let cal = WorkingDays::with_days_off([d("2027-01-08")]);
        assert!(!cal.is_working_day(d("2027-01-08")));
        assert!(WorkingDays::default().is_working_day(d("2027-01-08")));
        assert_eq!(cal.after(d("2026-12-23"), 10), d("2027-01-12"));
        assert_eq!(cal.days_off().collect::<Vec<_>>(), [&d("2027-01-08")]);
    }
}
