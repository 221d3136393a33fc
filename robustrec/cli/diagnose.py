"""``robustrec diagnose``: flatness measures of trained runs, as records and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustrec.cli.common import add_device_argument, add_runs_argument
from robustrec.errors import ConfigError
from robustrec.io import check_output_folder

DESCRIPTION = """\
Measure each run's training loss around its selected weights: the gradient norm, the top Hessian
eigenvalues (Lanczos) and trace (Hutchinson), SAM's sharpness within a rho-ball, and the loss along
filter-normalised random directions (1-D and 2-D landscapes, Li et al. 2018); with --interpolate, the
loss on the straight line between two runs. The loss is fixed for the measurement: the training pairs
with negatives drawn once from --seed, in batches of the run's size, dropout masks fixed per batch.
Writes OUT/diagnostics.jsonl (one record per run and pair; `robustrec report AUDITS --flatness OUT`
sets them beside the robustness drops) and plots: OUT/landscape.png, OUT/surface.png,
OUT/interpolation.png, and OUT/mirror-trace.png when the runs were trained with --mirror-trace."""

EPILOG = """\
examples:
  robustrec diagnose runs/freedom-plain runs/freedom-mg --out diag
  robustrec diagnose runs/*/seed-1 --measures eigenvalues,trace --out diag      (only the curvature)
  robustrec diagnose --interpolate runs/freedom-plain runs/freedom-mg --out diag --measures landscape
  robustrec report audits/noise --flatness diag                    (flatness next to the drops, Spearman)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from robustrec.diagnostics import MEASURES, DiagnoseConfig

    default = DiagnoseConfig()
    p = sub.add_parser("diagnose", help="flatness of trained runs: Hessian, sharpness, loss landscapes",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runs_argument(p, "run folder(s) to measure")
    p.add_argument("--interpolate", nargs=2, action="append", default=[], metavar=("RUN_A", "RUN_B"),
                   help="also the loss between two runs of the same model (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for diagnostics.jsonl and the plots")
    p.add_argument("--measures", type=_measures, default=default.measures, metavar="M,M,...",
                   help=f"what to measure, from {','.join(MEASURES)} (default: all)")
    p.add_argument("--seed", type=int, default=default.seed, help="seed of every random draw (default %(default)s)")
    p.add_argument("--batch-size", type=int, help="batch size of the measured loss (default: each run's)")
    p.add_argument("--interactions", type=int,
                   help="measure the loss on this many training pairs (a seeded subsample; default: all)")
    p.add_argument("--eigenvalues", type=int, default=default.eigenvalues, help="how many top eigenvalues")
    p.add_argument("--lanczos-steps", type=int, default=default.lanczos_steps, help="Hessian-vector products for them")
    p.add_argument("--trace-samples", type=int, default=default.trace_samples, help="Hutchinson samples")
    p.add_argument("--rho", type=float, default=default.rho, help="sharpness radius (SAM's rho)")
    p.add_argument("--ascent-steps", type=int, default=default.ascent_steps, help="ascent steps for the sharpness")
    p.add_argument("--points", type=int, default=default.points, help="points of the 1-D landscape and interpolation")
    p.add_argument("--surface-points", type=int, default=default.surface_points,
                   help="points per side of the 2-D landscape")
    p.add_argument("--span", type=float, default=default.span, help="landscape range [-span, span]")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: each run's own)")
    add_device_argument(p)
    p.add_argument("--allow-unfinished", action="store_true",
                   help="diagnose runs whose training has not finished (their best checkpoint so far)")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="write the records only (default: the records and the plots)")
    p.set_defaults(func=run)


def _measures(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def run(args: argparse.Namespace) -> int:
    from robustrec.diagnostics import DiagnoseConfig, diagnose

    if not args.runs and not args.run_option and not args.interpolate:
        raise ConfigError("give at least one run folder, or --interpolate RUN_A RUN_B")
    config = DiagnoseConfig(
        measures=args.measures, seed=args.seed, batch_size=args.batch_size, interactions=args.interactions,
        eigenvalues=args.eigenvalues, lanczos_steps=args.lanczos_steps, trace_samples=args.trace_samples,
        rho=args.rho, ascent_steps=args.ascent_steps, points=args.points, surface_points=args.surface_points,
        span=args.span, device=args.device,
    )
    check_output_folder(args.out)
    runs = [*args.runs, *args.run_option]
    results = diagnose(runs, config, args.out, pairs=[tuple(p) for p in args.interpolate], data=args.data,
                       progress=not args.no_progress, allow_unfinished=args.allow_unfinished)
    out = Path(args.out)
    print(out / "diagnostics.jsonl")
    if args.plots:
        for path in write_plots(results, runs, out):
            print(path)
    return 0


def write_plots(results, runs, out: Path) -> list[Path]:
    """The landscape, surface and interpolation plots of ``results``, and the mirror trace of ``runs``
    that were trained with --mirror-trace; the paths written."""
    from reports.landscape import plot_interpolation, plot_landscapes, plot_surface
    from reports.trace import plot_trace
    from robustrec.runs import open_run

    written = []
    singles = [d for d in results if d.kind == "run"]
    if any("landscape_1d" in d.curves for d in singles):
        written.append(plot_landscapes(singles, out / "landscape.png"))
    surfaces = [d for d in singles if "landscape_2d" in d.surfaces]
    if surfaces:
        written.append(plot_surface(surfaces, out / "surface.png"))
    pairs = [d for d in results if d.kind == "interpolation"]
    if pairs:
        written.append(plot_interpolation(pairs, out / "interpolation.png"))
    specs = {r: open_run(r).spec for r in runs}
    traced = [r for r, spec in specs.items() if spec.train.mirror_trace and "mirror" in spec.strategy]
    if traced:
        written.append(plot_trace(traced, out / "mirror-trace.png"))
    return [Path(p) for p in written]
