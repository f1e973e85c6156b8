"""Write hostile NIfTI, PyTorch (.pth) and safetensors files into a folder (Python standard library only).

Usage: python3 make_nifti_pth.py OUT_DIR

Deterministic: the same bytes on every run. Each file is small on disk (the largest, the gzip bomb, is about
1 MB) and each is something ldae must refuse with one clear error line, without a panic, within 256 MiB of
resident memory and 5 s. The file name prefix says which command reads it (tests/hostile_nifti_pth.rs):
  nifti_*          `ldae register FILE ...`
  weights_*.pth    `ldae weights convert DIR` with the file as DIR/autoencoderkl.pth
  weights_*.st     `ldae weights convert DIR` with the file as DIR/autoencoderkl.safetensors
  codes_*.st       `ldae decode FILE.safetensors ...`
"""
import io
import json
import os
import random
import struct
import sys
import zipfile
import zlib

HDR = 348


def nifti_header(
    dims=(8, 8, 8),
    datatype=16,
    bitpix=32,
    vox_offset=352.0,
    pixdim=(1.0, 1.0, 1.0, 1.0),
    sform=None,
    qform_code=0,
    magic=b"n+1\0",
    ndim=None,
    raw_dims=None,
):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    d = list(raw_dims) if raw_dims is not None else [ndim if ndim is not None else len(dims)] + list(dims)
    d += [1] * (8 - len(d))
    struct.pack_into("<8h", h, 40, *d)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, *(list(pixdim) + [1.0] * (8 - len(pixdim))))
    struct.pack_into("<f", h, 108, vox_offset)
    struct.pack_into("<ff", h, 112, 1.0, 0.0)
    h[123] = 10
    struct.pack_into("<hh", h, 252, qform_code, 1 if sform is not None else 0)
    if sform is not None:
        struct.pack_into("<12f", h, 280, *sform)
    h[344:348] = magic
    return bytes(h)


def nifti(dims=(8, 8, 8), nbytes=None, **kw):
    h = nifti_header(dims=dims, **kw)
    n = nbytes if nbytes is not None else 4 * dims[0] * dims[1] * dims[2]
    return h + bytes((i * 7) & 0xFF for i in range(n))


def gzip_bytes(parts, level=9):
    """A gzip member of the concatenation of `parts` (an iterable of bytes), streamed."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = io.BytesIO()
    for p in parts:
        out.write(c.compress(p))
    out.write(c.flush())
    return out.getvalue()


def pickle_zip(pkl, storages=None, name="archive"):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo(f"{name}/data.pkl", (1980, 1, 1, 0, 0, 0)), pkl)
        z.writestr(zipfile.ZipInfo(f"{name}/byteorder", (1980, 1, 1, 0, 0, 0)), b"little")
        for k, v in (storages or {}).items():
            z.writestr(zipfile.ZipInfo(f"{name}/data/{k}", (1980, 1, 1, 0, 0, 0)), v)
        z.writestr(zipfile.ZipInfo(f"{name}/version", (1980, 1, 1, 0, 0, 0)), b"3\n")
    return out.getvalue()


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def state_dict(numel=4, size=(4,), storage_cls=b"FloatStorage", strides=None):
    """A protocol-2 OrderedDict {'w': _rebuild_tensor_v2(storage('0', numel), 0, size, stride)}."""
    p = b"\x80\x02ccollections\nOrderedDict\n)R("
    p += binunicode("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
    p += b"(" + binunicode("storage") + b"ctorch\n" + storage_cls + b"\n" + binunicode("0") + binunicode("cpu")
    p += b"\x8a\x08" + struct.pack("<q", numel) + b"tQ"
    p += b"K\x00("
    for s in size:
        p += b"\x8a\x08" + struct.pack("<q", s)
    p += b"t("
    override = strides
    stride = 1
    strides = []
    for s in reversed(size):
        strides.insert(0, stride)
        stride *= s
    for s in strides if override is None else override:
        p += b"\x8a\x08" + struct.pack("<q", s)
    p += b"t\x89ccollections\nOrderedDict\n)RtRu."
    return p


def safetensors(header, data=b"", header_len=None):
    h = json.dumps(header, sort_keys=True).encode()
    n = len(h) if header_len is None else header_len
    return struct.pack("<Q", n) + h + data


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    files = {}
    rnd = random.Random(19)

    # --- NIfTI -------------------------------------------------------------------------------------------------
    files["nifti_huge_vox_offset.nii"] = nifti(vox_offset=3.0e9)
    files["nifti_vox_offset_f32_max.nii"] = nifti(vox_offset=3.4e38)
    files["nifti_huge_vox_offset.nii.gz"] = gzip_bytes([nifti(vox_offset=1.0e12)])
    files["nifti_huge_dims.nii"] = nifti_header(dims=(16000, 16000, 16000)) + bytes(4096)
    files["nifti_dim_over_max.nii"] = nifti_header(dims=(30000, 2, 2)) + bytes(4096)
    files["nifti_negative_dims.nii"] = nifti_header(dims=(8, -5, 8)) + bytes(4096)
    files["nifti_dim0_bad.nii"] = nifti_header(raw_dims=(9, 8, 8, 8)) + bytes(4096)
    files["nifti_dims_product_overflow.nii"] = nifti_header(dims=(16000,) * 7) + bytes(4096)
    files["nifti_four_volumes.nii"] = nifti_header(dims=(8, 8, 8, 4)) + bytes(4 * 8 * 8 * 8 * 4)
    # A header with an unknown datatype followed by 1 GiB of zeros (1 MB compressed): a reader that inflates
    # everything before looking at the header runs out of memory before it can refuse the file.
    bomb = (bytes(1 << 20) for _ in range(1024))
    files["nifti_gzip_bomb.nii.gz"] = gzip_bytes([nifti_header(dims=(8, 8, 8), datatype=99, bitpix=32), *bomb])
    # A header claiming 512^3 float32 (512 MiB) in a 1 KB gzip file.
    files["nifti_gzip_claims_more.nii.gz"] = gzip_bytes([nifti_header(dims=(512, 512, 512))])
    files["nifti_truncated.nii"] = nifti(dims=(64, 64, 64))[: 352 + 4 * 64 * 64 * 32]
    full_gz = gzip_bytes([nifti(dims=(64, 64, 64))])
    files["nifti_truncated.nii.gz"] = full_gz[: len(full_gz) // 2]
    files["nifti_gz_trailer_cut.nii.gz"] = full_gz[:-6]
    files["nifti_header_only_short.nii"] = nifti_header()[:200]
    files["nifti_lying_bitpix.nii"] = nifti(datatype=16, bitpix=8)
    files["nifti_unknown_datatype.nii"] = nifti(datatype=99, bitpix=32)
    files["nifti_complex_datatype.nii"] = nifti(datatype=32, bitpix=64, nbytes=8 * 512)
    files["nifti_bad_magic.nii"] = nifti(magic=b"XYZ\0")
    files["nifti_pair_magic.nii"] = nifti(magic=b"ni1\0")
    files["nifti_bad_sizeof_hdr.nii"] = struct.pack("<i", 540) + nifti()[4:]
    files["nifti_nan_pixdim.nii"] = nifti(pixdim=(1.0, float("nan"), 1.0, 1.0))
    files["nifti_nan_sform.nii"] = nifti(sform=(1, 0, 0, 0, 0, float("nan"), 0, 0, 0, 0, 1, 0))
    files["nifti_inf_qform.nii"] = nifti(qform_code=1, pixdim=(1.0, float("inf"), 1.0, 1.0))
    files["nifti_empty.nii"] = b""
    files["nifti_random.nii"] = bytes(rnd.getrandbits(8) for _ in range(4096))
    files["nifti_random.nii.gz"] = bytes(rnd.getrandbits(8) for _ in range(4096))

    # --- PyTorch .pth ------------------------------------------------------------------------------------------
    good = pickle_zip(state_dict(), {"0": struct.pack("<4f", 1, 2, 3, 4)})
    files["weights_os_system.pth"] = pickle_zip(b"\x80\x02cos\nsystem\n" + binunicode("touch /tmp/ldae-pwned") + b"\x85R.")
    files["weights_stack_global_exec.pth"] = pickle_zip(
        b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93" + binunicode("import os") + b"\x85R."
    )
    files["weights_deep_nesting.pth"] = pickle_zip(b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".")
    files["weights_deep_tuples.pth"] = pickle_zip(b"\x80\x02" + b"(" * 50000 + b"N" + b"t" * 50000 + b".")
    files["weights_huge_memo_index.pth"] = pickle_zip(b"\x80\x02N" + b"r\xff\xff\xff\xff" + b"j\xfe\xff\xff\xff.")
    # Billion laughs: each level is a list of 256 copies of the level below, fetched from the memo.
    laughs = b"\x80\x02]q\x00"
    for lvl in range(1, 6):
        laughs += b"](" + (b"h" + bytes([lvl - 1])) * 256 + b"eq" + bytes([lvl])
    files["weights_memo_bomb.pth"] = pickle_zip(laughs + b".")
    files["weights_binunicode_4gib.pth"] = pickle_zip(b"\x80\x02X\xff\xff\xff\xff" + b"abc" * 10)
    files["weights_binunicode8_huge.pth"] = pickle_zip(b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"abc")
    files["weights_binbytes_4gib.pth"] = pickle_zip(b"\x80\x03B\xff\xff\xff\xff" + b"abc")
    files["weights_storage_numel_huge.pth"] = pickle_zip(
        state_dict(numel=1 << 40, size=(1 << 20, 1 << 20)), {"0": struct.pack("<4f", 1, 2, 3, 4)}
    )
    files["weights_zero_stride_huge.pth"] = pickle_zip(
        state_dict(size=(1 << 40,), strides=(0,)), {"0": struct.pack("<4f", 1, 2, 3, 4)}
    )
    files["weights_storage_missing.pth"] = pickle_zip(state_dict(), {})
    files["weights_truncated.pth"] = good[: len(good) // 2]
    files["weights_pickle_truncated.pth"] = pickle_zip(state_dict()[:-20], {"0": struct.pack("<4f", 1, 2, 3, 4)})
    files["weights_random.pth"] = b"PK\x03\x04" + bytes(rnd.getrandbits(8) for _ in range(8192))
    files["weights_zip_no_pickle.pth"] = _zip_without_pickle()
    files["weights_legacy.pth"] = b"\x80\x02" + bytes(100)
    files["weights_empty.pth"] = b""

    # --- safetensors (weights and code files) --------------------------------------------------------------------
    t = {"y_sem": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}
    sts = {
        "header_len_huge": struct.pack("<Q", 1 << 63) + b"{}",
        "header_len_beyond_file": safetensors(t, bytes(16), header_len=10_000),
        "header_not_json": struct.pack("<Q", 16) + b"\xff" * 16,
        "offsets_beyond_file": safetensors({"y_sem": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 1 << 40]}}),
        "offsets_shape_mismatch": safetensors(
            {"y_sem": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}}, bytes(16)
        ),
        "offsets_overlap": safetensors(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            },
            bytes(24),
        ),
        "shape_overflow": safetensors(
            {"y_sem": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1 << 32], "data_offsets": [0, 16]}}, bytes(16)
        ),
        "truncated": safetensors(t, bytes(16))[:-8],
        "short": b"\x01\x02\x03",
    }
    for k, v in sts.items():
        files[f"weights_{k}.st"] = v
        files[f"codes_{k}.st"] = v

    for name, data in sorted(files.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(files)} files in {out}")


def _zip_without_pickle():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("archive/version", (1980, 1, 1, 0, 0, 0)), b"3\n")
    return out.getvalue()


if __name__ == "__main__":
    main()
