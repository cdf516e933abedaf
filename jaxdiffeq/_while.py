"""`while_loop`: the loop primitives that the step loop runs on.

Three kinds, one semantics (`val = init_val; while cond_fun(val) and iterations <
max_steps: val = body_fun(val)`):

- `"lax"`: `lax.while_loop`. Forward mode only.
- `"bounded"`: nested `lax.scan`s under `jax.checkpoint`. Reverse and forward mode
  and higher derivatives, at the cost of running `max_steps` guarded iterations
  (a finished loop skips whole chunks, but under `vmap` the guards become selects).
- `"checkpointed"`: a `lax.while_loop` that stores a bounded number of states on
  the way forward and recomputes the rest on the way back (a `jax.custom_vjp`).
  Reverse mode only.

The checkpointing schedule is online: the number of iterations is not known
while the loop runs.

- When the bound `max_steps` is at most c(c+1)/2 (c checkpoints; the default c
  is the least such), the forward pass stores checkpoints at static positions:
  segment i (from checkpoint i to the next) is at most c - i iterations long,
  and otherwise as short as the bound allows (so c >= `max_steps` stores every
  iteration). Between checkpoints the loop runs as a plain inner loop whose
  carry is the loop's own, so the checkpoint store is touched c times rather
  than every iteration. The backward pass takes the segments from the last:
  it recomputes segment i once from its checkpoint, storing every state in the
  rows of the later segments (free by then: there are c - i - 1 of them), and
  pulls the cotangent back through the stored states. Each iteration is
  recomputed at most once, however many of the `max_steps` iterations run.
  Under `vmap` this backward pass is batch-aware (`_while_lanes`): one loop over
  all lanes, summing the cotangents of `env` leaves that the lanes share inside
  each vector-Jacobian product.
- Otherwise (`max_steps=None`, or fewer checkpoints than that), in both passes:
  the dynamic checkpointing of Wang,
  Moin and Iaccarino (SIAM J. Sci. Comput. 31(4), 2009). Every state is offered
  as it is reached; when all rows are full the rule frees a "dispensable" one (a
  checkpoint followed later by one of a higher level), or else replaces the
  latest checkpoint and raises the new one's level. Measured here: every
  iteration is recomputed at most once up to about c(c+1)/2 iterations; past
  that the recomputations grow slowly.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.extend.core as jex
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import custom_batching
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from ._misc import (
    instantiate_zero,
    live_vmap,
    stop_integer_tangents,
    tree_nbytes,
    zero_cotangent,
)
from ._while_lanes import backward_static_lanes
from ._while_linear import LinearSizes, backward_static_linear, plan
from ._while_store import (
    Book,
    empty_book,
    load_checkpoint,
    load_row,
    place,
    split_carry,
)


def _check_max_steps(max_steps):
    if max_steps is None:
        return
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
        raise ValueError(f"`max_steps` must be a non-negative int, got {max_steps!r}.")


def check_checkpoints(checkpoints) -> None:
    """`checkpoints` must be a positive int or `None`."""
    if checkpoints is not None and (
        not isinstance(checkpoints, int)
        or isinstance(checkpoints, bool)
        or checkpoints < 1
    ):
        raise ValueError(
            f"`checkpoints` must be a positive int or None, got {checkpoints!r}."
        )


def default_checkpoints(max_steps: int) -> int:
    """The fewest checkpoints c with c(c+1)/2 >= max_steps (about sqrt(2 max_steps)):
    enough that the backward pass recomputes every iteration at most once."""
    c = max(1, math.ceil((math.sqrt(8 * max_steps + 1) - 1) / 2))
    return max(c, 2)


def while_loop(
    cond_fun: Callable[[Any], Any],
    body_fun: Callable[[Any], Any],
    init_val: Any,
    *,
    max_steps: int | None = None,
    kind: Literal["lax", "bounded", "checkpointed"] = "lax",
    checkpoints: int | None = None,
    buffers: Callable[[Any], Any] | None = None,
) -> Any:
    """A while loop with a bound on its number of iterations, differentiable in
    reverse mode.

    Semantics: `val = init_val; while cond_fun(val) and iterations < max_steps:
    val = body_fun(val)`; return `val`.

    **Arguments:**

    - `cond_fun`, `body_fun`, `init_val`: as in `jax.lax.while_loop`. The
      functions may close over arrays (including ones being differentiated).
    - `max_steps`: the most iterations to run (a Python int), or `None` for no
      bound (only for `"lax"`, and for `"checkpointed"` with `checkpoints` given).
    - `kind`:
        - `"lax"`: a plain `lax.while_loop`. Supports `jax.jvp`; not reverse mode.
        - `"bounded"`: nested scans under `jax.checkpoint` (`max_steps` required).
          Supports forward and reverse mode and higher derivatives. Memory about
          `B log_B(max_steps)` carries (B = 16); every one of the `max_steps`
          iterations is guarded, so under `vmap` it costs `max_steps` bodies.
        - `"checkpointed"`: online checkpointing (see the module documentation).
          Reverse mode only (`jax.grad`, `jax.vjp`); `jax.jvp` raises. Memory:
          `checkpoints` copies of the non-buffer part of the carry; time: one
          forward pass, at most one recomputation of each iteration (up to about
          `checkpoints**2 / 2` iterations) and one vector-Jacobian product per
          iteration. A body is linearised only when its VJP is applied, and
          only with respect to the leaves of the carry that depend on what is
          being differentiated (found by tracing the body once more).
    - `checkpoints`: the number of stored states for `"checkpointed"`. Default:
      the smallest `c` with `c (c + 1) / 2 >= max_steps`, about
      `sqrt(2 max_steps)`, so that each iteration is recomputed at most once.
    - `buffers`: a function of the carry returning the arrays that the body only
      writes into (e.g. `lambda val: val[1]`), each element at most once (say
      with `buf.at[i].set(x)` at a computed index). For `"checkpointed"` they are
      not stored in checkpoints (a solve's outputs are stored once, not once
      per checkpoint), and the backward pass hands the pulled-back cotangent of
      the whole buffer to each iteration without copying it. The body must not
      read a buffer except to decide the value it writes there.

    ```python
    import jaxdiffeq as jd
    n = jd.while_loop(lambda i: i < 10, lambda i: i + 1, 0, max_steps=4)  # 4
    ```

    Reverse mode through a loop whose length depends on the data:

    ```python
    import jax
    import jaxdiffeq as jd

    def sqrt_newton(a):  # x <- (x + a / x) / 2 until converged
        def cond(x):
            return jnp.abs(x * x - a) > 1e-12
        return jd.while_loop(cond, lambda x: 0.5 * (x + a / x), a,
                             max_steps=100, kind="checkpointed")

    import jax.numpy as jnp
    jax.grad(sqrt_newton)(4.0)  # 0.25 (= 1 / (2 sqrt(4)))
    ```
    """
    if kind not in ("lax", "bounded", "checkpointed"):
        raise ValueError(
            f"`while_loop(kind={kind!r})`: `kind` must be 'lax', 'bounded' or "
            "'checkpointed'."
        )
    _check_max_steps(max_steps)
    check_checkpoints(checkpoints)
    if kind == "lax":
        return _lax_loop(cond_fun, body_fun, init_val, max_steps)
    if kind == "bounded":
        if max_steps is None:
            raise ValueError(
                "`while_loop(kind='bounded')` needs `max_steps` (an int): the loop "
                "is a fixed number of guarded iterations."
            )
        return _bounded_loop(cond_fun, body_fun, init_val, max_steps)
    if max_steps is None and checkpoints is None:
        raise ValueError(
            "`while_loop(kind='checkpointed')` with `max_steps=None` needs "
            "`checkpoints` (an int): the default number of checkpoints is derived "
            "from `max_steps`."
        )
    body_conv, body_consts = jax.closure_convert(body_fun, init_val)
    cond_conv, cond_consts = jax.closure_convert(cond_fun, init_val)
    env = (body_consts, cond_consts)
    return checkpointed_loop(
        lambda val, env: cond_conv(val, *env[1]),
        lambda val, env: body_conv(val, *env[0]),
        init_val,
        env,
        max_steps=max_steps,
        checkpoints=checkpoints,
        buffers=buffers,
    )


def _lax_loop(cond_fun, body_fun, init_val, max_steps):
    if max_steps is None:
        return lax.while_loop(cond_fun, body_fun, init_val)

    def cond(carry):
        step, val = carry
        return (step < max_steps) & cond_fun(val)

    def body(carry):
        step, val = carry
        return step + 1, body_fun(val)

    _, out = lax.while_loop(cond, body, (jnp.asarray(0, dtype=jnp.int32), init_val))
    return out


# ----------------------------------------------------------------------- bounded

_BOUNDED_BASE = 16


def _bounded_loop(cond_fun, body_fun, init_val, max_steps: int):
    """`base**levels >= max_steps` guarded iterations as nested scans; each level's
    scan body is rematerialised (`jax.checkpoint`), so the backward pass stores
    `base` carries per level. Chunks after the loop has finished are skipped with
    a `lax.cond` (a select under `vmap`)."""
    if max_steps == 0:
        return init_val
    levels = max(1, math.ceil(math.log(max_steps, _BOUNDED_BASE) - 1e-9))

    def alive(carry):
        i, val = carry
        return (i < max_steps) & cond_fun(val)

    def one(carry):
        i, val = carry
        pred = alive(carry)
        val = lax.cond(pred, body_fun, lambda v: v, val)
        return i + pred.astype(i.dtype), val

    def run(level, carry):
        if level == 0:
            return one(carry)

        @jax.checkpoint
        def chunk(carry, _):
            return run(level - 1, carry), None

        def go(carry):
            return lax.scan(chunk, carry, None, length=_BOUNDED_BASE)[0]

        return lax.cond(alive(carry), go, lambda c: c, carry)

    # The top level runs only as many chunks as `max_steps` needs.
    chunk_size = _BOUNDED_BASE ** (levels - 1)
    top = math.ceil(max_steps / chunk_size)

    @jax.checkpoint
    def top_chunk(carry, _):
        return run(levels - 1, carry), None

    carry = (jnp.asarray(0, jnp.int32), init_val)
    (_, out), _ = lax.scan(top_chunk, carry, None, length=top)
    return out


# ------------------------------------------------------------------ checkpointed


class _Spec:
    """The static part of a checkpointed loop: functions, sizes, and the non-array
    part of `env`."""

    def __init__(
        self,
        cond_fun,
        body_fun,
        max_steps,
        checkpoints,
        split,
        primal,
        env_static,
        replay_fun=None,
    ):
        self.cond_fun = cond_fun
        self.body_fun = body_fun
        self.replay_fun = body_fun if replay_fun is None else replay_fun
        self.max_steps = max_steps
        self.checkpoints = checkpoints
        self.split = split
        self.primal = primal
        self.env_static = env_static


def checkpointed_loop(
    cond_fun,
    body_fun,
    init_val,
    env,
    *,
    max_steps: int | None,
    checkpoints: int | None,
    buffers=None,
    primal: Callable[[Any, Any], Any] | None = None,
    replay: Callable[[Any, Any], Any] | None = None,
):
    """The checkpointed loop on explicit functions `cond_fun(val, env)` and
    `body_fun(val, env)`: everything they close over that may be differentiated
    is in `env`, whose inexact array leaves receive cotangents.

    `primal(init_val, env)`, if given, computes the same final value by any
    means; it runs when the loop is not differentiated (the step loop uses a
    faster, nested form there). `replay(val, env)`, if given, computes the
    same iteration as `body_fun` with the same values, in a form that need not
    be differentiable: the forward pass and the recomputations of the backward
    pass run it, and only the vector-Jacobian products run `body_fun`."""
    if checkpoints is None and max_steps is not None:
        checkpoints = default_checkpoints(max_steps)
    init_val = jtu.tree_map(jnp.asarray, init_val)
    split = split_carry(init_val, buffers)
    env_arrays, env_static = eqx.partition(env, eqx.is_array)
    spec = _Spec(
        cond_fun, body_fun, max_steps, checkpoints, split, primal, env_static, replay
    )
    out = _checkpointed(spec, init_val, env_arrays)
    return stop_integer_tangents(out)


def _bounded_cond(spec: _Spec, i, val, env):
    pred = spec.cond_fun(val, env)
    if spec.max_steps is not None:
        pred = pred & (i < spec.max_steps)
    return pred


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _checkpointed(spec: _Spec, init_val, env_arrays):
    env = eqx.combine(env_arrays, spec.env_static)
    if spec.primal is not None:
        return spec.primal(init_val, env)
    return _lax_loop(
        lambda val: spec.cond_fun(val, env),
        lambda val: spec.body_fun(val, env),
        init_val,
        spec.max_steps,
    )


# ---------------------------------------------------------------- activity


class _Active(eqx.Module):
    """Which leaves take part in differentiation: `carry` over the inexact leaves
    of the loop's value, `env` over the leaves of `env_arrays`."""

    carry: tuple[bool, ...] = eqx.field(static=True)
    env: tuple[bool, ...] = eqx.field(static=True)


def _leaves(tree):
    return jtu.tree_leaves(
        tree, is_leaf=lambda x: isinstance(x, (CustomVJPPrimal, SymbolicZero))
    )


def _unwrap_primals(tree):
    """With `symbolic_zeros=True` the forward rule sees `CustomVJPPrimal`s: the
    values, and whether each is perturbed (being differentiated)."""
    is_primal = lambda x: isinstance(x, CustomVJPPrimal)  # noqa: E731
    values = jtu.tree_map(lambda p: p.value, tree, is_leaf=is_primal)
    perturbed = [bool(p.perturbed) for p in _leaves(tree)]
    return values, perturbed


def _select(items, mask):
    return [x for x, m in zip(items, mask) if m]


def _positions(*masks):
    """Indices (into the full list) of the entries kept by successive masks."""
    index = list(range(len(masks[0])))
    for mask in masks:
        index = _select(index, mask)
    return index


def _put(items, positions, values):
    items = list(items)
    for i, x in zip(positions, values):
        items[i] = x
    return items


def _is_inexact(aval) -> bool:
    try:
        return bool(jnp.issubdtype(aval.dtype, jnp.inexact))
    except TypeError:
        return False


def _active_outputs(jaxpr, active_in) -> list[bool]:
    """Which outputs of `jaxpr` depend differentiably on the active inputs: a
    conservative dependence analysis (every inexact output of an equation with
    an active input is active, except through `stop_gradient`; `jit` calls are
    analysed inside)."""
    active = {v for v, a in zip(jaxpr.invars, active_in) if a}
    for eqn in jaxpr.eqns:
        flags = [isinstance(v, jex.Var) and v in active for v in eqn.invars]
        if not any(flags) or eqn.primitive.name == "stop_gradient":
            continue
        inner = (
            eqn.params.get("jaxpr") if eqn.primitive.name in ("jit", "pjit") else None
        )
        if isinstance(inner, jex.ClosedJaxpr):
            outs = _active_outputs(inner.jaxpr, flags)
        else:
            outs = [True] * len(eqn.outvars)
        for v, a in zip(eqn.outvars, outs):
            if a and _is_inexact(v.aval):
                active.add(v)
    return [isinstance(v, jex.Var) and v in active for v in jaxpr.outvars]


def _call_body(spec: _Spec, env_def, val, env_leaves, replay=False):
    """The loop's body on `val`, with `env` rebuilt from its array leaves (the
    replay form, which is not differentiated, with `replay`)."""
    env = jtu.tree_unflatten(env_def, env_leaves)
    fun = spec.replay_fun if replay else spec.body_fun
    return fun(val, eqx.combine(env, spec.env_static))


def _body_of_leaves(
    spec: _Spec,
    leaves,
    env_leaves,
    env_def,
    active: _Active,
    env_axes=None,
    with_state=False,
):
    """The body as a function of the active inexact leaves of the carry and the
    active leaves of `env` (the others fixed at `leaves` and `env_leaves`),
    returning the active inexact leaves of the new carry.

    With `env_axes` (one axis, 0 or `None`, per leaf of `env`), the leaves of the
    carry have a leading lane axis and the body runs on every lane (`vmap`);
    the `env` leaves with axis `None` are shared by the lanes. With `with_state`
    it returns the stored part of the new carry too (`jax.vjp`'s `has_aux`)."""
    split = spec.split
    carry_positions = _positions(split.is_inexact, active.carry)
    env_positions = _positions(active.env)

    def body(val, env_leaves):
        out = _call_body(spec, env_def, val, env_leaves)
        outs = _select(_select(jtu.tree_leaves(out), split.is_inexact), active.carry)
        return (outs, split.state(out)) if with_state else outs

    if env_axes is not None:
        body = jax.vmap(body, in_axes=(0, list(env_axes)))

    def f(carry_in, env_in):
        val = jtu.tree_unflatten(split.treedef, _put(leaves, carry_positions, carry_in))
        return body(val, _put(env_leaves, env_positions, env_in))

    return f


def _activity(spec: _Spec, init_val, init_perturbed, env_arrays, env_perturbed):
    """The leaves that carry cotangents in the backward pass: a leaf of the carry
    is active if it is perturbed on entry or some iteration makes it depend on
    an active leaf or a perturbed `env` leaf (a fixed point). The rest (say the
    times of a solve whose `t0`, `t1` are constants) are left out of every
    vector-Jacobian product."""
    leaves = jtu.tree_leaves(init_val)
    inexact = spec.split.is_inexact
    env_leaves, env_def = jtu.tree_flatten(env_arrays)
    env_active = tuple(
        bool(p) and _is_inexact(jax.typeof(x))
        for x, p in zip(env_leaves, env_perturbed)
    )

    every = _Active(carry=(True,) * sum(inexact), env=(True,) * len(env_leaves))
    f = _body_of_leaves(spec, leaves, env_leaves, env_def, every)
    jaxpr = jax.make_jaxpr(f)(_select(leaves, inexact), env_leaves).jaxpr
    carry = [bool(p) for p in _select(init_perturbed, inexact)]
    while True:
        outs = _active_outputs(jaxpr, carry + list(env_active))
        new = [a or o for a, o in zip(carry, outs)]
        if new == carry:
            break
        carry = new
    return _Active(carry=tuple(carry), env=env_active)


def _checkpointed_fwd(spec: _Spec, init_val, env_arrays):
    init_val, init_perturbed = _unwrap_primals(init_val)
    env_arrays, env_perturbed = _unwrap_primals(env_arrays)
    active = _activity(spec, init_val, init_perturbed, env_arrays, env_perturbed)
    env = eqx.combine(env_arrays, spec.env_static)
    split = spec.split
    c = spec.checkpoints
    if c is None:
        raise ValueError(
            "Reverse-mode differentiation of a loop without a bound needs a number "
            "of checkpoints: pass an int `max_steps` to `diffeqsolve`, or "
            "`adjoint=RecursiveCheckpointAdjoint(checkpoints=k)`."
        )
    store = [jnp.zeros((c, size), dtype) for dtype, size in split.packer.sizes()]
    # The static schedule when it covers the bound with each step recomputed at
    # most once; otherwise the dynamic rule, which degrades gracefully.
    if _is_static(spec):
        n, final, book, store = _forward_static(spec, init_val, env, store)
    else:
        n, final, book, store = _forward_dynamic(spec, init_val, env, store)
    residuals = (n, book, store, split.buffers(final), env_arrays, active)
    return final, residuals


def _is_static(spec: _Spec) -> bool:
    """Whether the loop runs the static schedule (see the module documentation)."""
    c, bound = spec.checkpoints, spec.max_steps
    return c is not None and bound is not None and c * (c + 1) // 2 >= bound


def _static_positions(c: int, max_steps: int) -> np.ndarray:
    """Where the forward pass stores its c checkpoints when the loop is bounded
    by `max_steps <= c (c + 1) / 2`. Segment i (from checkpoint i to the next)
    may be at most c - i long: when the backward pass reverses segment i, the
    c - i - 1 rows of the later segments are free, enough to store every state
    of the segment while recomputing it once. Within that bound the segments
    are as short as possible (length `x`, the least that covers `max_steps`),
    so that more checkpoints mean fewer recomputations: with `c >= max_steps`
    every iteration is a checkpoint and nothing is recomputed."""
    assert c * (c + 1) // 2 >= max_steps

    def lengths(x):
        return [max(1, min(c - i, x)) for i in range(c)]

    x = 1
    while sum(lengths(x)) < max_steps:
        x += 1
    return np.concatenate([[0], np.cumsum(lengths(x))[:-1]]).astype(np.int32)


def _segments(spec: _Spec):
    """The first iteration of each static segment, and of the next one (for the
    last segment, a position never reached)."""
    positions = _static_positions(spec.checkpoints, spec.max_steps)
    ends = np.concatenate([positions[1:], [np.iinfo(np.int32).max]])
    return jnp.asarray(positions, jnp.int32), jnp.asarray(ends, jnp.int32)


def _forward_static(spec: _Spec, init_val, env, store):
    """The forward pass of a bounded loop: checkpoints at static positions, and
    between them an inner loop whose carry is only the loop's own (small loops
    stay fast on the CPU; the store is touched c times, not every iteration)."""
    c = spec.checkpoints
    positions, next_positions = _segments(spec)
    # Row 0 holds `init_val` even in a lane of a `vmap` that never iterates:
    # the batched backward pass (`_while_lanes`) may evaluate its body there.
    store = [s.at[0].set(x) for s, x in zip(store, spec.split.stored(init_val))]

    def outer_cond(carry):
        i, val, j, _ = carry
        return (j < c) & _bounded_cond(spec, i, val, env)

    def outer_body(carry):
        i, val, j, store = carry
        store = [
            lax.dynamic_update_index_in_dim(s, x, j, 0)
            for s, x in zip(store, spec.split.stored(val))
        ]
        until = next_positions[j]

        def cond(inner):
            i, val = inner
            return (i < until) & _bounded_cond(spec, i, val, env)

        def body(inner):
            i, val = inner
            return i + 1, spec.replay_fun(val, env)

        i, val = lax.while_loop(cond, body, (i, val))
        return i, val, j + 1, store

    zero = jnp.asarray(0, jnp.int32)
    n, final, count, store = lax.while_loop(
        outer_cond, outer_body, (zero, init_val, zero, store)
    )
    book = Book(
        position=positions,
        level=jnp.zeros(c, jnp.int32),
        slot=jnp.arange(c, dtype=jnp.int32),
        count=count,
    )
    return n, final, book, store


def _forward_dynamic(spec: _Spec, init_val, env, store):
    """The forward pass of an unbounded loop: every state is offered to the
    dynamic rule."""
    c = spec.checkpoints

    def cond(carry):
        i, val, _, _ = carry
        return _bounded_cond(spec, i, val, env)

    def body(carry):
        i, val, book, store = carry
        book, store = place(
            book, store, i, spec.split.stored(val), 0, jnp.asarray(True)
        )
        return i + 1, spec.replay_fun(val, env), book, store

    carry = (jnp.asarray(0, jnp.int32), init_val, empty_book(c), store)
    return lax.while_loop(cond, body, carry)


def _checkpointed_bwd(spec: _Spec, residuals, ct_final):
    split = spec.split
    n, book, store, final_buffers, env_arrays, active = residuals
    # Residuals may come back as literals; make them arrays again.
    env_arrays = jtu.tree_map(jnp.asarray, env_arrays)
    ct_leaves = [instantiate_zero(x) for x in _leaves(ct_final)]
    inexact = split.is_inexact
    # Only the active leaves (see `_activity`) carry cotangents.
    ct = _select(_select(ct_leaves, inexact), active.carry)
    env_leaves, env_def = jtu.tree_flatten(env_arrays)
    if _is_static(spec):
        arrays = (n, book.count, store, final_buffers, env_leaves, ct)
        ct, env_ct = _static_core(spec, env_def, active, arrays)
    else:
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves)
        env_ct = [jnp.zeros_like(x) for x in _select(env_leaves, active.env)]
        ct, env_ct = _backward_dynamic(spec, n, book, store, *fns, ct, env_ct)
    init_ct = _put(
        [zero_cotangent(x) for x in ct_leaves], _positions(inexact, active.carry), ct
    )
    env_ct_leaves = _put(
        [zero_cotangent(x) for x in env_leaves], _positions(active.env), env_ct
    )
    return (
        jtu.tree_unflatten(split.treedef, init_ct),
        jtu.tree_unflatten(env_def, env_ct_leaves),
    )


def _iteration_fns(
    spec: _Spec, env_def, active: _Active, final_buffers, env_leaves, env_axes=None
):
    """`(step, vjp_step)` of the backward pass: `step(state)` runs one iteration
    from the stored part of the carry; `vjp_step(state, ct)` pulls `ct` (on the
    active leaves of the carry) back through one iteration, returning the
    cotangents of the carry and of the active `env` leaves. With `env_axes`,
    on every lane at once (see `_body_of_leaves`)."""
    split = spec.split
    env_in = _select(env_leaves, active.env)

    def one(val, env_leaves):
        return split.state(_call_body(spec, env_def, val, env_leaves, replay=True))

    if env_axes is not None:
        one = jax.vmap(one, in_axes=(0, list(env_axes)))

    def step(state):
        return one(split.join(state, final_buffers), env_leaves)

    def vjp_step(state, ct):
        leaves = jtu.tree_leaves(split.join(state, final_buffers))
        carry_in = _select(_select(leaves, split.is_inexact), active.carry)
        f = _body_of_leaves(spec, leaves, env_leaves, env_def, active, env_axes)
        _, pull = jax.vjp(f, carry_in, env_in)
        return pull(ct)

    return step, vjp_step


def _linear_fns(spec: _Spec, env_def, active: _Active, final_buffers, env_leaves):
    """`(lin, env_pull)` for `_while_linear`: `lin(state) -> (next_state, pull)`
    runs one iteration from the stored part of the carry and returns the
    `jax.vjp` function of its active carry leaves with respect to the active
    carry leaves alone (`env` held fixed: a function of the cotangent that
    returns a 1-tuple); `env_pull(states, cts)` pulls a
    block of cotangents (leading axis: iterations) back through the body at
    a block of states to the active `env` leaves, summed over the block."""
    split = spec.split
    env_in = _select(env_leaves, active.env)

    def carry_of(state):
        leaves = jtu.tree_leaves(split.join(state, final_buffers))
        carry_in = _select(_select(leaves, split.is_inexact), active.carry)
        f = _body_of_leaves(spec, leaves, env_leaves, env_def, active, with_state=True)
        return carry_in, f

    def lin(state):
        carry_in, f = carry_of(state)

        def g(c) -> tuple[Any, Any]:
            out = f(c, env_in)
            assert isinstance(out, tuple)  # `with_state=True`
            return out

        _, pull, new_state = jax.vjp(g, carry_in, has_aux=True)
        return new_state, pull

    def env_pull(states, cts):
        def block(env_in):
            def one(state):
                carry_in, f = carry_of(state)
                return f(carry_in, env_in)[0]

            return jax.vmap(one)(states)

        _, pull = jax.vjp(block, env_in)
        return pull(cts)[0]

    return lin, env_pull


def _linear_backward(spec: _Spec, env_def, active: _Active, arrays):
    """The static backward pass that linearises while recomputing
    (`_while_linear`), or `None` where it does not fit its budget."""
    n, count, store, final_buffers, env_leaves, ct = arrays
    env_in = _select(env_leaves, active.env)
    if not LINEARISE:
        return None
    lin, env_pull = _linear_fns(spec, env_def, active, final_buffers, env_leaves)
    if not env_in:
        env_pull = None  # nothing to pull back to `env`: no states or cotangents
    packer = spec.split.packer
    positions = _static_positions(spec.checkpoints, spec.max_steps)
    rows = int(np.max(np.diff(np.append(positions, spec.max_steps))))
    sizes = LinearSizes(
        rows=rows,
        block=min(rows, LINEAR_BLOCK),
        budget=tree_nbytes(env_in if env_in else store) // MEMORY_SHARE,
        fixed_bytes=tree_nbytes(final_buffers),
    )
    fixed = [*env_leaves, *final_buffers]
    p = plan(lin, fixed, load_row(store, 0), packer, sizes, ct, with_env=bool(env_in))
    if p is None:
        return None
    starts, ends = _segments(spec)
    env_ct = [jnp.zeros_like(x) for x in env_in]

    def load(j):
        return load_row(store, j)

    fns = (lin, env_pull)
    return backward_static_linear(p, starts, ends, n, count, load, fns, ct, env_ct)


LINEARISE = True
# The linearising pass may store a quarter of the bytes of the differentiated
# env leaves (or, where there are none, of the checkpoint store).
MEMORY_SHARE = 4
LINEAR_BLOCK = 64


def _static_core(spec: _Spec, env_def, active: _Active, arrays):
    """The backward pass of the static schedule, batch-aware: a `custom_vmap`.

    Under `grad(vmap(...))` (see `live_vmap`), where the lanes share
    differentiated `env` leaves (say the weights of a neural vector field) with
    at least as many elements as one lane's cotangents, its batching rule runs
    one loop over all lanes (`_while_lanes`) that sums the shared cotangents
    inside each vector-Jacobian product. Otherwise (little or nothing shared, or
    `vmap(grad(...))`, where each lane needs its own) it is JAX's own batching
    of the unbatched rule, which builds one cotangent of the shared leaves per
    lane but masks less: measured faster there (Lorenz, gradient with respect
    to 16 initial states, 10^4 saved times: 0.41x Diffrax's time, against 0.60x
    with the one loop, whose masking of every lane's cotangents, the output
    buffers' included, costs a pass more per step)."""
    sum_shared = live_vmap(arrays)

    def unbatched(n, count, store, final_buffers, env_leaves, ct):
        args = (n, count, store, final_buffers, env_leaves, ct)
        out = _linear_backward(spec, env_def, active, args)
        if out is not None:
            return out
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves)
        env_ct = [jnp.zeros_like(x) for x in _select(env_leaves, active.env)]
        return _backward_static(spec, n, count, store, *fns, ct, env_ct)

    core = custom_batching.custom_vmap(unbatched)

    @core.def_vmap
    def _rule(axis_size, in_batched, n, count, store, final_buffers, env_leaves, ct):
        args = (n, count, store, final_buffers, env_leaves, ct)
        if axis_size == 1:
            # One lane: the unbatched pass on it (no masking at all).
            lane = jtu.tree_map(lambda x, b: x[0] if b else x, args, tuple(in_batched))
            out = unbatched(*lane)
            return jtu.tree_map(lambda x: x[None], out), jtu.tree_map(
                lambda _: True, out
            )
        env_batched = list(in_batched[4])
        active_batched = _select(env_batched, active.env)
        shared_size = sum(
            x.size
            for x, b in zip(_select(env_leaves, active.env), active_batched)
            if not b
        )
        # A lane's cotangents: what the one loop masks at every iteration.
        lane_size = sum(
            x.size // axis_size if b else x.size for x, b in zip(ct, in_batched[5])
        )
        if not (sum_shared and shared_size >= max(lane_size, 1)):
            axes = jtu.tree_map(lambda b: 0 if b else None, tuple(in_batched))
            out = jax.vmap(unbatched, in_axes=axes)(*args)
            return out, jtu.tree_map(lambda _: True, out)

        def stack(x, b):
            return x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

        lane_args = (n, count, store, final_buffers, ct)
        lane_batched = (*in_batched[:4], in_batched[5])
        n, count, store, final_buffers, ct = jtu.tree_map(
            stack, lane_args, lane_batched
        )
        env_axes = [0 if b else None for b in env_batched]
        fns = _iteration_fns(spec, env_def, active, final_buffers, env_leaves, env_axes)
        env_ct = [jnp.zeros_like(x) for x in _select(env_leaves, active.env)]
        starts, ends = _segments(spec)
        packer = spec.split.packer
        ct, env_ct = backward_static_lanes(
            starts, ends, packer, n, count, store, fns, ct, env_ct
        )
        out_batched = ([True] * len(ct), active_batched)
        return (ct, env_ct), out_batched

    return core(*arrays)


def _backward_static(spec: _Spec, n, count, store, step, vjp_step, ct, env_ct):
    """The backward pass after `_forward_static`, one segment at a time from the
    last: recompute the segment's states from its checkpoint into the rows of the
    later segments (free by now: segment j is at most c - j long), then pull the
    cotangent back through them. No bookkeeping: the rows are static."""
    packer = spec.split.packer
    starts, ends = _segments(spec)

    def load(store, row):
        return packer.unpack(load_row(store, row))

    def segment_body(carry):
        j, ct, env_ct, store = carry
        start = starts[j]
        last = jnp.minimum(ends[j], n) - 1  # the segment's last iteration

        def advance_body(c):
            q, state, store = c
            state = step(state)
            store = [
                lax.dynamic_update_index_in_dim(s, x, j + q + 1 - start, 0)
                for s, x in zip(store, packer.pack(state))
            ]
            return q + 1, state, store

        _, _, store = lax.while_loop(
            lambda c: c[0] < last, advance_body, (start, load(store, j), store)
        )

        def reverse_body(c):
            k, ct, env_ct = c
            ct, env_ct_k = vjp_step(load(store, j + k - start), ct)
            return k - 1, ct, jtu.tree_map(jnp.add, env_ct, env_ct_k)

        _, ct, env_ct = lax.while_loop(
            lambda c: c[0] >= start, reverse_body, (last, ct, env_ct)
        )
        return j - 1, ct, env_ct, store

    _, ct, env_ct, _ = lax.while_loop(
        lambda c: c[0] >= 0, segment_body, (count - 1, ct, env_ct, store)
    )
    return ct, env_ct


def _backward_dynamic(spec: _Spec, n, book, store, step, vjp_step, ct, env_ct):
    """The backward pass after `_forward_dynamic`: iterations from the last, each
    reached from the latest checkpoint before it, the recomputed states offered to
    the dynamic rule."""
    packer = spec.split.packer

    def outer_cond(carry):
        return carry[0] >= 0

    def cursor(book, store):
        """The latest stored checkpoint (every one after the iteration being
        reversed was dropped when its iteration was reversed): its sorted index,
        its iteration, and its state."""
        base = jnp.maximum(book.count - 1, 0)
        return (
            base,
            book.position[base],
            packer.unpack(load_checkpoint(book, store, base)),
        )

    def outer_body(carry):
        k, ct, env_ct, book, store, (base, start, state) = carry

        def advance_cond(c):
            return c[0] < k

        def advance_body(c):
            q, state, book, store = c
            packed = packer.pack(state)
            book, store = place(book, store, q, packed, base, q > start)
            return q + 1, step(state), book, store

        _, state, book, store = lax.while_loop(
            advance_cond, advance_body, (start, state, book, store)
        )
        ct, env_ct_k = vjp_step(state, ct)
        env_ct = jtu.tree_map(jnp.add, env_ct, env_ct_k)
        # Drop the checkpoint at k if there is one: it can only be the last (the
        # cursor was loaded from it and nothing was stored after it).
        last = book.position[jnp.maximum(book.count - 1, 0)]
        count = book.count - ((book.count > 0) & (last >= k)).astype(jnp.int32)
        book = eqx.tree_at(lambda b: b.count, book, count)
        # The next cursor is read here, after this iteration's writes to the
        # store: read before them, XLA would copy the whole store to keep the
        # values it reads safe from the in-place writes.
        return k - 1, ct, env_ct, book, store, cursor(book, store)

    init = (n - 1, ct, env_ct, book, store, cursor(book, store))
    _, ct, env_ct, _, _, _ = lax.while_loop(outer_cond, outer_body, init)
    return ct, env_ct


_checkpointed.defvjp(_checkpointed_fwd, _checkpointed_bwd, symbolic_zeros=True)
