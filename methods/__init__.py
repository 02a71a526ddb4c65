"""Registered methods. Importing this package registers the built-in bases and add-ons."""
from methods import barlow_twins, dino, moco_v3, ser, ser_ablations  # noqa: F401
from methods.registry import ADDONS, BASES, parse, register_addon, register_base  # noqa: F401
