"""PyTorch side of the jsd loss test (tests/test_jsd.c).

PaddleClas's JS-divergence loss written out as PaddleClas states it (its
JSDivLoss, and DMLLoss with act softmax): p = softmax(student),
q = softmax(teacher),
  kl(x, target) = target * log((target + eps) / (x + eps)) * classes,
  cost = (kl(p, q) + kl(q, p)) / 2,
and the mean of cost over [N, classes], or with sum_classes the mean over
N of its sum over classes. The teacher is a constant.

One process serves the whole test file. The input holds "cases" metadata
(a count), caseI.opts metadata (JSON: "eps", "sum_classes") and float64
caseI.s, caseI.t logits; the output caseI.loss ([1]) and caseI.grad (the
loss's gradient for the student's logits).

usage: torch_jsd.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def paddle_jsd(s, t, eps, sum_classes):
    classes = s.shape[-1]
    p = torch.softmax(s, dim=-1)
    q = torch.softmax(t, dim=-1)

    def kl(x, target):
        return target * torch.log((target + eps) / (x + eps)) * classes

    cost = (kl(p, q) + kl(q, p)) / 2
    return cost.sum(1).mean() if sum_classes else cost.mean()


def main():
    tensors, meta = read_safetensors(sys.argv[1])
    out = {}
    for i in range(int(meta["cases"])):
        o = json.loads(meta["case%d.opts" % i])
        s = tensors["case%d.s" % i].clone().requires_grad_(True)
        t = tensors["case%d.t" % i]
        loss = paddle_jsd(s, t, o["eps"], o["sum_classes"])
        loss.backward()
        out["case%d.loss" % i] = loss.detach().reshape(1)
        out["case%d.grad" % i] = s.grad.detach()
    write_safetensors(sys.argv[2], out, {})


if __name__ == "__main__":
    main()
