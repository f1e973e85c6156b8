//! Calendar dates as the timelines use them: parsed from DICOM (`YYYYMMDD`) or from a user (`YYYY-MM-DD`), day
//! counts between dates, and whole-month steps (a visit grid of "every 12 months" from 2019-03-14 gives
//! 2020-03-14, 2021-03-14, …; a day past the end of a month clamps to its last day).

use chrono::{Datelike, Months, NaiveDate};

/// Parse `YYYYMMDD` (DICOM DA) or `YYYY-MM-DD`; anything else (including impossible dates) is None.
pub fn parse(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let digits: String = match s.len() {
        8 => s.to_string(),
        10 if s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' => s.replace('-', ""),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 8 {
        return None;
    }
    let y: i32 = digits[0..4].parse().ok()?;
    let m: u32 = digits[4..6].parse().ok()?;
    let d: u32 = digits[6..8].parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, d)
}

/// `YYYY-MM-DD`.
pub fn iso(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// `YYYYMMDD` (DICOM DA).
pub fn dicom(d: NaiveDate) -> String {
    format!("{:04}{:02}{:02}", d.year(), d.month(), d.day())
}

/// Days from `a` to `b` (negative when `b` is earlier).
pub fn days(a: NaiveDate, b: NaiveDate) -> i64 {
    (b - a).num_days()
}

/// `d` plus `n` calendar months; None past chrono's range.
pub fn add_months(d: NaiveDate, n: u32) -> Option<NaiveDate> {
    d.checked_add_months(Months::new(n))
}

/// Whole and fractional months between two dates, for messages and limits (30.4375 days a month).
pub fn months_between(a: NaiveDate, b: NaiveDate) -> f64 {
    days(a, b) as f64 / 30.4375
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_refuses_the_rest() {
        let d = NaiveDate::from_ymd_opt(2020, 3, 12).unwrap();
        assert_eq!(parse("20200312"), Some(d));
        assert_eq!(parse("2020-03-12"), Some(d));
        assert_eq!(parse(" 20200312 "), Some(d));
        for bad in ["", "2020031", "202003120", "2020-3-12", "20201332", "20210229", "abcdefgh", "2020/03/12"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(iso(d), "2020-03-12");
        assert_eq!(dicom(d), "20200312");
    }

    #[test]
    fn month_steps_clamp_to_the_end_of_the_month() {
        let d = NaiveDate::from_ymd_opt(2019, 1, 31).unwrap();
        assert_eq!(add_months(d, 1), NaiveDate::from_ymd_opt(2019, 2, 28));
        assert_eq!(add_months(d, 12), NaiveDate::from_ymd_opt(2020, 1, 31));
        let a = NaiveDate::from_ymd_opt(2019, 3, 14).unwrap();
        let b = NaiveDate::from_ymd_opt(2020, 3, 12).unwrap();
        assert_eq!(days(a, b), 364);
        assert_eq!(days(b, a), -364);
        assert!((months_between(a, b) - 11.96).abs() < 0.01);
    }
}
