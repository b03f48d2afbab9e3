"""How to install vd's optional extras, as a command that works where it is printed.

vd is not on PyPI (the PyPI project named `vd` is an unrelated package), so an install hint must
name this checkout, never the PyPI name:

    pip_install("moge")  # 'pip install -e "/home/me/src/vistadream[moge]"' for an editable checkout
"""

from __future__ import annotations

from pathlib import Path


def checkout() -> Path | None:
    """The source checkout vd runs from (the folder holding its pyproject.toml), or None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def pip_install(extras: str) -> str:
    """The pip command installing vd with `extras` (e.g. "gpu,moge") from its checkout."""
    root = checkout()
    if root is None:
        return f'pip install -e ".[{extras}]" (in the vd checkout)'
    return f'pip install -e "{root}[{extras}]"'
