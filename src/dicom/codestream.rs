//! What each encapsulated frame's own codestream header claims, checked against the DICOM header before any
//! codec is called: codecs size their output from the codestream (a JPEG SOF, a JPEG-LS SOF55, a JPEG 2000
//! SIZ, an RLE segment table), not from Rows × Columns, so a 48×48 image whose SOF claims 30000×30000 would
//! make them allocate gigabytes or index past the buffer sized from the header.
//!
//! JPEG family (baseline, extended incl. 12-bit, lossless, JPEG-LS): every stream in the concatenated fragments
//! is walked marker by marker, and every frame header must give Rows × Columns, SamplesPerPixel components and a
//! precision within BitsAllocated. JPEG 2000: every fragment that starts a codestream has its SIZ checked the
//! same way (and at most 65535 tiles). RLE: every fragment's segment table must hold one segment per byte of
//! sample, offsets ascending inside the fragment.

/// The DICOM header's view of one frame.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub rows: usize,
    pub cols: usize,
    pub samples: usize,
    pub bits_allocated: usize,
}

/// Check every frame codestream of encapsulated Pixel Data in transfer syntax `ts`; `Err` says why not.
pub fn check(ts: &str, fragments: &[Vec<u8>], e: &Expect) -> Result<(), String> {
    match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70"
        | "1.2.840.10008.1.2.4.80"
        | "1.2.840.10008.1.2.4.81" => jpeg(&fragments.concat(), e),
        t if t.starts_with("1.2.840.10008.1.2.4.9") || t.starts_with("1.2.840.10008.1.2.4.20") => {
            let streams: Vec<&Vec<u8>> = fragments.iter().filter(|f| f.starts_with(&[0xFF, 0x4F])).collect();
            if streams.is_empty() {
                return Err("no JPEG 2000 codestream (SOC) in the fragments".into());
            }
            streams.iter().try_for_each(|s| j2k_siz(s, e))
        }
        "1.2.840.10008.1.2.5" => fragments.iter().try_for_each(|f| rle(f, e)),
        _ => Ok(()),
    }
}

fn be16(d: &[u8], at: usize) -> Result<usize, String> {
    match (d.get(at), d.get(at + 1)) {
        (Some(&a), Some(&b)) => Ok(((a as usize) << 8) | b as usize),
        _ => Err("codestream truncated".into()),
    }
}

fn be32(d: &[u8], at: usize) -> Result<u64, String> {
    Ok(((be16(d, at)? as u64) << 16) | be16(d, at + 2)? as u64)
}

/// Walk every JPEG stream (SOI … EOI) and check each frame header.
fn jpeg(d: &[u8], e: &Expect) -> Result<(), String> {
    let mut pos = 0;
    let mut streams = 0;
    while let Some(p) = d.get(pos..).and_then(|rest| rest.windows(2).position(|w| w == [0xFF, 0xD8])) {
        pos += p + 2;
        streams += 1;
        let mut frames_in_stream = 0;
        let mut in_scan = false;
        loop {
            if in_scan {
                // Entropy-coded data: a marker is 0xFF followed by a byte ≥ 0xC0 that is not RSTn (JPEG stuffs
                // 0xFF 0x00; JPEG-LS stuffs 0xFF with a byte < 0x80).
                match d.get(pos..).and_then(|rest| {
                    rest.windows(2).position(|w| w[0] == 0xFF && w[1] >= 0xC0 && !(0xD0..=0xD7).contains(&w[1]))
                }) {
                    Some(p) => pos += p,
                    None => return Ok(()), // data ends inside a scan: the codec reports it
                }
            }
            while d.get(pos) == Some(&0xFF) && d.get(pos + 1) == Some(&0xFF) {
                pos += 1;
            }
            if d.get(pos) != Some(&0xFF) {
                return Err(format!("JPEG stream: expected a marker at byte {pos}"));
            }
            let Some(&m) = d.get(pos + 1) else { return Err("JPEG stream truncated".into()) };
            pos += 2;
            match m {
                0xD9 => break,
                0xD0..=0xD7 | 0x01 => continue,
                0xD8 => return Err("JPEG stream: start of image inside an image".into()),
                _ => {}
            }
            let len = be16(d, pos)?;
            let seg = d.get(pos + 2..pos + len.max(2)).ok_or("JPEG segment runs past the end of the data")?;
            if matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xF7) {
                frames_in_stream += 1;
                if frames_in_stream > 1 {
                    return Err("JPEG stream with more than one frame header".into());
                }
                sof(seg, e)?;
            }
            pos += len.max(2);
            in_scan = m == 0xDA;
        }
    }
    if streams == 0 {
        return Err("no JPEG start of image in the fragments".into());
    }
    Ok(())
}

/// A JPEG / JPEG-LS frame header: precision, height, width, components.
fn sof(seg: &[u8], e: &Expect) -> Result<(), String> {
    let precision = *seg.first().ok_or("frame header truncated")? as usize;
    let (h, w) = (be16(seg, 1)?, be16(seg, 3)?);
    let nf = *seg.get(5).ok_or("frame header truncated")? as usize;
    if (h, w) != (e.rows, e.cols) {
        return Err(format!("JPEG frame header claims {w}x{h}, the DICOM header {}x{}", e.cols, e.rows));
    }
    if nf != e.samples {
        return Err(format!("JPEG frame has {nf} components, SamplesPerPixel is {}", e.samples));
    }
    if !(2..=16).contains(&precision) || precision > e.bits_allocated {
        return Err(format!("JPEG precision {precision} bits with BitsAllocated {}", e.bits_allocated));
    }
    Ok(())
}

/// A JPEG 2000 codestream's SIZ marker segment (right after SOC).
fn j2k_siz(d: &[u8], e: &Expect) -> Result<(), String> {
    if d.get(2..4) != Some(&[0xFF, 0x51]) {
        return Err("JPEG 2000 codestream without SIZ after SOC".into());
    }
    let s = d.get(6..).ok_or("SIZ truncated")?;
    let (x, y, xo, yo) = (be32(s, 2)?, be32(s, 6)?, be32(s, 10)?, be32(s, 14)?);
    let (xt, yt, xto, yto) = (be32(s, 18)?, be32(s, 22)?, be32(s, 26)?, be32(s, 30)?);
    let c = be16(s, 34)?;
    let (w, h) = (x.checked_sub(xo).ok_or("SIZ offset past the image")?, y.checked_sub(yo).ok_or("SIZ offset")?);
    if (h, w) != (e.rows as u64, e.cols as u64) {
        return Err(format!("JPEG 2000 SIZ claims {w}x{h}, the DICOM header {}x{}", e.cols, e.rows));
    }
    if c != e.samples {
        return Err(format!("JPEG 2000 codestream has {c} components, SamplesPerPixel is {}", e.samples));
    }
    if xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err("JPEG 2000 SIZ with an empty or misplaced tile grid".into());
    }
    let tiles = (x - xto).div_ceil(xt).saturating_mul((y - yto).div_ceil(yt));
    if tiles > 65535 {
        return Err(format!("JPEG 2000 SIZ makes {tiles} tiles (at most 65535)"));
    }
    for k in 0..c {
        let depth = (*s.get(36 + 3 * k).ok_or("SIZ truncated")? & 0x7F) as usize + 1;
        let (dx, dy) = (s.get(37 + 3 * k).copied().unwrap_or(0), s.get(38 + 3 * k).copied().unwrap_or(0));
        if depth > e.bits_allocated || dx != 1 || dy != 1 {
            return Err(format!(
                "JPEG 2000 component {k}: {depth} bits, subsampling {dx}x{dy} (BitsAllocated {})",
                e.bits_allocated
            ));
        }
    }
    Ok(())
}

/// An RLE fragment's 64-byte header: segment count and offsets.
fn rle(f: &[u8], e: &Expect) -> Result<(), String> {
    let le32 = |at: usize| -> Result<u64, String> {
        f.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
            .ok_or_else(|| "RLE header truncated".to_string())
    };
    let n = le32(0)?;
    let want = (e.samples * e.bits_allocated.div_ceil(8)) as u64;
    if n != want || n > 15 {
        return Err(format!("RLE fragment has {n} segments, the header needs {want}"));
    }
    let mut last = 0;
    for k in 0..n as usize {
        let off = le32(4 + 4 * k)?;
        if (k == 0 && off != 64) || (k > 0 && off <= last) || off >= f.len() as u64 {
            return Err(format!("RLE segment {k} offset {off} is out of order or past the fragment"));
        }
        last = off;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Expect = Expect { rows: 48, cols: 48, samples: 1, bits_allocated: 16 };

    fn sof_stream(marker: u8, h: u16, w: u16) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, marker, 0, 11, 12];
        v.extend(h.to_be_bytes());
        v.extend(w.to_be_bytes());
        v.extend([1, 1, 0x11, 0, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn jpeg_frame_size_must_match_the_header() {
        let ts = "1.2.840.10008.1.2.4.70";
        assert!(check(ts, &[sof_stream(0xC3, 48, 48)], &E).is_ok());
        let err = check(ts, &[sof_stream(0xC3, 30000, 30000)], &E).unwrap_err();
        assert!(err.contains("30000x30000"), "{err}");
        assert!(check("1.2.840.10008.1.2.4.80", &[sof_stream(0xF7, 30000, 48)], &E).is_err());
        assert!(check(ts, &[vec![0xFF, 0xD8, 0xFF, 0xC3, 0xFF]], &E).is_err(), "truncated segment");
        assert!(check(ts, &[vec![1, 2, 3]], &E).is_err(), "no SOI");
    }

    #[test]
    fn rle_offsets_must_ascend_inside_the_fragment() {
        let mut f = vec![0u8; 80];
        f[0] = 2;
        f[4] = 64;
        f[8] = 70;
        assert!(check("1.2.840.10008.1.2.5", std::slice::from_ref(&f), &E).is_ok());
        f[8] = 200;
        assert!(check("1.2.840.10008.1.2.5", std::slice::from_ref(&f), &E).is_err());
        f[0] = 15;
        assert!(check("1.2.840.10008.1.2.5", &[f], &E).is_err());
    }
}
