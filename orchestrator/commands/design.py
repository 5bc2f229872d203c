"""``qsweep design SPACE.yaml``: print (and save) the design points of a study's factors.

    qsweep design search_spaces/screening.yaml --kind fracfact --resolution 4 --out points.csv

The study file's ``factors`` and ``search`` are used; ``--kind``, ``--resolution``,
``--samples`` and ``--seed`` override ``search``. Fractional designs also print their
alias structure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.design import KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "design",
        help="print the design points (and aliasing) of a study's factors",
        description="Print the design points of a study file's factors (run number + factor "
        "levels) and, for fractional factorials, the alias structure. Options override the "
        "file's search section.",
    )
    p.add_argument("space", metavar="SPACE.yaml", help="study file with 'factors' and 'search'")
    p.add_argument("--kind", choices=KINDS, help="design kind")
    p.add_argument("--resolution", type=int, help="fracfact resolution (3, 4, 5, ...)")
    p.add_argument("--samples", type=int, help="lhs: number of points")
    p.add_argument("--seed", type=int, help="lhs: seed of the Latin hypercube")
    p.add_argument("--out", metavar="FILE.csv", help="also write the points as CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from model.errors import ConfigError
    from orchestrator.design import aliasing, design_kind, design_points

    factors, search = read_factors_and_search(Path(args.space))
    kind = args.kind or search.get("kind")
    kind = design_kind(kind)
    resolution = args.resolution if args.resolution is not None else search.get("resolution")
    samples = args.samples if args.samples is not None else search.get("samples")
    seed = args.seed if args.seed is not None else int(search.get("seed") or 0)
    if kind not in KINDS:
        raise ConfigError(
            f"search.kind = {kind!r} in {args.space} is not a design; allowed: full (grid), "
            "fracfact, pb, lhs. Pass --kind to choose one."
        )
    if kind == "lhs" and samples is None:
        raise ConfigError(
            f"an lhs design needs a number of points: set search.samples in {args.space} or pass --samples N."
        )
    if kind == "fracfact" and resolution is None:
        raise ConfigError(
            f"a fracfact design needs a resolution: set search.resolution in {args.space} or pass "
            "--resolution R (3, 4 or 5)."
        )
    points = design_points(factors, kind, resolution=resolution, samples=samples, seed=seed)
    table = pd.DataFrame(points, columns=list(factors))
    table.insert(0, "run", range(1, len(table) + 1))
    detail = {"fracfact": f", resolution {resolution}", "lhs": f", {samples} samples, seed {seed}"}
    noun = "factor" if len(factors) == 1 else "factors"
    print(f"{kind} design{detail.get(kind, '')}: {len(table)} runs, {len(factors)} {noun}")
    print(_text_table(table))
    if kind == "fracfact":
        print()
        print("Alias structure:")
        for line in aliasing(factors, resolution):
            print(f"  {line}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"wrote {out}")
    return 0


def read_factors_and_search(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``factors`` and ``search`` of a study file, validated by ``orchestrator.spec``."""
    from orchestrator.spec import load_spec

    spec = load_spec(path)
    return dict(spec.factors), {**spec.search.to_dict(), "seed": spec.search.seed}


def _text_table(table) -> str:
    cells = [[str(c) for c in table.columns]]
    for row in table.itertuples(index=False):
        cells.append([f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
