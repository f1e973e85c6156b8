//! The DIMSE bytes of C-STORE that dicom-ul does not provide: the C-STORE-RQ command set (Implicit VR Little
//! Endian, PS3.7 E.1), a bounded parser of the C-STORE-RSP command set, the reassembly of a command that the
//! peer split over several PDVs, and the size of the data fragments a peer's maximum PDU length allows.
//!
//! Everything here is pure and works on byte slices; [`super::net`] does the talking.

use dicom_ul::pdu::{PDataValue, PDataValueType};

/// CommandField of a C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// CommandField of a C-STORE-RSP.
pub const C_STORE_RSP: u16 = 0x8001;
/// CommandDataSetType: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;
/// CommandDataSetType of a request that carries a data set (any value but 0101; 0000 by convention).
pub const DATA_SET_PRESENT: u16 = 0x0000;
/// Priority MEDIUM.
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// Bytes of a P-DATA-TF PDU's variable field that are not the PDV's data: item length (4), presentation
/// context id (1), message control header (1).
pub const PDV_OVERHEAD: u32 = 6;

/// Append one Implicit VR LE element (group 0000) with an even-padded value.
fn put(out: &mut Vec<u8>, element: u16, value: &[u8], pad: u8) {
    let len = value.len() + value.len() % 2;
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(value);
    if value.len() % 2 == 1 {
        out.push(pad);
    }
}

/// The C-STORE-RQ command set, CommandGroupLength first, in Implicit VR Little Endian.
pub fn store_rq(sop_class_uid: &str, sop_instance_uid: &str, message_id: u16, priority: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    put(&mut body, 0x0002, sop_class_uid.as_bytes(), 0);
    put(&mut body, 0x0100, &C_STORE_RQ.to_le_bytes(), 0);
    put(&mut body, 0x0110, &message_id.to_le_bytes(), 0);
    put(&mut body, 0x0700, &priority.to_le_bytes(), 0);
    put(&mut body, 0x0800, &DATA_SET_PRESENT.to_le_bytes(), 0);
    put(&mut body, 0x1000, sop_instance_uid.as_bytes(), 0);
    let mut out = Vec::with_capacity(body.len() + 12);
    put(&mut out, 0x0000, &(body.len() as u32).to_le_bytes(), 0);
    out.extend_from_slice(&body);
    out
}

/// What ldae reads from a C-STORE-RSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRsp {
    pub message_id_being_responded_to: u16,
    pub status: u16,
    pub affected_sop_instance_uid: Option<String>,
    pub error_comment: Option<String>,
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).trim_start().to_string()
}

fn us(name: &str, v: &[u8]) -> Result<u16, String> {
    match v {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(format!("{name} has {} bytes, not 2", v.len())),
    }
}

/// Parse a C-STORE-RSP command set (Implicit VR LE, every element of group 0000). Refuses, with the reason, a
/// command that is truncated, has an element outside group 0000, is not a C-STORE-RSP, announces a data set, or
/// lacks MessageIDBeingRespondedTo or Status. Never allocates more than the command's own length.
pub fn parse_store_rsp(bytes: &[u8]) -> Result<StoreRsp, String> {
    let (mut field, mut responded, mut status, mut dataset_type) = (None, None, None, None);
    let (mut uid, mut comment) = (None, None);
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(format!("command set cut inside an element header ({} bytes left)", rest.len()));
        }
        let group = u16::from_le_bytes([rest[0], rest[1]]);
        let element = u16::from_le_bytes([rest[2], rest[3]]);
        let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        rest = &rest[8..];
        if group != 0x0000 {
            return Err(format!("element ({group:04X},{element:04X}) outside the command group"));
        }
        if len > rest.len() {
            return Err(format!("element (0000,{element:04X}) claims {len} bytes, {} left", rest.len()));
        }
        let (value, tail) = rest.split_at(len);
        rest = tail;
        match element {
            0x0100 => field = Some(us("CommandField", value)?),
            0x0120 => responded = Some(us("MessageIDBeingRespondedTo", value)?),
            0x0800 => dataset_type = Some(us("CommandDataSetType", value)?),
            0x0900 => status = Some(us("Status", value)?),
            0x1000 => uid = Some(text(value)),
            0x0902 => comment = Some(text(value)),
            _ => {}
        }
    }
    match field {
        Some(C_STORE_RSP) => {}
        Some(f) => return Err(format!("CommandField {f:04X}H is not a C-STORE-RSP (8001H)")),
        None => return Err("no CommandField".into()),
    }
    if dataset_type.is_some_and(|t| t != NO_DATA_SET) {
        return Err("a C-STORE-RSP announcing a data set".into());
    }
    Ok(StoreRsp {
        message_id_being_responded_to: responded.ok_or("no MessageIDBeingRespondedTo")?,
        status: status.ok_or("no Status")?,
        affected_sop_instance_uid: uid.filter(|u| !u.is_empty()),
        error_comment: comment.filter(|c| !c.is_empty()),
    })
}

/// Collects the PDVs of one command set until its last fragment, refusing data PDVs (a C-STORE-RSP has no data
/// set), PDVs on another presentation context, and a command longer than `cap` bytes.
#[derive(Debug)]
pub struct CommandAssembler {
    context_id: u8,
    cap: usize,
    buf: Vec<u8>,
}

impl CommandAssembler {
    pub fn new(context_id: u8, cap: usize) -> Self {
        CommandAssembler { context_id, cap, buf: Vec::new() }
    }

    /// Add one PDV; `Ok(Some(command))` once its last fragment came.
    pub fn push(&mut self, pdv: PDataValue) -> Result<Option<Vec<u8>>, String> {
        if pdv.presentation_context_id != self.context_id {
            return Err(format!(
                "a PDV on presentation context {} while waiting for the response on {}",
                pdv.presentation_context_id, self.context_id
            ));
        }
        if pdv.value_type != PDataValueType::Command {
            return Err("a data PDV where the C-STORE-RSP command was expected".into());
        }
        if self.buf.len().saturating_add(pdv.data.len()) > self.cap {
            return Err(format!("a response command longer than {} bytes", self.cap));
        }
        self.buf.extend_from_slice(&pdv.data);
        Ok(pdv.is_last.then(|| std::mem::take(&mut self.buf)))
    }
}

/// Most data bytes in one PDV of a P-DATA-TF PDU whose variable field may be `max_pdu` bytes long.
pub fn fragment_len(max_pdu: u32) -> usize {
    max_pdu.saturating_sub(PDV_OVERHEAD).max(2) as usize & !1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(elements: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, v) in elements {
            put(&mut out, *e, v, b' ');
        }
        out
    }

    #[test]
    fn store_rq_is_implicit_vr_le_with_a_true_group_length() {
        let b = store_rq("1.2.840.10008.5.1.4.1.1.4", "2.25.123", 7, PRIORITY_MEDIUM);
        // (0000,0000) UL group length = bytes after it.
        assert_eq!(&b[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
        assert_eq!(len, b.len() - 12);
        // (0000,0002) AffectedSOPClassUID, odd length 25 padded with NUL to 26.
        assert_eq!(&b[12..20], &[0, 0, 2, 0, 26, 0, 0, 0]);
        assert_eq!(&b[20..46], b"1.2.840.10008.5.1.4.1.1.4\0");
        // CommandField 0001, MessageID 7 follow.
        assert_eq!(&b[46..56], &[0, 0, 0, 1, 2, 0, 0, 0, 1, 0]);
        assert_eq!(&b[56..66], &[0, 0, 0x10, 1, 2, 0, 0, 0, 7, 0]);
        assert!(b.ends_with(b"2.25.123"));
        assert_eq!(b.len() % 2, 0);
    }

    #[test]
    fn parses_a_response_and_refuses_malformed_ones() {
        let good = rsp(&[
            (0x0002, b"1.2.840.10008.5.1.4.1.1.4".to_vec()),
            (0x0100, C_STORE_RSP.to_le_bytes().to_vec()),
            (0x0120, 9u16.to_le_bytes().to_vec()),
            (0x0800, NO_DATA_SET.to_le_bytes().to_vec()),
            (0x0900, 0xB000u16.to_le_bytes().to_vec()),
            (0x0902, b"coerced".to_vec()),
            (0x1000, b"2.25.5".to_vec()),
        ]);
        let r = parse_store_rsp(&good).expect("parse");
        assert_eq!(r.message_id_being_responded_to, 9);
        assert_eq!(r.status, 0xB000);
        assert_eq!(r.affected_sop_instance_uid.as_deref(), Some("2.25.5"));
        assert_eq!(r.error_comment.as_deref(), Some("coerced"));

        let cut = &good[..good.len() - 3];
        assert!(parse_store_rsp(cut).unwrap_err().contains("claims"));
        assert!(parse_store_rsp(&good[..5]).unwrap_err().contains("element header"));
        let mut lying = good.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_store_rsp(&lying).unwrap_err().contains("claims 4294967295"));
        let echo = rsp(&[(0x0100, 0x8030u16.to_le_bytes().to_vec()), (0x0900, vec![0, 0])]);
        assert!(parse_store_rsp(&echo).unwrap_err().contains("not a C-STORE-RSP"));
        let no_status = rsp(&[(0x0100, C_STORE_RSP.to_le_bytes().to_vec()), (0x0120, vec![1, 0])]);
        assert_eq!(parse_store_rsp(&no_status).unwrap_err(), "no Status");
        let with_data = rsp(&[
            (0x0100, C_STORE_RSP.to_le_bytes().to_vec()),
            (0x0120, vec![1, 0]),
            (0x0800, vec![0, 0]),
            (0x0900, vec![0, 0]),
        ]);
        assert!(parse_store_rsp(&with_data).unwrap_err().contains("data set"));
        let mut other_group = good.clone();
        other_group[0] = 8;
        assert!(parse_store_rsp(&other_group).unwrap_err().contains("outside the command group"));
    }

    fn pdv(id: u8, command: bool, last: bool, data: &[u8]) -> PDataValue {
        let value_type = if command { PDataValueType::Command } else { PDataValueType::Data };
        PDataValue { presentation_context_id: id, value_type, is_last: last, data: data.to_vec() }
    }

    #[test]
    fn reassembles_fragmented_commands_within_a_bound() {
        let mut a = CommandAssembler::new(3, 10);
        assert_eq!(a.push(pdv(3, true, false, b"abcd")), Ok(None));
        assert_eq!(a.push(pdv(3, true, true, b"ef")), Ok(Some(b"abcdef".to_vec())));
        assert_eq!(a.push(pdv(3, true, true, b"gh")), Ok(Some(b"gh".to_vec())), "starts afresh");
        assert!(a.push(pdv(5, true, true, b"x")).unwrap_err().contains("context 5"));
        assert!(a.push(pdv(3, false, true, b"x")).unwrap_err().contains("data PDV"));
        let mut a = CommandAssembler::new(1, 10);
        assert_eq!(a.push(pdv(1, true, false, b"123456")), Ok(None));
        assert!(a.push(pdv(1, true, true, b"78901")).unwrap_err().contains("longer than 10"));
    }

    #[test]
    fn fragments_fit_the_peer_max_pdu() {
        assert_eq!(fragment_len(16384), 16378);
        assert_eq!(fragment_len(16385), 16378, "even, so that no fragment splits a 16-bit sample oddly");
        assert_eq!(fragment_len(0), 2);
    }
}
