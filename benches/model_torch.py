#!/usr/bin/env python3
"""PyTorch side of benches/model.rs: the same LDAE stages, written as plain torch functional ops from
shared/ldae/SPEC.md (after the functional style of shared/ldae/spec_check.py), on the model directory the Rust bench
wrote (config.json + safetensors). Prints {stage: median ms} as JSON.
Usage: model_torch.py MODEL_DIR THREADS STEPS REPS [cpu|cuda]"""
import json, math, statistics, sys, time
import numpy as np, torch, torch.nn.functional as F
from safetensors.torch import load_file

D, threads, steps, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dev = sys.argv[5] if len(sys.argv) > 5 else 'cpu'
torch.set_num_threads(threads)
torch.set_grad_enabled(False)
cfg = json.load(open(D + '/config.json'))
V, U, E = cfg['vae_args'], cfg['unet_args'], cfg['enc_args']
ld = lambda n: {k: v.to(dev) for k, v in load_file(f'{D}/{n}.safetensors').items()}
Wa, We, Wd = ld('autoencoderkl'), ld('encoder'), ld('decoder')

# AEKL
G, L = V['norm_num_groups'], len(V['num_channels'])
nres = V['num_res_blocks']; nres = [nres] * L if isinstance(nres, int) else nres
def conv(x, W, p, pad=1, stride=1): return F.conv3d(x, W[p + '.weight'], W[p + '.bias'], stride=stride, padding=pad)
def gn(x, W, p, g, eps): return F.group_norm(x, g, W[p + '.weight'], W[p + '.bias'], eps)
def ae_res(x, p):
    h = conv(F.silu(gn(x, Wa, p + '.norm1', G, 1e-6)), Wa, p + '.conv1.conv')
    h = conv(F.silu(gn(h, Wa, p + '.norm2', G, 1e-6)), Wa, p + '.conv2.conv')
    if p + '.nin_shortcut.conv.weight' in Wa: x = conv(x, Wa, p + '.nin_shortcut.conv', pad=0)
    return x + h
def ae_encode(x):
    i = 1; x = conv(x, Wa, 'encoder.blocks.0.conv')
    for l in range(L):
        for _ in range(nres[l]): x = ae_res(x, f'encoder.blocks.{i}'); i += 1
        if l != L - 1: x = conv(F.pad(x, (0, 1, 0, 1, 0, 1)), Wa, f'encoder.blocks.{i}.conv.conv', pad=0, stride=2); i += 1
    x = gn(x, Wa, f'encoder.blocks.{i}', G, 1e-6); x = conv(x, Wa, f'encoder.blocks.{i + 1}.conv')
    return conv(x, Wa, 'quant_conv_mu.conv', pad=0), torch.clamp(conv(x, Wa, 'quant_conv_log_sigma.conv', pad=0), -30, 20)
def ae_decode(z):
    x = conv(conv(z, Wa, 'post_quant_conv.conv', pad=0), Wa, 'decoder.blocks.0.conv'); i = 1
    for l, n in enumerate(nres[::-1]):
        for _ in range(n): x = ae_res(x, f'decoder.blocks.{i}'); i += 1
        if l != L - 1: x = conv(F.interpolate(x, scale_factor=2.0, mode='nearest'), Wa, f'decoder.blocks.{i}.conv.conv'); i += 1
    return conv(gn(x, Wa, f'decoder.blocks.{i}', G, 1e-6), Wa, f'decoder.blocks.{i + 1}.conv')

# semantic encoder
P = 'backbone.backbone.'
def ln2d(x, p): return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), We[p + '.weight'], We[p + '.bias'], 1e-6).permute(0, 3, 1, 2)
def convnext(x):
    x = ln2d(F.conv2d(x, We[P + 'features.0.0.weight'], We[P + 'features.0.0.bias'], stride=4), P + 'features.0.1')
    s = 1
    while f'{P}features.{s}.0.layer_scale' in We:
        b = 0
        while f'{P}features.{s}.{b}.layer_scale' in We:
            q = f'{P}features.{s}.{b}.'; d = x.shape[1]
            y = F.conv2d(x, We[q + 'block.0.weight'], We[q + 'block.0.bias'], padding=3, groups=d).permute(0, 2, 3, 1)
            y = F.layer_norm(y, (d,), We[q + 'block.2.weight'], We[q + 'block.2.bias'], 1e-6)
            y = F.linear(F.gelu(F.linear(y, We[q + 'block.3.weight'], We[q + 'block.3.bias'])), We[q + 'block.5.weight'], We[q + 'block.5.bias'])
            x = x + y.permute(0, 3, 1, 2) * We[q + 'layer_scale']; b += 1
        if f'{P}features.{s+1}.0.weight' in We:
            x = F.conv2d(ln2d(x, f'{P}features.{s+1}.0'), We[f'{P}features.{s+1}.1.weight'], We[f'{P}features.{s+1}.1.bias'], stride=2)
        s += 2
    return ln2d(x.mean((2, 3), keepdim=True), P + 'classifier.0').flatten(1)
def sem_encoder(xe):
    B, C, Z, H, W_ = xe.shape
    x = convnext(xe.reshape(B * Z, C, H, W_)).reshape(B, Z, -1); Ed = x.shape[-1]
    x = x + We['positional_encoding.pe'][:, :Z]
    a = torch.softmax(F.linear(x, We['soft_attention.linear.weight'], We['soft_attention.linear.bias'])[..., 0], 1)
    m = torch.einsum('bz,bze->be', a, x)
    q = F.linear(m[:, None], We['query_projection.weight'], We['query_projection.bias'])
    k = F.linear(x, We['key_projection.weight'], We['key_projection.bias']); v = F.linear(x, We['value_projection.weight'], We['value_projection.bias'])
    Wi, bi = We['cross_attention.in_proj_weight'], We['cross_attention.in_proj_bias']
    Q = F.linear(q, Wi[:Ed], bi[:Ed]); K = F.linear(k, Wi[Ed:2*Ed], bi[Ed:2*Ed]); Vv = F.linear(v, Wi[2*Ed:], bi[2*Ed:])
    nh = E.get('num_heads', 8); hd = Ed // nh
    Qh = Q.view(B, 1, nh, hd).transpose(1, 2); Kh = K.view(B, Z, nh, hd).transpose(1, 2); Vh = Vv.view(B, Z, nh, hd).transpose(1, 2)
    o = (torch.softmax(Qh @ Kh.transpose(-1, -2) / math.sqrt(hd), -1) @ Vh).transpose(1, 2).reshape(B, 1, Ed)
    o = F.linear(o, We['cross_attention.out_proj.weight'], We['cross_attention.out_proj.bias'])
    return F.layer_norm(o, (Ed,), We['layer_norm_after_attention.weight'], We['layer_norm_after_attention.bias'], 1e-5)[:, 0]

# ShiftUNet
base, mult, nrb, attres, nheads = U['base_channel'], U['channel_multiplier'], U['num_residual_blocks_of_a_block'], U['attention_resolutions'], U['num_heads']
def gnu(x, p): return F.group_norm(x, 32, Wd[p + '.weight'], Wd[p + '.bias'], 1e-5)
def cv(x, p, pad=1): return F.conv3d(x, Wd[p + '.weight'], Wd[p + '.bias'], padding=pad)
def resblock(x, emb, p, zemb=None, mode=None):
    h = F.silu(gnu(x, p + '.in_layers.0'))
    if mode == 'D': h, x = F.avg_pool3d(h, (1, 2, 2)), F.avg_pool3d(x, (1, 2, 2))
    if mode == 'U':
        up = lambda t: F.interpolate(t, (t.shape[2], t.shape[3] * 2, t.shape[4] * 2), mode='nearest'); h, x = up(h), up(x)
    h = cv(h, p + '.in_layers.2')
    sc, sh = F.linear(F.silu(emb), Wd[p + '.emb_layers.1.weight'], Wd[p + '.emb_layers.1.bias'])[..., None, None, None].chunk(2, 1)
    h = gnu(h, p + '.out_layers.0') * (1 + sc) + sh
    if zemb is not None:
        zs, zb = F.linear(F.silu(zemb), Wd[p + '.emb_z_layers.1.weight'], Wd[p + '.emb_z_layers.1.bias'])[..., None, None, None].chunk(2, 1)
        h = (1 + zs) * h + zb
    h = cv(F.silu(h), p + '.out_layers.3')
    if p + '.skip_connection.weight' in Wd: x = cv(x, p + '.skip_connection', pad=0)
    return x + h
def attn(x, p):
    B, C = x.shape[:2]; sp = x.shape[2:]; xf = x.reshape(B, C, -1); T = xf.shape[-1]
    qkv = F.conv1d(F.group_norm(xf, 32, Wd[p + '.norm.weight'], Wd[p + '.norm.bias'], 1e-5), Wd[p + '.qkv.weight'], Wd[p + '.qkv.bias'])
    ch = C // nheads; q, k, v = qkv.reshape(B * nheads, 3 * ch, T).split(ch, 1); s = ch ** -0.25
    w = torch.softmax(torch.einsum('bct,bcs->bts', q * s, k * s), -1)
    a = torch.einsum('bts,bcs->bct', w, v).reshape(B, C, T)
    return (xf + F.conv1d(a, Wd[p + '.proj_out.weight'], Wd[p + '.proj_out.bias'])).reshape(B, C, *sp)
def run_block(x, emb, p, layers, zemb=None):
    for j, kind in enumerate(layers):
        x = attn(x, f'{p}.{j}') if kind == 'A' else resblock(x, emb, f'{p}.{j}', zemb, kind)
    return x
in_layout, ds = [['C']], 1
for lvl in range(len(mult)):
    for _ in range(nrb): in_layout.append(['R'] + (['A'] if ds in attres else []))
    if lvl != len(mult) - 1: in_layout.append(['D']); ds *= 2
out_layout = []
for lvl in reversed(range(len(mult))):
    for i in range(nrb + 1):
        l = ['R'] + (['A'] if ds in attres else [])
        if lvl and i == nrb: l.append('U'); ds //= 2
        out_layout.append(l)
def shift_unet(x, t, y):
    half = base // 2
    a = torch.tensor([t], dtype=torch.float32, device=dev)[:, None] * torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=dev) / half)[None]
    emb = torch.cat([torch.cos(a), torch.sin(a)], -1)
    emb = F.linear(F.silu(F.linear(emb, Wd['time_embed.0.weight'], Wd['time_embed.0.bias'])), Wd['time_embed.2.weight'], Wd['time_embed.2.bias'])
    zemb = F.linear(y, Wd['label_emb.weight'], Wd['label_emb.bias'])
    hs, h = [], x
    for i, lay in enumerate(in_layout):
        h = cv(h, f'input_blocks.{i}.0') if lay == ['C'] else run_block(h, emb, f'input_blocks.{i}', lay); hs.append(h)
    e = run_block(h, emb, 'middle_block', ['R', 'A', 'R']); s = run_block(h, emb, 'shift_middle_block', ['R', 'A', 'R'], zemb)
    for i, lay in enumerate(out_layout):
        sk = hs.pop()
        e = run_block(torch.cat([e, sk], 1), emb, f'output_blocks.{i}', lay); s = run_block(torch.cat([s, sk], 1), emb, f'shift_output_blocks.{i}', lay, zemb)
    return cv(F.silu(gnu(e, 'out.0')), 'out.2'), cv(F.silu(gnu(s, 'shift_out.0')), 'shift_out.2')

# DDIM inversion (SPEC §5 tables)
betas = np.linspace(1e-4, 0.02, cfg['timesteps_args']['timesteps']); abar32 = np.cumprod(1 - betas).astype(np.float32)
T = len(betas); tm = sorted({int(v) for v in np.linspace(0, T - 1, steps + 1)})
nb = [1.0 - float(abar32[0])] + [1.0 - float(abar32[t] / abar32[tm[j - 1]]) for j, t in enumerate(tm) if j > 0]
ac = np.cumprod(1 - np.array(nb))
nxt = np.append(ac[1:], 0.0).astype(np.float32)
s1m, sr, srm1 = np.sqrt(1 - ac).astype(np.float32), np.sqrt(1 / ac).astype(np.float32), np.sqrt(1 / ac - 1).astype(np.float32)
def full_encode(x):
    mu, _ = ae_encode(x); y = sem_encoder(x.permute(0, 1, 4, 2, 3).contiguous()); z = mu * 0.873
    for j in range(steps):
        e, g = shift_unet(z, tm[j], y); e = e - float(s1m[j]) * g
        x0 = (float(sr[j]) * z - float(srm1[j]) * e).clamp(-1, 1); e2 = (float(sr[j]) * z - x0) / float(srm1[j])
        z = x0 * math.sqrt(nxt[j]) + math.sqrt(1 - nxt[j]) * e2
    return z

sx, sy, sz = cfg['data']['resize_to']
x = torch.rand(1, 1, sx, sy, sz, device=dev)
mu, _ = ae_encode(x); z = mu * 0.873; y = sem_encoder(x.permute(0, 1, 4, 2, 3).contiguous())
def med(f, n):
    f(); ts = []
    for _ in range(n):
        if dev == 'cuda': torch.cuda.synchronize()
        t = time.perf_counter(); f()
        if dev == 'cuda': torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)
print(json.dumps({
    'aekl_encode': med(lambda: ae_encode(x), reps), 'aekl_decode': med(lambda: ae_decode(mu), reps),
    'semantic': med(lambda: sem_encoder(x.permute(0, 1, 4, 2, 3).contiguous()), reps),
    'unet_forward': med(lambda: shift_unet(z, 500, y), reps), 'full_encode': med(lambda: full_encode(x), min(reps, 2)),
}))
