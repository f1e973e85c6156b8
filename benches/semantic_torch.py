"""PyTorch side of benches/semantic.rs: the same shapes in PyTorch on this machine's CPU.

Minimal modules written from shared/ldae/SPEC.md §3 (not the reference's code): depthwise 7x7 conv2d at the
paper's four ConvNeXt stage shapes, and the whole semantic encoder (ConvNeXt-small over 128 axial slices of
128x160 + soft attention + MHA + LayerNorm) with zero-free random weights. Prints one JSON object
{stage: median milliseconds}. Usage: python3 semantic_torch.py REPS THREADS
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LN2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        self.scale = nn.Parameter(torch.full((d, 1, 1), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.scale * y


class Encoder(nn.Module):
    def __init__(self, dims=(96, 192, 384, 768), depths=(3, 3, 27, 3), seq=128, heads=8):
        super().__init__()
        layers = [nn.Conv2d(1, dims[0], 4, 4), LN2d(dims[0], eps=1e-6)]
        for i, (d, n) in enumerate(zip(dims, depths)):
            layers += [Block(d) for _ in range(n)]
            if i + 1 < len(dims):
                layers += [LN2d(d, eps=1e-6), nn.Conv2d(d, dims[i + 1], 2, 2)]
        self.features = nn.Sequential(*layers)
        e = dims[-1]
        self.head = LN2d(e, eps=1e-6)
        self.pe = torch.randn(1, seq, e)
        self.soft = nn.Linear(e, 1)
        self.q, self.k, self.v = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)
        self.mha = nn.MultiheadAttention(e, heads, batch_first=True)
        self.norm = nn.LayerNorm(e)

    def forward(self, x):
        b, _, z, h, w = x.shape
        f = self.features(x.reshape(b * z, 1, h, w))
        f = self.head(f.mean((2, 3), keepdim=True)).flatten(1).reshape(b, z, -1) + self.pe[:, :z]
        a = torch.softmax(self.soft(f).squeeze(-1), 1)
        m = (a.unsqueeze(-1) * f).sum(1, keepdim=True)
        o, _ = self.mha(self.q(m), self.k(f), self.v(f))
        return self.norm(o).squeeze(1)


def median_ms(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[len(ts) // 2]


def main():
    reps, threads = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    with torch.no_grad():
        for c, h, w in [(96, 32, 40), (192, 16, 20), (384, 8, 10), (768, 4, 5)]:
            x = torch.rand(128, c, h, w)
            wt = torch.randn(c, 1, 7, 7)
            b = torch.randn(c)
            out[f"depthwise {c}x{h}x{w} (128 slices)"] = median_ms(lambda: F.conv2d(x, wt, b, padding=3, groups=c), reps)
        enc = Encoder().eval()
        x = torch.rand(1, 1, 128, 128, 160)
        out["semantic encoder, paper size, 1 scan"] = median_ms(lambda: enc(x), max(1, reps // 5))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
