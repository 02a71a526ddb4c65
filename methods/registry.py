"""Methods by name: ``@register_base('moco_v3')``, ``@register_addon('ser')``.

A full name composes a base with add-ons and their options:
``moco_v3+ser@layer9@cls9@code`` — base ``moco_v3`` with ``ser`` at equivariance layer 9,
[CLS] after block 9 and the public-code hyper-parameters. A modifier on the base names the
view policy (``moco_v3@multicrop+ser``: the paper's 2+4 views); without one, the first
policy that supplies what the add-ons need is used (``harness.data.views``).
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from harness.errors import HarnessError

BASES: dict[str, type] = {}
ADDONS: dict[str, type] = {}


def _no_dims(cls, hook: str, name: str) -> None:
    """Head widths are the class's own now: a hook still taking ``dims`` is refused."""
    params = inspect.signature(getattr(cls, hook)).parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.kind in positional and p.default is p.empty]
    if len(required) > (2 if hook == "attach" else 1):
        args = "(self, method)" if hook == "attach" else "(self)"
        raise HarnessError(
            f"'{name}': {cls.__name__}.{hook} takes no dims: define it as {hook}{args} and "
            f"give each head width at paper scale through self.width(n)"
        )


def _only_new(kind: str, table: dict, name: str, cls: type) -> None:
    """A name means one computation: a plugin may add names, never take over one (its runs
    would be keyed, and reused, as the built-in's). The same class again (a module imported
    twice) is not a new claim."""
    old = table.get(name)
    if old is None or (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__):
        return
    where = inspect.getsourcefile(old) or old.__module__
    raise HarnessError(
        f"{kind} '{name}' is already registered (by {where}): a plugin may only add names — "
        f"register {cls.__name__} under a new one, e.g. '{name}_v2'"
    )


def _register(kind: str, table: dict, name: str, cls: type, hook: str) -> type:
    _no_dims(cls, hook, name)
    _only_new(kind, table, name, cls)
    cls.name = name
    table[name] = cls
    return cls


def register_base(name: str):
    def deco(cls):
        from harness.data.pipelines import SSLAugmentation
        from methods.base import Recipe

        if not isinstance(cls.augmentation, SSLAugmentation):
            raise HarnessError(
                f"base method '{name}' sets augmentation = {cls.augmentation!r}: give an "
                f"SSLAugmentation(scale, interpolation, blur_p, solarize_p) of "
                f"harness.data.views, e.g. MoCo-v3's (methods/moco_v3.py)"
            )
        views = cls.invariance_views
        if not views or not all(isinstance(n, int) and n >= 2 for n in views):
            raise HarnessError(
                f"base method '{name}' sets invariance_views = {views!r}: give the numbers of "
                f"views its invariance_loss accepts, e.g. (2,) or (2, 6)"
            )
        cls.recipe = Recipe.of(name, cls.recipe)
        return _register("base method", BASES, name, cls, "build_heads")

    return deco


def register_addon(name: str):
    def deco(cls):
        return _register("add-on", ADDONS, name, cls, "attach")

    return deco


def _unknown(kind: str, name: str, known) -> HarnessError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return HarnessError(
        f"unknown {kind} '{name}'{hint}; registered: {', '.join(sorted(known))}"
        f" — run `harness methods` to list them"
    )


PLUGIN_ENV = "HARNESS_PLUGINS"
_loaded: set[str] = set()


def load_plugins(paths=()) -> None:
    """Import user files that register methods, from ``paths``, from ``$HARNESS_PLUGINS``
    (``:``-separated; jobs inherit it) and from the ``ser_harness.methods`` entry points."""
    env = [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
    for path in [*paths, *env]:
        path = str(Path(path).resolve())
        if path in _loaded:
            continue
        if not Path(path).is_file():
            raise HarnessError(
                f"plugin {path} does not exist: pass --plugin with the path of a "
                f".py file that registers a method"
            )
        spec = importlib.util.spec_from_file_location(f"harness_plugin_{len(_loaded)}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except HarnessError:
            raise
        except Exception as e:  # the user's file: say which, and what, in one line
            line = next(
                (
                    f.lineno
                    for f in reversed(traceback.extract_tb(e.__traceback__))
                    if f.filename == path
                ),
                None,
            )
            at = f" (line {line})" if line else ""
            raise HarnessError(
                f"plugin {path} failed to import{at}: {type(e).__name__}: {e} — fix the file "
                f"or drop it from --plugin / ${PLUGIN_ENV}"
            ) from None
        _loaded.add(path)
    for ep in entry_points(group="ser_harness.methods"):
        if ep.value not in _loaded:
            ep.load()
            _loaded.add(ep.value)


def _view_policy(base: str, mods: list[str]) -> str | None:
    from harness.data.views import POLICIES

    if len(mods) > 1 or (mods and mods[0] not in POLICIES):
        raise HarnessError(
            f"'{base}@{'@'.join(mods)}': a base method takes one modifier, its "
            f"view policy, one of: {', '.join(POLICIES)}"
        )
    return mods[0] if mods else None


def view_policy(full: str) -> str | None:
    """The view policy named on the base (``moco_v3@3view+…``), or None."""
    base, *mods = full.strip().split("+")[0].strip().split("@")
    return _view_policy(base, mods)


def parse(full: str) -> tuple[type, list[tuple[type, dict]]]:
    """Split ``base+addon@mod@mod+…`` into the base class and (add-on class, options)."""
    import methods  # noqa: F401  (registers the built-in methods)

    load_plugins()

    parts = [p.strip() for p in full.strip().split("+")]
    base, *mods = parts[0].split("@")
    if base not in BASES:
        raise _unknown("base method", base, BASES)
    _view_policy(base, mods)
    addons = []
    for part in parts[1:]:
        name, *mods = part.split("@")
        if name not in ADDONS:
            raise _unknown("add-on", name, ADDONS)
        cls = ADDONS[name]
        if any(c is cls for c, _ in addons):
            raise HarnessError(
                f"'{full}' names add-on '{name}' twice: name each add-on once, with all "
                f"its modifiers (e.g. {parts[0]}+{name}@layer3@r0.05)"
            )
        opts: dict = {}
        for m in mods:
            parsed = cls.parse_modifier(m)
            if parsed is None:
                raise HarnessError(
                    f"add-on '{name}' does not understand '@{m}'; "
                    f"valid modifiers: {cls.modifier_help}"
                )
            opts.update(parsed)
        cls(base, **opts)  # an add-on refuses a base it has no hyper-parameters for
        addons.append((cls, opts))
    return BASES[base], addons
