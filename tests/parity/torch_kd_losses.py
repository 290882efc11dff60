"""PyTorch side of the dkd, dist and rkd parity test (tests/test_kd_losses.c).

The losses are written out here from their papers and the authors' code
(mdistiller for DKD and RKD, the DIST authors' repository), in float64:
  dkd   Zhao et al. 2022: warm * (alpha * TCKD + beta * NCKD), each
        T^2 * mean_n KL(teacher || student); the binary target/rest split and
        the non-target distribution, warm = min(epoch / warmup, 1) with the
        epoch counted from 1
  dist  Huang et al. 2022: tau^2 * (beta * (1 - mean_n rho(Y_s[n], Y_t[n]))
        + gamma * (1 - mean_c rho(Y_s[:, c], Y_t[:, c]))), rho the Pearson
        correlation with 1e-8 on the product of the norms
  rkd   Park et al. 2019: w_d * smoothL1(d_s / mean d_s, d_t / mean d_t)
        + w_a * smoothL1(angle_s, angle_t) on [N, D] embeddings (a map is
        average-pooled, or flattened)
logit_stand (Sun et al. 2024) z-scores both logits first: (z - mean) /
(std + 1e-7), std unbiased.

DKD is computed in log space from the formula; where the logits are
moderate, the authors' form (log of summed probabilities, the target
logit minus 1000 for the non-target softmax) must agree with it to 1e-9.
For cases the C side marks naive32, the authors' form is also run in
float32 and its value written out: the C test expects it not to be finite.

Input per case cI: metadata cI.provider, cI.params (the plugin's JSON),
cI.epoch (0-based, as the host passes it), cI.naive32 ("1" or absent);
tensors cI.s, cI.t (student and teacher tap values) and cI.y (labels).
Output: cI.value [1] and cI.grad (d value / d cI.s), cI.naive32_value [1]
when asked, or cI.error metadata.

usage: torch_kd_losses.py IN.safetensors OUT.safetensors
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402

ZSCORE_EPS = 1e-7
DEFAULTS = {
    "dkd": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20,
            "logit_stand": False},
    "dist": {"beta": 1.0, "gamma": 1.0, "tau": 4.0, "logit_stand": False},
    "rkd": {"distance_weight": 25.0, "angle_weight": 50.0, "map": "pool"},
}


def zscore(z):
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + ZSCORE_EPS)


def kl_batchmean(log_p, log_q):
    """mean_n KL(q || p) from log-probabilities."""
    return (log_q.exp() * (log_q - log_p)).sum(1).mean()


# ------------------------------------------------------------------ dkd

def dkd_log_parts(x, gt):
    """log [b_target, b_rest] and log of the non-target softmax."""
    n, c = x.shape
    lse = torch.logsumexp(x, 1)
    lse_rest = torch.logsumexp(x.masked_fill(gt, -math.inf), 1)
    log_b = torch.stack([x[gt] - lse, lse_rest - lse], 1)
    log_rest = (x - lse_rest[:, None])[~gt].reshape(n, c - 1)
    return log_b, log_rest


def dkd_terms(zs, zt, y, T):
    gt = F.one_hot(y, zs.shape[1]).bool()
    bs, rs = dkd_log_parts(zs / T, gt)
    bt, rt = dkd_log_parts(zt / T, gt)
    return T * T * kl_batchmean(bs, bt), T * T * kl_batchmean(rs, rt)


def dkd_authors(zs, zt, y, alpha, beta, T):
    """The reference code's form: probabilities summed, then their log."""
    gt = F.one_hot(y, zs.shape[1]).to(zs.dtype)
    other = 1 - gt

    def binary(p):
        return torch.cat([(p * gt).sum(1, keepdim=True), (p * other).sum(1, keepdim=True)], 1)

    n = zs.shape[0]
    ps, pt = binary(F.softmax(zs / T, 1)), binary(F.softmax(zt / T, 1))
    tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * T * T / n
    log_ps2 = F.log_softmax(zs / T - 1000.0 * gt, 1)
    pt2 = F.softmax(zt / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * T * T / n
    return alpha * tckd + beta * nckd


def dkd(s, t, y, p, epoch):
    zs = zscore(s) if p["logit_stand"] else s
    zt = zscore(t) if p["logit_stand"] else t
    T = p["temperature"]
    tckd, nckd = dkd_terms(zs, zt, y, T)
    # the host's epoch is 0-based; the authors' trainer counts from 1
    warm = min((epoch + 1) / p["warmup"], 1.0) if p["warmup"] > 0 else 1.0
    loss = warm * (p["alpha"] * tckd + p["beta"] * nckd)
    if max(zs.abs().max().item(), zt.abs().max().item()) / T < 100:
        theirs = warm * dkd_authors(zs, zt, y, p["alpha"], p["beta"], T)
        if not torch.allclose(loss, theirs, rtol=1e-9, atol=0):
            raise ValueError(f"log-space DKD {loss.item()} != the authors' form {theirs.item()}")
    return loss


def dkd_naive32(s, t, y, p):
    s, t = s.float(), t.float()
    zs = zscore(s) if p["logit_stand"] else s
    zt = zscore(t) if p["logit_stand"] else t
    return dkd_authors(zs, zt, y, p["alpha"], p["beta"], p["temperature"])


# ------------------------------------------------------------------ dist

def pearson_rows(a, b, eps=1e-8):
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist(s, t, p):
    zs = zscore(s) if p["logit_stand"] else s
    zt = zscore(t) if p["logit_stand"] else t
    tau = p["tau"]
    ys, yt = F.softmax(zs / tau, 1), F.softmax(zt / tau, 1)
    inter = 1 - pearson_rows(ys, yt).mean()
    intra = 1 - pearson_rows(ys.t(), yt.t()).mean()
    return tau * tau * (p["beta"] * inter + p["gamma"] * intra)


# ------------------------------------------------------------------ rkd

def embed(x, how):
    if x.dim() == 2:
        return x
    return x.reshape(x.shape[0], -1) if how == "flatten" else x.mean((2, 3))


def pair_distances(e):
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=1e-12).sqrt()
    off = ~torch.eye(e.shape[0], dtype=torch.bool)
    d = d * off  # d_ii = 0, with no gradient through it
    return d / d[off].mean()


def triplet_angles(e):
    v = e[None, :, :] - e[:, None, :]  # v[i, j] = e_j - e_i
    u = F.normalize(v, p=2, dim=2)
    return torch.bmm(u, u.transpose(1, 2))


def rkd(s, t, p):
    es, et = embed(s, p["map"]), embed(t, p["map"])
    with torch.no_grad():
        dt, at = pair_distances(et), triplet_angles(et)
    loss_d = F.smooth_l1_loss(pair_distances(es), dt)
    loss_a = F.smooth_l1_loss(triplet_angles(es), at)
    return p["distance_weight"] * loss_d + p["angle_weight"] * loss_a


# ------------------------------------------------------------------ driver

def run_case(provider, params, epoch, tensors, key):
    p = dict(DEFAULTS[provider])
    p.update(params)
    x = tensors[f"{key}.s"].double().clone().requires_grad_(True)
    t = tensors[f"{key}.t"].double()
    if provider == "dkd":
        value = dkd(x, t, tensors[f"{key}.y"], p, epoch)
    elif provider == "dist":
        value = dist(x, t, p)
    else:
        value = rkd(x, t, p)
    (grad,) = torch.autograd.grad(value, x)
    return value, grad, p


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta["cases"])):
        key = f"c{i}"
        try:
            provider = meta[f"{key}.provider"]
            value, grad, p = run_case(provider, json.loads(meta[f"{key}.params"]),
                                      int(meta[f"{key}.epoch"]), tensors, key)
            out[f"{key}.value"] = value.detach().reshape(1)
            out[f"{key}.grad"] = grad.detach()
            if meta.get(f"{key}.naive32") == "1":
                naive = dkd_naive32(tensors[f"{key}.s"], tensors[f"{key}.t"],
                                    tensors[f"{key}.y"], p)
                out[f"{key}.naive32_value"] = naive.detach().double().reshape(1)
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
