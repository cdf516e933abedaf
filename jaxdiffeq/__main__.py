"""The command line: solve and plot the standard problems of `jaxdiffeq.problems`.

```
python -m jaxdiffeq list
python -m jaxdiffeq solve lorenz --solver Tsit5 --rtol 1e-8 --plot lorenz.png
python -m jaxdiffeq solve arenstorf --batch 64 --progress text
```

`solve` prints a table: the steps taken, the error at `t1` against the problem's
reference (where it has one), and the compile and run times, measured separately.
"""

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiffeq as jd

from ._progress import TextProgressMeter, TqdmProgressMeter
from .problems import PROBLEMS, Problem, get_problem

_PROG = "python -m jaxdiffeq"


def adaptive_solvers() -> dict[str, type[jd.AbstractSolver]]:
    """The solvers exported by `jaxdiffeq` that `solve --solver` accepts: concrete,
    adaptive (`AbstractAdaptiveSolver`), constructible without arguments, and
    taking a single `ODETerm` (not the implicit–explicit methods, which take a
    `MultiTerm` of a non-stiff and a stiff part)."""
    solvers = {}
    for name in dir(jd):
        cls = getattr(jd, name)
        if not (isinstance(cls, type) and issubclass(cls, jd.AbstractAdaptiveSolver)):
            continue
        # Abstract bases, and aliases such as `AbstractERK`, are not solvers.
        if name != cls.__name__ or name.startswith("Abstract"):
            continue
        try:
            solver = cls()
        except TypeError:  # a wrapper, such as `HalfSolver(solver)`
            continue
        if isinstance(getattr(cls, "tableau", None), jd.MultiButcherTableau):
            continue
        structure = solver.term_structure
        if isinstance(structure, type) and issubclass(jd.ODETerm, structure):
            solvers[name] = cls
    return solvers


def _finite_float(text: str, *, non_negative: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or (non_negative and value < 0):
        bound = " >= 0" if non_negative else ""
        raise argparse.ArgumentTypeError(
            f"expected a finite number{bound}, got {text!r}"
        )
    return value


def _non_negative_float(text: str) -> float:
    return _finite_float(text, non_negative=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Solve and plot standard differential equations with jaxdiffeq.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "list", help="list the problems", description="List the problems."
    )
    solve = commands.add_parser(
        "solve",
        help="solve a problem",
        description=(
            "Solve a problem with an adaptive solver (PIDController) and print the "
            "steps taken, the error at t1 against the reference, and the compile "
            "and run times."
        ),
    )
    solve.add_argument("problem", metavar="PROBLEM", help="a name from `list`")
    solve.add_argument(
        "--solver", default="Tsit5", help="an adaptive solver class (default Tsit5)"
    )
    solve.add_argument(
        "--rtol",
        type=_non_negative_float,
        help="relative tolerance (default: the problem's)",
    )
    solve.add_argument(
        "--atol",
        type=_non_negative_float,
        help="absolute tolerance (default: the problem's)",
    )
    solve.add_argument(
        "--t1", type=_finite_float, help="end time (default: the problem's)"
    )
    solve.add_argument(
        "--batch",
        type=_positive_int,
        metavar="N",
        help="solve N initial values under jax.vmap: y0 and N-1 perturbations of it",
    )
    solve.add_argument(
        "--perturbation",
        type=_non_negative_float,
        default=1e-3,
        help="with --batch: lane k > 0 starts at y0 + p*(1 + |y0|)*N(0, 1) "
        "(default p = 1e-3)",
    )
    solve.add_argument(
        "--seed", type=int, default=0, help="random seed of --batch (default 0)"
    )
    solve.add_argument("--plot", metavar="PATH", help="write a PNG plot here")
    solve.add_argument(
        "--x64",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="solve in float64 (default) or float32",
    )
    solve.add_argument(
        "--progress",
        nargs="?",
        const="tqdm",
        choices=("tqdm", "text"),
        help="show a progress meter: a tqdm bar (the default), or text lines",
    )
    solve.add_argument(
        "--max-steps",
        type=_positive_int,
        default=100_000,
        help="the most steps to attempt (default 100000)",
    )
    solve.add_argument(
        "--points",
        type=_positive_int,
        default=400,
        help="number of saved times, for the plot (default 400)",
    )
    solve.add_argument(
        "--repeats",
        type=_positive_int,
        help="timed runs after compiling; the best is reported "
        "(default 3, or 1 with --progress)",
    )
    return parser, solve


def _format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _format_number(x: float) -> str:
    return f"{x:g}"


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _list_problems() -> None:
    rows = [("name", "states", "interval", "reference", "stiff", "description")]
    for problem in PROBLEMS.values():
        rows.append(
            (
                problem.name,
                str(len(problem.initial_values)),
                f"[{_format_number(problem.t0)}, {problem.t1:.6g}]",
                "yes" if problem.reference_values is not None else "no",
                "yes" if problem.stiff else "no",
                problem.description,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [f"{cell:<{w}}" for cell, w in zip(row, widths)]
        print("  ".join([*cells, row[-1]]))


def _initial_values(problem: Problem, batch: int | None, perturbation, seed):
    y0 = problem.y0
    if batch is None:
        return y0
    noise = jax.random.normal(jax.random.key(seed), (batch, y0.shape[0]), y0.dtype)
    noise = noise.at[0].set(0)  # lane 0 is the unperturbed problem
    return y0[None, :] + perturbation * (1 + jnp.abs(y0))[None, :] * noise


def _plot(path, problem: Problem, ts, ys, title: str) -> None:
    """Components against time (of lane 0) and the phase portraits (of every lane,
    lane 0 drawn last)."""
    # The object-oriented interface, not `pyplot`: no global backend or figure
    # state, so this is safe inside other programs (and tests) that use pyplot.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = problem.phase_portraits
    columns = 2 if pairs else 1
    fig = Figure(figsize=(6.4 * columns, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    lanes = ys.shape[0]
    ax = fig.add_subplot(1, columns, 1)
    for i, label in enumerate(problem.labels):
        ax.plot(ts, ys[0, :, i], linewidth=1, label=label)
    ax.set_xlabel("t")
    ax.set_title("components" + (" (lane 0)" if lanes > 1 else ""))
    if len(problem.labels) <= 8:
        ax.legend(fontsize="small")
    if pairs:
        ax = fig.add_subplot(1, columns, 2)
        shown = min(lanes, 32)
        for lane in reversed(range(shown)):
            for k, (i, j) in enumerate(pairs):
                label = None
                if lane == 0 and len(pairs) > 1:
                    label = f"{problem.labels[i]}, {problem.labels[j]}"
                ax.plot(
                    ys[lane, :, i],
                    ys[lane, :, j],
                    color=f"C{k % 10}",
                    linewidth=1.0 if lane == 0 else 0.5,
                    alpha=1.0 if lane == 0 else 0.4,
                    label=label,
                )
        x_labels = [problem.labels[i] for i, _ in pairs]
        y_labels = [problem.labels[j] for _, j in pairs]
        ax.set_xlabel(
            x_labels[0] if len(pairs) == 1 else f"{x_labels[0]} ... {x_labels[-1]}"
        )
        ax.set_ylabel(
            y_labels[0] if len(pairs) == 1 else f"{y_labels[0]} ... {y_labels[-1]}"
        )
        if 1 < len(pairs) <= 8:
            ax.legend(fontsize="small")
        ax.set_title("phase portrait" + (f" ({shown} lanes)" if shown > 1 else ""))
    fig.savefig(path, dpi=110)


def _checked_settings(args, parser: argparse.ArgumentParser):
    """The problem, solver class, tolerances and interval the arguments ask for;
    bad arguments exit through `parser.error` (code 2)."""
    try:
        problem = get_problem(args.problem)
    except ValueError as e:
        parser.error(str(e))
    solvers = adaptive_solvers()
    if args.solver not in solvers:
        parser.error(
            f"unknown or non-adaptive solver {args.solver!r}; choose one of: "
            + ", ".join(sorted(solvers))
        )
    rtol = problem.rtol if args.rtol is None else args.rtol
    atol = problem.atol if args.atol is None else args.atol
    if rtol == 0 and atol == 0:
        parser.error("--rtol and --atol cannot both be zero")
    t0 = problem.t0
    t1 = problem.t1 if args.t1 is None else args.t1
    if t1 == t0:
        parser.error(f"--t1 must differ from the start time t0 = {t0:g}")
    if args.points < 2:
        parser.error("--points must be at least 2")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        parser.error(f"--plot: the folder of {args.plot!r} does not exist")
    return problem, solvers[args.solver], rtol, atol, t0, t1


def _meter(progress):
    if progress == "text":
        return TextProgressMeter()
    if progress == "tqdm":
        return TqdmProgressMeter()
    return jd.NoProgressMeter()


def _compile_and_run(args, problem, solver, controller, t0, t1, ts, y0, repeats):
    """Compile the (possibly vmapped) solve, run it `repeats` times, and return
    its outputs (with a lane axis), the compile time and the run times."""
    term = jd.ODETerm(problem.f)
    saveat = jd.SaveAt(ts=ts)
    meter = _meter(args.progress)

    def solve(y0):
        sol = jd.diffeqsolve(
            term,
            solver,
            t0,
            t1,
            None,
            y0,
            problem.args,
            saveat=saveat,
            stepsize_controller=controller,
            max_steps=args.max_steps,
            throw=False,
            progress_meter=meter,
        )
        return dict(
            ys=sol.ys,
            accepted=sol.stats["num_accepted_steps"],
            rejected=sol.stats["num_rejected_steps"],
            result=sol.result.value,
        )

    if args.batch is not None:
        solve = jax.vmap(solve)
    start = time.perf_counter()
    compiled = jax.jit(solve).lower(y0).compile()
    compile_time = time.perf_counter() - start

    def timed_run():
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(y0))
        return result, time.perf_counter() - start

    runs = [timed_run() for _ in range(max(repeats, 1))]
    run_times = [seconds for _, seconds in runs]
    out = jax.tree.map(np.asarray, runs[-1][0])
    if args.batch is None:
        out = jax.tree.map(lambda x: x[None], out)
    return out, compile_time, run_times


def _outcome(codes) -> tuple[str, int]:
    """The result line and the number of failed lanes."""
    lanes = codes.shape[0]
    failed = int(np.sum(codes != 0))
    if failed == 0:
        outcome = "successful"
    else:
        first = int(codes[codes != 0][0])
        outcome = f"FAILED ({jd.RESULTS.names()[first]}): {jd.RESULTS.message(first)}"
    if lanes > 1:
        outcome += f" ({lanes - failed} of {lanes} lanes successful)"
    return outcome, failed


def _steps(counts) -> str:
    if counts.shape[0] == 1:
        return str(int(counts[0]))
    return (
        f"mean {np.mean(counts):.1f}, min {int(np.min(counts))}, "
        f"max {int(np.max(counts))}"
    )


def _error_rows(problem, t1, ys, lanes):
    which = " (lane 0)" if lanes > 1 else ""
    reference = problem.reference if t1 == problem.t1 else None
    if reference is None:
        missing = (
            f"no reference at t1 = {t1:g} (it is at t1 = {problem.t1:.15g})"
            if problem.reference_values is not None
            else "this problem has no reference solution"
        )
        return [("error at t1", f"n/a: {missing}")]
    reference = np.asarray(reference)
    error = np.max(np.abs(ys[0, -1] - reference))
    relative = error / np.max(np.abs(reference))
    return [
        ("max-norm error at t1" + which, f"{error:.3e}"),
        (
            "relative error at t1" + which,
            f"{relative:.3e} (max|error| / max|reference|)",
        ),
        ("reference", problem.reference_source),
    ]


def _solve(args, parser: argparse.ArgumentParser) -> int:
    problem, solver_cls, rtol, atol, t0, t1 = _checked_settings(args, parser)
    repeats = args.repeats or (1 if args.progress else 3)
    y0 = _initial_values(problem, args.batch, args.perturbation, args.seed)
    dtype = y0.dtype
    ts = jnp.linspace(t0, t1, args.points, dtype=dtype)
    controller = jd.PIDController(rtol=rtol, atol=atol)
    out, compile_time, run_times = _compile_and_run(
        args, problem, solver_cls(), controller, t0, t1, ts, y0, repeats
    )
    lanes = out["ys"].shape[0]
    outcome, failed = _outcome(out["result"])
    rows = [
        ("problem", f"{problem.name}: {problem.description}"),
        ("solver", f"{args.solver} (PIDController)"),
        ("tolerances", f"rtol={rtol:g}, atol={atol:g}"),
        ("interval", f"[{t0:g}, {t1:.15g}]"),
        ("precision", str(dtype)),
    ]
    stiff_solvers = (jd.AbstractImplicitSolver, jd.AbstractRosenbrock)
    if problem.stiff and not issubclass(solver_cls, stiff_solvers):
        rows.append(
            (
                "note",
                f"{problem.name} is stiff: an explicit solver's step size is bounded "
                "by stability, not accuracy, so it needs very many steps",
            )
        )
    if args.batch is not None:
        rows.append(
            (
                "batch",
                f"{lanes} initial values under jax.vmap (lane 0: y0; lane k > 0: "
                f"y0 + {args.perturbation:g}*(1 + |y0|)*N(0, 1), seed {args.seed})",
            )
        )
    rows += [
        ("result", outcome),
        ("accepted steps", _steps(out["accepted"])),
        ("rejected steps", _steps(out["rejected"])),
    ]
    rows += _error_rows(problem, t1, out["ys"], lanes)
    rows += [
        ("compile time", _format_time(compile_time)),
        (
            "run time",
            _format_time(min(run_times))
            + (f" (best of {repeats})" if repeats > 1 else ""),
        ),
    ]
    if args.plot:
        title = f"{problem.name}, {args.solver}, rtol={rtol:g}, atol={atol:g}"
        _plot(args.plot, problem, np.asarray(ts), out["ys"], title)
        rows.append(("plot", args.plot))
    _print_table(rows)
    return 0 if failed == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default `sys.argv[1:]`) and return the exit
    code: 0 on success, 1 if a solve failed. Bad arguments exit with code 2."""
    parser, solve_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        _list_problems()
        return 0
    # A context, not `jax.config.update`: `main` may be called inside a program
    # (or a test) whose own setting must survive it.
    with jax.enable_x64(args.x64):
        code = _solve(args, solve_parser)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
