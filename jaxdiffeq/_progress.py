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

from ._custom_types import RealScalarLike
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
    def step(self, state: Any, progress: Float[Array, ""]) -> Any:
        """Report `progress`; return the new state."""

    @abc.abstractmethod
    def close(self, state: Any) -> None:
        """Finish reporting."""


class NoProgressMeter(AbstractProgressMeter):
    """Reports nothing (the default; costs nothing)."""

    def init(self):
        return None

    def step(self, state, progress):
        del progress
        return state

    def close(self, state):
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
        self.last_line = ""
        self.print_line(0.0)

    def print_line(self, progress: float) -> None:
        line = f"{100 * progress:.2f}%"
        if line != self.last_line:
            print(line, flush=True)
            self.last_line = line

    def finish(self) -> None:
        self.print_line(1.0)


class _TextState(eqx.Module):
    meter_id: Int[Array, ""]
    printed: Float[Array, ""]  # the progress last printed


class TextProgressMeter(AbstractProgressMeter):
    """A progress meter that prints the percentage done, one line at a time.

    It prints `0.00%` when the solve starts, a new line each time the progress has
    grown by at least `minimum_increase` since the last line, and `100.00%` when the
    solve ends, to standard output:

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

    - `minimum_increase`: the least growth of the progress (a fraction in
      `[0, 1]`) between two printed lines; `0.02` (the default) prints about every
      2%.

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

    def step(self, state: _TextState, progress: Float[Array, ""]) -> _TextState:
        meter_id = _unbatch(state.meter_id)
        printed = _unbatch(state.printed)
        progress = _unbatch(progress).astype(printed.dtype)
        grown = (progress > printed) & (progress - printed >= self.minimum_increase)

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
        bar_format="{percentage:6.2f}%|{bar}| [{elapsed}<{remaining}]",
    )


def _tqdm_update(bar, progress: float) -> None:
    bar.n = round(100 * progress, 2)
    bar.refresh()


def _tqdm_finish(bar) -> None:
    bar.n = 100
    bar.refresh()
    bar.close()


class _TqdmState(eqx.Module):
    meter_id: Int[Array, ""]
    num_steps: Int[Array, ""]  # steps seen so far
    shown: Float[Array, ""]  # the progress last drawn


# The bar is not redrawn for less progress than this, so that a solve of any length
# makes at most about a thousand callbacks.
_TQDM_RESOLUTION = 1e-3


class TqdmProgressMeter(AbstractProgressMeter):
    """A progress meter that draws a `tqdm` bar (on standard error).

    The bar is refreshed by a host callback every `refresh_steps` steps (counting
    rejected steps too) if it has moved by at least 0.1% since it was last drawn,
    and completed when the solve ends (whether or not it succeeded). Under
    `jax.vmap` one bar reports for the whole batch: the progress of its slowest
    lane.

    Cost: a refresh takes about 0.1–0.2 ms on a CPU (a host callback, about
    60 µs, and tqdm's drawing), the time of hundreds of steps of a small ODE. So a
    solve makes at most about `min(num_steps / refresh_steps, 1000)` of them.

    **Arguments:**

    - `refresh_steps`: the number of steps between refreshes of the bar (default
      200). Lower it only for solves whose steps are expensive.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    sol = jd.diffeqsolve(jd.ODETerm(lambda t, y, args: -y), jd.Tsit5(), 0.0, 1.0,
                         0.001, jnp.array(1.0),
                         progress_meter=jd.TqdmProgressMeter(refresh_steps=100))
    ```

    Diffrax's default is `refresh_steps=20`; ours refreshes less often, to keep
    the cost of the meter small for fast solves. In logs, or where a bar is not
    drawn well, use `TextProgressMeter`.
    """

    refresh_steps: int = eqx.field(default=200, static=True)

    def __check_init__(self):
        value = self.refresh_steps
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                "`TqdmProgressMeter(refresh_steps=...)` must be a positive int; got "
                f"{value!r}."
            )

    def init(self) -> _TqdmState:
        return _TqdmState(
            meter_id=_open(_make_tqdm_bar),
            num_steps=jnp.asarray(0, jnp.int32),
            shown=jnp.asarray(0.0),
        )

    def step(self, state: _TqdmState, progress: Float[Array, ""]) -> _TqdmState:
        meter_id = _unbatch(state.meter_id)
        num_steps = _unbatch(state.num_steps)
        shown = _unbatch(state.shown)
        progress = _unbatch(progress).astype(shown.dtype)
        refresh = (num_steps % self.refresh_steps == 0) & (
            progress - shown >= _TQDM_RESOLUTION
        )

        def draw():
            _update(_tqdm_update, meter_id, progress)
            return progress

        shown = lax.cond(refresh, draw, lambda: shown)
        return _TqdmState(meter_id=meter_id, num_steps=num_steps + 1, shown=shown)

    def close(self, state: _TqdmState) -> None:
        _close(_tqdm_finish, _unbatch(state.meter_id), _unbatch(state.num_steps))
