#!/usr/bin/env python3
"""Writes ramp.nii.gz with the standard library only (independent of ldae's NIfTI writer).

v = 2x + 3y - z + 5 where (x, y, z) are the voxel's offsets in mm from voxel 0 (i*1.5, j*1.2, k*2.5);
7x9x5 voxels, float32, sform = qform-free diag(1.5, 1.2, 2.5) with origin (-4, 6, 1).
"""
import gzip, struct, os

nx, ny, nz = 7, 9, 5
sp = (1.5, 1.2, 2.5)
origin = (-4.0, 6.0, 1.0)
hdr = bytearray(348)
struct.pack_into("<i", hdr, 0, 348)
struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
struct.pack_into("<h", hdr, 70, 16)   # datatype float32
struct.pack_into("<h", hdr, 72, 32)   # bitpix
struct.pack_into("<8f", hdr, 76, 1.0, sp[0], sp[1], sp[2], 1, 1, 1, 1)
struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
struct.pack_into("<f", hdr, 112, 1.0)    # scl_slope
struct.pack_into("<h", hdr, 252, 0)      # qform_code
struct.pack_into("<h", hdr, 254, 2)      # sform_code (aligned)
struct.pack_into("<4f", hdr, 280, sp[0], 0, 0, origin[0])
struct.pack_into("<4f", hdr, 296, 0, sp[1], 0, origin[1])
struct.pack_into("<4f", hdr, 312, 0, 0, sp[2], origin[2])
hdr[344:348] = b"n+1\0"
data = bytearray()
for k in range(nz):
    for j in range(ny):
        for i in range(nx):  # NIfTI stores x fastest
            data += struct.pack("<f", 2 * i * sp[0] + 3 * j * sp[1] - k * sp[2] + 5)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ramp.nii.gz")
with gzip.GzipFile(out, "wb", mtime=0) as f:
    f.write(bytes(hdr) + b"\0\0\0\0" + bytes(data))
