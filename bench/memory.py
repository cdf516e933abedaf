"""Memory of gradients through a solve: jaxdiffeq against Diffrax 0.7.2.

Run from the repository root:

    .venv/bin/python bench/memory.py

For each adjoint it compiles the gradient of a solve with a 1,000-dimensional
state, `y' = -w * y + 0.1 sin(y)` (elementwise, `w` the differentiated
parameter), Euler with `n` constant steps on [0, 1], `SaveAt(t1=True)`,
`max_steps=n`, for n = 100, 1,000 and 10,000, and reads XLA's compiled memory
analysis (temporary bytes): deterministic, no run needed. `ReversibleAdjoint`
(ours only: Diffrax 0.7.2 has none) runs `Reversible(Euler())`. Prints a table
and writes `bench/results/memory.json`. See `bench/README.md`.
"""

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import environment  # noqa: E402

import jaxdiffeq as jd  # noqa: E402

DIM = 1000
STEPS = (100, 1000, 10_000)
ADJOINTS = (
    "RecursiveCheckpointAdjoint",
    "DirectAdjoint",
    "BacksolveAdjoint",
    "ReversibleAdjoint",
)
RESULTS_PATH = Path(__file__).parent / "results" / "memory.json"


def vector_field(t, y, w):
    return -w * y + 0.1 * jnp.sin(y)


def temp_bytes(lib, adjoint_name, n):
    """Temporary bytes of the compiled gradient; `None` where `lib` has no such
    adjoint."""
    if not hasattr(lib, adjoint_name):
        return None
    y0 = jnp.ones(DIM)

    def loss(w):
        sol = lib.diffeqsolve(
            lib.ODETerm(vector_field),
            lib.Euler(),
            0.0,
            1.0,
            1.0 / n,
            y0,
            w,
            saveat=lib.SaveAt(t1=True),
            adjoint=getattr(lib, adjoint_name)(),
            max_steps=n,
        )
        return jnp.sum(sol.ys**2)

    w = jnp.full(DIM, 0.5)
    compiled = jax.jit(jax.grad(loss)).lower(w).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main():
    results = {}
    print(
        f"{'adjoint':28} {'n':>6} {'ours (kB)':>12} {'Diffrax (kB)':>13} {'ratio':>6}"
    )
    for adjoint in ADJOINTS:
        for n in STEPS:
            ours = temp_bytes(jd, adjoint, n)
            theirs = temp_bytes(diffrax, adjoint, n)
            results[f"{adjoint}/{n}"] = {"ours": ours, "diffrax": theirs}
            theirs_kb = "-" if theirs is None else f"{theirs / 1e3:.1f}"
            ratio = "-" if theirs is None else f"{ours / theirs:.2f}"
            print(
                f"{adjoint:28} {n:6d} {ours / 1e3:12.1f} {theirs_kb:>13} {ratio:>6}",
                flush=True,
            )
    # Growth from 100 to 10,000 steps (100x the steps).
    print("\ngrowth 100 -> 10,000 steps (temp bytes ratio):")
    for adjoint in ADJOINTS:
        for lib in ("ours", "diffrax"):
            a = results[f"{adjoint}/{STEPS[0]}"][lib]
            b = results[f"{adjoint}/{STEPS[-1]}"][lib]
            if a is not None:
                print(f"  {adjoint:28} {lib:8} {b / a:8.2f}")
    RESULTS_PATH.parent.mkdir(exist_ok=True)
    meta = environment(state_dim=DIM)
    RESULTS_PATH.write_text(json.dumps({"meta": meta, "temp_bytes": results}, indent=1))
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
