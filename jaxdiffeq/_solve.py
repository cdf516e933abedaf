"""`diffeqsolve`: validate and normalise the inputs, run the step loop, package the
`Solution`."""

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import ArrayLike, PyTree

from . import _loop
from ._adjoint.base import AbstractAdjoint
from ._adjoint.recursive import RecursiveCheckpointAdjoint
from ._controller.base import AbstractStepSizeController
from ._controller.constant import ConstantStepSize
from ._custom_types import Args, BoolScalarLike, RealScalarLike
from ._errors import InvalidValueError
from ._interpolation import DenseInterpolation
from ._misc import widest_dtype
from ._output_order import in_diffrax_order
from ._progress import AbstractProgressMeter, NoProgressMeter
from ._results import RESULTS
from ._root_finder import resolve_root_finders
from ._saveat import SaveAt, SubSaveAt
from ._solution import Solution
from ._solver.base import AbstractSolver
from ._term import AbstractTerm, MultiTerm, ODETerm, _direct_terms


def _as_array(x):
    """Python numbers as arrays (`None` and arrays as they are)."""
    return jnp.asarray(x) if isinstance(x, (int, float)) else x


def _as_numpy(x):
    """A known value as a NumPy array (`None` as it is)."""
    return None if x is None else np.asarray(x)


def _is_concrete(x) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jtu.tree_leaves(x))


def _time_checks(t0, t1, dt0, xp=jnp):
    """(failure predicate, message) for the values of `t0`, `t1`, `dt0`, computed
    with the array module `xp`: `jax.numpy` for traced values, NumPy for known
    ones (eager JAX operations would each compile a small program, which in a
    fresh process costs more than the whole solve's tracing)."""
    checks = [(~xp.isfinite(t0) | ~xp.isfinite(t1), "`t0` and `t1` must be finite.")]
    if dt0 is not None:
        checks += [
            (
                (dt0 == 0) | xp.isnan(dt0),
                "`dt0` must be a non-zero number (got zero or NaN).",
            ),
            (
                (t0 != t1) & (dt0 * (t1 - t0) < 0),
                "`dt0` points away from `t1`: its sign must be that of `t1 - t0`.",
            ),
        ]
    return checks


def _ts_checks(ts, t0, t1, xp=jnp):
    """(failure predicate, message) for the values of one `SaveAt(ts)` (`xp` as
    in `_time_checks`)."""
    if ts.shape[0] == 0:
        return []
    sign = xp.where(t0 <= t1, 1, -1)
    return [
        (
            xp.any(xp.diff(ts) * sign < 0),
            "`SaveAt(ts=...)` must be sorted in the direction of integration.",
        ),
        (
            xp.any(((ts - t0) * sign < 0) | ((t1 - ts) * sign < 0)),
            "`SaveAt(ts=...)` must lie inside [t0, t1].",
        ),
    ]


def _ts_density(t0, t1, dt0, ts_list) -> float | None:
    """About how many `SaveAt(ts)` outputs a step holds, as if every step were
    `dt0` long, from the values that are known: `dt0`, and the interval
    `[t0, t1]` or else the span of the output times. `None` where unknown."""
    if dt0 is None or not ts_list or not _is_concrete(dt0):
        return None
    if _is_concrete((t0, t1)):
        span = abs(float(np.asarray(t1)) - float(np.asarray(t0)))
    elif _is_concrete(ts_list):
        span = max(float(np.ptp(np.asarray(ts))) for ts in ts_list)  # never empty
    else:
        return None
    dt = abs(float(np.asarray(dt0)))
    if not (np.isfinite(span) and np.isfinite(dt)) or dt == 0:
        return None
    return max(int(ts.shape[0]) for ts in ts_list) / max(1.0, span / dt)


def _raise_now(checks):
    """The checks of concrete values: raise for the first failure (an error that
    is both a `ValueError` and, as Diffrax's runtime checks raise, an
    `equinox.EquinoxRuntimeError`)."""
    for pred, message in checks:
        if bool(pred):
            raise InvalidValueError(message)


def _raise_at_runtime(checks, attach):
    """The checks of traced values: attached to `attach` as runtime errors."""
    for pred, message in checks:
        attach = eqx.error_if(attach, pred, message)
    return attach


def _is_term(x):
    return isinstance(x, AbstractTerm)


def _check_terms(terms, solver):
    structure = solver.term_structure
    if callable(terms) and not isinstance(terms, AbstractTerm):
        raise TypeError(
            "`terms` must be a term such as `ODETerm(vector_field)`, not a bare "
            f"function; got {terms!r}."
        )

    def matches(spec, term):
        if isinstance(spec, type):
            return isinstance(term, spec)
        return False

    if isinstance(structure, type):
        ok = isinstance(terms, structure)
    else:
        try:
            ok = all(
                jtu.tree_leaves(
                    jtu.tree_map(matches, structure, terms, is_leaf=_is_term)
                )
            )
        except ValueError:
            ok = False
    if not ok:
        name = getattr(structure, "__name__", repr(structure))
        raise TypeError(
            f"`{type(solver).__name__}` expects terms of type `{name}` (e.g. "
            f"`ODETerm(f)`, or `MultiTerm(...)` for a sum of terms); got "
            f"{type(terms).__name__}: {terms!r}."
        )


def _normalise_y0(y0, time_dtype):
    """`y0` as arrays. Floating-point and complex arrays keep their dtype (a
    float32 state stays float32 beside float64 times). Integers, booleans,
    Python numbers and weakly typed arrays are promoted with the time dtype by
    JAX's standard rules, as Diffrax does (`diffeqsolve(..., 0, 1, 0.1, 1)`
    solves in floating point)."""

    def fix(path, leaf):
        where = f"y0{jtu.keystr(path)}"
        if isinstance(leaf, (bool, int, float, complex, np.bool_)):
            leaf = jnp.asarray(leaf)
        elif not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            raise TypeError(
                f"{where} has type {type(leaf).__name__}; every leaf of `y0` must be a "
                "number or an array of numbers."
            )
        dtype = leaf.dtype
        if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
            raise TypeError(
                f"{where} has dtype {dtype}; every leaf of `y0` must hold numbers."
            )
        if jnp.issubdtype(dtype, jnp.inexact) and not getattr(leaf, "weak_type", False):
            return jnp.asarray(leaf)
        return jnp.asarray(leaf, widest_dtype(leaf, time_dtype))

    return jtu.tree_map_with_path(fix, y0)


def _compare_with_state(out, y0, what: str):
    y_structure = jtu.tree_structure(y0)
    out_structure = jtu.tree_structure(out)
    if y_structure != out_structure:
        raise ValueError(
            f"{what} returns a PyTree of a different structure than `y0`:\n"
            f"  y0:  {y_structure}\n  {what}: {out_structure}"
        )
    for (path, y), o in zip(jtu.tree_flatten_with_path(y0)[0], jtu.tree_leaves(out)):
        where = f"y0{jtu.keystr(path)}"
        if o.shape != y.shape:
            raise ValueError(
                f"{what}'s output for {where} has shape {o.shape}, but the state has "
                f"shape {y.shape}."
            )
        # Weakly typed outputs (Python numbers) take the state's dtype.
        if o.dtype != y.dtype and not getattr(o, "weak_type", False):
            raise ValueError(
                f"{what}'s output for {where} has dtype {o.dtype}, but the state has "
                f"dtype {y.dtype}; make them agree (e.g. cast `y0`, or the arrays in "
                "`args`)."
            )


def _check_vector_field(terms, t0, y0, args):
    """Trace the vector field once (no computation) and compare its output with
    `y0`: the raw output of every `ODETerm`, and the product with the control of
    the whole term."""

    def leaf_terms(term):
        if isinstance(term, MultiTerm):
            return [t for sub in term.terms for t in leaf_terms(sub)]
        return [term]

    if not isinstance(terms, AbstractTerm):
        # A structure of terms (e.g. the pair of `SemiImplicitEuler`): the solver
        # decides which part of the state each term sees and produces.
        return
    for leaf in leaf_terms(terms):
        if isinstance(leaf, ODETerm):
            out = jax.eval_shape(leaf.vf, t0, y0, args)
            _compare_with_state(out, y0, "The vector field")
    if not isinstance(terms, ODETerm):
        out = jax.eval_shape(
            lambda: terms.prod(terms.vf(t0, y0, args), terms.contr(t0, t0))
        )
        _compare_with_state(out, y0, "The term")


def _time_dtype(t0, t1, dt0, subs):
    timelikes = [t0, t1] + ([] if dt0 is None else [dt0])
    for sub in subs:
        if sub.ts is not None:
            timelikes.append(sub.ts)
    # Standard promotion, whatever the configured mode: a float32 `t0` with a
    # Python-number `t1` and float64 `ts` is a float64 solve, as in Diffrax.
    dtype = widest_dtype(*timelikes)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            "`t0`, `t1`, `dt0` and `SaveAt(ts)` must be real; got complex times."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _known_direction(t0, t1) -> float | None:
    """The direction of integration, `1.0` or `-1.0`, where `t0` and `t1` are
    known while tracing; `None` where either is traced. (A static argument of
    `_solve`: two values at most, where static times would recompile for
    every new value.)"""
    if not _is_concrete((t0, t1)):
        return None
    return 1.0 if np.asarray(t0) <= np.asarray(t1) else -1.0


def _times(t0, t1, dt0, subs, check_times: bool, check_ts: bool):
    """`t0`, `t1`, `dt0` as arrays of the time dtype, and the direction of
    integration; the checks `diffeqsolve` could not do eagerly (their inputs
    were traced) are attached to `t0`."""
    time_dtype = _time_dtype(t0, t1, dt0, subs)
    t0 = jnp.asarray(t0, time_dtype)
    t1 = jnp.asarray(t1, time_dtype)
    if dt0 is not None:
        dt0 = jnp.asarray(dt0, time_dtype)
    direction = jnp.where(t0 <= t1, 1, -1).astype(time_dtype)
    if check_times:
        t0 = _raise_at_runtime(_time_checks(t0, t1, dt0), t0)
    if check_ts:
        for sub in subs:
            if sub.ts is not None:
                ts = jnp.asarray(sub.ts, time_dtype)
                t0 = _raise_at_runtime(_ts_checks(ts, t0, t1), t0)
    return t0, t1, dt0, direction


def _forward_subs(subs, direction):
    """The `SubSaveAt`s with their `ts` on the forward axis `tau = direction * t`."""
    subs_fwd = []
    for sub in subs:
        if sub.ts is not None:
            ts = jnp.asarray(sub.ts, direction.dtype) * direction
            sub = eqx.tree_at(lambda s: s.ts, sub, ts)
        subs_fwd.append(sub)
    return subs_fwd


def _outputs(saveat: SaveAt, subs, subs_treedef, final, max_steps, direction):
    """`Solution.ts` and `Solution.ys`, rows in Diffrax's order."""
    if saveat.subs is None:
        return None, None
    outputs = [
        in_diffrax_order(sub, max_steps, s.ts, s.ys, direction)
        for sub, s in zip(subs, final.save_states)
    ]
    ts = jtu.tree_unflatten(subs_treedef, [out[0] for out in outputs])
    ys = jtu.tree_unflatten(subs_treedef, [out[1] for out in outputs])
    return ts, ys


def _solution(
    saveat, subs, subs_treedef, final, *, t0, t1, direction, solver, max_steps, throw
):
    """The `Solution` of a finished loop (raising on failure if `throw`)."""
    result = RESULTS(final.step.result)
    ts, ys = _outputs(saveat, subs, subs_treedef, final, max_steps, direction)
    if saveat.dense:
        assert final.dense_ts is not None
        interpolation = DenseInterpolation(
            t0=t0,
            t1=t1,
            ts=final.dense_ts,
            ts_size=final.step.num_accepted_steps + 1,
            infos=final.dense_infos,
            interpolation_cls=solver.interpolation_cls,
            direction=direction,
        )
    else:
        interpolation = None
    stats = dict(
        num_steps=final.step.num_steps,
        num_accepted_steps=final.step.num_accepted_steps,
        num_rejected_steps=final.step.num_rejected_steps,
        max_steps=max_steps,
    )
    stats.update(solver.stats(final.step.solver_state))
    if throw:
        ts, ys, interpolation, stats = result.raise_if_failed(
            (ts, ys, interpolation, stats)
        )
    step = final.step
    return Solution(
        t0=t0,
        t1=t1,
        ts=ts,
        ys=ys,
        interpolation=interpolation,
        stats=stats,
        result=result,
        solver_state=step.solver_state if saveat.solver_state else None,
        controller_state=step.controller_state if saveat.controller_state else None,
        made_jump=step.made_jump if saveat.made_jump else None,
    )


@eqx.filter_jit
def _solve(
    terms,
    solver,
    t0,
    t1,
    dt0,
    y0,
    args,
    saveat: SaveAt,
    stepsize_controller: AbstractStepSizeController,
    max_steps,
    throw,
    progress_meter,
    solver_state,
    controller_state,
    made_jump,
    check_times: bool,
    check_ts: bool,
    adjoint: AbstractAdjoint,
    ts_width: int | None,
    known_direction: float | None,
):
    subs, subs_treedef = jtu.tree_flatten(
        saveat.subs, is_leaf=lambda x: isinstance(x, SubSaveAt)
    )
    t0, t1, dt0, direction = _times(t0, t1, dt0, subs, check_times, check_ts)
    terms = adjoint.prepare_terms(terms, t0, y0, args)

    # Everything below runs on the forward axis tau = direction * t.
    tau0 = t0 * direction
    tau1 = t1 * direction
    terms_fwd = _direct_terms(
        terms, direction if known_direction is None else known_direction
    )
    controller = stepsize_controller.wrap(direction)
    error_order = solver.error_order(terms_fwd)
    dt0_fwd = None if dt0 is None else dt0 * direction
    tnext, new_controller_state = controller.init(
        terms_fwd, tau0, tau1, y0, dt0_fwd, args, solver.func, error_order
    )
    if controller_state is None:
        controller_state = new_controller_state
    tnext = jnp.minimum(jnp.asarray(tnext, t0.dtype), tau1)
    if solver_state is None:
        solver_state = solver.init(terms_fwd, tau0, tnext, y0, args)
    if made_jump is None:
        made_jump = jnp.asarray(False)

    final = adjoint.loop(
        _loop.run,
        terms=terms_fwd,
        solver=solver,
        controller=controller,
        subs=_forward_subs(subs, direction),
        dense=saveat.dense,
        t0=tau0,
        t1=tau1,
        tnext=tnext,
        y0=y0,
        args=args,
        direction=direction,
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=made_jump,
        max_steps=max_steps,
        progress_meter=progress_meter,
        ts_width=ts_width,
    )
    return _solution(
        saveat,
        subs,
        subs_treedef,
        final,
        t0=t0,
        t1=t1,
        direction=direction,
        solver=solver,
        max_steps=max_steps,
        throw=throw,
    )


def diffeqsolve(
    terms: PyTree[AbstractTerm],
    solver: AbstractSolver,
    t0: RealScalarLike,
    t1: RealScalarLike,
    dt0: RealScalarLike | None,
    y0: PyTree[ArrayLike],
    args: Args = None,
    *,
    saveat: SaveAt = SaveAt(t1=True),
    stepsize_controller: AbstractStepSizeController = ConstantStepSize(),
    adjoint: AbstractAdjoint = RecursiveCheckpointAdjoint(),
    event: None = None,
    max_steps: int | None = 4096,
    throw: bool = True,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
    solver_state: PyTree[ArrayLike] | None = None,
    controller_state: PyTree[ArrayLike] | None = None,
    made_jump: BoolScalarLike | None = None,
    discrete_terminating_event: None = None,
) -> Solution:
    """Solve a differential equation from `t0` to `t1`.

    **Arguments:**

    - `terms`: the terms of the equation, e.g. `ODETerm(f)` for `dy/dt = f(t, y,
      args)`.
    - `solver`: the numerical method, e.g. `Tsit5()`.
    - `t0`, `t1`: the interval. `t1 < t0` integrates backwards in time; `t0 == t1`
      returns `y0` at every saved time.
    - `dt0`: the first step size (its sign must be that of `t1 - t0`), or `None` to
      let an adaptive controller choose it.
    - `y0`: the initial state, any PyTree of floating-point arrays.
    - `args`: passed to the vector field as its third argument.
    - `saveat`: what to save (`SaveAt`); by default the state at `t1`.
    - `stepsize_controller`: `ConstantStepSize()` (default), `PIDController`,
      `StepTo`, `ClipStepSizeController`.
    - `adjoint`: how to differentiate: `RecursiveCheckpointAdjoint()` (default;
      reverse mode), `DirectAdjoint()` (forward and reverse mode, higher
      derivatives), `ForwardMode()` (`jax.jvp`/`jax.jacfwd`), `BacksolveAdjoint()`
      (continuous adjoint), `ImplicitAdjoint()` (steady states). See
      docs/choosing-an-adjoint.md.
    - `event`: not supported yet; must be `None`.
    - `max_steps`: the most steps (accepted and rejected) to attempt; it also sizes
      the buffers of `SaveAt(steps=True)` and `SaveAt(dense=True)`. `None` for no
      bound (not allowed with those two).
    - `throw`: raise an error if the solve fails; with `False` the failure is
      reported in `Solution.result` instead (use this under `vmap`, where one
      failing lane would otherwise raise for all).
    - `progress_meter`: e.g. `TqdmProgressMeter()`.
    - `solver_state`, `controller_state`, `made_jump`: resume from a previous
      solve's final states (see `SaveAt(solver_state=True, ...)`).
    - `discrete_terminating_event`: Diffrax's deprecated form of `event`;
      accepted for compatibility, must be `None`.

    **Returns:** a `Solution`.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -args * y)
    sol = jd.diffeqsolve(term, jd.Tsit5(), t0=0.0, t1=1.0, dt0=0.1,
                         y0=jnp.array([1.0, 2.0]), args=0.5,
                         saveat=jd.SaveAt(ts=jnp.linspace(0.0, 1.0, 5)),
                         stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8))
    ```

    The whole solve is compiled once (`equinox.filter_jit`); calling it again with
    new array values reuses the compiled code. Pass arrays rather than Python
    numbers for values that change between calls.
    """
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"`solver` must be a solver such as `Tsit5()`, got {solver!r}.")
    if not isinstance(saveat, SaveAt):
        raise TypeError(f"`saveat` must be a `SaveAt`, got {saveat!r}.")
    if not isinstance(stepsize_controller, AbstractStepSizeController):
        raise TypeError(
            "`stepsize_controller` must be a step-size controller such as "
            f"`PIDController(rtol=1e-6, atol=1e-8)`, got {stepsize_controller!r}."
        )
    if event is not None or discrete_terminating_event is not None:
        raise NotImplementedError(
            "Events are not supported yet; pass `event=None` (and Diffrax's "
            "deprecated `discrete_terminating_event=None`)."
        )
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be an adjoint such as `RecursiveCheckpointAdjoint()`, "
            f"`DirectAdjoint()` or `ForwardMode()`, got {adjoint!r}."
        )
    if not isinstance(progress_meter, AbstractProgressMeter):
        raise TypeError(
            f"`progress_meter` must be a progress meter, got {progress_meter!r}."
        )
    _check_terms(terms, solver)
    if max_steps is not None and (
        not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1
    ):
        raise ValueError(
            f"`max_steps` must be a positive int or None, got {max_steps!r}."
        )
    solver = adjoint.prepare_solver(solver)
    solver = resolve_root_finders(solver, stepsize_controller)
    adjoint.check(
        saveat=saveat,
        max_steps=max_steps,
        event=event,
        solver=solver,
        stepsize_controller=stepsize_controller,
    )
    subs = jtu.tree_leaves(saveat.subs, is_leaf=lambda x: isinstance(x, SubSaveAt))
    if max_steps is None and (saveat.dense or any(sub.steps for sub in subs)):
        raise ValueError(
            "`max_steps=None` cannot be used with `SaveAt(steps=...)` or "
            "`SaveAt(dense=True)`: their buffers are sized by `max_steps`. Pass an int."
        )
    if dt0 is None and isinstance(stepsize_controller, ConstantStepSize):
        raise ValueError(
            "`dt0=None` needs an adaptive step-size controller, e.g. "
            "`stepsize_controller=PIDController(rtol=1e-6, atol=1e-8)`; with "
            "`ConstantStepSize` pass the step size as `dt0`."
        )
    y0 = _normalise_y0(y0, _time_dtype(t0, t1, dt0, subs))
    # Check values eagerly where they are known (also inside a user's `jit`, for
    # Python numbers); otherwise `_solve` compiles the same checks into runtime
    # errors.
    ts_list = [sub.ts for sub in subs if sub.ts is not None]
    check_times = not _is_concrete((t0, t1, dt0))
    check_ts = not _is_concrete((ts_list, t0, t1))
    if not check_times:
        _raise_now(_time_checks(*(_as_numpy(x) for x in (t0, t1, dt0)), xp=np))
    if not check_ts:
        for ts in ts_list:
            _raise_now(_ts_checks(np.asarray(ts), _as_numpy(t0), _as_numpy(t1), xp=np))
    # Python scalars become arrays, so that new values do not trigger a recompile.
    ts_density = _ts_density(t0, t1, dt0, ts_list)
    known_direction = _known_direction(t0, t1)
    t0, t1, dt0 = _as_array(t0), _as_array(t1), _as_array(dt0)
    _check_vector_field(terms, t0, y0, args)
    return _solve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat,
        stepsize_controller,
        max_steps,
        throw,
        progress_meter,
        solver_state,
        controller_state,
        made_jump,
        check_times,
        check_ts,
        adjoint,
        _loop.width_class(ts_density),
        known_direction,
    )
