//! The patient's age at a study, in years: from PatientAge (`nnnD`, `nnnW`, `nnnM`, `nnnY`), else from
//! PatientBirthDate and the study date (both `YYYYMMDD`). What the look-ups show and filter on; values that do not
//! parse give no age rather than a wrong one.

/// Age in years, or None when neither source gives a plausible one (0 ≤ age < 150).
pub fn age_years(patient_age: Option<&str>, birth_date: Option<&str>, study_date: Option<&str>) -> Option<f64> {
    let from_tag = patient_age.and_then(parse_patient_age);
    let years = from_tag.or_else(|| {
        let (b, s) = (date(birth_date?)?, date(study_date?)?);
        Some(s.signed_duration_since(b).num_days() as f64 / 365.25)
    })?;
    (0.0..150.0).contains(&years).then_some(years)
}

/// `071Y` → 71, `006M` → 0.5, `010W`, `003D`.
fn parse_patient_age(s: &str) -> Option<f64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: f64 = s.get(..s.len() - unit.len_utf8())?.trim().parse::<u32>().ok()?.into();
    match unit.to_ascii_uppercase() {
        'Y' => Some(n),
        'M' => Some(n / 12.0),
        'W' => Some(n * 7.0 / 365.25),
        'D' => Some(n / 365.25),
        _ => None,
    }
}

/// `YYYYMMDD` (or `YYYY-MM-DD`) → a checked calendar date.
pub fn date(s: &str) -> Option<chrono::NaiveDate> {
    let digits: String = s.trim().chars().filter(|c| *c != '-' && *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_age_units_and_birth_date() {
        assert_eq!(age_years(Some("071Y"), None, None), Some(71.0));
        assert_eq!(age_years(Some("006M"), None, None), Some(0.5));
        assert_eq!(age_years(Some("junk"), None, None), None);
        let a = age_years(None, Some("19500602"), Some("20190314")).unwrap();
        assert!((a - 68.78).abs() < 0.01, "{a}");
        assert_eq!(age_years(None, Some("19501302"), Some("20190314")), None);
        assert_eq!(age_years(None, Some("20300101"), Some("20190314")), None);
    }
}
