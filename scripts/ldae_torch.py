"""LDAE's networks and training losses as plain, differentiable torch functional ops, written from
shared/ldae/SPEC.md after the functional style of shared/ldae/spec_check.py (which runs its checks at import time
and disables autograd, so it cannot be imported). The weights are explicit dicts {published key: tensor}; a
training step marks the trained ones `requires_grad` and reads `.grad` in the same keys.

Used by scripts/make_train_fixtures.py (the one-step gradient fixtures of tests/train_parity.rs) and
benches/train_step_torch.py (the PyTorch side of benches/train_step.rs). Dropout and stochastic depth are left out
on purpose: the Rust training step has none, and parity needs the same function on both sides.
Requirements (pip): torch numpy safetensors
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

SCALE_FACTOR = 0.8730


def per_level(v, n):
    return [v] * n if isinstance(v, int) else list(v)


# ---------------------------------------------------------------- AutoencoderKL (SPEC §2)
class Aekl:
    def __init__(self, vae_args, W):
        self.W = W
        self.G = vae_args['norm_num_groups']
        self.L = len(vae_args['num_channels'])
        self.nres = per_level(vae_args['num_res_blocks'], self.L)

    def conv(self, x, p, pad=1, stride=1):
        return F.conv3d(x, self.W[p + '.weight'], self.W[p + '.bias'], stride=stride, padding=pad)

    def gn(self, x, p):
        return F.group_norm(x, self.G, self.W[p + '.weight'], self.W[p + '.bias'], 1e-6)

    def res(self, x, p):
        h = self.conv(F.silu(self.gn(x, p + '.norm1')), p + '.conv1.conv')
        h = self.conv(F.silu(self.gn(h, p + '.norm2')), p + '.conv2.conv')
        if p + '.nin_shortcut.conv.weight' in self.W:
            x = self.conv(x, p + '.nin_shortcut.conv', pad=0)
        return x + h

    def encode(self, x):
        """x [B,1,X,Y,Z] -> (mu, sigma), log-variance clamped to [-30, 20]."""
        i = 1
        x = self.conv(x, 'encoder.blocks.0.conv')
        for l in range(self.L):
            for _ in range(self.nres[l]):
                x = self.res(x, f'encoder.blocks.{i}')
                i += 1
            if l != self.L - 1:
                x = self.conv(F.pad(x, (0, 1, 0, 1, 0, 1)), f'encoder.blocks.{i}.conv.conv', pad=0, stride=2)
                i += 1
        x = self.conv(self.gn(x, f'encoder.blocks.{i}'), f'encoder.blocks.{i + 1}.conv')
        mu = self.conv(x, 'quant_conv_mu.conv', pad=0)
        lv = torch.clamp(self.conv(x, 'quant_conv_log_sigma.conv', pad=0), -30, 20)
        return mu, torch.exp(lv / 2)

    def decode(self, z):
        x = self.conv(self.conv(z, 'post_quant_conv.conv', pad=0), 'decoder.blocks.0.conv')
        i = 1
        for l, n in enumerate(self.nres[::-1]):
            for _ in range(n):
                x = self.res(x, f'decoder.blocks.{i}')
                i += 1
            if l != self.L - 1:
                x = self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'), f'decoder.blocks.{i}.conv.conv')
                i += 1
        return self.conv(self.gn(x, f'decoder.blocks.{i}'), f'decoder.blocks.{i + 1}.conv')


def aekl_loss(ae, x, eps, kl_weight=1e-7):
    """SPEC §1a without the perceptual and adversarial terms: z = mu + sigma*eps, L1(decode(z), x) + w*KL."""
    mu, sigma = ae.encode(x)
    recon = ae.decode(mu + sigma * eps)
    l1 = (recon - x).abs().mean()
    kl = (0.5 * (mu ** 2 + sigma ** 2 - torch.log(sigma ** 2) - 1).flatten(1).sum(1)).mean()
    return l1 + kl_weight * kl, l1, kl


# ---------------------------------------------------------------- semantic encoder (SPEC §3)
class Semantic:
    P = 'backbone.backbone.'

    def __init__(self, enc_args, W):
        self.W = W
        self.heads = enc_args.get('num_heads', 8)

    def ln2d(self, x, p):
        W = self.W
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), W[p + '.weight'], W[p + '.bias'], 1e-6).permute(0, 3, 1, 2)

    def convnext(self, x):
        W, P = self.W, self.P
        x = self.ln2d(F.conv2d(x, W[P + 'features.0.0.weight'], W[P + 'features.0.0.bias'], stride=4), P + 'features.0.1')
        s = 1
        while f'{P}features.{s}.0.layer_scale' in W:
            b = 0
            while f'{P}features.{s}.{b}.layer_scale' in W:
                q = f'{P}features.{s}.{b}.'
                d = x.shape[1]
                y = F.conv2d(x, W[q + 'block.0.weight'], W[q + 'block.0.bias'], padding=3, groups=d).permute(0, 2, 3, 1)
                y = F.layer_norm(y, (d,), W[q + 'block.2.weight'], W[q + 'block.2.bias'], 1e-6)
                y = F.linear(F.gelu(F.linear(y, W[q + 'block.3.weight'], W[q + 'block.3.bias'])), W[q + 'block.5.weight'], W[q + 'block.5.bias'])
                x = x + y.permute(0, 3, 1, 2) * W[q + 'layer_scale']
                b += 1
            if f'{P}features.{s + 1}.0.weight' in W:
                x = F.conv2d(self.ln2d(x, f'{P}features.{s + 1}.0'), W[f'{P}features.{s + 1}.1.weight'], W[f'{P}features.{s + 1}.1.bias'], stride=2)
            s += 2
        return self.ln2d(x.mean((2, 3), keepdim=True), P + 'classifier.0').flatten(1)

    def forward(self, xe):
        """xe [B,1,Z,X,Y] (axial layout) -> y_sem [B,E]."""
        W = self.W
        B, C, Z, H, W_ = xe.shape
        x = self.convnext(xe.reshape(B * Z, C, H, W_)).reshape(B, Z, -1)
        Ed = x.shape[-1]
        x = x + W['positional_encoding.pe'][:, :Z].detach()
        a = torch.softmax(F.linear(x, W['soft_attention.linear.weight'], W['soft_attention.linear.bias'])[..., 0], 1)
        m = torch.einsum('bz,bze->be', a, x)
        q = F.linear(m[:, None], W['query_projection.weight'], W['query_projection.bias'])
        k = F.linear(x, W['key_projection.weight'], W['key_projection.bias'])
        v = F.linear(x, W['value_projection.weight'], W['value_projection.bias'])
        Wi, bi = W['cross_attention.in_proj_weight'], W['cross_attention.in_proj_bias']
        Q = F.linear(q, Wi[:Ed], bi[:Ed])
        K = F.linear(k, Wi[Ed:2 * Ed], bi[Ed:2 * Ed])
        Vv = F.linear(v, Wi[2 * Ed:], bi[2 * Ed:])
        nh = self.heads
        hd = Ed // nh
        Qh = Q.view(B, 1, nh, hd).transpose(1, 2)
        Kh = K.view(B, Z, nh, hd).transpose(1, 2)
        Vh = Vv.view(B, Z, nh, hd).transpose(1, 2)
        o = (torch.softmax(Qh @ Kh.transpose(-1, -2) / math.sqrt(hd), -1) @ Vh).transpose(1, 2).reshape(B, 1, Ed)
        o = F.linear(o, W['cross_attention.out_proj.weight'], W['cross_attention.out_proj.bias'])
        return F.layer_norm(o, (Ed,), W['layer_norm_after_attention.weight'], W['layer_norm_after_attention.bias'], 1e-5)[:, 0]


def axial(x):
    """Model input [B,1,X,Y,Z] -> encoder layout [B,1,Z,X,Y] (SPEC §3)."""
    return x.permute(0, 1, 4, 2, 3).contiguous()


# ---------------------------------------------------------------- ShiftUNet (SPEC §4)
class ShiftUnet:
    def __init__(self, unet_args, W):
        self.W = W
        self.base = unet_args['base_channel']
        self.heads = unet_args['num_heads']
        mult, nrb, attres = unet_args['channel_multiplier'], unet_args['num_residual_blocks_of_a_block'], unet_args['attention_resolutions']
        self.in_layout, ds = [['C']], 1
        for lvl in range(len(mult)):
            for _ in range(nrb):
                self.in_layout.append(['R'] + (['A'] if ds in attres else []))
            if lvl != len(mult) - 1:
                self.in_layout.append(['D'])
                ds *= 2
        self.out_layout = []
        for lvl in reversed(range(len(mult))):
            for i in range(nrb + 1):
                lay = ['R'] + (['A'] if ds in attres else [])
                if lvl and i == nrb:
                    lay.append('U')
                    ds //= 2
                self.out_layout.append(lay)

    def gn(self, x, p):
        return F.group_norm(x, 32, self.W[p + '.weight'], self.W[p + '.bias'], 1e-5)

    def cv(self, x, p, pad=1):
        return F.conv3d(x, self.W[p + '.weight'], self.W[p + '.bias'], padding=pad)

    def resblock(self, x, emb, p, zemb=None, mode=None):
        W = self.W
        h = F.silu(self.gn(x, p + '.in_layers.0'))
        if mode == 'D':
            h, x = F.avg_pool3d(h, (1, 2, 2)), F.avg_pool3d(x, (1, 2, 2))
        if mode == 'U':
            def up(t):
                return F.interpolate(t, (t.shape[2], t.shape[3] * 2, t.shape[4] * 2), mode='nearest')
            h, x = up(h), up(x)
        h = self.cv(h, p + '.in_layers.2')
        sc, sh = F.linear(F.silu(emb), W[p + '.emb_layers.1.weight'], W[p + '.emb_layers.1.bias'])[..., None, None, None].chunk(2, 1)
        h = self.gn(h, p + '.out_layers.0') * (1 + sc) + sh
        if zemb is not None:
            zs, zb = F.linear(F.silu(zemb), W[p + '.emb_z_layers.1.weight'], W[p + '.emb_z_layers.1.bias'])[..., None, None, None].chunk(2, 1)
            h = (1 + zs) * h + zb
        h = self.cv(F.silu(h), p + '.out_layers.3')
        if p + '.skip_connection.weight' in W:
            x = self.cv(x, p + '.skip_connection', pad=0)
        return x + h

    def attn(self, x, p):
        W = self.W
        B, C = x.shape[:2]
        sp = x.shape[2:]
        xf = x.reshape(B, C, -1)
        T = xf.shape[-1]
        qkv = F.conv1d(F.group_norm(xf, 32, W[p + '.norm.weight'], W[p + '.norm.bias'], 1e-5), W[p + '.qkv.weight'], W[p + '.qkv.bias'])
        ch = C // self.heads
        q, k, v = qkv.reshape(B * self.heads, 3 * ch, T).split(ch, 1)
        s = ch ** -0.25
        w = torch.softmax(torch.einsum('bct,bcs->bts', q * s, k * s), -1)
        a = torch.einsum('bts,bcs->bct', w, v).reshape(B, C, T)
        return (xf + F.conv1d(a, W[p + '.proj_out.weight'], W[p + '.proj_out.bias'])).reshape(B, C, *sp)

    def run_block(self, x, emb, p, layers, zemb=None):
        for j, kind in enumerate(layers):
            x = self.attn(x, f'{p}.{j}') if kind == 'A' else self.resblock(x, emb, f'{p}.{j}', zemb, kind)
        return x

    def time_emb(self, t):
        """t [B] (int or float) -> the 4*base time embedding."""
        W = self.W
        half = self.base // 2
        fr = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        a = t.to(torch.float32)[:, None] * fr[None]
        emb = torch.cat([torch.cos(a), torch.sin(a)], -1)
        return F.linear(F.silu(F.linear(emb, W['time_embed.0.weight'], W['time_embed.0.bias'])), W['time_embed.2.weight'], W['time_embed.2.bias'])

    def encoder_path(self, x, emb):
        hs, h = [], x
        for i, lay in enumerate(self.in_layout):
            h = self.cv(h, f'input_blocks.{i}.0') if lay == ['C'] else self.run_block(h, emb, f'input_blocks.{i}', lay)
            hs.append(h)
        return h, hs

    def eps(self, x, t):
        """The plain UNet (epsilon path only, stage §1b)."""
        emb = self.time_emb(t)
        h, hs = self.encoder_path(x, emb)
        e = self.run_block(h, emb, 'middle_block', ['R', 'A', 'R'])
        for i, lay in enumerate(self.out_layout):
            e = self.run_block(torch.cat([e, hs.pop()], 1), emb, f'output_blocks.{i}', lay)
        return self.cv(F.silu(self.gn(e, 'out.0')), 'out.2')

    def forward(self, x, t, y):
        """(eps, shift) of SPEC §4."""
        W = self.W
        emb = self.time_emb(t)
        zemb = F.linear(y, W['label_emb.weight'], W['label_emb.bias'])
        h, hs = self.encoder_path(x, emb)
        e = self.run_block(h, emb, 'middle_block', ['R', 'A', 'R'])
        s = self.run_block(h, emb, 'shift_middle_block', ['R', 'A', 'R'], zemb)
        for i, lay in enumerate(self.out_layout):
            sk = hs.pop()
            e = self.run_block(torch.cat([e, sk], 1), emb, f'output_blocks.{i}', lay)
            s = self.run_block(torch.cat([s, sk], 1), emb, f'shift_output_blocks.{i}', lay, zemb)
        return self.cv(F.silu(self.gn(e, 'out.0')), 'out.2'), self.cv(F.silu(self.gn(s, 'shift_out.0')), 'shift_out.2')


EPS_PATH = ('time_embed.', 'input_blocks.', 'middle_block.', 'output_blocks.', 'out.')
SHIFT_PATH = ('label_emb.', 'shift_middle_block.', 'shift_output_blocks.', 'shift_out.')


# ---------------------------------------------------------------- schedule and losses (SPEC §1b, §1c, §5)
class Schedule:
    """Linear betas in float64; every table stored as float32 (SPEC §5)."""

    def __init__(self, timesteps=1000):
        betas = np.linspace(1e-4, 0.02, timesteps)
        alphas = 1 - betas
        abar = np.cumprod(alphas)
        abar_prev = np.append(1.0, abar[:-1])
        snr = abar / (1 - abar)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32)
        self.sqrt_abar = f32(np.sqrt(abar))
        self.sqrt_1m_abar = f32(np.sqrt(1 - abar))
        self.shift_coef = f32(-np.sqrt(alphas) * (1 - abar_prev) / np.sqrt(1 - abar))
        self.weight = f32(snr ** 0.1 / (1 + snr))

    def q_sample(self, z0, t, noise):
        b = (-1,) + (1,) * (z0.dim() - 1)
        return self.sqrt_abar[t].view(b) * z0 + self.sqrt_1m_abar[t].view(b) * noise


def ddpm_loss(unet, sched, z0, t, noise):
    """SPEC §1b: mean((noise - UNet(z_t, t))^2)."""
    return ((noise - unet.eps(sched.q_sample(z0, t, noise), t)) ** 2).mean()


def repr_loss(sem, unet, sched, x0, z0, t, noise):
    """SPEC §1c: mean(w_t (noise - (eps + c_t g))^2), y = Enc(axial(x0))."""
    y = sem.forward(axial(x0))
    eps, g = unet.forward(sched.q_sample(z0, t, noise), t, y)
    b = (-1, 1, 1, 1, 1)
    return (sched.weight[t].view(b) * (noise - (eps + sched.shift_coef[t].view(b) * g)) ** 2).mean()
