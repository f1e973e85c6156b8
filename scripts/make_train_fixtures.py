#!/usr/bin/env python3
"""One training step of each LDAE stage (SPEC §1) in PyTorch, saved as the fixtures of tests/train_parity.rs.

The weights are the committed tiny fixtures' random weights (tests/data/shared/ldae/fixtures/<name>, published key
layout), so only the batch, the sampled noise/timesteps, the loss values and the gradients are written here:
  aekl.safetensors  (tiny-a AutoencoderKL)  x, eps_sample, loss/l1/kl, grad.<key> for every AEKL key, and two Adam
                    steps with global-norm clipping on the same batch: grad_norm.{1,2}, update1.<key> (params after
                    step 1 minus before), update2.<key> (after step 2 minus after step 1), loss2 (loss before step 2)
  ddpm.safetensors  (tiny-a plain UNet = epsilon path) z0, t, noise, loss, grad.<key> for every epsilon-path key
  repr.safetensors  (tiny-b encoder + ShiftUNet, epsilon path frozen) x0_axial, z0, t, noise, loss,
                    grad_encoder.<key> for every trained encoder key (its `backbone.backbone.*` copy of the
                    backbone, not the `slice_distributed` twin nor the positional-encoding buffer) and
                    grad_decoder.<key> for every shift-path key of decoder.safetensors
No dropout / stochastic depth (the Rust step has none). Float32 throughout, CPU, deterministic seeds.

Usage: scripts/make_train_fixtures.py [OUT_DIR (default tests/data/train)]
Requirements (pip): torch numpy safetensors (e.g. the venv of scripts/bench-model.sh).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldae_torch as lt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SHARED = os.path.join(ROOT, 'tests/data/shared/ldae/fixtures')
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, 'tests/data/train')

ADAM = dict(lr=5e-5, betas=(0.9, 0.999), eps=1e-8, clip=1.0)  # SPEC §1a (lr_g), clip 1.0


def fixture(name):
    d = os.path.join(SHARED, name)
    cfg = json.load(open(os.path.join(d, 'config.json')))
    return cfg, lambda f: load_file(os.path.join(d, f + '.safetensors'))


def trainable(W, keep):
    """A copy of W whose keys for which keep(key) is true are leaf tensors that require grad."""
    return {k: (v.clone().requires_grad_(True) if keep(k) else v.clone()) for k, v in W.items()}


def grads(W, keep):
    out = {}
    for k, v in W.items():
        if keep(k):
            g = v.grad if v.grad is not None else torch.zeros_like(v)
            out['grad.' + k] = g.detach().clone().contiguous()
    return out


def latent_shape(cfg, b):
    x, y, z = cfg['data']['resize_to']
    f = 2 ** (len(cfg['vae_args']['num_channels']) - 1)
    return (b, cfg['vae_args']['latent_channels'], x // f, y // f, z // f)


def make_aekl():
    cfg, load = fixture('tiny-a')
    g = torch.Generator().manual_seed(101)
    x = torch.rand((2, 1, *cfg['data']['resize_to']), generator=g)
    eps = torch.randn(latent_shape(cfg, 2), generator=g)
    W = trainable(load('autoencoderkl'), lambda k: True)
    ae = lt.Aekl(cfg['vae_args'], W)
    loss, l1, kl = lt.aekl_loss(ae, x, eps)
    loss.backward()
    out = dict(x=x, eps_sample=eps, loss=loss.detach().reshape(1), l1=l1.detach().reshape(1), kl=kl.detach().reshape(1))
    out.update(grads(W, lambda k: True))
    # two Adam steps with global-norm clipping (torch.optim.Adam, clip_grad_norm_), the same batch
    params = [W[k] for k in sorted(W)]
    opt = torch.optim.Adam(params, lr=ADAM['lr'], betas=ADAM['betas'], eps=ADAM['eps'], weight_decay=0.0)
    for step in (1, 2):
        if step == 2:
            opt.zero_grad()
            loss2, _, _ = lt.aekl_loss(ae, x, eps)
            loss2.backward()
            out['loss2'] = loss2.detach().reshape(1)
        before = {k: W[k].detach().clone() for k in W}
        norm = torch.nn.utils.clip_grad_norm_(params, ADAM['clip'])
        out[f'grad_norm.{step}'] = norm.detach().reshape(1)
        opt.step()
        for k in W:
            out[f'update{step}.{k}'] = (W[k].detach() - before[k]).contiguous()
    return out


def make_ddpm():
    cfg, load = fixture('tiny-a')
    g = torch.Generator().manual_seed(202)
    shape = latent_shape(cfg, 2)
    z0 = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    t = torch.tensor([37, 811])
    sched = lt.Schedule(cfg['timesteps_args']['timesteps'])
    keep = lambda k: k.startswith(lt.EPS_PATH)
    W = trainable(load('decoder'), keep)
    unet = lt.ShiftUnet(cfg['unet_args'], W)
    loss = lt.ddpm_loss(unet, sched, z0, t, noise)
    loss.backward()
    out = dict(z0=z0, noise=noise, t=t.to(torch.int64), loss=loss.detach().reshape(1))
    out.update(grads(W, keep))
    return out


def make_repr():
    cfg, load = fixture('tiny-b')
    g = torch.Generator().manual_seed(303)
    shape = latent_shape(cfg, 2)
    x0 = torch.rand((2, 1, *cfg['data']['resize_to']), generator=g)
    z0 = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    t = torch.tensor([5, 640])
    sched = lt.Schedule(cfg['timesteps_args']['timesteps'])
    # the encoder: one copy of the backbone is trained (`backbone.backbone.*`); the twin and the buffer are not
    keep_e = lambda k: not k.startswith('slice_distributed.') and k != 'positional_encoding.pe'
    keep_d = lambda k: k.startswith(lt.SHIFT_PATH)
    We = trainable(load('encoder'), keep_e)
    Wd = trainable(load('decoder'), keep_d)
    sem = lt.Semantic(cfg['enc_args'], We)
    unet = lt.ShiftUnet(cfg['unet_args'], Wd)
    x0_axial = lt.axial(x0)
    loss = lt.repr_loss(sem, unet, sched, x0, z0, t, noise)
    loss.backward()
    out = dict(x0_axial=x0_axial, z0=z0, noise=noise, t=t.to(torch.int64), loss=loss.detach().reshape(1))
    out.update({'grad_encoder.' + k[5:]: v for k, v in grads(We, keep_e).items()})
    out.update({'grad_decoder.' + k[5:]: v for k, v in grads(Wd, keep_d).items()})
    return out


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    for name, make in (('aekl', make_aekl), ('ddpm', make_ddpm), ('repr', make_repr)):
        t = {k: v.contiguous() for k, v in make().items()}
        meta = {'torch': torch.__version__, 'stage': name, 'made_by': 'scripts/make_train_fixtures.py'}
        save_file(t, os.path.join(OUT, name + '.safetensors'), metadata=meta)
        n = sum(1 for k in t if k.startswith('grad'))
        print(f'{name}: loss {t["loss"].item():.6f}, {n} gradients, {sum(v.numel() for v in t.values()) * 4 / 1e6:.2f} MB')


if __name__ == '__main__':
    main()
