"""PyTorch side of tests/test_recipe_steps.c: replays the training steps of
finished kdengine runs with bench/fmnist_recipe.py's own functions (model,
losses, SGD, lr schedule), from the run's starting weights and on the same
batches (shuffle order, crops and flips drawn as kdengine's loader draws
them: recipe.KdengineStream), in the run's dtype, then compares.

A float64 run is compared at every step: a few steps of SGD through
train-mode BatchNorm and ReLU masks amplify rounding ~1e5-fold (one float32
step already moves updates by ~1e-2), so only float64 arithmetic on both
sides leaves a trajectory that is the same to tight bounds on every CPU. A
float32 run is compared where rounding cannot flip anything: the first
step's loss and terms, and the lr of every step.

Prints one JSON line per run:
  {"run", "dtype", "steps", "loss_err_first", "lr_err", "loss_err",
   "checkpoints": [{"step", "update", "stats"}, ...]}
loss_err_first: relative error of the first step's total loss and weighted
terms (the largest); lr_err: the largest absolute lr difference over all
steps; loss_err: the largest relative error of the total loss or a weighted
term over all steps. Per checkpoint kdengine wrote: update, the distance of
kdengine's parameters from the replay's relative to how far the replay
moved them from the start (all parameters as one vector); stats the same
for the BN running statistics. The last three only for float64 runs.

usage: torch_recipe_steps.py RUN_DIR...
"""
import glob
import json
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import fmnist_recipe as recipe  # noqa: E402


def relative(a, b):
    return abs(a - b) / max(abs(b), 1e-6)


def model(spec, path, weights, dtype):
    m = recipe.make_model(spec, path).to(dtype)
    recipe.load_weights(m, weights, path)
    return m


def replay(job, n_steps, dtype, save_at):
    """Trains the job's student n_steps in dtype; returns the per-step
    (lr, total, [terms]) and the student's state after each step in save_at."""
    teacher = None
    if "teacher" in job:
        teacher = model(job["teacher"], "teacher", job["teacher"]["weights"], dtype)
        teacher.train(job["teacher"].get("train_bn", False))
    student = model(job["student"], "student", job["student"]["weights"], dtype)
    student.train()
    losses = recipe.make_losses(job, teacher)
    split = job["data"]["train"]
    images, labels = recipe.load_split(split, "data.train")
    batch = split["batch_size"]
    steps_per_epoch = len(images) // batch
    opt = recipe.make_optimizer(student, job["optim"])
    stream = recipe.KdengineStream(job["seed"])
    pipeline = recipe.make_pipeline(split, "data.train", stream)
    trace, states = [], {}
    for step in range(n_steps):
        epoch, k = divmod(step, steps_per_epoch)
        if k == 0:
            order = list(recipe.batches(len(images), batch, split.get("shuffle", True), True,
                                        stream, epoch))
        lr = recipe.lr_at(job["schedule"], job["optim"]["lr"], job["schedule"]["epochs"],
                          steps_per_epoch, step)
        x, y = pipeline(images[order[k]], order[k], epoch).to(dtype), labels[order[k]]
        terms = recipe.train_step(student, teacher, losses, opt, lr, x, y,
                                  epoch + k / steps_per_epoch)
        trace.append((lr, float(sum(terms)), [float(t) for t in terms]))
        if step + 1 in save_at:
            states[step + 1] = {k: v.detach().double().clone()
                                for k, v in student.state_dict().items()}
    names = [n for n, _ in student.named_parameters()]
    return trace, states, names


def distance(state, reference, start, names):
    """|state - reference| / |reference - start| over the named tensors."""
    def flat(s):
        return torch.cat([s[n].double().flatten() for n in names])
    moved = flat(reference) - flat(start)
    return float((flat(state) - flat(reference)).norm() / moved.norm().clamp_min(1e-30))


def check(run_dir):
    with open(os.path.join(run_dir, "job.json")) as f:
        job = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        ours = [m for m in map(json.loads, f) if m["type"] == "train"]
    if [m["step"] for m in ours] != list(range(1, len(ours) + 1)):
        recipe.fail(f"{run_dir}: the job must log every step")
    if job["data"]["train"].get("drop_last", True) is not True:
        recipe.fail(f"{run_dir}: replaying needs a job that drops the last partial batch")
    saved = {}
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "step-*.safetensors")):
        tensors, _ = recipe.read_safetensors(path)
        step = int(re.search(r"step-(\d+)", path).group(1))
        saved[step] = {k[len("student."):]: v for k, v in tensors.items()
                       if k.startswith("student.")}

    dtype = {"float32": torch.float32, "float64": torch.float64}[job.get("dtype", "float32")]
    trace, states, params = replay(job, len(ours), dtype, saved)
    start = {k[len("student."):] if k.startswith("student.") else k: v
             for k, v in recipe.read_safetensors(job["student"]["weights"])[0].items()}
    stats = [n for n in start if n.endswith(("running_mean", "running_var"))]

    def values(total, terms):
        return [total] + (terms if len(terms) > 1 else [])

    mine = [values(m["loss"], [m["terms"][f"losses[{i}]"] for i in range(len(m["terms"]))])
            for m in ours]
    theirs = [values(total, terms) for _, total, terms in trace]
    result = {"run": run_dir, "dtype": job.get("dtype", "float32"), "steps": len(ours),
              "loss_err_first": max(map(relative, mine[0], theirs[0])),
              "lr_err": max(abs(m["lr"] - t[0]) for m, t in zip(ours, trace))}
    if dtype == torch.float64:
        result["loss_err"] = max(max(map(relative, a, b)) for a, b in zip(mine, theirs))
        result["checkpoints"] = [
            {"step": step,
             "update": distance(saved[step], states[step], start, params),
             "stats": distance(saved[step], states[step], start, stats)}
            for step in sorted(saved)]
    return result


def main():
    torch.set_num_threads(1)
    for run_dir in sys.argv[1:]:
        print(json.dumps(check(run_dir)), flush=True)


if __name__ == "__main__":
    main()
