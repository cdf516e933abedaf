"""What the loop's functions receive besides the loop state: `Env`, the arrays
that a differentiated loop must be given explicitly (see
`_while.checkpointed_loop`), and `Settings`, the static choices made once per
solve. Every function of the loop takes both as arguments rather than closing
over them, so data flows one way: `run` builds them, the parts read them."""

import dataclasses
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._progress import AbstractProgressMeter, NoProgressMeter
from .._saveat import SubSaveAt
from .state import Layout, layout


class Env(eqx.Module):
    """Everything the loop's functions read that may hold arrays being
    differentiated."""

    terms: Any
    solver: Any
    controller: Any
    subs: list[SubSaveAt]
    args: Any
    t0: Array
    t1: Array
    t1_floor: Array  # steps ending after this are stretched to t1
    direction: Array


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static settings of one solve (no arrays: Python values and classes)."""

    layouts: tuple[Layout, ...]
    max_steps: int | None
    time_dtype: Any
    error_order: Any
    can_jump: bool
    interpolation_cls: Any
    dense: bool
    record_times: bool
    record_every: int | None
    progress_meter: AbstractProgressMeter
    any_ts: bool  # some SubSaveAt has `ts`
    ts_widths: tuple[int, ...]  # per SubSaveAt: most `ts` rows written per visit
    # per SubSaveAt: the width of a visit that finds more due rows than
    # `ts_widths` (0: none; see `wide_ts_width`)
    ts_wide_widths: tuple[int, ...]
    # Per SubSaveAt: whether the nested (forward) loop writes the `ts` outputs of
    # a step one row at a time in a `lax.while_loop` (see `loop_writes`); empty
    # in the differentiated loops (`drive._reverse_mode`), which need the widths.
    ts_loops: tuple[bool, ...] = ()
    # Carry leaves this large are updated by a `cond` (`select.tree_where`); set
    # for the body of a reverse-mode loop (`drive._reverse_mode`).
    cond_size: int | None = None
    # Whether Runge–Kutta steps may fold `y0` into the stage buffer (off in the
    # body of a reverse-mode loop, see `runge_kutta.unfolded`).
    fold_stages: bool = True
    # Whether the steps are differentiated in reverse mode alone (the body of
    # the checkpointed loop, see `runge_kutta.reverse_only`).
    reverse_only: bool = False
    # The int32s each step attempt records in `State.tape` (0: no tape; see
    # `AbstractSolver.tape_width`): set for the checkpointed loop, whose
    # backward pass recomputes steps.
    tape_width: int = 0
    # Whether a step attempt reads its row of the tape (not in the forward pass
    # of the checkpointed loop, where it holds nothing yet: a read before the
    # row's write made XLA copy the whole tape at every step).
    tape_read: bool = True

    @property
    def record(self) -> bool:
        return self.record_times or self.record_every is not None

    @property
    def writes_every_step(self) -> bool:
        """Some output is written after every accepted step."""
        return self.dense or self.record or any(lay.steps for lay in self.layouts)

    @property
    def needs_dense_info(self) -> bool:
        """Something interpolates inside a step (dense output, `SaveAt(ts)`)."""
        return self.dense or self.any_ts

    @property
    def use_progress(self) -> bool:
        return not isinstance(self.progress_meter, NoProgressMeter)

    def as_time(self, t):
        return jnp.asarray(t, self.time_dtype)


# `SaveAt(ts)` outputs are written up to `width` at a time: the step's
# interpolant is evaluated at the next `width` output times at once (masked where
# they lie beyond the step), so a step holding several outputs costs one visit of
# the output writes, not one per output. Every visit pays for `width`
# evaluations, due or not (and under `vmap`, for every lane), so the width
# follows the expected number of outputs per step: a power of two from 1 to
# `_TS_WIDTH_MAX`, about four times the outputs per step of `dt0`-long steps
# when `dt0` and the interval are known (`diffeqsolve` passes that class). Where
# they are traced (a neural ODE trained under `jit`, say), `_TS_WIDTH_UNKNOWN`,
# or more for very many outputs (as if there were about 256 steps): a revisit
# costs a whole step in a differentiated loop, where a too wide visit costs a
# few interpolations. It is bounded by the state size too: `width * state size`
# at most `_TS_WIDTH_BUDGET` elements (a large state's outputs one at a time).
# The cap of 1024 (it was 64) is for very dense outputs: Lorenz with 10^5 saved
# times (about 300 per step) went from 0.87x Diffrax's forward time to 0.47x,
# and its gradient from 3.6x to 0.81x (under `vmap` over 16 states, 2.9x to
# 0.60x): each visit costs a few kernels whatever its width, so fewer visits win.
_TS_WIDTH_MAX = 1024
_TS_WIDTH_BUDGET = 4096
_ASSUMED_STEPS = 256
_TS_WIDTH_UNKNOWN = 32


# The forward loop may write a step's `SaveAt(ts)` outputs in a `lax.while_loop`,
# one row per iteration (`outputs._loop_due_ts`). XLA's CPU backend compiles a
# while loop that touches few bytes per iteration into one kernel, so all the
# outputs of a step cost about one kernel, where a visit of the vectorised writes
# costs about thirteen: Lorenz forward with 1,000 saved times went from 0.87x
# Diffrax's time to 0.57x (10,000 times: 0.76x to 0.53x). For states of a few
# elements that holds at any number of outputs per step. Up to 32 elements it
# wins where a step holds a few outputs (100 or 1,000 saved times, 136 steps:
# 0.60x -> 0.52x and 0.54x -> 0.45x at 8 elements, 0.53x -> 0.51x and 0.63x ->
# 0.47x at 32), but where it holds dozens the vectorised writes are faster
# (10,000 times: 1.8 ms against 2.3 ms at 8 elements, 4.6 ms against 6.9 ms at
# 32), so it is kept to widths of at most 16 there. Larger states keep the
# vectorised writes.
_TS_LOOP_ANY_WIDTH_STATE_SIZE = 4
_TS_LOOP_STATE_SIZE = 32
_TS_LOOP_MAX_WIDTH = 16


def loop_writes(state_size: int, width: int) -> bool:
    """Whether the forward loop writes a `SubSaveAt`'s `ts` rows one at a time."""
    if state_size <= _TS_LOOP_ANY_WIDTH_STATE_SIZE:
        return True
    return state_size <= _TS_LOOP_STATE_SIZE and width <= _TS_LOOP_MAX_WIDTH


def width_class(ts_density: float | None) -> int | None:
    """The width for about `ts_density` outputs per step (`None` if unknown):
    few distinct values, so that new times rarely recompile."""
    if ts_density is None:
        return None
    return _power_of_two(4 * ts_density)


def _power_of_two(x: float) -> int:
    width = 1
    while width < x and width < _TS_WIDTH_MAX:
        width *= 2
    return width


def ts_width(num_ts: int, state_size: int, hint: int | None = None) -> int:
    """How many `ts` rows one visit of the output writes may fill."""
    if hint is None:
        hint = max(_TS_WIDTH_UNKNOWN, _power_of_two(num_ts / _ASSUMED_STEPS))
    budget = max(1, _TS_WIDTH_BUDGET // max(state_size, 1))
    return max(1, min(num_ts, hint, budget))


def wide_ts_width(num_ts: int, state_size: int, hint: int | None, width: int) -> int:
    """The width of the wide visit, 0 if none. Where the outputs per step are
    unknown (`hint is None`: traced times, say a neural ODE under `jit`), a
    visit that finds more due rows than `width` writes up to this many in one
    go (a `lax.cond` between the two widths) instead of leaving the rest to
    further visits, each of which costs a whole step in a differentiated loop:
    a small neural ODE (4 steps, 1,000 saved times, `vmap` over 32) took 33
    iterations instead of 5, and its gradient 2.2x Diffrax's time instead of
    0.63x. Where the density is known the width already fits it, and the
    second branch would only add compile time."""
    if hint is not None:
        return 0
    budget = max(1, _TS_WIDTH_BUDGET // max(state_size, 1))
    wide = max(1, min(num_ts, budget, _TS_WIDTH_MAX))
    return wide if wide > width else 0


def settings(
    *,
    solver,
    terms,
    controller,
    subs,
    dense,
    t0,
    max_steps,
    progress_meter,
    record_times,
    record_every,
    state_size: int,
    ts_width_hint: int | None = None,
) -> Settings:
    widths = tuple(
        0
        if sub.ts is None
        else ts_width(int(sub.ts.shape[0]), state_size, ts_width_hint)
        for sub in subs
    )
    return Settings(
        layouts=tuple(layout(sub, max_steps) for sub in subs),
        max_steps=max_steps,
        time_dtype=jnp.result_type(t0),
        error_order=solver.error_order(terms),
        can_jump=controller.can_jump(),
        interpolation_cls=solver.interpolation_cls,
        dense=dense,
        record_times=record_times,
        record_every=record_every,
        progress_meter=progress_meter,
        any_ts=any(sub.ts is not None for sub in subs),
        ts_widths=widths,
        ts_loops=tuple(loop_writes(state_size, w) for w in widths),
        ts_wide_widths=tuple(
            0
            if sub.ts is None
            else wide_ts_width(int(sub.ts.shape[0]), state_size, ts_width_hint, w)
            for sub, w in zip(subs, widths)
        ),
    )
