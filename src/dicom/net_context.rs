//! Presentation contexts for a C-STORE association: what to propose for a set of files, and which accepted
//! context (and transfer syntax) carries each file.
//!
//! One context per (SOP class, file transfer syntax). An uncompressed file (Implicit/Explicit VR Little Endian,
//! Explicit VR Big Endian) may go out in any uncompressed syntax, so its context also offers Explicit and
//! Implicit VR Little Endian; a compressed or deflated file is offered in its own syntax only (ldae does not
//! transcode pixel data for sending).

use dicom_ul::pdu::PresentationContextNegotiated;

use super::net::InstanceInfo;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// Presentation context ids are odd numbers 1..=255.
pub const MAX_CONTEXTS: usize = 128;

/// One proposed presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub sop_class_uid: String,
    /// The transfer syntaxes offered, the file's own first.
    pub offered: Vec<String>,
}

/// Can data in this transfer syntax be re-encoded in another without a codec?
pub fn is_uncompressed(ts: &str) -> bool {
    matches!(ts, IMPLICIT_VR_LE | EXPLICIT_VR_LE | EXPLICIT_VR_BE)
}

fn clean(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' ']).trim_start()
}

/// The contexts to propose for `infos`, in first-seen order; `Err` over [`MAX_CONTEXTS`].
pub fn proposals(infos: &[InstanceInfo]) -> Result<Vec<Proposal>, String> {
    let mut out: Vec<Proposal> = Vec::new();
    for i in infos {
        let (sop, ts) = (clean(&i.sop_class_uid), clean(&i.transfer_syntax));
        if out.iter().any(|p| p.sop_class_uid == sop && p.offered[0] == ts) {
            continue;
        }
        let mut offered = vec![ts.to_string()];
        if is_uncompressed(ts) {
            for alt in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
                if alt != ts {
                    offered.push(alt.to_string());
                }
            }
        }
        out.push(Proposal { sop_class_uid: sop.to_string(), offered });
    }
    if out.len() > MAX_CONTEXTS {
        return Err(format!(
            "{} distinct (SOP class, transfer syntax) pairs, more than the {MAX_CONTEXTS} presentation contexts of \
             one association",
            out.len()
        ));
    }
    Ok(out)
}

/// The accepted context for `info` and the transfer syntax to send it in: the file's own syntax if accepted for
/// its SOP class, else (for an uncompressed file) an accepted uncompressed one, Explicit VR LE first.
pub fn choose_context(accepted: &[PresentationContextNegotiated], info: &InstanceInfo) -> Option<(u8, String)> {
    let (sop, ts) = (clean(&info.sop_class_uid), clean(&info.transfer_syntax));
    let for_class = || accepted.iter().filter(move |c| clean(&c.abstract_syntax) == sop);
    let with = |want: &str| for_class().find(|c| clean(&c.transfer_syntax) == want);
    if let Some(c) = with(ts) {
        return Some((c.id, ts.to_string()));
    }
    if !is_uncompressed(ts) {
        return None;
    }
    [EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE]
        .into_iter()
        .find_map(|alt| with(alt).map(|c| (c.id, alt.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextResultReason;

    const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
    const SC: &str = "1.2.840.10008.5.1.4.1.1.7.3";
    const JLS: &str = "1.2.840.10008.1.2.4.80";

    fn info(sop: &str, ts: &str) -> InstanceInfo {
        InstanceInfo {
            path: "x.dcm".into(),
            sop_class_uid: sop.into(),
            sop_instance_uid: "2.25.1".into(),
            series_instance_uid: "2.25.2".into(),
            transfer_syntax: ts.into(),
        }
    }

    fn acc(id: u8, sop: &str, ts: &str) -> PresentationContextNegotiated {
        PresentationContextNegotiated {
            id,
            reason: PresentationContextResultReason::Acceptance,
            transfer_syntax: ts.into(),
            abstract_syntax: sop.into(),
        }
    }

    #[test]
    fn proposes_one_context_per_class_and_syntax() {
        let infos =
            [info(MR, EXPLICIT_VR_LE), info(MR, EXPLICIT_VR_LE), info(MR, JLS), info(SC, "1.2.840.10008.1.2\0")];
        let p = proposals(&infos).expect("proposals");
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Proposal { sop_class_uid: MR.into(), offered: vec![EXPLICIT_VR_LE.into(), IMPLICIT_VR_LE.into()] }
        );
        assert_eq!(p[1].offered, vec![JLS.to_string()], "compressed data is offered as is");
        assert_eq!(p[2].offered, vec![IMPLICIT_VR_LE.to_string(), EXPLICIT_VR_LE.to_string()]);
        let many: Vec<_> = (0..129).map(|i| info(&format!("1.2.3.{i}"), EXPLICIT_VR_LE)).collect();
        assert!(proposals(&many).unwrap_err().contains("129 distinct"));
    }

    #[test]
    fn chooses_the_files_syntax_else_an_uncompressed_one() {
        let accepted = [acc(1, MR, IMPLICIT_VR_LE), acc(3, MR, JLS), acc(5, SC, EXPLICIT_VR_LE)];
        assert_eq!(choose_context(&accepted, &info(MR, JLS)), Some((3, JLS.into())));
        assert_eq!(choose_context(&accepted, &info(MR, EXPLICIT_VR_LE)), Some((1, IMPLICIT_VR_LE.into())));
        assert_eq!(choose_context(&accepted, &info(SC, IMPLICIT_VR_LE)), Some((5, EXPLICIT_VR_LE.into())));
        assert_eq!(choose_context(&accepted, &info(SC, JLS)), None, "no transcoding of compressed pixels");
        assert_eq!(choose_context(&accepted, &info("1.2.3", EXPLICIT_VR_LE)), None);
    }
}
