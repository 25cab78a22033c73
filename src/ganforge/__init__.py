"""ganforge: train, evaluate, compare and use GANs for images.

The command line (`ganforge ...`) is a thin layer over this Python API, so notebooks and tests can
call the same functions directly:

    import ganforge
    run = ganforge.train("fashion_mnist_dcgan", ["train.max_seconds=60"], run_dir="runs/quick")
    G = ganforge.load(run.path)          # a run folder, a bundle from `ganforge publish`, or a checkpoint
    G.sample(16, seed=0)

`load` and `train` are imported on first use (ganforge.api), so `import ganforge` stays light: no torch.
"""

from typing import Any

__version__ = "0.1.0"

from ganforge.errors import GanforgeError, UserError  # noqa: E402

__all__ = ["__version__", "GanforgeError", "UserError", "load", "train", "Generator", "Images"]
_LAZY = {"load", "train", "Generator", "Images"}  # from ganforge.api


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ganforge import api

        return getattr(api, name)
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
