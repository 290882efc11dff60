"""The images loader against torchvision's, side by side.

usage: /usr/bin/python3 bench/loader_images.py BUILD_DIR [--images N]
       [--epochs N] [--batch N] [--workers 1,2]

Writes BUILD_DIR/bench-images/ once: N JPEGs of about ImageNet's size
(500 x 375, quality 90, 10 classes) cut and scaled from scikit-image's
photographs. Then, for each worker count, times the same pipeline in
kdengine (BUILD_DIR/bench/bench_loader: image_folder, random_resized_crop
224, hflip, normalize, batched by the host loader) and in PyTorch
(ImageFolder with PIL, RandomResizedCrop(224), RandomHorizontalFlip,
ToTensor, Normalize, a DataLoader with persistent workers), one warm-up
epoch then --epochs timed, and prints images per second, per worker and
the ratio kdengine / pytorch (above 1: kdengine is faster). The resize is
not the same arithmetic: OpenCV's bilinear without antialiasing against
PIL's antialiased one (test_images measures the difference).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

SKIMAGE = os.path.join(os.path.dirname(__import__("skimage").__file__), "data")
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "camera.png",
          "coins.png"]


def make_folder(root, count):
    if os.path.isdir(root) and sum(len(f) for _, _, f in os.walk(root)) >= count:
        return
    rng = np.random.default_rng(0)
    sources = [Image.open(os.path.join(SKIMAGE, p)).convert("RGB")
               for p in PHOTOS if os.path.exists(os.path.join(SKIMAGE, p))]
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = src.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BICUBIC)
        folder = os.path.join(root, "class%d" % (i % 10))
        os.makedirs(folder, exist_ok=True)
        img.save(os.path.join(folder, "img%05d.jpg" % i), quality=90)


def torch_rate(root, workers, batch, epochs):
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    data = torchvision.datasets.ImageFolder(root, transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=True,
                                         prefetch_factor=2)
    images, t0 = 0, 0.0
    for e in range(epochs + 1):
        if e == 1:
            t0 = time.perf_counter()
        for x, _ in loader:
            if e > 0:
                images += x.shape[0]
    return images / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    root = os.path.join(os.path.abspath(a.build), "bench-images")
    make_folder(root, a.images)
    subprocess.run(["make", "-s", "-C", a.build, "bench/bench_loader"], check=True)
    torch.set_num_threads(1)
    print("%-8s %14s %14s %8s" % ("workers", "kdengine img/s", "pytorch img/s", "ratio"))
    for workers in [int(w) for w in a.workers.split(",")]:
        out = subprocess.run([os.path.join(a.build, "bench", "bench_loader"), root,
                              str(workers), str(a.batch), str(a.epochs)],
                             check=True, capture_output=True, text=True).stdout
        kd = json.loads(out)["img_per_s"]
        pt = torch_rate(root, workers, a.batch, a.epochs)
        print("%-8d %14.1f %14.1f %8.2f   (per worker: %.1f vs %.1f)"
              % (workers, kd, pt, kd / pt, kd / workers, pt / workers))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
