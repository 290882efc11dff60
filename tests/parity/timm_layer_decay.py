"""timm side of the layer-wise LR decay test (tests/test_layer_decay.c).

One process serves the whole test file. The input's metadata holds
"cases" (JSON: a list of {"model", "kwargs"}, a timm model name and the
create_model arguments that make the C side's reduced model), "decay",
"weight_decay", and "adamw" (JSON: {"case", "lr", "beta1", "beta2", "eps",
"steps"}). Its tensors are, for the AdamW case, the C model's initial
parameters "p.<name>" and each step's gradients "g<J>.<name>" (float64).

For every case I, timm's param_groups_layer_decay on the timm model (with
the model's no_weight_decay(), as create_optimizer_v2 passes it) gives
each parameter its group; the output holds "scale.I.<name>" (the group's
lr_scale) and "wd.I.<name>" (its weight decay), float64 [1]. For the
AdamW case, torch.optim.AdamW over those groups, each group's lr set to
lr * lr_scale as timm's schedulers do, runs the given steps in float64
from the C side's parameters and gradients: "adamw.<name>" are the
parameters after the last step.

usage: timm_layer_decay.py IN.safetensors OUT.safetensors
"""
import json
import os
import sys

import timm
import torch
from timm.optim.optim_factory import param_groups_layer_decay

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def groups_of(model, decay, weight_decay):
    # as timm's create_optimizer_v2 calls it: the model's own exclusions too
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=decay,
                                      no_weight_decay_list=skip)
    by_param = {}
    for g in groups:
        for p in g["params"]:
            by_param[id(p)] = g
    return groups, {name: by_param[id(p)] for name, p in model.named_parameters()}


def adamw(model, groups, a, inputs, out):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(inputs["p." + name])
    for g in groups:
        g["lr"] = a["lr"] * g["lr_scale"]
    opt = torch.optim.AdamW(groups, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                            foreach=False)
    for step in range(a["steps"]):
        for name, p in params.items():
            p.grad = inputs["g%d.%s" % (step, name)].clone()
        opt.step()
    for name, p in params.items():
        out["adamw." + name] = p.detach().clone()


def main():
    inputs, meta = read_safetensors(sys.argv[1])
    cases = json.loads(meta["cases"])
    decay, weight_decay = float(meta["decay"]), float(meta["weight_decay"])
    a = json.loads(meta["adamw"])
    out = {}
    for i, c in enumerate(cases):
        model = timm.create_model(c["model"], pretrained=False, **c["kwargs"]).double()
        groups, named = groups_of(model, decay, weight_decay)
        for name, g in named.items():
            out["scale.%d.%s" % (i, name)] = torch.tensor([g["lr_scale"]], dtype=torch.float64)
            out["wd.%d.%s" % (i, name)] = torch.tensor([g["weight_decay"]],
                                                      dtype=torch.float64)
        if i == a["case"]:
            adamw(model, groups, a, inputs, out)
    write_safetensors(sys.argv[2], out, {})


if __name__ == "__main__":
    main()
