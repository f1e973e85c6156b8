#!/usr/bin/env python3
"""PyTorch side of benches/train_step.rs: one training step (forward, backward, global-norm clip 1.0, Adam) of
each LDAE stage (SPEC §1a AEKL L1+KL, §1b latent DDPM, §1c representation learning with the epsilon path frozen)
on the model directory the Rust bench wrote (config.json + safetensors), with the modules of
scripts/ldae_torch.py. Batch 1, same shapes as the Rust side. Prints {stage: median ms} as JSON.
Usage: train_step_torch.py MODEL_DIR THREADS REPS [cpu|cuda]"""
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts'))
import ldae_torch as lt  # noqa: E402

D, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = sys.argv[4] if len(sys.argv) > 4 else 'cpu'
torch.set_num_threads(threads)
cfg = json.load(open(D + '/config.json'))
T = cfg['timesteps_args']['timesteps']
sched = lt.Schedule(T)
sched.__dict__.update({k: v.to(dev) for k, v in sched.__dict__.items()})


def weights(name, keep):
    return {k: (v.to(dev).requires_grad_(True) if keep(k) else v.to(dev)) for k, v in load_file(f'{D}/{name}.safetensors').items()}


def stepper(W_list, keep_list, loss_fn):
    params = [W[k] for W, keep in zip(W_list, keep_list) for k in sorted(W) if keep(k)]
    opt = torch.optim.Adam(params, lr=2.5e-5, betas=(0.9, 0.999), eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss
    return step


sx, sy, sz = cfg['data']['resize_to']
f = 2 ** (len(cfg['vae_args']['num_channels']) - 1)
lat = (1, cfg['vae_args']['latent_channels'], sx // f, sy // f, sz // f)
g = torch.Generator().manual_seed(5)
x = torch.rand((1, 1, sx, sy, sz), generator=g).to(dev)
eps = torch.randn(lat, generator=g).to(dev)
z0 = torch.randn(lat, generator=g).to(dev)
noise = torch.randn(lat, generator=g).to(dev)
t = torch.tensor([500], device=dev)

everything = lambda k: True
Wa = weights('autoencoderkl', everything)
ae = lt.Aekl(cfg['vae_args'], Wa)
aekl_step = stepper([Wa], [everything], lambda: lt.aekl_loss(ae, x, eps)[0])

eps_path = lambda k: k.startswith(lt.EPS_PATH)
Wd = weights('decoder', eps_path)
ddpm_step = stepper([Wd], [eps_path], lambda: lt.ddpm_loss(lt.ShiftUnet(cfg['unet_args'], Wd), sched, z0, t, noise))

enc_param = lambda k: not k.startswith('slice_distributed.') and k != 'positional_encoding.pe'
shift_path = lambda k: k.startswith(lt.SHIFT_PATH)
We = weights('encoder', enc_param)
Wr = weights('decoder', shift_path)
repr_step = stepper([We, Wr], [enc_param, shift_path],
                    lambda: lt.repr_loss(lt.Semantic(cfg['enc_args'], We), lt.ShiftUnet(cfg['unet_args'], Wr), sched, x, z0, t, noise))


def med(fn, n):
    fn()
    ts = []
    for _ in range(n):
        if dev == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if dev == 'cuda':
            torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


print(json.dumps({'aekl': med(aekl_step, reps), 'ddpm': med(ddpm_step, reps), 'repr': med(repr_step, reps)}))
