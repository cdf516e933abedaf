"""Compile time as a user meets it: the first call of a jitted solve in a fresh
Python process, ours against Diffrax 0.7.2 (case (h) of `bench/forward.py` and
of `bench/gradients.py`; also runs alone).

    .venv/bin/python bench/fresh_compile.py            # 5 processes per library
    .venv/bin/python bench/fresh_compile.py --quick    # 2 per library

Each measurement is one new process (the libraries alternate, the order flipping
every round) that imports JAX and the library, then times the first call of the
Lorenz problem (Tsit5 + PIDController(1e-6), `SaveAt(ts)` with 100 times on
[0, 10]): the forward solve, or the gradient with respect to `y0` and the
parameters (`RecursiveCheckpointAdjoint`). The call is split into its parts:
tracing (`jax.jit(f).trace`), lowering to StableHLO (`.lower()`), XLA's compile
(`.compile()`) and the run; the process also reports the size of what was
traced (jaxpr equations, by primitive), lowered (StableHLO operations) and
compiled (HLO instructions and fusions). No persistent compilation cache.
Writes `bench/results/fresh_compile.json`.
"""

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS_PATH = Path(__file__).parent / "results" / "fresh_compile.json"
TARGET = 0.6  # ours / Diffrax, forward and gradient (issue 12, item 4)
PARTS = ("trace_s", "lower_s", "compile_s", "run_s")


def _problem(lib, kind):
    import jax
    import jax.numpy as jnp
    from common import lorenz_with_args

    ts = jnp.linspace(0.0, 10.0, 100)

    def solve(y0, args):
        return lib.diffeqsolve(
            lib.ODETerm(lorenz_with_args),
            lib.Tsit5(),
            0.0,
            10.0,
            0.01,
            y0,
            args,
            saveat=lib.SaveAt(ts=ts),
            stepsize_controller=lib.PIDController(rtol=1e-6, atol=1e-6),
            adjoint=lib.RecursiveCheckpointAdjoint(),
        ).ys

    if kind == "forward":
        return solve
    return jax.grad(lambda y0, args: jnp.sum(solve(y0, args) ** 2), argnums=(0, 1))


def _count_primitives(jaxpr, counts):
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for sub in eqn.params.values():
            for j in sub if isinstance(sub, (list, tuple)) else (sub,):
                inner = getattr(j, "jaxpr", None)
                if inner is not None:
                    _count_primitives(getattr(inner, "jaxpr", inner), counts)
    return counts


def worker(name, kind):
    """One fresh-process measurement, printed as JSON."""
    start = time.perf_counter()
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    import jax.numpy as jnp

    if name == "ours":
        import jaxdiffeq as lib
    else:
        import diffrax as lib
    imported = time.perf_counter()
    fn = jax.jit(_problem(lib, kind))
    y0 = jnp.array([1.0, 1.0, 1.0])
    args = jnp.array([10.0, 28.0, 8.0 / 3.0])
    t0 = time.perf_counter()
    traced = fn.trace(y0, args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    jax.block_until_ready(compiled(y0, args))
    t4 = time.perf_counter()
    hlo = compiled.as_text()
    stablehlo = lowered.as_text()
    primitives = _count_primitives(traced.jaxpr.jaxpr, Counter())
    out = {
        "import_s": imported - start,
        "trace_s": t1 - t0,
        "lower_s": t2 - t1,
        "compile_s": t3 - t2,
        "run_s": t4 - t3,
        "first_call_s": t4 - t0,
        "jaxpr_equations": sum(primitives.values()),
        "top_primitives": dict(primitives.most_common(8)),
        "stablehlo_ops": len(re.findall(r"= \"?stablehlo\.", stablehlo))
        + len(re.findall(r" stablehlo\.\w+", stablehlo)),
        "stablehlo_whiles": stablehlo.count("stablehlo.while"),
        "hlo_instructions": len(re.findall(r"^\s+%\S+ = ", hlo, re.M)),
        "hlo_fusions": len(re.findall(r" fusion\(", hlo)),
    }
    print(json.dumps(out))


def measure(kind, rounds):
    from common import fresh_runs

    runs = fresh_runs(
        lambda name: [sys.executable, __file__, "--worker", name, kind], rounds
    )
    medians = {
        name: {
            key: statistics.median(run[key] for run in rs)
            for key in ("first_call_s", "import_s", *PARTS)
        }
        for name, rs in runs.items()
    }
    ratios = [
        a["first_call_s"] / b["first_call_s"]
        for a, b in zip(runs["ours"], runs["diffrax"])
    ]
    return {
        "kind": kind,
        "runs": runs,
        "medians": medians,
        "ratio_first_call": statistics.median(ratios),
        "target": TARGET,
    }


def run_case(cfg, kinds=("forward", "gradient")):
    rounds = 2 if cfg.quick else 5
    return {kind: measure(kind, rounds) for kind in kinds}


def run_forward(cfg):
    return run_case(cfg, kinds=("forward",))


def run_gradients(cfg):
    return run_case(cfg, kinds=("gradient",))


def report(res):
    print("(h) first call in a fresh process (trace + lower + compile + run), Lorenz")
    print(f"    ours / Diffrax (target <= {TARGET}), medians over processes")
    for kind, r in res.items():
        flag = "" if r["ratio_first_call"] <= TARGET else "  MISS"
        print(f"    {kind:9s} ratio {r['ratio_first_call']:5.2f}{flag}")
        for name, m in r["medians"].items():
            last = r["runs"][name][-1]
            parts = "  ".join(f"{p[:-2]} {m[p] * 1e3:6.0f} ms" for p in PARTS)
            print(
                f"      {name:8s} first call {m['first_call_s'] * 1e3:6.0f} ms: {parts}"
                f"  (import {m['import_s']:.2f} s)"
            )
            print(
                f"      {'':8s} jaxpr eqns {last['jaxpr_equations']}, StableHLO ops "
                f"{last['stablehlo_ops']} ({last['stablehlo_whiles']} while), HLO "
                f"{last['hlo_instructions']} instructions, {last['hlo_fusions']} "
                f"fusions; top primitives {last['top_primitives']}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "KIND"))
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    cfg = parser.parse_args()
    if cfg.worker:
        worker(*cfg.worker)
        return
    res = run_case(cfg)
    report(res)
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    cfg.output.write_text(json.dumps({"quick": cfg.quick, "results": res}, indent=1))
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()
