"""Attribution methods, registered by name and picked by the ``cam_method`` config key.

A method is one module of this package that registers a class following
:class:`dywsss.explain.base.Explainer` with ``@EXPLAINERS.register(name)``.
:func:`load_builtin_methods` imports the built-in ones; it runs when this
package is imported, so ``EXPLAINERS`` is filled for every user.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import Registry

EXPLAINERS: Registry = Registry("attribution method")

#: Modules of this package that hold no method.
_NOT_METHODS = frozenset({"base"})


def builtin_method_modules() -> list[str]:
    """Names of the method modules shipped in this package (CNN ones first, then the ViT ones)."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names = [n for n in names if n not in _NOT_METHODS]
    first = [n for n in ("cam", "gradcam_family") if n in names]
    return [f"{__name__}.{n}" for n in first + sorted(set(names) - set(first))]


def load_builtin_methods(modules: list[str] | None = None) -> list[str]:
    """Import the method modules (default: :func:`builtin_method_modules`) so that they register.

    Modules are discovered on disk, so a method module that is absent simply
    contributes nothing; one that is present but broken raises its own error.
    Returns the registered method names.
    """
    for name in builtin_method_modules() if modules is None else modules:
        importlib.import_module(name)
    return EXPLAINERS.names()


load_builtin_methods()
