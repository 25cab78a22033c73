"""The local web playground (`ganforge serve`): a Starlette app over `ganforge.generate` and one static page.

Starlette alone, not FastAPI or Gradio: the app is a dozen routes and one HTML/JS/CSS page shipped in the package,
so it works offline, loads nothing from other hosts and adds two small dependencies (the `web` extra).
"""

from __future__ import annotations

from ganforge.web.app import LIMITS, create_app, serve

__all__ = ["LIMITS", "create_app", "serve"]
