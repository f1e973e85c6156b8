//! What a C-STORE-RSP status code means for ldae (PS3.4 B.2.3, PS3.7 C): stored, stored with a warning,
//! refused for now (out of resources: try again later), or refused for good.

use serde::Serialize;

/// The class of a C-STORE response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClass {
    /// 0000: stored.
    Success,
    /// B000–BFFF (coercion, elements discarded, data set does not match SOP class) and the general warnings
    /// 0001, 0107, 0116: stored, but the peer changed or doubted something.
    Warning,
    /// A700–A7FF (out of resources) and 0213 (resource limitation): not stored now; a later try may succeed.
    OutOfResources,
    /// Everything else (A900–A9FF data set does not match SOP class, C000–CFFF cannot understand, 0122 SOP class
    /// not supported, 0124 not authorised, …): not stored, and sending the same instance again will not help.
    Failure,
}

impl StatusClass {
    /// Classify a status code.
    pub fn of(status: u16) -> StatusClass {
        match status {
            0x0000 => StatusClass::Success,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
            0x0213 | 0xA700..=0xA7FF => StatusClass::OutOfResources,
            _ => StatusClass::Failure,
        }
    }

    /// Did the peer keep the instance?
    pub fn is_stored(self) -> bool {
        matches!(self, StatusClass::Success | StatusClass::Warning)
    }

    /// Might sending the instance again succeed?
    pub fn is_transient(self) -> bool {
        self == StatusClass::OutOfResources
    }
}

/// A short name for well-known codes, for messages (`None` for codes without a fixed meaning).
pub fn describe(status: u16) -> Option<&'static str> {
    Some(match status {
        0x0000 => "success",
        0x0001 | 0x0107 => "warning: attribute list or value out of range",
        0x0116 => "warning: attribute value out of range",
        0xB000 => "warning: coercion of data elements",
        0xB006 => "warning: elements discarded",
        0xB007 => "warning: data set does not match SOP class",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorised",
        0x0211 => "unrecognised operation",
        0x0213 => "resource limitation",
        0xA700..=0xA7FF => "refused: out of resources",
        0xA900..=0xA9FF => "error: data set does not match SOP class",
        0xC000..=0xCFFF => "error: cannot understand",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_follow_ps3_4() {
        assert_eq!(StatusClass::of(0x0000), StatusClass::Success);
        for w in [0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xBFFF] {
            assert_eq!(StatusClass::of(w), StatusClass::Warning, "{w:04X}");
            assert!(StatusClass::of(w).is_stored());
        }
        for t in [0xA700, 0xA7FF, 0x0213] {
            assert_eq!(StatusClass::of(t), StatusClass::OutOfResources, "{t:04X}");
            assert!(!StatusClass::of(t).is_stored() && StatusClass::of(t).is_transient());
        }
        for f in [0xA800, 0xA900, 0xA9FF, 0xC000, 0xCFFF, 0x0122, 0x0124, 0x0211, 0xFE00, 0xFF00, 0xAFFF] {
            assert_eq!(StatusClass::of(f), StatusClass::Failure, "{f:04X}");
            assert!(!StatusClass::of(f).is_stored() && !StatusClass::of(f).is_transient());
        }
        assert_eq!(describe(0xA701), Some("refused: out of resources"));
        assert_eq!(describe(0x1234), None);
    }
}
