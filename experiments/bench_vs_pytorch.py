"""gen_jax vs PyTorch eager on CPU: one Adam training step (or one sampling call) per
workload, same architectures and parameter counts, one process, A/B interleaved.

    pip install torch   # benchmark-only; never needed by gen_jax or its tests
    python experiments/bench_vs_pytorch.py [--rounds 7] [--steps 3] [--rows vae_digits ...]

gen_jax side: the runtime's own step (registry.build of the config, the non-finite
guard, jitted over the device mesh with the state donated, keys fold_in(key, step);
see experiments/runner.py runtime_step), on random batches of the config's shape.
PyTorch side: the same networks written below in torch.nn, mirroring the Flax modules
(gen_jax/nn/conv.py ConvEncoder/ConvDecoder, gen_jax/gans/networks.py, the DDPM UNet of
gen_jax/diffusion/unet.py, gen_jax/autoregressive/networks.py PixelCNNNet), with the
same loss, torch.optim.Adam (foreach), gradient clipping and an EMA of the parameters
where the config has them; the parameter counts of both sides are printed in the table
and must match. Differences that do not change the work: 'SAME' vs symmetric padding on
stride-2 convs (same output sizes), NCHW vs NHWC, the learning-rate schedule.

Each round times ``--steps`` steps of gen_jax then ``--steps`` of PyTorch; the table has
medians over ``--rounds`` rounds, ms per step; ratio = PyTorch ms / gen_jax ms (> 1:
gen_jax faster). Threads: torch.set_num_threads(--threads, default all cores) with
OMP_WAIT_POLICY=PASSIVE (OpenMP spin-waiting on a shared 2-core machine makes PyTorch
20-40x slower, DESIGN.md); XLA:CPU uses all cores. Writes
experiments/results/bench_vs_pytorch.{md,json}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

import jax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from gen_jax import load_config, parallel, registry  # noqa: E402
from gen_jax import train as train_lib  # noqa: E402
from gen_jax.data import DataInfo, dataset_info  # noqa: E402
from gen_jax.nn.masked_conv import causal_mask  # noqa: E402

TFDS_INFO = {"tfds:cifar10": ((32, 32, 3), 256, 10), "tfds:mnist": ((28, 28, 1), 256, 10)}

# name -> (label, config file, overrides, kind)
ROWS = {
    "vae_digits": ("VAE, digits 8x8, batch 128", "vae_digits.py", {"data.batch_size": 128}, "vae"),
    "vae_mnist": (
        "VAE, 28x28 sizes of vae_mnist, batch 128",
        "vae_mnist.py",
        {"data.batch_size": 128},
        "vae",
    ),
    "ddpm_digits": (
        "DDPM UNet, ddpm_digits sizes, batch 64",
        "ddpm_digits.py",
        {"data.batch_size": 64},
        "ddpm",
    ),
    "ddpm_32": (
        "DDPM UNet 32x32 (ch 64, mult (1,2,2), 2 blocks, attention at 16), batch 64",
        "ddpm_cifar10.py",
        {
            "data.batch_size": 64,
            "model.ch": 64,
            "model.ch_mult": (1, 2, 2),
            "model.num_res_blocks": 2,
            "model.attn_resolutions": (16,),
        },
        "ddpm",
    ),
    "dcgan_digits": ("DCGAN, dcgan_digits, one outer step", "dcgan_digits.py", {}, "gan"),
    "dcgan_cifar10": ("DCGAN, dcgan_cifar10 sizes 32x32, one outer step", "dcgan_cifar10.py", {}, "gan"),
    "pixelcnn_sample": (
        "PixelCNN sampling, 64 x 8x8 (pixelcnn_digits)",
        "pixelcnn_digits.py",
        {},
        "pixelcnn",
    ),
}
DEFAULT_ROWS = ["vae_digits", "vae_mnist", "ddpm_digits", "dcgan_digits", "dcgan_cifar10", "pixelcnn_sample"]


# ----------------------------------------------------------------------------- gen_jax side


def build(config_file: str, overrides: dict):
    config = load_config(REPO / "configs" / config_file, **overrides)
    if config.data.name in TFDS_INFO:
        shape, levels, classes = TFDS_INFO[config.data.name]
        info = DataInfo(config.data.name, "image", shape, levels, classes)
    else:
        info = dataset_info(config.data)
    return config, info, registry.build(config, info)


def jax_side(config, info, method, kind: str):
    """(call() -> None that runs one step and blocks, parameter count, compile s)."""
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    bs = config.data.batch_size
    lo, hi = tuple(config.data.value_range)
    host = {"x": (lo + (hi - lo) * rng.random((bs, *info.shape))).astype(np.float32)}
    if kind == "pixelcnn":
        host["x"] = rng.integers(0, info.num_levels, (bs, *info.shape)).astype(np.float32)
    if info.num_classes:
        host["y"] = rng.integers(0, info.num_classes, bs).astype(np.int32)
    init = jax.jit(method.init, out_shardings=parallel.replicated(mesh))
    box = {"state": init(jax.random.key(0), parallel.shard_global_batch(host, mesh)), "i": 0}
    st = box["state"]
    params = st.params if hasattr(st, "params") else {"g": st.g.params, "d": st.d.params}
    n_params = int(sum(np.size(p) for p in jax.tree.leaves(params)))
    key = jax.random.key(2)
    options = parallel.compiler_options(config)  # what the runtime compiles with
    t0 = time.perf_counter()
    if kind == "pixelcnn":
        sample = jax.jit(lambda s, r: method.sample(s, r, 64), compiler_options=options)
        jax.block_until_ready(sample(box["state"], key))

        def call():
            box["i"] += 1
            jax.block_until_ready(sample(box["state"], jax.random.fold_in(key, box["i"])))
    else:
        fn = parallel.jit_train_step(train_lib.guarded_step(method), mesh, options)
        batch = parallel.shard_batch(host, mesh)

        def call():
            box["state"], m = fn(box["state"], batch, jax.random.fold_in(key, box["i"]))
            box["i"] += 1
            jax.block_until_ready((box["state"], m))

        call()
    return call, n_params, time.perf_counter() - t0


# ----------------------------------------------------------------------------- PyTorch side

ACT = {"silu": F.silu, "relu": F.relu}


class TorchVAE(nn.Module):
    """gen_jax.autoencoders.vae.VAENet with arch='conv' (ConvEncoder + ConvDecoder with
    pixel-shuffle upsampling, Gaussian decoder with a network std)."""

    def __init__(self, shape, latent, channels, hidden, act):
        super().__init__()
        h, w, c = shape
        self.latent, self.act, self.shape = latent, ACT[act], shape
        self.enc_convs = nn.ModuleList(
            [nn.Conv2d(c, channels[0], 3, padding=1)]
            + [
                nn.Conv2d(a, b, 3, stride=2, padding=1)
                for a, b in zip((channels[0], *channels[:-1]), channels, strict=False)
            ]
        )
        f = 2 ** len(channels)
        self.h0, self.w0 = h // f, w // f
        self.enc_fc1 = nn.Linear(self.h0 * self.w0 * channels[-1], hidden)
        self.enc_fc2 = nn.Linear(hidden, 2 * latent)
        rev = tuple(reversed(channels))
        self.c0 = rev[0]
        self.dec_fc1 = nn.Linear(latent, hidden)
        self.dec_fc2 = nn.Linear(hidden, self.h0 * self.w0 * rev[0])
        self.dec_up = nn.ModuleList(
            [nn.Conv2d(a, 4 * b, 3, padding=1) for a, b in zip((rev[0], *rev[:-1]), rev, strict=False)]
        )
        self.dec_out = nn.Conv2d(rev[-1], 2 * c, 3, padding=1)

    def forward(self, x):
        a = self.act
        h = x
        for conv in self.enc_convs:
            h = a(conv(h))
        h = a(self.enc_fc1(h.flatten(1)))
        h = self.enc_fc2(h)
        mean, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        h = a(self.dec_fc1(z))
        h = a(self.dec_fc2(h)).view(-1, self.c0, self.h0, self.w0)
        for conv in self.dec_up:
            h = a(F.pixel_shuffle(conv(h), 2))
        out = self.dec_out(h)
        c = x.shape[1]
        mu, log_std = out[:, :c], out[:, c:].clamp(-7.0, 2.0)
        ll = (
            (-0.5 * ((x - mu) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi))
            .flatten(1)
            .sum(1)
        )
        kl = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar).sum(1)
        return (-ll).mean() + kl.mean()


def _groups(c, g):
    g = min(g, c)
    while c % g:
        g -= 1
    return g


class TResBlock(nn.Module):
    def __init__(self, cin, cout, tdim, dropout, groups):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(_groups(cin, groups), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.drop = nn.GroupNorm(_groups(cout, groups), cout), nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None  # Flax: Dense on channels

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(F.silu(temb))[:, :, None, None]
        h = self.c2(self.drop(F.silu(self.n2(h))))
        return (x if self.skip is None else self.skip(x)) + h


class TAttn(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.n = nn.GroupNorm(_groups(c, groups), c)
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.n(x).flatten(2).transpose(1, 2)
        q, k, v = self.q(h), self.k(h), self.v(h)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1)
        return x + self.o(w @ v).transpose(1, 2).reshape(b, c, hh, ww)


class TorchUNet(nn.Module):
    """gen_jax.diffusion.unet.DDPMUNet (unconditional, float32)."""

    def __init__(self, in_ch, size, ch, ch_mult, nrb, attn_res, dropout, groups):
        super().__init__()
        self.ch, tdim = ch, 4 * ch
        self.t1, self.t2 = nn.Linear(ch, tdim), nn.Linear(tdim, tdim)
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down, chans, c, res = nn.ModuleList(), [ch], ch, size
        for i, m in enumerate(ch_mult):
            for _ in range(nrb):
                blk = nn.ModuleList([TResBlock(c, ch * m, tdim, dropout, groups)])
                c = ch * m
                if res in attn_res:
                    blk.append(TAttn(c, groups))
                self.down.append(blk)
                chans.append(c)
            if i != len(ch_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                chans.append(c)
                res //= 2
        self.mid = nn.ModuleList(
            [TResBlock(c, c, tdim, dropout, groups), TAttn(c, groups), TResBlock(c, c, tdim, dropout, groups)]
        )
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(ch_mult))):
            for _ in range(nrb + 1):
                blk = nn.ModuleList([TResBlock(c + chans.pop(), ch * m, tdim, dropout, groups)])
                c = ch * m
                if res in attn_res:
                    blk.append(TAttn(c, groups))
                self.up.append(blk)
            if i != 0:
                self.up.append(nn.ModuleList([nn.Conv2d(c, c, 3, padding=1)]))
                res *= 2
        self.n_out, self.conv_out = nn.GroupNorm(_groups(c, groups), c), nn.Conv2d(c, in_ch, 3, padding=1)

    def forward(self, x, t):
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        args = t.float()[:, None] * freqs[None]
        temb = self.t2(F.silu(self.t1(torch.cat([torch.sin(args), torch.cos(args)], -1))))
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            if isinstance(blk[0], TResBlock):
                h = blk[0](h, temb)
                if len(blk) > 1:
                    h = blk[1](h)
            else:
                h = blk[0](h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for blk in self.up:
            if isinstance(blk[0], TResBlock):
                h = blk[0](torch.cat([h, hs.pop()], 1), temb)
                if len(blk) > 1:
                    h = blk[1](h)
            else:
                h = blk[0](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.n_out(h)))


class TorchDDPM(nn.Module):
    """L_simple with epsilon prediction, linear beta schedule, uniform t."""

    def __init__(self, unet, T=1000):
        super().__init__()
        self.unet, self.T = unet, T
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        self.register_buffer("abar", torch.cumprod(1 - betas, 0).float())

    def forward(self, x):
        t = torch.randint(0, self.T, (x.shape[0],))
        eps = torch.randn_like(x)
        a = self.abar[t][:, None, None, None]
        xt = a.sqrt() * x + (1 - a).sqrt() * eps
        return ((self.unet(xt, t) - eps) ** 2).flatten(1).mean(1).mean()


class TorchG(nn.Module):
    """gen_jax.gans.networks.DCGANGenerator (batch norm, pixel-shuffle upsampling, tanh)."""

    def __init__(self, shape, channels, latent):
        super().__init__()
        h, w, c = shape
        f = 2 ** len(channels)
        self.h0, self.w0, self.c0 = h // f, w // f, channels[0]
        self.fc = nn.Linear(latent, self.h0 * self.w0 * channels[0])
        self.bn0 = nn.BatchNorm2d(channels[0], momentum=0.1)
        widths = (*channels[1:], c)
        ins = channels
        self.ups = nn.ModuleList(
            [nn.Conv2d(a, 4 * b, 3, padding=1) for a, b in zip(ins, widths, strict=False)]
        )
        self.bns = nn.ModuleList([nn.BatchNorm2d(b) for b in widths[:-1]])

    def forward(self, z):
        h = F.relu(self.bn0(self.fc(z).view(-1, self.c0, self.h0, self.w0)))
        for i, conv in enumerate(self.ups):
            h = F.pixel_shuffle(conv(h), 2)
            if i < len(self.bns):
                h = F.relu(self.bns[i](h))
        return torch.tanh(h)


class TorchD(nn.Module):
    """gen_jax.gans.networks.DCGANDiscriminator (4x4 stride-2 convs, batch norm after all but
    the first, LeakyReLU(0.2), one linear output)."""

    def __init__(self, shape, channels):
        super().__init__()
        h, w, c = shape
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(a, b, 4, stride=2, padding=1)
                for a, b in zip((c, *channels[:-1]), channels, strict=False)
            ]
        )
        self.bns = nn.ModuleList([nn.BatchNorm2d(b) for b in channels[1:]])
        f = 2 ** len(channels)
        self.fc = nn.Linear((h // f) * (w // f) * channels[-1], 1)

    def forward(self, x):
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i > 0:
                h = self.bns[i - 1](h)
            h = F.leaky_relu(h, 0.2)
        return self.fc(h.flatten(1))[:, 0]


class TorchPixelCNN(nn.Module):
    """gen_jax.autoregressive.networks.PixelCNNNet (one colour channel), masks from
    gen_jax.nn.masked_conv.causal_mask, multiplied into the kernel every pass as there."""

    def __init__(self, features, num_layers, first_kernel, kernel, head, num_params):
        super().__init__()
        f = features
        spec = [(1, 2 * f, first_kernel, "A")]
        for _ in range(num_layers):
            spec += [(2 * f, f, 1, "B"), (f, f, kernel, "B"), (f, 2 * f, 1, "B")]
        spec += [(2 * f, head, 1, "B"), (head, num_params, 1, "B")]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, k, padding=k // 2) for a, b, k, _ in spec])
        for i, (a, b, k, t) in enumerate(spec):
            m = causal_mask((k, k), a, b, 1, "full", t)  # (kh, kw, in, out)
            self.register_buffer(f"mask{i}", torch.from_numpy(np.ascontiguousarray(m.transpose(3, 2, 0, 1))))
        self.num_layers = num_layers

    def _conv(self, i, x):
        c = self.convs[i]
        return F.conv2d(x, c.weight * getattr(self, f"mask{i}"), c.bias, padding=c.padding)

    def forward(self, x):
        h = self._conv(0, x)
        for b in range(self.num_layers):
            r = self._conv(1 + 3 * b, F.relu(h))
            r = self._conv(2 + 3 * b, F.relu(r))
            h = h + self._conv(3 + 3 * b, F.relu(r))
        h = self._conv(1 + 3 * self.num_layers, F.relu(h))
        return self._conv(2 + 3 * self.num_layers, F.relu(h))  # (N, levels, H, W)


def _n(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


class _EMA:
    def __init__(self, params, decay):
        self.params, self.decay = list(params), decay
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self):
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.decay)


def torch_side(config, info, kind: str):
    """(call() -> None running one step, parameter count)."""
    torch.manual_seed(0)
    m, bs = config.model, config.data.batch_size
    h, w, c = info.shape
    rng = np.random.default_rng(0)
    lo, hi = tuple(config.data.value_range)
    x = torch.from_numpy((lo + (hi - lo) * rng.random((bs, c, h, w))).astype(np.float32))
    ema_decay = float(config.train.ema_decay or 0.0)
    clip = float(config.optim.get("grad_clip", 0.0) or 0.0)
    if kind in ("vae", "ddpm"):
        if kind == "vae":
            model = TorchVAE(info.shape, m.latent_dim, tuple(m.channels), m.hidden_sizes[0], m.activation)
        else:
            model = TorchDDPM(
                TorchUNet(
                    c,
                    h,
                    m.ch,
                    tuple(m.ch_mult),
                    m.num_res_blocks,
                    tuple(m.attn_resolutions),
                    m.dropout,
                    m.groups,
                ),
                m.num_timesteps,
            )
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
        ema = _EMA(model.parameters(), ema_decay) if ema_decay else None

        def call():
            opt.zero_grad(set_to_none=True)
            loss = model(x)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
            opt.step()
            if ema:
                ema.update()
            bool(torch.isfinite(loss))  # the runtime's non-finite check reads the loss

        return call, _n(model)
    if kind == "gan":
        g, d = TorchG(info.shape, tuple(m.g_channels), m.latent_dim), TorchD(info.shape, tuple(m.d_channels))
        g.train(), d.train()
        og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
        od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
        ema = _EMA(g.parameters(), ema_decay) if ema_decay else None

        def call():  # gan.d_steps = 1: one D update, then one G update
            with torch.no_grad():
                fake = g(torch.randn(bs, m.latent_dim))
            od.zero_grad(set_to_none=True)
            dl = F.softplus(-d(x)).mean() + F.softplus(d(fake)).mean()
            dl.backward()
            od.step()
            og.zero_grad(set_to_none=True)
            gl = F.softplus(-d(g(torch.randn(bs, m.latent_dim)))).mean()
            gl.backward()
            og.step()
            if ema:
                ema.update()
            bool(torch.isfinite(dl + gl))

        return call, _n(g, d)
    if kind == "pixelcnn":
        levels = info.num_levels
        net = TorchPixelCNN(
            m.features, m.num_layers, m.first_kernel, m.kernel, m.head_features, levels
        ).eval()
        n = 64

        @torch.no_grad()
        def call():
            canvas = torch.zeros(n, 1, h, w)  # levels centred to [-1, 1]
            for i in range(h):
                for j in range(w):
                    logits = net(canvas)[:, :, i, j]
                    k = torch.multinomial(torch.softmax(logits, -1), 1)[:, 0]
                    canvas[:, 0, i, j] = 2.0 * k.float() / (levels - 1) - 1.0

        return call, _n(net)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per side per round")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(REPO / "experiments" / "results" / "bench_vs_pytorch"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    for name in args.rows:
        label, config_file, overrides, kind = ROWS[name]
        config, info, method = build(config_file, overrides)
        jcall, jn, jcompile = jax_side(config, info, method, kind)
        tcall, tn = torch_side(config, info, kind)
        tcall()  # warm-up
        jt, tt = [], []
        for _ in range(args.rounds):
            for call, acc in ((jcall, jt), (tcall, tt)):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    call()
                acc.append(1e3 * (time.perf_counter() - t0) / args.steps)
        row = {
            "row": name,
            "workload": label,
            "jax_ms": float(np.median(jt)),
            "torch_ms": float(np.median(tt)),
            "jax_params": jn,
            "torch_params": tn,
            "jax_compile_s": round(jcompile, 2),
            "jax_ms_rounds": [round(v, 2) for v in jt],
            "torch_ms_rounds": [round(v, 2) for v in tt],
            "loadavg_after": os.getloadavg()[0],
        }
        row["ratio"] = row["torch_ms"] / row["jax_ms"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    load1 = os.getloadavg()
    cmd = "python experiments/bench_vs_pytorch.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": cmd.strip(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rounds": args.rounds,
        "steps": args.steps,
        "loadavg_start": load0,
        "loadavg_end": load1,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# gen_jax vs PyTorch eager, CPU",
        "",
        f"- date {result['date']}; jax {result['jax']}, torch {result['torch']}; {os.cpu_count()} cores; "
        f"torch threads {result['torch_threads']}, OMP_WAIT_POLICY={result['omp_wait_policy']}",
        f"- command: `{result['command']}`",
        f"- medians of {args.rounds} interleaved rounds of {args.steps} steps per side; ms per step "
        "(PixelCNN: per 64-image sampling call); ratio = PyTorch ms / gen_jax ms (> 1: gen_jax faster)",
        f"- load average (1 min) at start {load0[0]:.1f}, at end {load1[0]:.1f} on {os.cpu_count()} cores: "
        + (
            "other processes were running (the machine is shared); interleaving keeps the ratios "
            "comparable, absolute times are inflated"
            if max(load0[0], load1[0]) > 1.5 * (os.cpu_count() or 1)
            else "machine otherwise idle"
        ),
        "",
        "| workload | gen_jax ms | PyTorch eager ms | ratio | params gen_jax | params PyTorch "
        "| gen_jax compile s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['jax_ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio']:.2f} | "
            f"{r['jax_params']:,} | {r['torch_params']:,} | {r['jax_compile_s']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
