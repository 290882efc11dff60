"""PyTorch side of the loss plugin parity test (tests/test_losses.c).

The losses are written out here from their papers, in float64 on the test's
float32 inputs:
  ce           cross-entropy with labels or probability targets; label
               smoothing s makes the target (1 - s) * y + s / C
  kd           Hinton et al. 2015: T^2 * mean_n KL(softmax(t/T) || softmax(s/T))
  logit_stand  Sun et al., CVPR 2024: kd on Z(z) = (z - mean) / (std + 1e-7),
               std unbiased, at a base temperature
The defaults below are the papers' (and the manifests must agree).

The input holds, per case cI: metadata cI.provider and cI.params (the
plugin's JSON), tensors cI.s (student logits), cI.t (teacher logits), cI.y
(labels) and optionally cI.soft (soft targets). The output holds cI.value
[1] and cI.grad (d value / d student logits), or cI.error metadata.

usage: torch_losses.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402

EPS = 1e-7
DEFAULTS = {
    "ce": {"label_smoothing": 0.0},
    "kd": {"temperature": 4.0, "logit_stand": False},
    "logit_stand": {"base_temperature": 2.0},
}


def cross_entropy(s, y, soft, smoothing):
    c = s.shape[1]
    target = soft if soft is not None else F.one_hot(y, c).to(s.dtype)
    target = (1 - smoothing) * target + smoothing / c
    loss = -(target * F.log_softmax(s, 1)).sum(1).mean()
    # The written-out form must be what torch's own CrossEntropyLoss means.
    theirs = F.cross_entropy(s, soft if soft is not None else y, label_smoothing=smoothing)
    if not torch.allclose(loss, theirs, rtol=1e-12, atol=0):
        raise ValueError(f"cross-entropy formula {loss.item()} != torch {theirs.item()}")
    return loss


def stats(z):
    return z.mean(1, keepdim=True), z.std(1, keepdim=True)


def zscore(z):
    mu, sd = stats(z)
    return (z - mu) / (sd + EPS)


def zscore_backward(z, g):
    """d/dz of a loss with gradient g at Z(z); the std term is 0 where std is."""
    mu, sd = stats(z)
    d = z - mu
    first = (g - g.mean(1, keepdim=True)) / (sd + EPS)
    second = (g * d).sum(1, keepdim=True) * d / ((sd + EPS) ** 2 * (z.shape[1] - 1) * sd)
    return first - torch.where(sd > 0, second, torch.zeros_like(second))


def distill(s, t, temperature):
    log_p = F.log_softmax(s / temperature, 1)
    log_q = F.log_softmax(t / temperature, 1)
    return temperature ** 2 * (log_q.exp() * (log_q - log_p)).sum(1).mean()


def standardized(s, t, temperature):
    """Value and gradient of kd on Z-scored logits, chained by hand so a
    constant row gets the guarded gradient; checked against autograd where
    every std is positive."""
    u = zscore(s).detach().requires_grad_(True)
    value = distill(u, zscore(t), temperature)
    (g,) = torch.autograd.grad(value, u)
    grad = zscore_backward(s, g)
    if (stats(s)[1] > 0).all():
        x = s.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(distill(zscore(x), zscore(t), temperature), x)
        if not torch.allclose(grad, auto, rtol=1e-9, atol=1e-12 * auto.abs().max().item()):
            raise ValueError("the Z-score chain rule disagrees with autograd")
    return value, grad


def run_case(provider, params, tensors, key):
    p = dict(DEFAULTS[provider])
    p.update(params)
    s = tensors[f"{key}.s"].double()
    if provider == "ce":
        soft = tensors.get(f"{key}.soft")
        x = s.clone().requires_grad_(True)
        value = cross_entropy(x, tensors[f"{key}.y"],
                              None if soft is None else soft.double(), p["label_smoothing"])
        (grad,) = torch.autograd.grad(value, x)
        return value, grad
    t = tensors[f"{key}.t"].double()
    if provider == "logit_stand":
        return standardized(s, t, p["base_temperature"])
    if p["logit_stand"]:
        return standardized(s, t, p["temperature"])
    x = s.clone().requires_grad_(True)
    value = distill(x, t, p["temperature"])
    (grad,) = torch.autograd.grad(value, x)
    return value, grad


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {}
    for i in range(int(meta["cases"])):
        key = f"c{i}"
        try:
            value, grad = run_case(meta[f"{key}.provider"], json.loads(meta[f"{key}.params"]),
                                   tensors, key)
            out[f"{key}.value"] = value.detach().reshape(1)
            out[f"{key}.grad"] = grad.detach()
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
