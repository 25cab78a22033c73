"""ganforge: train, evaluate, compare and use GANs for images.

The command line (`ganforge ...`) is a thin layer over this Python API, so notebooks and tests can
call the same functions directly.
"""

__version__ = "0.1.0"

from ganforge.errors import GanforgeError, UserError  # noqa: E402

__all__ = ["__version__", "GanforgeError", "UserError"]
