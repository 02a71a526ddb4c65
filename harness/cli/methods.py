"""``harness config`` and ``methods``: a method's resolved config, and what is registered."""

from __future__ import annotations

from harness.cli.args import takes_overrides


def cmd_config(a) -> int:
    from harness import config as C

    cfg = C.resolve(a.method, a.preset, a.seed, overrides=a.overrides)
    print(
        f"# {C.run_id(cfg)}: every key below may be overridden as key=value (except method, "
        f"base, preset, versions, addons);\n# runtime and the evaluation sections do not enter the run's hash"
    )
    print(C.to_yaml(cfg), end="")
    return 0


def cmd_methods(a) -> int:
    from harness.data.views import POLICIES, choose
    from methods.registry import ADDONS, BASES, parse

    if a.departures:
        from harness.eval.departures import EVAL_DEPARTURES
        from methods.departures import markdown, render

        if a.markdown:
            print(markdown() + "\n\n" + markdown(EVAL_DEPARTURES, "public code"))
        else:
            print("pretraining (methods/departures.py):\n" + render())
            print("\nevaluations (harness/eval/departures.py):\n" + render(EVAL_DEPARTURES))
        return 0
    parse("moco_v3")  # registers built-ins
    print("base methods (base@POLICY picks the view policy):")
    for n, c in sorted(BASES.items()):
        print(f"  {n:<16} {c.description}  [{c.augmentation} augmentation]")
    print("add-ons (compose as base+addon@modifier; every add-on takes @layerK):")
    for n, c in sorted(ADDONS.items()):
        print(
            f"  {n:<16} {c.description}  [views: {choose(c.requires)}; modifiers {c.modifier_help}]"
        )
    print("view policies:")
    for n, p in POLICIES.items():
        extra = ", ".join(p["provides"]) or "the base method's two views"
        print(f"  {n:<16} {p['label']} views in the paper's terms; provides {extra}")
    return 0


def add(sub) -> None:
    r = sub.add_parser(
        "config",
        help="print a method's resolved config as YAML: every key a key=value override may set",
    )
    r.add_argument("method")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--seed", type=int, default=0)
    takes_overrides(r, cmd_config)

    r = sub.add_parser("methods", help="list registered methods and add-ons")
    r.add_argument(
        "--departures",
        action="store_true",
        help="every place the harness computes other than the public code (SER's for the methods "
        "and the linear probe; the evaluations' own where SER has none), the switch, and its "
        "effect measured now on fixed tensors",
    )
    r.add_argument(
        "--markdown", action="store_true", help="with --departures: README.md's two tables"
    )
    r.set_defaults(fn=cmd_methods)
