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
