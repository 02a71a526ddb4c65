"""Registered methods. Importing this package registers the built-in bases and add-ons."""
from methods import (augself, barlow_twins, dino, equimod, essl, moco_v3, ser,  # noqa: F401
                     ser_ablations, stl)
from methods.registry import ADDONS, BASES, parse, register_addon, register_base  # noqa: F401
