"""Registered methods: every module of this package registers its classes on import, and
importing the package imports them all (no list to keep: a new file here is a new method)."""

import importlib
import pkgutil

from methods.registry import ADDONS, BASES, parse, register_addon, register_base

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ADDONS", "BASES", "parse", "register_addon", "register_base"]
