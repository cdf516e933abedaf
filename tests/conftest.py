import gc
import os
import pathlib

import jax
import pytest

# Every test runs as careful JAX users (and Diffrax's own tests) run: float64
# (so that accuracy tests measure the method, not the rounding), implicit rank
# promotion forbidden (broadcasting bugs surface as errors instead of wrong
# shapes) and strict dtype promotion (no implicit promotion between dtypes, e.g.
# bool with int32, or float32 with float64: the library must cast explicitly).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# JAX's persistent compilation cache, outside the repository (a clean clone works
# with an empty cache, only slower): later runs, and the other xdist worker, load
# compiled programs instead of compiling them again. Set JAXDIFFEQ_TEST_CACHE to
# move it, or to an empty string to turn it off.
_CACHE = os.environ.get(
    "JAXDIFFEQ_TEST_CACHE",
    str(pathlib.Path.home() / ".cache" / "jaxdiffeq-tests" / "jax"),
)
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    # Most of the suite's programs compile in well under the default threshold
    # of 1 s; cache those that take 0.1 s or more.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def key():
    """A seeded PRNG key; tests are deterministic."""
    return jax.random.key(5678)


@pytest.fixture
def getkey(key):
    """A function returning a new, deterministic key on every call."""
    keys = iter(jax.random.split(key, 1000))
    return lambda: next(keys)


def pytest_terminal_summary(terminalreporter):
    """An informational report at the end of every run (not a test): the public
    names of Diffrax 0.7.2 that jaxdiffeq lacks."""
    from public_names import diffrax_public_names, missing_names

    missing = missing_names()
    total = len(diffrax_public_names())
    terminalreporter.write_sep("-", "public names of Diffrax 0.7.2")
    terminalreporter.write_line(
        f"jaxdiffeq offers {total - len(missing)} of Diffrax's {total} public names; "
        f"not yet ({len(missing)}): {', '.join(missing)}"
    )


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory caches after each test module. Every compiled program
    holds memory mappings of its code, and one process running the whole suite
    compiles enough of them to reach the kernel's limit on mappings
    (`vm.max_map_count`, 65530 here), where XLA's compiler crashes with a
    segmentation fault. Modules rarely share compiled functions; the persistent
    cache above keeps the cost of compiling again small."""
    yield
    jax.clear_caches()
    gc.collect()
