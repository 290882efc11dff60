"""PyTorch side of the ScaleKD parity test (tests/test_scalekd.c).

Written in float64 from the ScaleKD paper (Fan et al., NeurIPS 2024) and the
method's description in the spec: two cross-attention projectors per
student stage (spatial P0, frequency P1),

  kv   = ReLU(BN(conv3x3(x))) + pos_embed          training-mode BN
  q_in = ReLU(conv1x1(query map))                   the learned query table
  A    = softmax(q k^T (Ct/h)^-1/2 * softmax_scale) per head
  o    = LayerNorm(proj(A v)),  out = o + fc2(ReLU(fc1(o)))

and the two mimicking terms on [B, C, H, W] views,

  spatial   = sum (normalize(S) - normalize(T))^2 / B
  frequency = the same after a 2-D DCT, its DC coefficient zeroed and the
              inverse DCT, done here with an orthonormal DCT-II basis
              (the plugin subtracts the spatial mean instead).

With perception the projections pass through a stand-in for the teacher's
later stage that the C side's host applies: tanh(x @ M) over the channels
of the NHWC map.

The C side writes the loss's tensors as made (kI.init.*), the student map
(kI.s), the teacher taps (kI.t, kI.target) and M (kI.stage); this side
answers with the value, the terms, the gradients w.r.t. the student map and
every parameter, and the running statistics after the step.

usage: torch_scalekd.py IN.safetensors OUT.safetensors
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402

DEFAULTS = {"perception": True, "heads": 8, "softmax_scale": 5.0,
            "spatial_weight": 0.08, "frequency_weight": 0.06}


def projector(x, w, pre, heads, softmax_scale, qh, qw, queries=None):
    """queries: [B, Ct, qh, qw] input queries, or None for the learned table."""
    g = lambda n: w[f"{pre}.{n}"]  # noqa: E731
    kv = F.conv2d(x, g("conv.weight"), g("conv.bias"), padding=1)
    kv = F.batch_norm(kv, g("bn.running_mean"), g("bn.running_var"), g("bn.weight"),
                      g("bn.bias"), True, 0.1, 1e-5)
    kv = F.relu(kv) + g("pos_embed")
    kv = kv.flatten(2).transpose(1, 2)
    ct = g("q.weight").shape[0]
    qmap = g("query").t().reshape(1, ct, qh, qw) if queries is None else queries
    q_in = F.relu(F.conv2d(qmap, g("query_proj.weight")[:, :, None, None],
                           g("query_proj.bias")))
    q_in = q_in.flatten(2).transpose(1, 2)
    b, d = x.shape[0], ct // heads
    q = F.linear(q_in, g("q.weight"), g("q.bias")).expand(b, -1, -1)  # a table: one for all
    k = F.linear(kv, g("k.weight"), g("k.bias"))
    v = F.linear(kv, g("v.weight"), g("v.bias"))
    split = lambda t: t.reshape(b, t.shape[1], heads, d).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (d ** -0.5) * softmax_scale, dim=-1)
    o = (attn @ v).permute(0, 2, 1, 3).reshape(b, qh * qw, ct)
    o = F.layer_norm(F.linear(o, g("proj.weight"), g("proj.bias")), (ct,), g("norm.weight"),
                     g("norm.bias"), 1e-5)
    return o + F.linear(F.relu(F.linear(o, g("fc1.weight"), g("fc1.bias"))),
                        g("fc2.weight"), g("fc2.bias"))


def dct_basis(n):
    """Orthonormal DCT-II matrix: rows are frequencies."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def drop_dc(x):
    """x [B, C, H, W]: DCT over H and W, DC zeroed, inverse DCT."""
    dh, dw = dct_basis(x.shape[2]), dct_basis(x.shape[3])
    coef = dh @ x @ dw.t()
    mask = torch.ones_like(coef)
    mask[:, :, 0, 0] = 0
    return dh.t() @ (coef * mask) @ dw


def mimic(s, t):
    return (F.normalize(s, dim=1, eps=1e-12) - F.normalize(t, dim=1, eps=1e-12)).pow(2).sum() \
        / s.shape[0]


def as_map(tokens, h, w):
    """[B, h*w, C] tokens, row-major positions -> [B, C, h, w]."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def tap_as_map(t, layout):
    """A teacher tap tensor -> [B, C, H, W]."""
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    if layout == "nchw":
        return t
    prefix = int(layout.split(":")[1])
    grid = t[:, prefix:]
    side = math.isqrt(grid.shape[1])
    return as_map(grid, side, side)


def run(key, params, layout, tensors, out):
    p = dict(DEFAULTS)
    p.update(params)
    pre = f"{key}.init."
    w = {n[len(pre):]: t.clone() for n, t in tensors.items() if n.startswith(pre)}
    trainable = [n for n in w if "running_" not in n]
    for n in trainable:
        w[n].requires_grad_(True)
    x = tensors[f"{key}.s"].clone().requires_grad_(True)
    fin = tensors.get(f"{key}.fin")
    inputs = [x]
    if fin is not None:
        fin = fin.clone().requires_grad_(True)
        inputs.append(fin)
    space = tap_as_map(tensors[f"{key}.t"], layout)
    qh, qw = space.shape[2], space.shape[3]
    target = space
    if p["perception"]:
        target = tensors[f"{key}.target"].permute(0, 3, 1, 2)
    ys = []
    for view in ("spatial", "frequency"):
        y = as_map(projector(x, w, view, p["heads"], p["softmax_scale"], qh, qw), qh, qw)
        if p["perception"]:
            stage = tensors[f"{key}.stage"]
            y = torch.tanh(torch.einsum("bchw,cd->bdhw", y, stage))
        ys.append(y)
    spatial = mimic(ys[0], target)
    frequency = mimic(drop_dc(ys[1]), drop_dc(target))
    if fin is not None:
        # s4: the perceived s3 maps are the queries; compared with F_t as they are
        th, tw = target.shape[2], target.shape[3]
        y4 = [as_map(projector(fin, w, f"final_{view}", p["heads"], p["softmax_scale"], th, tw,
                               queries=ys[i]), th, tw)
              for i, view in enumerate(("spatial", "frequency"))]
        spatial = spatial + mimic(y4[0], target)
        frequency = frequency + mimic(drop_dc(y4[1]), drop_dc(target))
    loss = p["spatial_weight"] * spatial + p["frequency_weight"] * frequency
    grads = torch.autograd.grad(loss, inputs + [w[n] for n in trainable])
    out[f"{key}.value"] = loss.detach().reshape(1)
    out[f"{key}.spatial"] = spatial.detach().reshape(1)
    out[f"{key}.frequency"] = frequency.detach().reshape(1)
    out[f"{key}.grad.s"] = grads[0]
    if fin is not None:
        out[f"{key}.grad.fin"] = grads[1]
    for n, g in zip(trainable, grads[len(inputs):]):
        out[f"{key}.grad.{n}"] = g
    for n, t in w.items():
        if "running_" in n:
            out[f"{key}.final.{n}"] = t


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta["cases"])):
        key = f"k{i}"
        try:
            run(key, json.loads(meta[f"{key}.params"]), meta[f"{key}.layout"], tensors, out)
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
