//! A pure-Rust JPEG-LS decoder (ITU-T T.87 / ISO 14495-1) for greyscale frames, lossless and near-lossless —
//! the DICOM transfer syntaxes 1.2.840.10008.1.2.4.80 and .81. It replaces the CharLS C++ library, so that
//! building ldae needs no cmake or other system package.
//!
//! Supported: one component, 2–16 bits, default or LSE-preset coding parameters (MAXVAL, T1–T3, RESET), any
//! NEAR. Refused with an error (never a panic): several components, mapping tables, point transform, restart
//! intervals, a frame size other than the header's Rows × Columns, and streams that end early or overrun.

/// JPEG-LS Lossless Image Compression.
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// JPEG-LS Lossy (Near-Lossless) Image Compression.
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";

/// Run lengths per run index (T.87 A.7.1.1, the array J).
const J: [u32; 32] =
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Decode every frame of encapsulated JPEG-LS into little-endian samples of `bytes_per_sample` (1 or 2) bytes,
/// frames concatenated. Fragments are grouped into frames at each start-of-image marker; each frame must be
/// `rows × cols`, which is checked before anything is allocated for it.
pub fn decode_fragments(
    fragments: &[Vec<u8>],
    frames: usize,
    rows: usize,
    cols: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, String> {
    let mut starts: Vec<usize> = Vec::new();
    for (i, f) in fragments.iter().enumerate() {
        if f.starts_with(&[0xFF, 0xD8]) || starts.is_empty() {
            starts.push(i);
        }
    }
    if starts.len() < frames {
        return Err(format!("{} JPEG-LS streams for {frames} frames", starts.len()));
    }
    if !matches!(bytes_per_sample, 1 | 2) {
        return Err(format!("JPEG-LS into {bytes_per_sample}-byte samples is not supported"));
    }
    let mut out = Vec::new();
    for (n, &s) in starts.iter().take(frames).enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(fragments.len());
        let stream: Vec<u8> = fragments[s..end].concat();
        let img = decode(&stream, Some((rows, cols)))?;
        if bytes_per_sample == 1 && img.maxval > 255 {
            return Err(format!("JPEG-LS precision {} bits in 8-bit samples", img.precision));
        }
        out.reserve(img.samples.len() * bytes_per_sample);
        for v in img.samples {
            match bytes_per_sample {
                1 => out.push(v as u8),
                _ => out.extend_from_slice(&v.to_le_bytes()),
            }
        }
    }
    Ok(out)
}

/// A decoded JPEG-LS image: row-major samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub rows: usize,
    pub cols: usize,
    pub precision: u8,
    pub maxval: i32,
    pub near: i32,
    pub samples: Vec<u16>,
}

/// Coding parameters of a scan (T.87 C.2.4.1.1 and A.2.1).
#[derive(Debug, Clone, Copy)]
struct Params {
    maxval: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
    near: i32,
    range: i32,
    qbpp: u32,
    limit: u32,
}

impl Params {
    fn new(precision: u8, preset: [i32; 5], near: i32) -> Result<Params, String> {
        let maxval = if preset[0] > 0 { preset[0] } else { (1i32 << precision) - 1 };
        if !(1..1 << 16).contains(&maxval) || near < 0 || near > (maxval / 2).min(255) {
            return Err(format!("JPEG-LS parameters out of range: MAXVAL {maxval}, NEAR {near}"));
        }
        let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
        // FACTOR·(BASIC_Ti − i − 1) + i + 1 + (2i + 1)·NEAR with BASIC_T1..3 = 3, 7, 21 (C.2.4.1.1.1).
        let (t1, t2, t3) = if maxval >= 128 {
            let f = (maxval.min(4095) + 128) / 256;
            let t1 = clamp(f + 2 + 3 * near, near + 1);
            let t2 = clamp(f * (7 - 3) + 3 + 5 * near, t1);
            (t1, t2, clamp(f * (21 - 4) + 4 + 7 * near, t2))
        } else {
            let f = 256 / (maxval + 1);
            let t1 = clamp((3 / f).max(2) + 3 * near, near + 1);
            let t2 = clamp((7 / f).max(3) + 5 * near, t1);
            (t1, t2, clamp((21 / f).max(4) + 7 * near, t2))
        };
        let t1 = if preset[1] > 0 { preset[1] } else { t1 };
        let t2 = if preset[2] > 0 { preset[2] } else { t2 };
        let t3 = if preset[3] > 0 { preset[3] } else { t3 };
        let reset = if preset[4] > 0 { preset[4] } else { 64 };
        if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval.max(1)) || reset < 3 {
            return Err(format!("JPEG-LS thresholds out of order: T1 {t1}, T2 {t2}, T3 {t3}, RESET {reset}"));
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let bits = |v: i32| 32 - (v as u32).saturating_sub(1).leading_zeros();
        let qbpp = bits(range);
        let bpp = bits(maxval + 1).max(2);
        Ok(Params { maxval, t1, t2, t3, reset, near, range, qbpp, limit: 2 * (bpp + bpp.max(8)) })
    }

    /// Quantise one local gradient (A.3.3).
    fn quantize(&self, d: i32) -> i32 {
        match d {
            d if d <= -self.t3 => -4,
            d if d <= -self.t2 => -3,
            d if d <= -self.t1 => -2,
            d if d < -self.near => -1,
            d if d <= self.near => 0,
            d if d < self.t1 => 1,
            d if d < self.t2 => 2,
            d if d < self.t3 => 3,
            _ => 4,
        }
    }

    /// Prediction + error → reconstructed sample, with the modulo range folded back (A.4.? / A.5.? ).
    fn reconstruct(&self, px: i32, err: i32) -> i32 {
        let step = 2 * self.near + 1;
        let mut rx = px + err * step;
        if rx < -self.near {
            rx += self.range * step;
        } else if rx > self.maxval + self.near {
            rx -= self.range * step;
        }
        rx.clamp(0, self.maxval)
    }
}

/// Bits of the entropy-coded segment; after an 0xFF byte the next byte's top bit is a stuffed zero (A.1).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    last_ff: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, pos: 0, acc: 0, n: 0, last_ff: false }
    }

    fn fill(&mut self) -> Result<(), String> {
        let &b = self.data.get(self.pos).ok_or("JPEG-LS scan data ends early")?;
        if self.last_ff {
            if b & 0x80 != 0 {
                return Err("JPEG-LS scan data ends early (marker inside the coded data)".into());
            }
            self.acc = (self.acc << 7) | b as u64;
            self.n += 7;
        } else {
            self.acc = (self.acc << 8) | b as u64;
            self.n += 8;
        }
        self.last_ff = b == 0xFF;
        self.pos += 1;
        Ok(())
    }

    fn bit(&mut self) -> Result<bool, String> {
        if self.n == 0 {
            self.fill()?;
        }
        self.n -= 1;
        Ok((self.acc >> self.n) & 1 == 1)
    }

    fn bits(&mut self, count: u32) -> Result<i32, String> {
        while self.n < count {
            self.fill()?;
        }
        self.n -= count;
        Ok(((self.acc >> self.n) & ((1u64 << count) - 1)) as i32)
    }

    /// Limited-length Golomb code of parameter `k` (A.5.3): unary prefix, then `k` bits, or the escape.
    fn golomb(&mut self, k: u32, limit: u32, qbpp: u32) -> Result<i32, String> {
        let mut q = 0u32;
        while !self.bit()? {
            q += 1;
            if q > limit {
                return Err("JPEG-LS Golomb code longer than LIMIT".into());
            }
        }
        let escape = limit.saturating_sub(qbpp + 1);
        if q < escape {
            Ok(((q as i32) << k) | if k > 0 { self.bits(k)? } else { 0 })
        } else {
            Ok(self.bits(qbpp)? + 1)
        }
    }
}

/// Adaptive context statistics: 365 regular contexts and 2 run-interruption contexts (A.2.1).
struct Contexts {
    a: Vec<i32>,
    b: Vec<i32>,
    c: Vec<i32>,
    n: Vec<i32>,
    nn: [i32; 2],
}

impl Contexts {
    fn new(p: &Params) -> Contexts {
        let a0 = ((p.range + 32) / 64).max(2);
        Contexts { a: vec![a0; 367], b: vec![0; 367], c: vec![0; 367], n: vec![1; 367], nn: [0; 2] }
    }

    fn k(&self, q: usize, temp: i32) -> u32 {
        let mut k = 0;
        while (self.n[q] << k) < temp && k < 24 {
            k += 1;
        }
        k
    }
}

/// Decode one regular-mode sample (A.3–A.6).
fn regular(bits: &mut Bits, p: &Params, cx: &mut Contexts, ra: i32, rb: i32, rc: i32, rd: i32) -> Result<i32, String> {
    let (mut q1, mut q2, mut q3) = (p.quantize(rd - rb), p.quantize(rb - rc), p.quantize(rc - ra));
    let sign = if q1 < 0 || (q1 == 0 && (q2 < 0 || (q2 == 0 && q3 < 0))) { -1 } else { 1 };
    if sign < 0 {
        (q1, q2, q3) = (-q1, -q2, -q3);
    }
    let q = (81 * q1 + 9 * q2 + q3) as usize;
    let mut px = if rc >= ra.max(rb) {
        ra.min(rb)
    } else if rc <= ra.min(rb) {
        ra.max(rb)
    } else {
        ra + rb - rc
    };
    px = (px + sign * cx.c[q]).clamp(0, p.maxval);
    let k = cx.k(q, cx.a[q]);
    let m = bits.golomb(k, p.limit, p.qbpp)?;
    if m > 2 * p.range {
        return Err(format!("JPEG-LS error value {m} outside the sample range (corrupt data)"));
    }
    let err = if p.near == 0 && k == 0 && 2 * cx.b[q] <= -cx.n[q] {
        if m & 1 == 1 {
            (m - 1) / 2
        } else {
            -(m / 2) - 1
        }
    } else if m & 1 == 0 {
        m / 2
    } else {
        -(m + 1) / 2
    };
    // Context update (A.6.1) and bias correction (A.6.2).
    cx.b[q] += err * (2 * p.near + 1);
    cx.a[q] += err.abs();
    if cx.n[q] == p.reset {
        cx.a[q] >>= 1;
        cx.b[q] = if cx.b[q] >= 0 { cx.b[q] >> 1 } else { -((1 - cx.b[q]) >> 1) };
        cx.n[q] >>= 1;
    }
    cx.n[q] += 1;
    if cx.b[q] <= -cx.n[q] {
        cx.b[q] += cx.n[q];
        if cx.c[q] > -128 {
            cx.c[q] -= 1;
        }
        if cx.b[q] <= -cx.n[q] {
            cx.b[q] = -cx.n[q] + 1;
        }
    } else if cx.b[q] > 0 {
        cx.b[q] -= cx.n[q];
        if cx.c[q] < 127 {
            cx.c[q] += 1;
        }
        if cx.b[q] > 0 {
            cx.b[q] = 0;
        }
    }
    Ok(p.reconstruct(px, sign * err))
}

/// Decode the sample that ends a run (A.7.2).
fn interruption(
    bits: &mut Bits,
    p: &Params,
    cx: &mut Contexts,
    ra: i32,
    rb: i32,
    run_index: usize,
) -> Result<i32, String> {
    let ritype = ((ra - rb).abs() <= p.near) as i32;
    let (px, sign) = if ritype == 1 { (ra, 1) } else { (rb, if ra > rb { -1 } else { 1 }) };
    let q = 365 + ritype as usize;
    let temp = if ritype == 1 { cx.a[q] + (cx.n[q] >> 1) } else { cx.a[q] };
    let k = cx.k(q, temp);
    let limit = p.limit.saturating_sub(J[run_index] + 1);
    let em = bits.golomb(k, limit, p.qbpp)?;
    if em > 2 * p.range {
        return Err(format!("JPEG-LS error value {em} outside the sample range (corrupt data)"));
    }
    let t = em + ritype;
    let map = t & 1 == 1;
    let magnitude = (t + map as i32) / 2;
    let flip = k == 0 && 2 * cx.nn[ritype as usize] < cx.n[q];
    let err = if map != flip { -magnitude } else { magnitude };
    if err < 0 {
        cx.nn[ritype as usize] += 1;
    }
    cx.a[q] += (em + 1 - ritype) >> 1;
    if cx.n[q] == p.reset {
        cx.a[q] >>= 1;
        cx.n[q] >>= 1;
        cx.nn[ritype as usize] >>= 1;
    }
    cx.n[q] += 1;
    Ok(p.reconstruct(px, sign * err))
}

fn be16(d: &[u8], at: usize) -> Result<usize, String> {
    match d.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]]) as usize),
        None => Err("JPEG-LS stream ends inside a marker segment".into()),
    }
}

/// Decode one JPEG-LS stream (SOI … EOI). With `expect = Some((rows, cols))`, a frame of another size is refused
/// before its samples are allocated.
pub fn decode(d: &[u8], expect: Option<(usize, usize)>) -> Result<Image, String> {
    if !d.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG-LS stream (no start-of-image marker)".into());
    }
    let mut pos = 2;
    let mut frame: Option<(u8, usize, usize)> = None;
    let mut preset = [0i32; 5];
    loop {
        while d.get(pos) == Some(&0xFF) && d.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if d.get(pos) != Some(&0xFF) {
            return Err(format!("JPEG-LS: expected a marker at byte {pos}"));
        }
        let marker = *d.get(pos + 1).ok_or("JPEG-LS stream ends before a scan")?;
        pos += 2;
        if marker == 0xD9 {
            return Err("JPEG-LS stream has no scan".into());
        }
        let len = be16(d, pos)?;
        if len < 2 {
            return Err(format!("JPEG-LS marker FF{marker:02X} has length {len}"));
        }
        let seg = d.get(pos + 2..pos + len).ok_or("JPEG-LS marker segment runs past the end")?;
        match marker {
            0xF7 => {
                // SOF55: P, Y, X, Nf, then per component C, H/V, Tq.
                if seg.len() < 6 {
                    return Err("JPEG-LS frame header too short".into());
                }
                let (prec, rows, cols, nf) = (seg[0], be16(seg, 1)?, be16(seg, 3)?, seg[5]);
                if nf != 1 {
                    return Err(format!("JPEG-LS frame has {nf} components; only greyscale is supported"));
                }
                if !(2..=16).contains(&prec) || rows == 0 || cols == 0 {
                    return Err(format!("JPEG-LS frame {cols}x{rows} at {prec} bits is not supported"));
                }
                if let Some((r, c)) = expect {
                    if (rows, cols) != (r, c) {
                        return Err(format!("JPEG-LS frame is {cols}x{rows}, the header says {c}x{r}"));
                    }
                }
                frame = Some((prec, rows, cols));
            }
            0xF8 => {
                // LSE: preset coding parameters (id 1) only.
                match seg.first() {
                    Some(1) if seg.len() >= 11 => {
                        for (i, v) in preset.iter_mut().enumerate() {
                            *v = be16(seg, 1 + 2 * i)? as i32;
                        }
                    }
                    Some(id) => return Err(format!("JPEG-LS LSE segment id {id} (mapping tables) is not supported")),
                    None => return Err("empty JPEG-LS LSE segment".into()),
                }
            }
            0xDD if be16(seg, 0)? != 0 => return Err("JPEG-LS restart intervals are not supported".into()),
            0xDA => {
                let (prec, rows, cols) = frame.ok_or("JPEG-LS scan before the frame header")?;
                if seg.len() < 6 || seg[0] != 1 {
                    return Err("JPEG-LS scan header: only one component per scan is supported".into());
                }
                let (mapping, near, _ilv, pt) = (seg[2], seg[3] as i32, seg[4], seg[5]);
                if mapping != 0 || pt & 0x0F != 0 {
                    return Err("JPEG-LS mapping tables and point transforms are not supported".into());
                }
                let p = Params::new(prec, preset, near)?;
                let data = &d[pos + len..];
                let samples = decode_scan(data, &p, rows, cols)?;
                return Ok(Image { rows, cols, precision: prec, maxval: p.maxval, near, samples });
            }
            0xD8 | 0xD0..=0xD7 | 0x01 => return Err(format!("JPEG-LS: unexpected marker FF{marker:02X}")),
            _ => {} // APPn, COM and the like: skipped
        }
        pos += len;
    }
}

/// Decode the entropy-coded samples of one single-component scan.
fn decode_scan(data: &[u8], p: &Params, rows: usize, cols: usize) -> Result<Vec<u16>, String> {
    let total = rows.checked_mul(cols).ok_or("JPEG-LS frame size overflows")?;
    // Every sample costs at least one bit, except inside runs, where one bit covers up to 2^15 samples.
    if total / 32768 > data.len().saturating_mul(8) {
        return Err(format!("JPEG-LS scan of {} bytes cannot hold {cols}x{rows} samples", data.len()));
    }
    let mut out = Vec::with_capacity(total);
    let mut bits = Bits::new(data);
    let mut cx = Contexts::new(p);
    let mut run_index = 0usize;
    // prev/cur hold x = -1 ..= cols (index 0 ..= cols + 1).
    let mut prev = vec![0i32; cols + 2];
    let mut cur = vec![0i32; cols + 2];
    for _ in 0..rows {
        prev[cols + 1] = prev[cols];
        cur[0] = prev[1];
        let mut x = 0;
        while x < cols {
            let (ra, rb, rc, rd) = (cur[x], prev[x + 1], prev[x], prev[x + 2]);
            let near = p.near;
            if (rd - rb).abs() <= near && (rb - rc).abs() <= near && (rc - ra).abs() <= near {
                // Run mode (A.7.1): runs of Ra, then possibly one interruption sample.
                let left = cols - x;
                let mut len = 0usize;
                loop {
                    if !bits.bit()? {
                        if J[run_index] > 0 {
                            len += bits.bits(J[run_index])? as usize;
                        }
                        break;
                    }
                    let chunk = 1usize << J[run_index];
                    let count = chunk.min(left - len);
                    len += count;
                    if count == chunk {
                        run_index = (run_index + 1).min(31);
                    }
                    if len == left {
                        break;
                    }
                }
                if len > left {
                    return Err("JPEG-LS run runs past the end of the line".into());
                }
                cur[x + 1..x + 1 + len].fill(ra);
                x += len;
                if x == cols {
                    break;
                }
                let rb = prev[x + 1];
                cur[x + 1] = interruption(&mut bits, p, &mut cx, ra, rb, run_index)?;
                run_index = run_index.saturating_sub(1);
                x += 1;
            } else {
                cur[x + 1] = regular(&mut bits, p, &mut cx, ra, rb, rc, rd)?;
                x += 1;
            }
        }
        out.extend(cur[1..=cols].iter().map(|&v| v as u16));
        std::mem::swap(&mut prev, &mut cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_thresholds_follow_the_standard() {
        // T.87 C.2.4.1.1.1, 8-bit lossless: 3, 7, 21; 16-bit: FACTOR 16 → 18, 67, 276.
        let p = Params::new(8, [0; 5], 0).unwrap();
        assert_eq!((p.t1, p.t2, p.t3, p.reset, p.range, p.qbpp, p.limit), (3, 7, 21, 64, 256, 8, 32));
        let p = Params::new(16, [0; 5], 0).unwrap();
        assert_eq!((p.t1, p.t2, p.t3, p.limit), (18, 67, 276, 64));
        let p = Params::new(12, [0; 5], 3).unwrap();
        assert_eq!((p.t1, p.t2, p.t3), (18 + 9, 3 + 4 * 16 + 15, 4 + 17 * 16 + 21));
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        assert!(decode(b"", None).is_err());
        assert!(decode(&[0xFF, 0xD8], None).is_err());
        // SOF55 claiming 3 components.
        let sof = [0xFF, 0xD8, 0xFF, 0xF7, 0, 11, 8, 0, 4, 0, 4, 3, 1, 0x11, 0, 2, 0x11];
        assert!(decode(&sof, None).unwrap_err().contains("components"));
        // A frame that disagrees with the DICOM header.
        let sof = [0xFF, 0xD8, 0xFF, 0xF7, 0, 11, 8, 0, 4, 0, 4, 1, 1, 0x11, 0];
        assert!(decode(&sof, Some((8, 8))).unwrap_err().contains("header says"));
        // Scan data cut short.
        let mut s = sof.to_vec();
        s.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0, 0x12]);
        assert!(decode(&s, None).unwrap_err().contains("ends early"));
        // Every random byte string after a valid header is an error or an image, never a panic.
        let mut seed = 12345u32;
        for _ in 0..200 {
            let mut t = s[..s.len() - 1].to_vec();
            for _ in 0..40 {
                seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
                t.push((seed >> 16) as u8);
            }
            let _ = decode(&t, None);
        }
    }
}
