"""Progress meters: what they print under `jit`, `vmap` and `jvp`, and how often
they call back to the host."""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import jaxdiffeq as jd
from jaxdiffeq import _progress
from jaxdiffeq._progress import TextProgressMeter, TqdmProgressMeter

_TERM = jd.ODETerm(lambda t, y, args: -args * y)


def _solve(meter, t1=1.0, dt0=0.01, y0=None, args=1.0):
    y0 = jnp.ones(2) if y0 is None else y0
    ys = jd.diffeqsolve(
        _TERM,
        jd.Bosh3(),
        0.0,
        t1,
        dt0,
        y0,
        args,
        progress_meter=meter,
        adjoint=jd.ForwardMode(),
    ).ys
    assert ys is not None
    return ys


def _percentages(text: str) -> list[float]:
    lines = text.strip().splitlines()
    assert all(line.endswith("%") for line in lines), lines
    return [float(line[:-1]) for line in lines]


def _check_text(text: str, minimum_increase: float) -> list[float]:
    values = _percentages(text)
    assert values[0] == 0.0
    assert values[-1] == 100.0
    assert values == sorted(values)
    # Every line but the last (printed when the solve ends) is at least
    # `minimum_increase` beyond the previous one (up to rounding in the last digit).
    steps = [b - a for a, b in zip(values[:-2], values[1:-1])]
    assert all(step >= 100 * minimum_increase - 0.011 for step in steps), values
    return values


@pytest.fixture(autouse=True)
def _no_meter_left_open():
    yield
    assert len(_progress._registry) == 0


def test_text_under_jit(capsys):
    solve = jax.jit(lambda y0: _solve(TextProgressMeter(0.1), y0=y0))
    ys = solve(jnp.ones(2))
    values = _check_text(capsys.readouterr().out, 0.1)
    # 100 steps of 1%: 0, about every 10%, and 100.
    assert 10 <= len(values) <= 12
    assert jnp.allclose(ys, jnp.exp(-1.0), rtol=1e-6)

    # A second run of the compiled solve gets a meter of its own.
    solve(jnp.ones(2))
    assert _check_text(capsys.readouterr().out, 0.1) == values


def test_text_default_increase(capsys):
    _solve(TextProgressMeter(), dt0=1e-3)
    values = _check_text(capsys.readouterr().out, 0.02)
    # 1000 steps, but about 1 / 0.02 callbacks.
    assert 50 <= len(values) <= 52


def test_text_under_vmap(capsys):
    # Lanes of different lengths: one meter, which reports the slowest lane.
    t1 = jnp.array([1.0, 2.0, 4.0])
    ys = jax.vmap(lambda t1: _solve(TextProgressMeter(0.2), t1=t1))(t1)
    values = _check_text(capsys.readouterr().out, 0.2)
    assert values.count(0.0) == 1
    assert 5 <= len(values) <= 7
    assert jnp.allclose(ys[:, 0, 0], jnp.exp(-t1), rtol=1e-5)


def test_text_under_jit_of_vmap(capsys):
    solve = jax.jit(jax.vmap(lambda y0: _solve(TextProgressMeter(0.25), y0=y0)))
    solve(jnp.ones((4, 2)))
    values = _check_text(capsys.readouterr().out, 0.25)
    assert len(values) <= 6


def test_text_under_jvp(capsys):
    def f(args):
        return _solve(TextProgressMeter(0.5), args=args)

    ys, tangents = jax.jvp(f, (1.0,), (1.0,))
    _check_text(capsys.readouterr().out, 0.5)
    assert jnp.allclose(tangents, -jnp.exp(-1.0), rtol=1e-5)


def test_text_float32(capsys):
    with jax.enable_x64(False):
        ys = _solve(TextProgressMeter(0.25))
    assert ys.dtype == jnp.float32
    _check_text(capsys.readouterr().out, 0.25)


def test_text_empty_interval(capsys):
    _solve(TextProgressMeter(), t1=0.0)
    assert _percentages(capsys.readouterr().out) == [0.0, 100.0]


def test_tqdm(capsys):
    _solve(TqdmProgressMeter(refresh_steps=10))
    err = capsys.readouterr().err
    assert "0.00%" in err
    assert err.rstrip().split("\r")[-1].lstrip().startswith("100.00%")


def test_tqdm_under_vmap(capsys):
    t1 = jnp.array([1.0, 3.0])
    jax.jit(jax.vmap(lambda t1: _solve(TqdmProgressMeter(refresh_steps=20), t1=t1)))(t1)
    err = capsys.readouterr().err
    assert err.rstrip().split("\r")[-1].lstrip().startswith("100.00%")


def test_tqdm_refreshes_every_refresh_steps(monkeypatch):
    progress = []
    monkeypatch.setattr(
        _progress, "_tqdm_update", lambda bar, value: progress.append(value)
    )
    # 100 steps: refreshed before steps 0, 30, 60 and 90 (then completed on close).
    _solve(TqdmProgressMeter(refresh_steps=30))
    assert progress == pytest.approx([0.01, 0.31, 0.61, 0.91])


def _diffrax_solve(lib, meter, num_steps):
    return lib.diffeqsolve(
        lib.ODETerm(lambda t, y, args: -y),
        lib.Euler(),
        0.0,
        1.0,
        1.0 / num_steps,
        jnp.array(1.0),
        progress_meter=meter,
    )


@pytest.mark.parametrize(
    "num_steps, minimum_increase", [(100, 0.1), (7, 0.02), (33, 0.25), (250, 0.0)]
)
def test_text_prints_the_lines_diffrax_prints(capsys, num_steps, minimum_increase):
    _diffrax_solve(jd, jd.TextProgressMeter(minimum_increase), num_steps)
    ours = capsys.readouterr().out
    _diffrax_solve(diffrax, diffrax.TextProgressMeter(minimum_increase), num_steps)
    theirs = capsys.readouterr().out
    assert ours == theirs


def _tqdm_percentages(err: str) -> list[str]:
    return [part.split("|")[0].strip() for part in err.split("\r") if "|" in part]


@pytest.mark.parametrize("num_steps, refresh_steps", [(100, 20), (41, 20), (7, 3)])
def test_tqdm_draws_what_diffrax_draws(capsys, num_steps, refresh_steps):
    """The same refreshes (before every `refresh_steps`-th step) and one final
    draw of the completed bar; the default `refresh_steps` is Diffrax's."""
    assert (
        jd.TqdmProgressMeter().refresh_steps
        == diffrax.TqdmProgressMeter().refresh_steps
    )
    _diffrax_solve(jd, jd.TqdmProgressMeter(refresh_steps), num_steps)
    ours = _tqdm_percentages(capsys.readouterr().err)
    _diffrax_solve(diffrax, diffrax.TqdmProgressMeter(refresh_steps), num_steps)
    theirs = _tqdm_percentages(capsys.readouterr().err)
    assert ours == theirs
    assert ours[-1] == "100.00%" and ours.count("100.00%") <= 2


def test_no_progress_meter(capsys):
    _solve(jd.NoProgressMeter())
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_minimum_increase(value):
    with pytest.raises(ValueError, match="minimum_increase"):
        TextProgressMeter(minimum_increase=value)


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_bad_refresh_steps(value):
    with pytest.raises(ValueError, match="refresh_steps"):
        TqdmProgressMeter(refresh_steps=value)
