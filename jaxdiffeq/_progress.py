"""Progress meters: report how far a solve has got, from inside compiled code.

The meters work by host callbacks (`jax.experimental.io_callback`), so they work
under `jit` and `vmap`. Under `vmap` there is one meter for the whole batch, which
reports the progress of the slowest lane: the meter's state and the callbacks'
arguments are reduced across the batch (`min_lane`), so no callback is ever
batched and the decision to call one is never a batched `cond` (which `vmap`
would turn into a `select` that runs the callback on every step).
"""

import abc
import threading
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jaxtyping import Array, Float, Int

from ._custom_types import FloatScalarLike, RealScalarLike
from ._misc import min_lane


class AbstractProgressMeter(eqx.Module):
    """Reports the progress of a solve.

    The contract: `init() -> state`; `step(state, progress) -> state` is called
    after every step with `progress` in `[0, 1]` (the fraction of `[t0, t1]`
    covered); `close(state)` once at the end. Implementations use host callbacks,
    so they work under `jit` and `vmap`.
    """

    @abc.abstractmethod
    def init(self) -> Any:
        """The initial state."""

    @abc.abstractmethod
    def step(self, state: Any, progress: FloatScalarLike) -> Any:
        """Report `progress`; return the new state."""

    @abc.abstractmethod
    def close(self, state: Any) -> None:
        """Finish reporting."""


class NoProgressMeter(AbstractProgressMeter):
    """Reports nothing (the default; costs nothing)."""

    def init(self) -> None:
        return None

    def step(self, state: None, progress: FloatScalarLike) -> None:
        del progress
        return state

    def close(self, state: None) -> None:
        del state


# Host side. A compiled solve cannot hold Python objects, so each running meter
# lives in this registry under an integer id. The id is made by a callback when the
# solve starts (so every run of a compiled solve gets a meter of its own) and is
# carried in the meter's state.


class _Registry:
    """The host-side meters of the solves that are running, by id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last_id = 0
        self._meters: dict[int, Any] = {}

    def open(self, make_meter: Callable[[], Any]) -> np.ndarray:
        with self._lock:
            self._last_id += 1
            meter_id = self._last_id
            self._meters[meter_id] = make_meter()
        return np.asarray(meter_id, dtype=np.int32)

    def get(self, meter_id: int) -> Any:
        with self._lock:
            return self._meters.get(meter_id)

    def pop(self, meter_id: int) -> Any:
        with self._lock:
            return self._meters.pop(meter_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._meters)


_registry = _Registry()


def _host_ids(meter_id) -> list[int]:
    # The callbacks receive unbatched values (see `_unbatch`); accept batched ones
    # anyway, in case a caller's loop batches the meter's state.
    return [int(i) for i in np.unique(np.asarray(meter_id))]


def _host_progress(progress) -> float | None:
    progress = np.asarray(progress, dtype=np.float64)
    progress = progress[np.isfinite(progress)]
    if progress.size == 0:
        return None
    return float(np.clip(np.min(progress), 0.0, 1.0))


def _unbatch(x) -> Array:
    """`x` without gradient, reduced with `min` across any enclosing `vmap`."""
    return min_lane(lax.stop_gradient(jnp.asarray(x)))


def _open(make_meter: Callable[[], Any]) -> Int[Array, ""]:
    # `io_callback`, not `pure_callback`: the result is not a function of the
    # inputs, and the call must be neither removed nor deduplicated.
    return io_callback(
        lambda: _registry.open(make_meter), jax.ShapeDtypeStruct((), jnp.int32)
    )


def _update(update: Callable[[Any, float], None], meter_id, progress) -> None:
    """Call `update(meter, progress)` on the host.

    A debug callback, not `io_callback`: `vmap` refuses IO effects inside a `cond`,
    even one whose predicate is not batched. It needs no ordering token: the
    callbacks of a loop run in the order of its iterations, and `_close` takes the
    loop's final state, so it runs after them.
    """

    def callback(meter_id, progress):
        value = _host_progress(progress)
        for i in _host_ids(meter_id):
            meter = _registry.get(i)
            # No meter: it was closed already, e.g. the solve is being re-run by a
            # transformation after it finished. There is nothing to report.
            if meter is not None and value is not None:
                update(meter, value)

    jax.debug.callback(callback, meter_id, progress)


def _close(finish: Callable[[Any], None], meter_id, after) -> None:
    """Call `finish(meter)` on the host and forget the meter.

    `after` must be state that the step loop changes: the callback takes it as an
    argument so that it runs after the loop. (`meter_id` alone is not enough: it
    passes through the loop unchanged, so the callback could run before it.)
    """

    def callback(meter_id, after):
        del after
        for i in _host_ids(meter_id):
            meter = _registry.pop(i)
            if meter is not None:
                finish(meter)

    io_callback(callback, None, meter_id, after)


class _TextBar:
    """Host side of `TextProgressMeter`: prints one line per report."""

    def __init__(self):
        self.last = 0.0
        print("0.00%", flush=True)

    def print_line(self, progress: float) -> None:
        self.last = progress
        print(f"{100 * progress:.2f}%", flush=True)

    def finish(self) -> None:
        if self.last != 1:
            print("100.00%", flush=True)


class _TextState(eqx.Module):
    meter_id: Int[Array, ""]
    printed: Float[Array, ""]  # the progress last printed


class TextProgressMeter(AbstractProgressMeter):
    """A progress meter that prints the percentage done, one line at a time.

    It prints `0.00%` when the solve starts, a new line after each step that
    leaves the progress more than `minimum_increase` beyond the last line printed
    (or that reaches the end), and `100.00%` when the solve ends unless that line
    was the last one, to standard output (the lines Diffrax prints):

    ```
    0.00%
    2.13%
    4.20%
    ...
    100.00%
    ```

    Lines are printed by host callbacks from inside the compiled solve. The
    decision to print is made on the device, so the callback runs at most about
    `1 / minimum_increase` times whatever the number of steps. Under `jax.vmap` one
    meter reports for the whole batch: the progress of its slowest lane. The final
    line is printed when the solve ends, whether or not it succeeded.

    **Arguments:**

    - `minimum_increase`: the growth of the progress (a fraction in `[0, 1]`)
      that must be exceeded between two printed lines; `0.02` (the default)
      prints about every 2%.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    sol = jd.diffeqsolve(jd.ODETerm(lambda t, y, args: -y), jd.Tsit5(), 0.0, 1.0,
                         0.01, jnp.array(1.0),
                         progress_meter=jd.TextProgressMeter(minimum_increase=0.25))
    ```

    For an interactive terminal, `TqdmProgressMeter` draws a bar instead. Don't use a
    meter inside a loop that runs many short solves: each solve prints at least two
    lines.
    """

    minimum_increase: RealScalarLike = 0.02

    def __check_init__(self):
        value = self.minimum_increase
        if isinstance(value, (int, float)) and not 0 <= value <= 1:
            raise ValueError(
                "`TextProgressMeter(minimum_increase=...)` is a fraction of the "
                f"solve and must lie in [0, 1]; got {value!r}."
            )

    def init(self) -> _TextState:
        return _TextState(meter_id=_open(_TextBar), printed=jnp.asarray(0.0))

    def step(self, state: _TextState, progress: FloatScalarLike) -> _TextState:
        meter_id = _unbatch(state.meter_id)
        printed = _unbatch(state.printed)
        progress = _unbatch(progress).astype(printed.dtype)
        grown = (progress - printed > self.minimum_increase) | (
            (progress == 1) & (printed != 1)
        )

        def report():
            _update(_TextBar.print_line, meter_id, progress)
            return progress

        printed = lax.cond(grown, report, lambda: printed)
        return _TextState(meter_id=meter_id, printed=printed)

    def close(self, state: _TextState) -> None:
        _close(_TextBar.finish, _unbatch(state.meter_id), _unbatch(state.printed))


def _make_tqdm_bar():
    import tqdm  # imported on first use: a bar may never be drawn

    return tqdm.tqdm(
        total=100,
        unit="%",
        bar_format="{percentage:.2f}%|{bar}| [{elapsed}<{remaining}, "
        "{rate_fmt}{postfix}]",
    )


def _tqdm_update(bar, progress: float) -> None:
    bar.n = round(100 * progress, 2)
    bar.refresh()


def _tqdm_finish(bar) -> None:
    # `close` draws the completed bar once (a refresh before it drew it twice).
    bar.n = 100
    bar.close()


class _TqdmState(eqx.Module):
    meter_id: Int[Array, ""]
    num_steps: Int[Array, ""]  # steps seen so far


class TqdmProgressMeter(AbstractProgressMeter):
    """A progress meter that draws a `tqdm` bar (on standard error).

    The bar is refreshed by a host callback before every `refresh_steps`-th step
    (counting rejected steps too), and completed when the solve ends (whether or
    not it succeeded): the same draws as Diffrax's meter. Under `jax.vmap` one bar
    reports for the whole batch: the progress of its slowest lane.

    Cost: a refresh takes about 0.1–0.2 ms on a CPU (a host callback, about
    60 µs, and tqdm's drawing), the time of hundreds of steps of a small ODE, so
    for fast solves raise `refresh_steps`.

    **Arguments:**

    - `refresh_steps`: the number of steps between refreshes of the bar (default
      20, as in Diffrax).

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    sol = jd.diffeqsolve(jd.ODETerm(lambda t, y, args: -y), jd.Tsit5(), 0.0, 1.0,
                         0.001, jnp.array(1.0),
                         progress_meter=jd.TqdmProgressMeter(refresh_steps=100))
    ```

    In logs, or where a bar is not drawn well, use `TextProgressMeter`.
    """

    refresh_steps: int = eqx.field(default=20, static=True)

    def __check_init__(self):
        value = self.refresh_steps
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                "`TqdmProgressMeter(refresh_steps=...)` must be a positive int; got "
                f"{value!r}."
            )

    def init(self) -> _TqdmState:
        return _TqdmState(
            meter_id=_open(_make_tqdm_bar), num_steps=jnp.asarray(0, jnp.int32)
        )

    def step(self, state: _TqdmState, progress: FloatScalarLike) -> _TqdmState:
        meter_id = _unbatch(state.meter_id)
        num_steps = _unbatch(state.num_steps)
        progress = _unbatch(progress)

        def draw():
            _update(_tqdm_update, meter_id, progress)
            return num_steps

        lax.cond(num_steps % self.refresh_steps == 0, draw, lambda: num_steps)
        return _TqdmState(meter_id=meter_id, num_steps=num_steps + 1)

    def close(self, state: _TqdmState) -> None:
        _close(_tqdm_finish, _unbatch(state.meter_id), _unbatch(state.num_steps))
