//! A small decoder for JPEG Extended (process 2 & 4, SOF0/SOF1, Huffman, sequential DCT) greyscale images at
//! 8 or 12 bits — the DICOM transfer syntax 1.2.840.10008.1.2.4.51. dicom-pixeldata's JPEG codec (jpeg-decoder)
//! has no 12-bit support, so ldae decodes these frames itself, following ITU-T T.81 (Annex F: Huffman decoding,
//! A.3.3: IDCT). Only single-component frames are accepted; anything else is an error, never a panic.

/// Natural (row-major) index of the k-th coefficient in zig-zag order (T.81 Figure A.6).
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

/// Decode every frame of an encapsulated JPEG into little-endian `u16` samples, frames concatenated.
/// Fragments are grouped into frames at each start-of-image marker; every frame must be `(rows, cols)`.
pub fn decode_fragments(fragments: &[Vec<u8>], frames: usize, size: (usize, usize)) -> Result<Vec<u8>, String> {
    let mut streams: Vec<Vec<u8>> = Vec::new();
    for f in fragments {
        if f.starts_with(&[0xFF, 0xD8]) || streams.is_empty() {
            streams.push(f.clone());
        } else if let Some(last) = streams.last_mut() {
            last.extend_from_slice(f);
        }
    }
    if streams.len() < frames {
        return Err(format!("{} JPEG streams for {frames} frames", streams.len()));
    }
    let mut out = Vec::new();
    for s in streams.iter().take(frames) {
        let img = decode(s, size)?;
        for v in img {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// A canonical Huffman table (T.81 Annex C / F.2.2.3).
#[derive(Clone, Default)]
struct Huffman {
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Huffman {
        let mut h = Huffman { maxcode: [-1; 18], values, ..Default::default() };
        let (mut code, mut k) = (0i32, 0i32);
        for l in 1..=16 {
            let n = counts[l - 1] as i32;
            if n > 0 {
                h.valptr[l] = k;
                h.mincode[l] = code;
                code += n;
                k += n;
                h.maxcode[l] = code - 1;
            } else {
                h.maxcode[l] = -1;
            }
            code <<= 1;
        }
        h.maxcode[17] = i32::MAX;
        h
    }
}

/// Entropy-coded bit reader that skips stuffed zero bytes and stops at markers.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    n: u32,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        if self.n == 0 {
            let b = *self.data.get(self.pos).ok_or("JPEG data ends inside a scan")?;
            if b == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => self.pos += 2,
                    _ => return Err("unexpected marker inside entropy-coded data".into()),
                }
            } else {
                self.pos += 1;
            }
            self.acc = b as u32;
            self.n = 8;
        }
        self.n -= 1;
        Ok((self.acc >> self.n) & 1)
    }

    fn receive(&mut self, s: u32) -> Result<i32, String> {
        let mut v = 0i32;
        for _ in 0..s {
            v = (v << 1) | self.bit()? as i32;
        }
        Ok(v)
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, String> {
        let mut code = self.bit()? as i32;
        let mut l = 1;
        while l <= 16 && code > h.maxcode[l] {
            code = (code << 1) | self.bit()? as i32;
            l += 1;
        }
        if l > 16 {
            return Err("bad Huffman code".into());
        }
        let j = h.valptr[l] + code - h.mincode[l];
        h.values.get(j as usize).copied().ok_or_else(|| "Huffman value out of range".to_string())
    }

    /// Skip to the next RSTn marker (after a restart interval).
    fn restart(&mut self) -> Result<(), String> {
        self.n = 0;
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return Ok(());
            }
            self.pos += 1;
        }
        Err("restart marker missing".into())
    }
}

fn extend(v: i32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
    }
}

fn be16(d: &[u8], at: usize) -> Result<usize, String> {
    match (d.get(at), d.get(at + 1)) {
        (Some(&a), Some(&b)) => Ok(((a as usize) << 8) | b as usize),
        _ => Err("JPEG stream truncated".into()),
    }
}

/// Decode one JPEG stream into row-major samples; its frame header must say `(rows, cols)` = `size` (checked
/// before the output is allocated).
pub fn decode(d: &[u8], size: (usize, usize)) -> Result<Vec<u16>, String> {
    if !d.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG stream (no SOI)".into());
    }
    let mut qt = [[0u16; 64]; 4];
    let mut dc: [Huffman; 4] = Default::default();
    let mut ac: [Huffman; 4] = Default::default();
    let (mut precision, mut width, mut height, mut tq) = (0u32, 0usize, 0usize, 0usize);
    let mut restart = 0usize;
    let mut pos = 2;
    loop {
        // Find the next marker.
        while d.get(pos) == Some(&0xFF) && d.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if d.get(pos) != Some(&0xFF) {
            return Err(format!("expected a marker at byte {pos}"));
        }
        let marker = *d.get(pos + 1).ok_or("JPEG stream truncated")?;
        pos += 2;
        if marker == 0xD9 {
            return Err("end of image before any scan".into());
        }
        let len = be16(d, pos)?;
        let seg = d.get(pos + 2..pos + len).ok_or("JPEG segment runs past the end")?;
        match marker {
            0xDB => {
                let mut i = 0;
                while i < seg.len() {
                    let (pq, t) = (seg[i] >> 4, (seg[i] & 15) as usize);
                    i += 1;
                    let t = t.min(3);
                    for k in 0..64 {
                        let v = if pq == 0 {
                            *seg.get(i + k).ok_or("DQT truncated")? as u16
                        } else {
                            be16(seg, i + 2 * k)? as u16
                        };
                        qt[t][ZIGZAG[k]] = v;
                    }
                    i += if pq == 0 { 64 } else { 128 };
                }
            }
            0xC4 => {
                let mut i = 0;
                while i < seg.len() {
                    let (tc, th) = (seg[i] >> 4, (seg[i] & 15) as usize);
                    let counts: [u8; 16] =
                        seg.get(i + 1..i + 17).ok_or("DHT truncated")?.try_into().map_err(|_| "DHT")?;
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let vals = seg.get(i + 17..i + 17 + n).ok_or("DHT truncated")?.to_vec();
                    let h = Huffman::new(&counts, vals);
                    if tc == 0 {
                        dc[th.min(3)] = h;
                    } else {
                        ac[th.min(3)] = h;
                    }
                    i += 17 + n;
                }
            }
            0xC0 | 0xC1 => {
                precision = *seg.first().ok_or("SOF truncated")? as u32;
                height = be16(seg, 1)?;
                width = be16(seg, 3)?;
                let nf = *seg.get(5).ok_or("SOF truncated")?;
                if nf != 1 {
                    return Err(format!("{nf} colour components; only greyscale is supported"));
                }
                tq = (*seg.get(8).ok_or("SOF truncated")? as usize).min(3);
                if !(precision == 8 || precision == 12) || width == 0 || height == 0 {
                    return Err(format!("unsupported frame: {precision} bits, {width}x{height}"));
                }
                if (height, width) != size {
                    return Err(format!("JPEG frame is {width}x{height}, the DICOM header says {}x{}", size.1, size.0));
                }
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(format!("JPEG process SOF{} is not sequential Huffman DCT", marker - 0xC0));
            }
            0xDD => restart = be16(seg, 0)?,
            0xDA => {
                if width == 0 {
                    return Err("scan before frame header".into());
                }
                let td = (*seg.get(2).ok_or("SOS truncated")? >> 4) as usize;
                let ta = (*seg.get(2).ok_or("SOS truncated")? & 15) as usize;
                let mut bits = Bits { data: &d[pos + len..], pos: 0, acc: 0, n: 0 };
                return scan(&mut bits, &qt[tq], &dc[td.min(3)], &ac[ta.min(3)], width, height, precision, restart);
            }
            _ => {}
        }
        pos += len;
    }
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn scan(
    bits: &mut Bits,
    q: &[u16; 64],
    dc: &Huffman,
    ac: &Huffman,
    width: usize,
    height: usize,
    precision: u32,
    restart: usize,
) -> Result<Vec<u16>, String> {
    let (bw, bh) = (width.div_ceil(8), height.div_ceil(8));
    let mut out = vec![0u16; width * height];
    let mut cos = [[0f64; 8]; 8];
    for (x, row) in cos.iter_mut().enumerate() {
        for (u, c) in row.iter_mut().enumerate() {
            let cu = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
            *c = cu * (((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI) / 16.0).cos() / 2.0;
        }
    }
    let level = (1i32 << (precision - 1)) as f64;
    let maxv = ((1u32 << precision) - 1) as f64;
    let mut pred = 0i32;
    for b in 0..bw * bh {
        if restart > 0 && b > 0 && b % restart == 0 {
            bits.restart()?;
            pred = 0;
        }
        let mut coef = [0f64; 64];
        let s = bits.decode(dc)? as u32;
        if s > 16 {
            return Err("bad DC size".into());
        }
        pred += extend(bits.receive(s)?, s);
        coef[0] = pred as f64 * q[0] as f64;
        let mut k = 1;
        while k < 64 {
            let rs = bits.decode(ac)?;
            let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                break;
            }
            k += r;
            if k > 63 {
                return Err("AC coefficient index past 63".into());
            }
            coef[ZIGZAG[k]] = extend(bits.receive(s)?, s) as f64 * q[ZIGZAG[k]] as f64;
            k += 1;
        }
        // Separable IDCT: rows of coefficients (v) then columns (u).
        let mut tmp = [0f64; 64];
        for v in 0..8 {
            for x in 0..8 {
                tmp[v * 8 + x] = (0..8).map(|u| cos[x][u] * coef[v * 8 + u]).sum();
            }
        }
        let (by, bx) = (b / bw, b % bw);
        for y in 0..8 {
            let py = by * 8 + y;
            if py >= height {
                break;
            }
            for x in 0..8 {
                let px = bx * 8 + x;
                if px >= width {
                    break;
                }
                let v: f64 = (0..8).map(|v| cos[y][v] * tmp[v * 8 + x]).sum::<f64>() + level;
                out[py * width + px] = v.round().clamp(0.0, maxv) as u16;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[], (8, 8)).is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF], (8, 8)).is_err());
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xC1, 0x00, 0x02], (8, 8)).is_err());
        let mut x = vec![0xFF, 0xD8];
        x.extend((0..500u32).map(|i| (i * 37 % 251) as u8));
        assert!(decode(&x, (8, 8)).is_err());
    }

    #[test]
    fn a_frame_larger_than_the_header_is_refused_before_allocating() {
        // SOI, SOF1 12-bit 30000 x 30000, one component.
        let d = [0xFF, 0xD8, 0xFF, 0xC1, 0, 11, 12, 0x75, 0x30, 0x75, 0x30, 1, 1, 0x11, 0];
        let e = decode(&d, (48, 48)).unwrap_err();
        assert!(e.contains("30000x30000"), "{e}");
    }
}
