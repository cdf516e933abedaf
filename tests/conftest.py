import jax
import pytest

# Every test runs in float64 (so that accuracy tests measure the method, not the
# rounding) and with implicit rank promotion forbidden (so that broadcasting bugs
# in the library surface as errors instead of wrong shapes).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A seeded PRNG key; tests are deterministic."""
    return jax.random.key(5678)


@pytest.fixture
def getkey(key):
    """A function returning a new, deterministic key on every call."""
    keys = iter(jax.random.split(key, 1000))
    return lambda: next(keys)
