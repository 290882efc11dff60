"""PyTorch side of the optimizer and schedule parity test (tests/test_optim.c).

One process serves the whole file. The input holds:
  SGD cases sgdI: metadata sgdI.options (JSON: momentum, dampening,
    weight_decay, nesterov, no_decay flags, one lr per step), tensors
    sgdI.pK (initial parameter K) and sgdI.gK.J (its gradient at step J;
    absent when it has none that step).
  Schedule cases lrI: metadata lrI.options (JSON) with either "torch", a
    torch.optim.lr_scheduler expression over `opt` stepped every
    "torch_every" optimizer steps (default 1: once per point), or "timm",
    a timm.scheduler expression over `opt` (timm's CosineLRScheduler) read
    at every point after step(s // steps_per_epoch), or step_update(s) with
    "per_update", or "formula", a Python expression of the epoch t
    evaluated at t = s / steps_per_epoch for s in range(points).
The output holds torch_fma metadata ("1" when torch's kernels fuse
multiply-adds on this CPU), sgdI.pK (parameters after the last step), sgdI.bK (momentum
buffers torch holds) and lrI.lr (the learning rates), or lrI.error /
sgdI.error metadata when torch raised.

usage: torch_optim.py IN.safetensors OUT.safetensors
"""
import json
import math
import os
import sys

import torch
from torch.optim import lr_scheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def run_sgd(key, o, tensors, out):
    params = []
    k = 0
    while f"{key}.p{k}" in tensors:
        params.append(tensors[f"{key}.p{k}"].clone().requires_grad_(True))
        k += 1
    decay = [p for p, nd in zip(params, o["no_decay"]) if not nd]
    no_decay = [p for p, nd in zip(params, o["no_decay"]) if nd]
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=o["lrs"][0], momentum=o["momentum"],
                          dampening=o["dampening"],
                          weight_decay=o["weight_decay"],
                          nesterov=o["nesterov"], foreach=False)
    for step, lr in enumerate(o["lrs"]):
        for k, p in enumerate(params):
            p.grad = tensors.get(f"{key}.g{k}.{step}")
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    for k, p in enumerate(params):
        out[f"{key}.p{k}"] = p.detach()
        buf = opt.state[p].get("momentum_buffer")
        if buf is not None:
            out[f"{key}.b{k}"] = buf


def torch_fuses():
    """Whether x.add(y, alpha=a) rounds once, as a fused multiply-add (torch's
    AVX2 and AVX-512 kernels do; its portable one does not)."""
    e = 1.0 + 2.0 ** -12
    r = torch.full((64,), -1.0).add(torch.full((64,), e), alpha=e)
    return bool((r == 2.0 ** -11 + 2.0 ** -24).all())


def run_schedule(o):
    if "torch" in o:
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=o["base"])
        sched = eval(o["torch"], {"opt": opt, **vars(lr_scheduler)})
        every = o.get("torch_every", 1)
        lrs = []
        for s in range(o["points"]):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if (s + 1) % every == 0:
                sched.step()
        return lrs
    if "timm" in o:
        import timm.scheduler
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=o["base"])
        sched = eval(o["timm"], {"opt": opt, **vars(timm.scheduler)})
        lrs = []
        for s in range(o["points"]):
            if o.get("per_update"):
                sched.step_update(s)
            else:
                sched.step(s // o["steps_per_epoch"])
            lrs.append(opt.param_groups[0]["lr"])
        return lrs
    f = eval("lambda t: " + o["formula"], {"math": math})
    return [f(s / o["steps_per_epoch"]) for s in range(o["points"])]


def main():
    torch.set_num_threads(1)
    tensors, meta = read_safetensors(sys.argv[1])
    out, out_meta = {}, {"torch_fma": "1" if torch_fuses() else "0"}
    for i in range(int(meta.get("sgd_cases", "0"))):
        key = f"sgd{i}"
        try:
            run_sgd(key, json.loads(meta[f"{key}.options"]), tensors, out)
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    for i in range(int(meta.get("lr_cases", "0"))):
        key = f"lr{i}"
        try:
            lrs = run_schedule(json.loads(meta[f"{key}.options"]))
            out[f"{key}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        except Exception as e:
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(sys.argv[2], out, out_meta)


if __name__ == "__main__":
    main()
