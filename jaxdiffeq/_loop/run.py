"""`run`: one solve's step loop, from its inputs to the final state with filled
output buffers. It builds the loop's `Settings` and `Env` once; the parts
(`setup`, `drive`, `attempt`, `outputs`) receive them as arguments."""

import dataclasses

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._misc import where
from .._results import RESULTS
from .._saveat import SubSaveAt
from .config import Env, settings
from .drive import run_loop
from .outputs import final_save_states
from .setup import initial_carry
from .state import State, without_spill_row


def _t1_floor(t1):
    """Steps ending within ~100 ulp of t1 are stretched to t1, so that no tiny
    (numerically meaningless) last step is taken."""
    t1_const = lax.stop_gradient(t1)
    time_dtype = jnp.result_type(t1)
    ulp = jnp.abs(jnp.nextafter(t1_const, jnp.asarray(jnp.inf, time_dtype)) - t1_const)
    return t1 - 100 * ulp


def run(
    *,
    terms,
    solver,
    controller,
    subs: list[SubSaveAt],
    dense: bool,
    t0,
    t1,
    tnext,
    y0,
    args,
    direction,
    solver_state,
    controller_state,
    made_jump,
    max_steps: int | None,
    progress_meter,
    kind: str = "lax",
    checkpoints: int | None = None,
    record_times: bool = False,
    record_every: int | None = None,
    ts_width: int | None = None,
) -> State:
    """Run the step loop from `t0` to `t1` (forward time axis) and return the final
    state with filled output buffers. `kind` is the loop kind of `while_loop`
    (`"lax"`, `"bounded"`, `"checkpointed"`), chosen by the adjoint.
    `record_times` keeps the accepted step times, and `record_every=k` the state
    every `k` accepted steps, in `State.record`. `ts_width` is the width class
    of the `SaveAt(ts)` writes (`config.width_class`; `None`: from `len(ts)`)."""
    cfg = settings(
        solver=solver,
        terms=terms,
        controller=controller,
        subs=subs,
        dense=dense,
        t0=t0,
        max_steps=max_steps,
        progress_meter=progress_meter,
        record_times=record_times,
        record_every=record_every,
        state_size=sum(jnp.size(x) for x in jtu.tree_leaves(y0)),
        ts_width_hint=ts_width,
    )
    if kind == "checkpointed" and max_steps is not None:
        # The backward pass recomputes steps: they repeat the forward pass's
        # decisions from the tape (`State.tape`).
        cfg = dataclasses.replace(cfg, tape_width=solver.tape_width())
    env = Env(
        terms=terms,
        solver=solver,
        controller=controller,
        subs=subs,
        args=args,
        t0=t0,
        t1=t1,
        t1_floor=_t1_floor(t1),
        direction=direction,
    )
    carry = initial_carry(
        cfg,
        env,
        tnext=tnext,
        y0=y0,
        solver_state=solver_state,
        controller_state=controller_state,
        made_jump=made_jump,
    )
    final = run_loop(cfg, env, carry, kind=kind, checkpoints=checkpoints)

    step = final.step
    result = step.result
    if max_steps is not None:
        ran_out = (step.tprev < t1) & (step.num_steps >= max_steps)
        result = where((result == 0) & ran_out, RESULTS.max_steps_reached.value, result)
    if cfg.use_progress:
        progress_meter.close(step.progress_state)
    save_states = final_save_states(cfg, env, final)
    step = eqx.tree_at(lambda s: s.result, step, result)
    outputs = (save_states, final.dense_ts, final.dense_infos, final.record)
    return State(step, *without_spill_row(outputs))
