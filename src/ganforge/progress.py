"""Progress bars: tqdm's text bar in a terminal, its widget bar in a Jupyter notebook.

In a notebook, stderr is not a terminal, so a text bar with `disable=None` would hide itself and one without
would print a line per refresh; tqdm.auto's widget bar is what notebook users expect. Everything that shows a
bar to people (training, feature extraction) makes it here.
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's kernel app is configured), False in a terminal or a script."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any oddity of an embedding shell means: not a notebook
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def bar(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar with tqdm's usual arguments; a notebook gets the widget bar (tqdm.auto, which falls back to
    text when ipywidgets is missing), shown unless `disable` is true."""
    if in_notebook():
        from tqdm.auto import tqdm

        kwargs.pop("file", None)
        kwargs.pop("dynamic_ncols", None)
        if kwargs.get("disable") is None:
            kwargs["disable"] = False
        return tqdm(*args, **kwargs)
    from tqdm import tqdm

    return tqdm(*args, **kwargs)
