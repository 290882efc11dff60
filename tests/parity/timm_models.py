"""timm side of the model-zoo parity test (tests/test_timm_models.c).

Builds each case's model with timm itself (pretrained=False), so the port is
held to the real architecture and the real state_dict names, not to a
re-implementation. One process serves the whole test file.

CASES.json is a list of cases:
  {"id": "mnv3s", "timm_name": "mobilenetv3_small_100",   # or "module:Class"
   "kwargs": {"num_classes": 10, "in_chans": 1, ...},   # to timm.create_model
   "batch": 2, "size": 64, "taps": ["bn1", "blocks.0", ...], "seed": 1}

For each case it writes OUT_DIR/<id>.safetensors holding
  w.<name>        every state_dict tensor under its timm name (f32; the
                  BN counters int64), with what random init leaves trivial
                  (constant tensors: BN affine, layer-scale gammas, zero
                  biases) randomised and BN running statistics calibrated
                  to the activations, then perturbed, so a port that
                  ignores any of them fails;
  input           the f32 input, drawn so that the train-mode f64 forward
                  has no kinked activation input near its kink (see
                  kinks_clear);
  eval64.<m>      eval-mode output of module m (the tap) and eval64.logits,
                  computed in f64 (model.double()) from the same f32 values:
                  the exact answer;
  eval32.<m>      the same computed by torch in f32, so the C side can
                  measure PyTorch's own f32 error against f64;
  upstream        a fixed gradient on the logits;
  train64.logits  train-mode logits (drop-path and dropout forced to 0);
  grad64.<name>   f64 gradients, for the upstream gradient, of the first
                  and last layers' parameters (the parameters of the first
                  two and last two modules that own parameters), and
                  grad64.input, the input's;
  train32.logits, grad32.<name>, grad32.input: the same in torch f32;
  after64.<name>  every buffer after the train step (BN running stats);
and OUT_DIR/<id>.json: [[name, shape, dtype], ...], the state_dict in order.

usage: timm_models.py OUT_DIR CASES.json
       timm_models.py --keys DIR NAME...
The second form writes DIR/NAME.txt for each timm model at its defaults:
one "key<TAB>shape<TAB>dtype" line per state_dict entry, in order (the
committed tests/parity/timm_keys/ lists, which the C test holds the
full-size ports to without running timm).
"""
import importlib
import json
import os
import sys

import timm
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import write_safetensors  # noqa: E402


def randomize_constants(model, gen):
    """Every floating state_dict tensor whose elements are all equal after
    init (BN weight/bias/running stats, LayerNorm affine, layer-scale gamma,
    zero-initialised biases) gets random values: scales (a non-zero
    constant, or a weight/gamma) uniform in [0.5, 1.5), the rest uniform in
    [-0.2, 0.2). BN counters become 7."""
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                t.fill_(7)
                continue
            if t.numel() > 1 and not bool((t == t.reshape(-1)[0]).all()):
                continue
            leaf = name.rsplit(".", 1)[-1]
            scale = leaf in ("weight", "gamma", "running_var") or bool(t.reshape(-1)[0] != 0)
            r = torch.rand(t.shape, generator=gen, dtype=torch.float64)
            t.copy_(r + 0.5 if scale else 0.4 * r - 0.2)


# Activations with a kink: where f32 rounding moves an input across one,
# the f32 gradient takes the other branch and every earlier gradient moves
# by a whole element's upstream gradient. Inputs are redrawn until every
# kinked activation's inputs stay KINK_MARGIN (relative to the map's RMS,
# well above f32 forward error) away from its kinks.
KINKS = {nn.ReLU: (0.0,), nn.ReLU6: (0.0, 6.0), nn.Hardswish: (-3.0, 3.0),
         nn.Hardsigmoid: (-3.0, 3.0)}
KINK_MARGIN = 2e-6


def calibrate_bn(model, shape, gen):
    """Running statistics that fit the activations: the BN layers average
    the batch statistics of two random batches (momentum None), then each
    is perturbed by a few percent, so that eval mode neither blows up nor
    vanishes through the depth (as in a trained model) yet a port that
    uses batch statistics in eval still fails."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for _ in range(2):
            model(torch.randn(shape, generator=gen))
        for m in bns:
            m.momentum = 0.1
            c = m.running_mean.shape[0]
            m.running_mean.add_(0.1 * torch.randn(c, generator=gen) * m.running_var.sqrt())
            m.running_var.mul_(0.9 + 0.2 * torch.rand(c, generator=gen))
            m.num_batches_tracked.fill_(7)


def kinks_clear(model, x):
    near = []

    def check(module, inputs):
        t = inputs[0].detach()
        rms = float(t.pow(2).mean().sqrt())
        for k in KINKS[type(module)]:
            if bool(((t - k).abs() < KINK_MARGIN * max(rms, 1e-30)).any()):
                near.append(module)

    hooks = [m.register_forward_pre_hook(check) for m in model.modules() if type(m) in KINKS]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        model(x)
    model.load_state_dict(state)  # the train forward moved the running stats
    for h in hooks:
        h.remove()
    return not near


def edge_modules(model):
    """Names of the first two and the last two modules owning parameters."""
    owners = []
    for name, _ in model.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner not in owners:
            owners.append(owner)
    return owners[:2] + owners[-2:]


def run(model, x, taps, training, upstream=None, grad_names=()):
    """Logits and tap outputs (and gradients when upstream is given)."""
    found = {}
    hooks = []
    for m in taps:
        def keep(module, inputs, output, m=m):
            found[m] = output.detach().clone()
        hooks.append(model.get_submodule(m).register_forward_hook(keep))
    model.train(training)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(upstream is not None)
    out = {}
    with torch.set_grad_enabled(upstream is not None):
        logits = model(x)
    for h in hooks:
        h.remove()
    out["logits"] = logits.detach()
    out.update(found)
    grads = {}
    if upstream is not None:
        logits.backward(upstream.to(logits.dtype))
        params = dict(model.named_parameters())
        grads = {n: params[n].grad.detach().clone() for n in grad_names}
        grads["input"] = x.grad.detach().clone()
    return out, grads


def build(timm_name, kwargs):
    """timm.create_model(timm_name, **kwargs); a "module:Class" name builds
    that timm class directly, for the entrypoints that pin what a reduced
    row changes (timm's mixer_s16_224 fixes num_blocks and patch_size)."""
    if ":" not in timm_name:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    module, cls = timm_name.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def run_case(case, out_dir):
    torch.manual_seed(case["seed"])
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    kwargs = dict(case["kwargs"])
    model = build(case["timm_name"], kwargs)
    randomize_constants(model, gen)
    shape = (case["batch"], kwargs.get("in_chans", 3), case["size"], case["size"])
    calibrate_bn(model, shape, gen)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with open(os.path.join(out_dir, case["id"] + ".json"), "w") as f:
        json.dump([[k, list(v.shape), str(v.dtype).replace("torch.", "")]
                   for k, v in sd.items()], f)
    out = {f"w.{k}": v for k, v in sd.items()}

    # The train step runs without stochastic layers: their draws are the
    # port's own, which the C side tests apart.
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    owners = edge_modules(model)
    grad_names = [n for n, _ in model.named_parameters()
                  if (n.rsplit(".", 1)[0] if "." in n else "") in owners]

    model.double()
    for _ in range(50):
        x = torch.randn(shape, generator=gen)
        if kinks_clear(model, x.double()):
            break
    else:
        raise RuntimeError(f"{case['id']}: no input clear of activation kinks in 50 draws")
    out["input"] = x
    evals, _ = run(model, x.double(), case["taps"], False)
    upstream = torch.randn(evals["logits"].shape, generator=gen)
    out["upstream"] = upstream
    for k, v in evals.items():
        out[f"eval64.{k}"] = v
    train, grads = run(model, x.double(), [], True, upstream, grad_names)
    out["train64.logits"] = train["logits"]
    for k, v in grads.items():
        out[f"grad64.{k}"] = v
    for k, v in model.named_buffers():
        out[f"after64.{k}"] = v.detach().clone()

    model.float()
    model.load_state_dict(sd)
    evals, _ = run(model, x, case["taps"], False)
    for k, v in evals.items():
        out[f"eval32.{k}"] = v
    train, grads = run(model, x, [], True, upstream, grad_names)
    out["train32.logits"] = train["logits"]
    for k, v in grads.items():
        out[f"grad32.{k}"] = v
    write_safetensors(os.path.join(out_dir, case["id"] + ".safetensors"), out,
                      {"timm_name": case["timm_name"], "timm_version": timm.__version__})


def write_keys(out_dir, names):
    for name in names:
        sd = timm.create_model(name, pretrained=False).state_dict()
        with open(os.path.join(out_dir, name + ".txt"), "w") as f:
            for k, v in sd.items():
                f.write(f"{k}\t{tuple(v.shape)}\t{str(v.dtype).replace('torch.', '')}\n")


def main():
    torch.set_num_threads(1)
    if sys.argv[1] == "--keys":
        write_keys(sys.argv[2], sys.argv[3:])
        return
    out_dir, cases_path = sys.argv[1], sys.argv[2]
    with open(cases_path) as f:
        cases = json.load(f)
    for case in cases:
        run_case(case, out_dir)


if __name__ == "__main__":
    main()
