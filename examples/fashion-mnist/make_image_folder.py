"""Writes Fashion-MNIST as image folders (one PNG per image, one folder per
class, torchvision's ImageFolder layout) for kd-image-folder.json.

usage: /usr/bin/python3 examples/fashion-mnist/make_image_folder.py [OUT]
(default OUT: data/fashion-mnist-images; writes OUT/train and OUT/val)
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

SRC = "/usr/share/datasets/fashion-mnist"
CLASSES = ["0-t-shirt", "1-trouser", "2-pullover", "3-dress", "4-coat", "5-sandal", "6-shirt",
           "7-sneaker", "8-bag", "9-ankle-boot"]


def read(name, offset):
    with gzip.open(os.path.join(SRC, name)) as f:
        return np.frombuffer(f.read()[offset:], np.uint8)


out = sys.argv[1] if len(sys.argv) > 1 else "data/fashion-mnist-images"
for split, prefix in [("train", "train"), ("val", "t10k")]:
    images = read(prefix + "-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read(prefix + "-labels-idx1-ubyte.gz", 8)
    for name in CLASSES:
        os.makedirs(os.path.join(out, split, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(os.path.join(out, split, CLASSES[label], "%05d.png" % i))
    print("%s/%s: %d images" % (out, split, len(images)))
