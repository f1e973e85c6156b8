#!/usr/bin/env python3
"""Build the hostile DICOM corpus: files that lie about their sizes, counts, dimensions and nesting.

Usage: make_dicom.py OUT_DIR

Python 3 standard library only, deterministic (same bytes on every run). Every file starts from the real
synthetic slice tests/data/dicom/series/explicit_vr_le/IM0001.dcm (48x48, 16-bit, explicit VR little endian;
see tests/data/dicom/PROVENANCE.md) and changes one thing. Each must be refused by `ldae convert` with one
line naming the file, exit code 1, no panic, under 256 MiB of resident memory and 5 s (tests/hostile_dicom.rs).
The kinds are listed in tests/hostile/README.md.
"""

import hashlib
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "data", "dicom", "series", "explicit_vr_le", "IM0001.dcm")

LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEF = 0xFFFFFFFF

TS_EXPLICIT = "1.2.840.10008.1.2.1"
TS_IMPLICIT = "1.2.840.10008.1.2"
TS_BIG = "1.2.840.10008.1.2.2"
TS_DEFLATE = "1.2.840.10008.1.2.1.99"
TS_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
TS_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
TS_JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
TS_JPEG_LS = "1.2.840.10008.1.2.4.80"
TS_J2K = "1.2.840.10008.1.2.4.90"
TS_RLE = "1.2.840.10008.1.2.5"

PIXEL_DATA = (0x7FE0, 0x0010)


# ---------------------------------------------------------------- reading the base file


def parse_base():
    """(meta, data set) of the base file as lists of [(group, element), vr, value]."""
    with open(BASE, "rb") as f:
        raw = f.read()
    assert raw[128:132] == b"DICM", "base file is not Part 10"
    pos, meta, ds = 132, [], []
    while pos < len(raw):
        g, e = struct.unpack_from("<HH", raw, pos)
        vr = raw[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            (n,) = struct.unpack_from("<I", raw, pos + 8)
            pos += 12
        else:
            (n,) = struct.unpack_from("<H", raw, pos + 6)
            pos += 8
        assert n != UNDEF, "base file has no undefined lengths"
        (meta if g == 2 else ds).append([(g, e), vr, raw[pos : pos + n]])
        pos += n
    return meta, ds


META, DS = parse_base()


# ---------------------------------------------------------------- writing


def pad(v, vr):
    if len(v) % 2:
        v += b"\0" if vr in (b"UI", b"OB", b"UN") else b" "
    return v


def el(tag, vr, value, length=None, big=False):
    """One explicit-VR element; `length` overrides the true length (to lie)."""
    end = ">" if big else "<"
    n = len(value) if length is None else length
    head = struct.pack(end + "HH", *tag) + vr
    if vr in LONG_VRS:
        head += b"\0\0" + struct.pack(end + "I", n)
    else:
        head += struct.pack(end + "H", n & 0xFFFF)
    return head + value


def iel(tag, value, length=None):
    """One implicit-VR little-endian element."""
    n = len(value) if length is None else length
    return struct.pack("<HHI", tag[0], tag[1], n) + value


def item(body, defined=True):
    if defined:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
    return struct.pack("<HHI", 0xFFFE, 0xE000, UNDEF) + body + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)


SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def meta_group(ts):
    body = b""
    for tag, vr, v in META:
        if tag == (2, 0):
            continue
        if tag == (2, 0x10):
            v = pad(ts.encode(), b"UI")
        body += el(tag, vr, v)
    return el((2, 0), b"UL", struct.pack("<I", len(body))) + body


def part10(ts, dataset, preamble=True):
    head = b"\0" * 128 + b"DICM" if preamble else b"DICM"
    return head + meta_group(ts) + dataset


def us(v):
    return struct.pack("<H", v)


def dataset(changes=None, drop=(), pixel=None, extra=(), big=False, implicit=False):
    """The base data set with `changes` {tag: (vr, value)}, `drop`ped tags, `extra` raw bytes inserted before
    Pixel Data and Pixel Data replaced by `pixel` (raw element bytes) when given."""
    changes = dict(changes or {})
    elems = {tag: (vr, v) for tag, vr, v in DS}
    for t in drop:
        elems.pop(t, None)
    elems.update(changes)
    out = b""
    for tag in sorted(elems):
        if tag == PIXEL_DATA:
            continue
        vr, v = elems[tag]
        if big and vr in (b"US", b"OW") and tag != PIXEL_DATA:
            v = b"".join(struct.pack(">H", x) for (x,) in struct.iter_unpack("<H", v))
        out += iel(tag, pad(v, vr)) if implicit else el(tag, vr, pad(v, vr), big=big)
    out += b"".join(extra)
    if pixel is None:
        vr, v = elems[PIXEL_DATA]
        if big:
            v = b"".join(struct.pack(">H", x) for (x,) in struct.iter_unpack("<H", v))
        pixel = iel(PIXEL_DATA, v) if implicit else el(PIXEL_DATA, vr, v, big=big)
    return out + pixel


def encapsulated(fragments, bot=b""):
    out = struct.pack("<HH", *PIXEL_DATA) + b"OB\0\0" + struct.pack("<I", UNDEF)
    out += item(bot)
    for f in fragments:
        out += item(f)
    return out + SEQ_END


def bits(alloc, stored):
    return {
        (0x0028, 0x0100): (b"US", us(alloc)),
        (0x0028, 0x0101): (b"US", us(stored)),
        (0x0028, 0x0102): (b"US", us(stored - 1)),
    }


# ---------------------------------------------------------------- codestreams claiming huge frames


def seg(marker, body):
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def jpeg(sof_marker, precision, h, w, lossless=False):
    dqt = seg(0xDB, b"\x00" + b"\x01" * 64)
    sof = seg(sof_marker, struct.pack(">BHHB", precision, h, w, 1) + b"\x01\x11\x00")
    table = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1
    dht = seg(0xC4, b"\x00" + table + b"\x10" + table)
    sos = seg(0xDA, b"\x01\x01\x00" + (b"\x01\x00\x00" if lossless else b"\x00\x3f\x00"))
    return b"\xff\xd8" + (b"" if lossless else dqt) + sof + dht + sos + b"\x00" * 64 + b"\xff\xd9"


def jpeg_ls(h, w):
    sof = seg(0xF7, struct.pack(">BHHB", 16, h, w, 1) + b"\x01\x11\x00")
    sos = seg(0xDA, b"\x01\x01\x00\x00\x00\x00")
    return b"\xff\xd8" + sof + sos + b"\x00" * 64 + b"\xff\xd9"


def j2k(h, w):
    siz = struct.pack(">HIIIIIIIIH", 0, w, h, 0, 0, w, h, 0, 0, 1) + b"\x0f\x01\x01"
    cod = b"\x00" + b"\x00\x00\x01\x00" + b"\x05\x04\x04\x00\x01"
    qcd = b"\x40" + b"\x48" * 16
    sot = struct.pack(">HIBB", 0, 0, 0, 1)
    return (
        b"\xff\x4f" + seg(0x51, siz) + seg(0x52, cod) + seg(0x5C, qcd) + seg(0x90, sot) + b"\xff\x93"
        + b"\x00" * 64 + b"\xff\xd9"
    )


def rle(offsets, count):
    header = struct.pack("<I", count) + b"".join(struct.pack("<I", o) for o in offsets)
    header += b"\0" * (64 - len(header))
    return header + b"\x00\x00" * 64


# ---------------------------------------------------------------- the corpus


def nested(depth, tag=(0x0040, 0xA730), defined=False, implicit=False):
    """`depth` sequences, each holding one item holding the next sequence."""
    if not defined:
        head = iel(tag, b"", UNDEF) if implicit else el(tag, b"SQ", b"", UNDEF)
        open_ = head + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEF)
        close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + SEQ_END
        return open_ * depth + close * depth
    body = b""
    for _ in range(depth):
        body = item(body)
        body = iel(tag, body) if implicit else el(tag, b"SQ", body)
    return body


def deflate_bomb(total, chunk=32 << 20):
    """Private OB elements of zeros adding up to `total` bytes, deflated (raw) with the header before them."""
    head = dataset(pixel=b"")
    creator = el((0x0011, 0x0010), b"LO", pad(b"LDAE BOMB", b"LO"))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(head + creator)
    zeros_z = None
    for i in range(total // chunk):
        out += c.compress(el((0x0011, 0x1000 + i), b"OB", b"", chunk))
        out += c.flush(zlib.Z_FULL_FLUSH)
        if zeros_z is None:  # after a full flush the stream restarts: the same zeros give the same bytes
            zeros_z = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
        out += zeros_z
    return out + c.compress(el(PIXEL_DATA, b"OW", bytes(4608))) + c.flush()


def corpus():
    files = {}
    t = lambda g, e: (g, e)  # noqa: E731
    std = dataset()

    # --- counts and dimensions that lie
    files["frames_4e9.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x08): (b"IS", b"4000000000")}))
    files["frames_16000_one_frame_of_pixels.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x08): (b"IS", b"16000 ")}))
    files["frames_negative.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x08): (b"IS", b"-5")}))
    files["rows_cols_65535.dcm"] = part10(
        TS_EXPLICIT, dataset({t(0x28, 0x10): (b"US", us(65535)), t(0x28, 0x11): (b"US", us(65535))})
    )
    files["rows_zero.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x10): (b"US", us(0))}))
    files["rows_negative_ss.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x10): (b"SS", struct.pack("<h", -1))}))
    files["rows_4000_pixels_short.dcm"] = part10(
        TS_EXPLICIT, dataset({t(0x28, 0x10): (b"US", us(4000)), t(0x28, 0x11): (b"US", us(4000))})
    )
    files["bits_allocated_65535.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x100): (b"US", us(65535))}))
    files["bits_allocated_zero.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x100): (b"US", us(0))}))
    files["bits_stored_40_of_16.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x101): (b"US", us(40))}))
    files["samples_per_pixel_65535.dcm"] = part10(TS_EXPLICIT, dataset({t(0x28, 0x02): (b"US", us(65535))}))

    # --- lying VR lengths
    lo = el(t(0x0008, 0x0070), b"LO", b"LDAE_SYNTHETIC", 0xFFFF)
    files["lying_short_length.dcm"] = part10(TS_EXPLICIT, dataset(drop=[t(8, 0x70)], extra=[lo]))
    files["lying_length_plus_3.dcm"] = part10(
        TS_EXPLICIT, dataset(drop=[t(0x28, 0x30)], extra=[el(t(0x28, 0x30), b"DS", b"4\\4 ", 7)])
    )
    files["lying_ut_2gib.dcm"] = part10(TS_EXPLICIT, dataset(extra=[el(t(0x0018, 0x9382), b"UT", b"x", 0x7FFFFFFF)]))
    files["lying_undefined_ut.dcm"] = part10(TS_EXPLICIT, dataset(extra=[el(t(0x0040, 0xA160), b"UT", b"x", UNDEF)]))
    files["pixel_data_4gib.dcm"] = part10(TS_EXPLICIT, dataset(pixel=el(PIXEL_DATA, b"OW", bytes(4608), 0xFFFFFFF0)))
    sq = el(t(0x0008, 0x1140), b"SQ", item(b"x" * 32), 0x10000000)
    files["sq_length_past_end.dcm"] = part10(TS_EXPLICIT, dataset(extra=[sq]))
    inner = struct.pack("<HHI", 0xFFFE, 0xE000, 4000) + b"\0" * 40
    files["item_longer_than_sequence.dcm"] = part10(TS_EXPLICIT, dataset(extra=[el(t(8, 0x1140), b"SQ", inner)]))
    files["implicit_element_4gib.dcm"] = part10(
        TS_IMPLICIT, dataset(implicit=True, extra=[iel(t(0x0009, 0x1010), b"", 0xFFFFFFF0)])
    )
    files["big_endian_element_4gib.dcm"] = part10(
        TS_BIG, dataset(big=True, extra=[el(t(0x0009, 0x1010), b"OB", b"", 0xFFFFFFF0, big=True)])
    )

    # --- files without the 128-byte preamble, or without any meta group
    huge = el(t(0x0009, 0x1010), b"OB", b"", 0xFFFFFFF0)
    files["no_preamble_element_4gib.dcm"] = part10(TS_EXPLICIT, dataset(extra=[huge]), preamble=False)
    files["raw_explicit_element_4gib.dcm"] = dataset(extra=[huge])
    files["raw_implicit_element_4gib.dcm"] = dataset(implicit=True, extra=[iel(t(0x0009, 0x1010), b"", 0xFFFFFFF0)])
    files["no_preamble_nested_20000.dcm"] = part10(TS_EXPLICIT, dataset(extra=[nested(20000)]), preamble=False)

    # --- nesting
    files["nested_sq_20000.dcm"] = part10(TS_EXPLICIT, dataset(extra=[nested(20000)]))
    files["nested_sq_defined_20000.dcm"] = part10(TS_EXPLICIT, dataset(extra=[nested(20000, defined=True)]))
    files["nested_sq_implicit_20000.dcm"] = part10(
        TS_IMPLICIT, dataset(implicit=True, extra=[nested(20000, defined=True, implicit=True)])
    )
    files["nested_un_undefined_20000.dcm"] = part10(
        TS_EXPLICIT,
        dataset(extra=[(el(t(0x0009, 0x1010), b"UN", b"", UNDEF) + item(b"", False)[:8]) * 20000]),
    )

    # --- deflate
    files["deflate_bomb_2gib.dcm"] = part10(TS_DEFLATE, deflate_bomb(2 << 30))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    files["deflate_element_4gib.dcm"] = part10(TS_DEFLATE, c.compress(dataset(extra=[huge])) + c.flush())
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    files["deflate_nested_20000.dcm"] = part10(TS_DEFLATE, c.compress(dataset(extra=[nested(20000)])) + c.flush())
    files["deflate_not_deflate.dcm"] = part10(TS_DEFLATE, bytes(range(256)) * 8)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    z = c.compress(std) + c.flush()
    files["deflate_truncated.dcm"] = part10(TS_DEFLATE, z[: len(z) // 2])

    # --- encapsulated pixel data and codestreams claiming 30000 x 30000
    b8 = bits(8, 8)
    files["jpeg_baseline_sof_30000.dcm"] = part10(TS_JPEG_BASELINE, dataset(b8, pixel=encapsulated([jpeg(0xC0, 8, 30000, 30000)])))
    files["jpeg_extended12_sof_30000.dcm"] = part10(
        TS_JPEG_EXTENDED, dataset(bits(16, 12), pixel=encapsulated([jpeg(0xC1, 12, 30000, 30000)]))
    )
    files["jpeg_lossless_sof_30000.dcm"] = part10(
        TS_JPEG_LOSSLESS, dataset(bits(16, 16), pixel=encapsulated([jpeg(0xC3, 16, 30000, 30000, lossless=True)]))
    )
    files["jpeg_ls_sof_30000.dcm"] = part10(TS_JPEG_LS, dataset(bits(16, 16), pixel=encapsulated([jpeg_ls(30000, 30000)])))
    files["j2k_siz_30000.dcm"] = part10(TS_J2K, dataset(bits(16, 16), pixel=encapsulated([j2k(30000, 30000)])))
    files["jpeg_rows_30000_sof_30000.dcm"] = part10(
        TS_JPEG_BASELINE,
        dataset({**b8, t(0x28, 0x10): (b"US", us(30000)), t(0x28, 0x11): (b"US", us(30000))},
                pixel=encapsulated([jpeg(0xC0, 8, 30000, 30000)])),
    )
    files["jpeg_extended12_sof_small.dcm"] = part10(
        TS_JPEG_EXTENDED, dataset(bits(16, 12), pixel=encapsulated([jpeg(0xC1, 12, 8, 8)]))
    )
    files["encap_100000_fragments.dcm"] = part10(TS_JPEG_BASELINE, dataset(b8, pixel=encapsulated([b"\xff\xd8"] * 100000)))
    bot = struct.pack("<II", 0, 0xFFFFFFF0)
    files["encap_absurd_offset_table.dcm"] = part10(
        TS_JPEG_BASELINE,
        dataset({**b8, t(0x28, 0x08): (b"IS", b"2 ")}, pixel=encapsulated([jpeg(0xC0, 8, 48, 48)] * 2, bot=bot)),
    )
    files["encap_offset_table_odd.dcm"] = part10(
        TS_JPEG_BASELINE, dataset(b8, pixel=encapsulated([jpeg(0xC0, 8, 48, 48)], bot=b"\x01\x02\x03"))
    )
    enc = encapsulated([jpeg(0xC0, 8, 48, 48)])
    files["encap_fragment_past_end.dcm"] = part10(
        TS_JPEG_BASELINE, dataset(b8, pixel=enc[:-8 - 20] + struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0))
    )
    files["encap_no_delimiter.dcm"] = part10(TS_JPEG_BASELINE, dataset(b8, pixel=enc[:-8]))
    files["encap_frames_1000_one_fragment.dcm"] = part10(
        TS_JPEG_BASELINE, dataset({**b8, t(0x28, 0x08): (b"IS", b"1000")}, pixel=enc)
    )
    files["rle_lying_offsets.dcm"] = part10(TS_RLE, dataset(pixel=encapsulated([rle([64, 0xFFFFFFF0], 2)])))
    files["rle_15_segments.dcm"] = part10(TS_RLE, dataset(pixel=encapsulated([rle([64] * 15, 15)])))
    files["rle_segment_count_huge.dcm"] = part10(TS_RLE, dataset(pixel=encapsulated([rle([64], 0xFFFFFFFF)])))

    # --- Siemens mosaic claiming absurd tile counts
    mosaic = {
        t(0x08, 0x08): (b"CS", b"ORIGINAL\\PRIMARY\\M\\MOSAIC"),
        t(0x19, 0x10): (b"LO", pad(b"SIEMENS MR HEADER", b"LO")),
    }
    files["mosaic_images_4294967295.dcm"] = part10(
        TS_EXPLICIT,
        dataset({**mosaic, t(0x19, 0x100A): (b"UL", struct.pack("<I", 0xFFFFFFFF)),
                 t(0x28, 0x10): (b"UL", struct.pack("<I", 65536)), t(0x28, 0x11): (b"UL", struct.pack("<I", 65536))}),
    )
    files["mosaic_images_16000.dcm"] = part10(
        TS_EXPLICIT,
        dataset({**mosaic, t(0x19, 0x100A): (b"US", us(16000)),
                 t(0x28, 0x10): (b"US", us(16384)), t(0x28, 0x11): (b"US", us(16384))}),
    )
    files["mosaic_images_65535.dcm"] = part10(TS_EXPLICIT, dataset({**mosaic, t(0x19, 0x100A): (b"US", us(65535))}))

    # --- truncated at structural points: inside every element header, inside some values
    whole = part10(TS_EXPLICIT, std)
    pos, k = 132, 0
    while pos < len(whole):
        vr = whole[pos + 4 : pos + 6]
        hl = 12 if vr in LONG_VRS else 8
        n = struct.unpack_from("<I", whole, pos + 8)[0] if hl == 12 else struct.unpack_from("<H", whole, pos + 6)[0]
        files[f"truncated_header_{k:02d}_at_{pos + hl - 3}.dcm"] = whole[: pos + hl - 3]
        if n >= 4 and k % 4 == 0:
            files[f"truncated_value_{k:02d}_at_{pos + hl + n // 2}.dcm"] = whole[: pos + hl + n // 2]
        pos += hl + n
        k += 1
    files["truncated_at_magic.dcm"] = whole[:130]
    jp = part10(TS_JPEG_BASELINE, dataset(b8, pixel=enc))
    files["truncated_encap_in_offset_table.dcm"] = jp[: len(jp) - len(enc) + 16]
    files["truncated_encap_in_fragment.dcm"] = jp[: len(jp) - 60]
    ns = part10(TS_EXPLICIT, dataset(extra=[nested(8)]))
    files["truncated_in_sequence.dcm"] = ns[: len(ns) - (12 + 4608) - len(nested(8)) // 2]
    return files


def own_uids(name, data):
    """Give each file its own SeriesInstanceUID and SOPInstanceUID (same length, derived from its name), so that
    files converted together are never one series. UIDs inside deflated data stay the base file's."""
    for tag in [(0x0020, 0x000E), (0x0008, 0x0018)]:
        old = next(v for t, _, v in DS if t == tag)
        digits = str(int.from_bytes(hashlib.sha256(f"{name}{tag}".encode()).digest(), "big"))
        new = ("2.25.1" + digits)[: len(old.rstrip(b"\0"))].encode()
        new += old[len(new):]
        data = data.replace(old, new)
    return data


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_dicom.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    files = corpus()
    for name, data in sorted(files.items()):
        data = own_uids(name, data)
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(files)} files in {out}")


if __name__ == "__main__":
    main()
