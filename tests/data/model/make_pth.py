"""Write a PyTorch-format state-dict checkpoint with only Python's standard library (no torch).

Usage: python3 make_pth.py OUT.pth

It follows torch.save's documented zip layout: `<archive>/data.pkl` (a protocol-2 pickle of an OrderedDict whose
values are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` calls, storages
as persistent ids `('storage', torch.FloatStorage, key, 'cpu', numel)`), `<archive>/data/<key>` (raw little-endian
storage bytes), `<archive>/version` and `<archive>/byteorder`. Stand-in `torch` modules make pickle emit the same
GLOBAL opcodes torch does. Tensors (values are what tests/model_pth.rs expects):
  w    [2,3]  = 0..5                     storage "0"
  wt   [3,2]  = transpose of w           storage "0" (shared, strides (1,3))
  tail [2]    = 4, 5                     storage "0" (offset 4)
  h    [2]    = 1.5, -2 as float64       storage "1" (DoubleStorage)
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


def _rebuild_tensor_v2(*args):  # never called here: only pickled by reference
    raise RuntimeError("stand-in")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


class DoubleStorage:
    pass


for cls in (FloatStorage, DoubleStorage):
    cls.__module__ = "torch"
    setattr(torch, cls.__name__, cls)


class Storage:
    def __init__(self, key, cls, data):
        self.key, self.cls, self.data = key, cls, data


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            n = len(obj.data) // (8 if obj.cls is DoubleStorage else 4)
            return ("storage", obj.cls, obj.key, "cpu", n)
        return None


def main(out):
    s0 = Storage("0", FloatStorage, struct.pack("<6f", 0, 1, 2, 3, 4, 5))
    s1 = Storage("1", DoubleStorage, struct.pack("<2d", 1.5, -2.0))
    sd = collections.OrderedDict()
    sd["w"] = Tensor(s0, 0, (2, 3), (3, 1))
    sd["wt"] = Tensor(s0, 0, (3, 2), (1, 3))
    sd["tail"] = Tensor(s0, 4, (2,), (1,))
    sd["h"] = Tensor(s1, 0, (2,), (1,))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(sd)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", s0.data)
        z.writestr("archive/data/1", s1.data)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main(sys.argv[1])
