//! Small builders for data elements (text, numbers as DS/IS, codes, sequences) and the DS formatting that keeps
//! every decimal string within its 16 characters, so the value a reader parses is the value ldae computed with.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::mem::InMemDicomObject;

/// A data set under construction.
pub type Obj = InMemDicomObject;

/// Put one text value (empty string → an empty, zero-length value).
pub fn put_str(obj: &mut Obj, tag: Tag, vr: VR, value: &str) {
    let v = if value.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(value) };
    obj.put(DataElement::new(tag, vr, v));
}

/// Put an optional text value; absent → empty (for Type 2 attributes).
pub fn put_opt(obj: &mut Obj, tag: Tag, vr: VR, value: Option<&str>) {
    put_str(obj, tag, vr, value.unwrap_or(""));
}

/// Put a multi-valued text attribute (no values → empty).
pub fn put_strs<S: AsRef<str>>(obj: &mut Obj, tag: Tag, vr: VR, values: &[S]) {
    let v = if values.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::Strs(values.iter().map(|s| s.as_ref().to_string()).collect())
    };
    obj.put(DataElement::new(tag, vr, v));
}

/// Put an empty (zero-length) value.
pub fn put_empty(obj: &mut Obj, tag: Tag, vr: VR) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}

/// Put one US value.
pub fn put_us(obj: &mut Obj, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Put an IS value.
pub fn put_is(obj: &mut Obj, tag: Tag, value: i64) {
    put_str(obj, tag, VR::IS, &value.to_string());
}

/// Put DS values, each formatted by [`ds`].
pub fn put_ds(obj: &mut Obj, tag: Tag, values: &[f64]) {
    let s: Vec<String> = values.iter().map(|&v| ds(v)).collect();
    put_strs(obj, tag, VR::DS, &s);
}

/// Put an optional DS value; absent → empty (Type 2).
pub fn put_ds_opt(obj: &mut Obj, tag: Tag, value: Option<f64>) {
    match value {
        Some(v) => put_ds(obj, tag, &[v]),
        None => put_empty(obj, tag, VR::DS),
    }
}

/// Put a sequence of items.
pub fn put_seq(obj: &mut Obj, tag: Tag, items: Vec<Obj>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A code sequence item (Code Value, Coding Scheme Designator, Code Meaning).
pub fn code_item(value: &str, scheme: &str, meaning: &str) -> Obj {
    let mut it = Obj::new_empty();
    put_str(&mut it, dicom_dictionary_std::tags::CODE_VALUE, VR::SH, value);
    put_str(&mut it, dicom_dictionary_std::tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut it, dicom_dictionary_std::tags::CODE_MEANING, VR::LO, meaning);
    it
}

/// A decimal string of at most 16 characters (PS3.5: DS), as close to `x` as 16 characters allow.
/// Non-finite input gives `"0"` (callers refuse non-finite values before).
pub fn ds(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".to_string();
    }
    let plain = format!("{x}");
    if plain.len() <= 16 && !plain.contains('e') {
        return plain;
    }
    // Fixed notation with as many decimals as fit, when the magnitude allows a useful number of digits.
    let a = x.abs();
    if (1e-4..1e15).contains(&a) {
        let int_digits = (a.log10().floor() as i64 + 1).max(1) as usize;
        let sign = usize::from(x < 0.0);
        let room = 16usize.saturating_sub(sign + int_digits + 1);
        let s = trim_zeros(format!("{x:.room$}"));
        if s.len() <= 16 {
            return s;
        }
    }
    // Scientific: shrink the mantissa until it fits.
    for p in (0..=12).rev() {
        let s = format!("{x:.p$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    "0".to_string()
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".to_string()
        } else {
            t.to_string()
        }
    } else {
        s
    }
}

/// The value a reader gets back from [`ds`]`(x)`.
pub fn ds_value(x: f64) -> f64 {
    ds(x).parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_16_chars_and_is_close() {
        for &x in &[
            0.1234567890123456,
            -0.99756405123456,
            1.0 / 3.0,
            -2.0 / 3.0 * 1e-7,
            123456.789012345,
            1e20,
            -1.5e-300,
            65535.0,
            1.0,
            -90.318189,
            4.2e-5,
        ] {
            let s = ds(x);
            assert!(s.len() <= 16, "{x} -> {s}");
            assert!(s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)), "{s}");
            let back: f64 = s.parse().expect("parses");
            assert!((back - x).abs() <= 1e-9 * x.abs().max(1e-300) + 1e-12, "{x} -> {s}");
        }
        assert_eq!(ds(0.0), "0");
        assert_eq!(ds(2.0), "2");
        assert_eq!(ds(-0.5), "-0.5");
    }
}
