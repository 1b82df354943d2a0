"""Shared fixtures: isolated output folders and a tiny hand-made Br35H tree.

Every test runs with BRAINSEG_CACHE / BRAINSEG_RESULTS / BRAINSEG_RUNS pointing
at fresh temp folders, so nothing is written into the repository. The real
dataset is only touched by tests marked ``realdata``; they read the folder
named by BRAINSEG_DATA (or the project default) as it was when pytest started.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from brainseg_lib import paths
from brainseg_lib.data import br35h as data
from brainseg_lib.data.cache import SplitArrays
from brainseg_lib.training.config import TrainConfig

# The models in these tests are tiny; with several intra-op threads on a small, busy
# machine, OpenMP synchronisation costs ~100x the arithmetic (0.8 s vs 3 ms a forward
# pass on 2 shared cores). One thread keeps the suite fast and its timings stable.
torch.set_num_threads(1)

# BRAINSEG_DATA as the user set it, captured before any test touches the environment.
REAL_DATA_ROOT = paths.data_dir()
REAL_EXTERNAL_ROOT = paths.external_dir()   # BRAINSEG_EXTERNAL, likewise


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Point every output folder of the library at a fresh temp folder."""
    base = tmp_path_factory.mktemp("brainseg_out")
    dirs = {}
    for var, sub in (("BRAINSEG_CACHE", "cache"), ("BRAINSEG_RESULTS", "results"),
                     ("BRAINSEG_RUNS", "runs"), ("BRAINSEG_SWEEP", "sweep"), ("BRAINSEG_LEVERS", "levers"),
                     ("BRAINSEG_RELEASE_LEVERS", "release_levers"), ("BRAINSEG_GPU_RUN", "gpu_run")):
        d = base / sub
        d.mkdir()
        monkeypatch.setenv(var, str(d))
        dirs[sub] = d
    assert paths.cache_dir() == dirs["cache"]
    return dirs


# --------------------------------------------------------------------------- VIA helpers
def polygon(xs, ys) -> dict:
    return {"name": "polygon", "all_points_x": list(xs), "all_points_y": list(ys)}


def ellipse(cx, cy, rx, ry, theta=None) -> dict:
    s = {"name": "ellipse", "cx": cx, "cy": cy, "rx": rx, "ry": ry}
    if theta is not None:
        s["theta"] = theta
    return s


def circle(cx, cy, r) -> dict:
    return {"name": "circle", "cx": cx, "cy": cy, "r": r}


def scan_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A dark noisy 'scan' (uint8 H x W) with a brighter blob, deterministic per seed."""
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 60, size=(h, w)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 6) ** 2] = 200
    return img


def write_image(path: Path, array: np.ndarray, mode: str = "L") -> Path:
    """Write a uint8 gray array as an image file in ``mode`` (format from the suffix)."""
    im = Image.fromarray(array)
    if mode != "L":
        im = im.convert(mode)
    kw = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    im.save(path, **kw)
    return path


def write_via(json_path: Path, entries: dict[str, list[dict]], folder: Path | None = None) -> Path:
    """A VIA JSON keyed "<filename><size>" for ``{filename: [shape_attributes, ...]}``."""
    folder = folder or json_path.parent
    out = {}
    for name, shapes in entries.items():
        f = folder / name
        size = f.stat().st_size if f.exists() else 12345
        out[f"{name}{size}"] = {
            "filename": name, "size": size,
            "regions": [{"shape_attributes": s, "region_attributes": {}} for s in shapes],
            "file_attributes": {},
        }
    json_path.write_text(json.dumps(out))
    return json_path


# Each split: {filename: (height, width, color mode, regions)}. The shapes cover every
# kind Br35H uses: polygons (float coordinates, points outside the image), ellipses
# (rotated, with theta absent, partly outside), circles, and several regions per image.
FAKE_LAYOUT = {
    "train": {
        "y0.jpg": (40, 60, "L", [polygon([10.5, 30, 30, 10.5], [5, 5, 20.2, 20.2])]),
        "y1.png": (64, 64, "RGB", [ellipse(32, 32, 20, 4, math.pi / 4), circle(50, 12, 5)]),
        "y2.jpg": (48, 48, "L", [ellipse(20, 24, 10, 6),            # theta absent
                                 polygon([-10, 60, 60, -10], [40, 40, 70, 70])]),
        "y10.png": (32, 32, "L", [circle(30, 30, 8), circle(5, 5, 3),
                                  ellipse(16, 16, 3, 3, 0.0)]),
    },
    "val": {
        "y500.jpg": (50, 40, "RGB", [polygon([5, 20, 12], [5, 5, 25])]),
        "y501.png": (36, 36, "L", [ellipse(18, 18, 8, 3, -math.pi / 3)]),
    },
    "test": {
        "y701.jpg": (32, 48, "L", [circle(24, 16, 6)]),
        "y702.png": (40, 40, "L", [polygon([0, 39, 39, 0], [0, 0, 5, 5]), circle(20, 30, 4)]),
    },
}


def build_fake_br35h(root: Path, layout: dict = FAKE_LAYOUT) -> Path:
    """Write a Br35H-shaped tree under ``root`` and return ``root``."""
    for split, files in layout.items():
        folder = root / data.ANNOTATED_DIR / data.SPLIT_FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, (h, w, mode, _)) in enumerate(files.items()):
            write_image(folder / name, scan_image(h, w, seed=100 * len(split) + i), mode)
        write_via(folder / f"annotations_{split}.json",
                  {name: regions for name, (_, _, _, regions) in files.items()})
    return root


@pytest.fixture
def fake_root(tmp_path) -> Path:
    """A tiny Br35H tree (TRAIN 4, VAL 2, TEST 2 images) in this test's tmp_path."""
    return build_fake_br35h(tmp_path / "br35h")


@pytest.fixture
def via():
    """The VIA helpers, for tests that build their own trees or JSON files."""
    fns = (polygon, ellipse, circle, scan_image, write_image, write_via, build_fake_br35h)
    return SimpleNamespace(FAKE_LAYOUT=FAKE_LAYOUT, **{f.__name__: f for f in fns})


@pytest.fixture
def real_root() -> Path:
    """The real Br35H root, or skip saying why it is unavailable."""
    try:
        return data.check_dataset(REAL_DATA_ROOT)
    except data.DatasetNotFoundError as e:
        pytest.skip(f"real Br35H data not available (set BRAINSEG_DATA): {str(e).splitlines()[0]}")


def has_module(module: str) -> bool:
    """Whether ``module`` can be imported (optional dependencies: onnx, onnxruntime, ...)."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def tiny_checkpoint_state(size: int, seed: int = 0, input_norm: str = "none") -> dict:
    """A freshly initialised U-Net (base 4) in train.fit's checkpoint format, for ``size``x``size``.

    BatchNorm statistics are perturbed and the 1x1 head rescaled so that on synthetic scans
    the logits have unit spread and median 0: at threshold 0.5 about half of each image is
    'tumour', so masks are neither empty nor full.
    """
    from brainseg_lib.model.unet import NEEDS_REFERENCE, UNet
    torch.manual_seed(seed)
    reference = np.linspace(0.1, 0.9, 11) if input_norm in NEEDS_REFERENCE else None
    m = UNet(in_channels=1, base=4, input_norm=input_norm, reference=reference)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        m.eval()
        x = torch.stack([torch.from_numpy(scan_image(size, size, seed=s)) for s in range(4)])[:, None]
        logits = m(x.float() / 255)
        m.head.weight.div_(logits.std())
        m.head.bias.div_(logits.std())
        m.head.bias.sub_(m(x.float() / 255).median())
    return {"state_dict": m.state_dict(), "model_config": m.config(),
            "train_config": TrainConfig(image_size=size, base_width=4).to_dict()}


# ------------------------------------------------------------------ training on synthetic data
# (test_train, test_ddp's spawned workers and test_external_validity train on these)
def synthetic_arrays(n: int, size: int = 32, seed: int = 0, split: str = "train") -> SplitArrays:
    """Dark noisy images with one bright disk each; the disk is the tumour mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r = rng.uniform(size * 0.12, size * 0.25)
        cy, cx = rng.uniform(r, size - r, 2)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = rng.normal(40, 12, (size, size))
        img[disk] += 150
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        masks[i] = disk
    return SplitArrays(split, size, images, masks, [f"s{i}.png" for i in range(n)],
                       np.full((n, 2), size, np.int64), masks.reshape(n, -1).mean(1))


def small_config(**kw) -> TrainConfig:
    base = {"image_size": 32, "base_width": 4, "batch_size": 8, "epochs": 6, "lr": 1e-2,
            "device": "cpu", "seed": 0, "augment": True, "deterministic": True, "channels_last": False}
    base.update(kw)
    return TrainConfig(**base)


class Stop(Exception):
    pass


def stop_after(k: int):
    def cb(row):
        if row["epoch"] == k:
            raise Stop(f"interrupted after epoch {k}")
    return cb
