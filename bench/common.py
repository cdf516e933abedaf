"""Timing helpers shared by the benchmark scripts (see bench/README.md)."""

import json
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def lorenz_with_args(t, y, args):
    """The Lorenz vector field, `args = (sigma, rho, beta)`."""
    del t
    sigma, rho, beta = args
    x, u, z = y[0], y[1], y[2]
    return jnp.stack([sigma * (u - x), x * (rho - z) - u, x * u - beta * z])


def lorenz(t, y, args):
    """The Lorenz vector field with the classic parameters (`args` unused)."""
    del args
    return lorenz_with_args(t, y, (10.0, 28.0, 8.0 / 3.0))


def environment(**extra):
    """What a result was measured on, for the JSON files."""
    import diffrax
    import jaxlib

    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "diffrax": diffrax.__version__,
        "machine": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        **extra,
    }


def calibrate(fn, arg, min_sample_s):
    """How many calls make one timing sample last at least `min_sample_s`."""
    t = time.perf_counter()
    jax.block_until_ready(fn(arg))
    one = time.perf_counter() - t
    return max(1, int(np.ceil(min_sample_s / max(one, 1e-9))))


def time_interleaved(fns, arg, repeats, min_sample_s):
    """Time several compiled `fn(arg)` alternately (the order flips every repeat).

    Returns, per name, the per-call seconds of each sample (a sample is `number`
    back-to-back calls, each waited for with `jax.block_until_ready`).
    """
    for fn in fns.values():  # compile and warm up
        jax.block_until_ready(fn(arg))
        jax.block_until_ready(fn(arg))
    numbers = {name: calibrate(fn, arg, min_sample_s) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, number = fns[name], numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                jax.block_until_ready(fn(arg))
            times[name].append((time.perf_counter() - start) / number)
    return times, numbers


def summary(samples):
    return {
        "min_s": min(samples),
        "median_s": statistics.median(samples),
        "samples_s": samples,
    }


def ratio(times, num, den):
    """Three estimates of `num / den`. "paired" is judged: the median over repeats
    of the ratio of the two samples taken back to back in the same repeat, which
    cancels the machine's slow drift. (The ratio of the minima flipped PASS/MISS
    between otherwise identical runs: one lucky sample of either side decides it.)"""
    pairs = [a / b for a, b in zip(times[num]["samples_s"], times[den]["samples_s"])]
    return {
        "paired": statistics.median(pairs),
        "min": times[num]["min_s"] / times[den]["min_s"],
        "median": times[num]["median_s"] / times[den]["median_s"],
    }


def verdict(value, target):
    return "PASS" if value <= target else "MISS"


def fresh_runs(argv, rounds, names=("ours", "diffrax")):
    """`rounds` measurements per library, each in a new Python process running
    `argv(name)` (a command line whose last line of output is JSON); the
    libraries alternate, the order flipping every round. Returns `{name: [the
    decoded outputs]}`."""
    runs = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            print(f"  fresh process: {' '.join(argv(name)[1:])}", file=sys.stderr)
            proc = subprocess.run(
                argv(name), capture_output=True, text=True, check=True
            )
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs
