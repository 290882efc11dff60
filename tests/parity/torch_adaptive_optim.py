"""PyTorch/timm side of the AdamW, Adam and LAMB parity tests
(tests/test_adamw.c, tests/test_lamb.c, through tests/optim_parity.c).

One process serves a whole test file. The input holds, per case I:
  caseI.options metadata (JSON): "plugin" (the folder under plugins/optim
    whose manifest gives the defaults), "provider", "params" (the job's
    parameters for it), "no_decay" (one flag per parameter, already
    combined with the params' no_decay switch), "lrs" (one per step);
  caseI.pK, the initial parameter K, and caseI.gK.J, its gradient at step
    J (absent when it has none that step).
The reference runs in the inputs' dtype and, for float32 inputs, once more
in float64 from the same values (the exact trajectory the C side bounds
its float32 rounding against). Outputs, with prefix caseI. and caseI.x.
for the float64 rerun: pK (parameters after the last step), mK
(exp_avg), vK (exp_avg_sq), wK (max_exp_avg_sq, amsgrad) and sK (the step
count torch or timm holds for K); caseI.error metadata when the
reference raised.

timm's Lamb makes its scalars (the global norm, the constant 1) with
torch's default dtype, so a float64 run sets that default to float64;
max_grad_norm 0 (kdengine: no clipping) is given to timm as infinity.

usage: torch_adaptive_optim.py SOURCE_ROOT IN.safetensors OUT.safetensors
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def hyperparameters(root, o):
    path = os.path.join(root, "plugins", "optim", o["plugin"], "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    (entry,) = [p for p in manifest["provides"] if p["name"] == o["provider"]]
    h = {k: spec["default"] for k, spec in entry["params"].items()}
    h.update(o["params"])
    return h


def make_optimizer(o, h, groups):
    betas = (h["beta1"], h["beta2"])
    if o["provider"] in ("adamw", "adam"):
        cls = torch.optim.AdamW if o["provider"] == "adamw" else torch.optim.Adam
        return cls(groups, lr=o["lrs"][0], betas=betas, eps=h["eps"],
                   weight_decay=h["weight_decay"], amsgrad=h["amsgrad"], foreach=False)
    from timm.optim import Lamb
    max_norm = h["max_grad_norm"] if h["max_grad_norm"] > 0 else math.inf
    return Lamb(groups, lr=o["lrs"][0], bias_correction=h["bias_correction"], betas=betas,
                eps=h["eps"], weight_decay=h["weight_decay"],
                grad_averaging=h["grad_averaging"], max_grad_norm=max_norm,
                trust_clip=h["trust_clip"], always_adapt=h["always_adapt"])


def run(key, o, h, tensors, dtype, out, prefix):
    params = []
    while f"{key}.p{len(params)}" in tensors:
        params.append(tensors[f"{key}.p{len(params)}"].to(dtype).clone().requires_grad_(True))
    decay = [p for p, nd in zip(params, o["no_decay"]) if not nd]
    no_decay = [p for p, nd in zip(params, o["no_decay"]) if nd]
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    saved_default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        opt = make_optimizer(o, h, groups)
        for step, lr in enumerate(o["lrs"]):
            for k, p in enumerate(params):
                g = tensors.get(f"{key}.g{k}.{step}")
                p.grad = None if g is None else g.to(dtype).clone()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
    finally:
        torch.set_default_dtype(saved_default)
    for k, p in enumerate(params):
        out[f"{prefix}p{k}"] = p.detach()
        state = opt.state[p]
        for name, short in (("exp_avg", "m"), ("exp_avg_sq", "v"), ("max_exp_avg_sq", "w")):
            if name in state:
                out[f"{prefix}{short}{k}"] = state[name]
        # AdamW keeps a step per parameter; Lamb one per group.
        if "step" in state:
            steps = float(state["step"])
        else:
            steps = float(next(g for g in opt.param_groups if any(q is p for q in g["params"]))
                          .get("step", 0))
        out[f"{prefix}s{k}"] = torch.tensor([steps], dtype=torch.float64)


def main():
    torch.set_num_threads(1)
    root, src, dst = sys.argv[1:4]
    tensors, meta = read_safetensors(src)
    out, out_meta = {}, {}
    for i in range(int(meta.get("cases", "0"))):
        key = f"case{i}"
        try:
            o = json.loads(meta[f"{key}.options"])
            h = hyperparameters(root, o)
            dtype = tensors[f"{key}.p0"].dtype
            run(key, o, h, tensors, dtype, out, f"{key}.")
            if dtype == torch.float32:
                run(key, o, h, tensors, torch.float64, out, f"{key}.x.")
        except Exception as e:  # reported per case by the C side
            out_meta[f"{key}.error"] = f"{type(e).__name__}: {e}"
    write_safetensors(dst, out, out_meta)


if __name__ == "__main__":
    main()
