"""The loop itself, in the forms the adjoints ask for: nested (an inner loop over
steps with a small carry, left whenever an output is due; the outer loop writes
the outputs of the step) and flat (one loop, each iteration attempting a step
and writing its due outputs), run by `_while.while_loop` or
`_while.checkpointed_loop`.

Events and Brownian-path state (later) plug in at `attempt_step` (a step that
ends at an event) and at `write_outputs`; the loop forms here do not change."""

import dataclasses
import functools

import equinox as eqx
import jax.numpy as jnp

from .._misc import any_lane
from .._while import checkpointed_loop, while_loop
from .attempt import attempt_step, attempt_step_taped, unfinished
from .config import Env, Settings
from .outputs import write_outputs
from .select import COND_SIZE, tree_where
from .state import LastStep, State


def no_write(env: Env) -> LastStep:
    """A last step with nothing to write."""
    false = jnp.asarray(False)
    return LastStep(
        tprev=env.t0, tnext=env.t0, dense_info=None, write=false, fresh=false
    )


def step_until_write(cfg: Settings, env: Env, step, last: LastStep):
    """Step until some lane has outputs to write, or every lane is done."""

    def cond(carry):
        step, last = carry
        return any_lane(unfinished(cfg, env, step)) & ~any_lane(last.write)

    def body(carry):
        step, _ = carry
        return attempt_step(cfg, env, step)

    return while_loop(cond, body, (step, last))


def outer_cond(cfg: Settings, env: Env, carry):
    state, last = carry
    return any_lane(unfinished(cfg, env, state.step)) | any_lane(last.write)


def outer_body(cfg: Settings, env: Env, carry):
    state, last = carry
    step, last = step_until_write(cfg, env, state.step, last)
    state = eqx.tree_at(lambda s: s.step, state, step)
    return write_outputs(cfg, env, state, last)


def step_only(cfg: Settings, env: Env, carry):
    state, _ = carry
    step, last, tape = attempt_step_taped(cfg, env, state.step, None, state.tape)
    return _with_step(state, step, tape), last


def _with_step(state: State, step, tape) -> State:
    state = eqx.tree_at(lambda s: s.step, state, step)
    if tape is None:
        return state
    return eqx.tree_at(lambda s: s.tape, state, tape)


def step_then_write(cfg: Settings, env: Env, carry):
    """Attempt a step where no output of the last step remains to be written,
    then write the due outputs (up to each `SubSaveAt`'s width)."""
    state, last = carry
    # `attempt_step` relies on the loop's condition outside `vmap`; here the loop
    # may go on after the last step, for the writes of a step with more outputs
    # than the width.
    hold = last.write | ~unfinished(cfg, env, state.step)
    step, new_last, tape = attempt_step_taped(cfg, env, state.step, hold, state.tape)
    last = tree_where(hold, last, new_last, cfg.cond_size)
    return write_outputs(cfg, env, _with_step(state, step, tape), last)


def max_iterations(cfg: Settings) -> int | None:
    """A bound on the iterations of the flat loop: each one attempts a step and
    writes its outputs, except those that write further `ts` outputs of the same
    step (a step with `m` outputs of a `SubSaveAt` of width `w` is visited
    `ceil(m / w)` times, so at most `ceil(num_ts / w)` visits are extra)."""
    if cfg.max_steps is None:
        return None
    extra = sum(
        -(-lay.num_ts // width)
        for lay, width in zip(cfg.layouts, cfg.ts_widths)
        if lay.num_ts
    )
    return cfg.max_steps + extra


def _nested(cfg: Settings, carry, env: Env):
    return while_loop(
        functools.partial(outer_cond, cfg, env),
        functools.partial(outer_body, cfg, env),
        carry,
    )


def _reverse_mode(cfg: Settings) -> Settings:
    """The settings of the flat loop's body, which reverse mode differentiates:
    large carry leaves updated by a `cond` (`select.tree_where`), and steps
    without the folded stage layout (`runge_kutta.unfolded`). The primal form
    (the nested loop, run when nothing is differentiated) keeps `cfg`."""
    return dataclasses.replace(cfg, cond_size=COND_SIZE, fold_stages=False, ts_loops=())


def _replay(cfg: Settings) -> Settings:
    """The settings of the flat body where the checkpointed loop runs it
    without differentiating it (its forward pass and the recomputation of
    segments): the reverse-mode stage layout, so that the values are those of
    the differentiated body, but a `select` for every carry leaf, which fuses
    into the step where a `lax.cond` copies the chosen leaf (the choice is the
    same; heat equation gradient, Euler, 10^5 points: 0.80 -> 0.74 of Diffrax's
    time)."""
    return dataclasses.replace(cfg, cond_size=None, fold_stages=False, ts_loops=())


def _forward(cfg: Settings) -> Settings:
    """The settings of the flat body in the checkpointed loop's forward pass:
    `_replay`'s, without reading the tape, which holds nothing yet there."""
    return dataclasses.replace(_replay(cfg), tape_read=False)


def _present(*parts):
    return tuple(part for part in parts if part is not None)


def _flat_buffers(carry):
    state = carry[0]
    return _present(
        state.save_states, state.dense_ts, state.dense_infos, state.record, state.tape
    )


def _flat_form(cfg: Settings, body_cfg: Settings):
    """(cond, body, primal, buffers, replay, forward) of the flat loop over
    `(State, LastStep)`: each iteration attempts a step, then writes its due
    outputs (so the last step's outputs need no iteration of their own)."""
    replay_cfg, forward_cfg = _replay(cfg), _forward(cfg)
    return (
        lambda carry, env: outer_cond(cfg, env, carry),
        lambda carry, env: step_then_write(body_cfg, env, carry),
        functools.partial(_nested, cfg),
        _flat_buffers,
        lambda carry, env: step_then_write(replay_cfg, env, carry),
        lambda carry, env: step_then_write(forward_cfg, env, carry),
    )


def _state_buffers(state: State):
    return _present(state.save_states or None, state.tape)


def _state_form(cfg: Settings, body_cfg: Settings):
    """(cond, body, primal, buffers) of the flat loop over the `State` alone,
    for solves that write nothing inside the loop (the last step's record is
    never read, so the checkpoints are smaller)."""
    replay_cfg, forward_cfg = _replay(cfg), _forward(cfg)
    return (
        lambda state, env: any_lane(unfinished(cfg, env, state.step)),
        lambda state, env: step_only(body_cfg, env, (state, None))[0],
        lambda state, env: _nested(cfg, (state, no_write(env)), env)[0],
        _state_buffers,
        lambda state, env: step_only(replay_cfg, env, (state, None))[0],
        lambda state, env: step_only(forward_cfg, env, (state, None))[0],
    )


def run_loop(
    cfg: Settings, env: Env, carry: tuple[State, LastStep], *, kind, checkpoints
) -> State:
    """Run the loop of the given kind and return the final state.

    `"lax"` runs the nested form. The differentiable kinds run a flat form,
    because reverse mode needs a single loop: each iteration attempts a step
    unless outputs of the last step are still due, then writes the due outputs
    (masked, up to each `SubSaveAt`'s width). No `lax.cond` chooses between
    the two: its branches would copy the carry every iteration. The output
    buffers are the loop's `buffers`, stored once rather than in every
    checkpoint."""
    if kind == "lax":
        return _nested(cfg, carry, env)[0]
    writes_in_loop = cfg.needs_dense_info or cfg.writes_every_step
    body_cfg = _reverse_mode(cfg)
    if kind == "checkpointed":  # differentiated in reverse mode alone
        body_cfg = dataclasses.replace(body_cfg, reverse_only=True)
    if writes_in_loop:
        cond, body, primal, buffers, replay, forward = _flat_form(cfg, body_cfg)
        init = carry
    else:
        cond, body, primal, buffers, replay, forward = _state_form(cfg, body_cfg)
        init = carry[0]
    if kind == "bounded":
        bound = max_iterations(cfg)
        assert bound is not None
        final = while_loop(
            lambda c: cond(c, env),
            lambda c: body(c, env),
            init,
            max_steps=bound,
            kind="bounded",
        )
    else:
        assert kind == "checkpointed"
        final = checkpointed_loop(
            cond,
            body,
            init,
            env,
            max_steps=max_iterations(cfg),
            checkpoints=checkpoints,
            buffers=buffers,
            primal=primal,
            replay=replay,
            forward=forward,
        )
    return final[0] if writes_in_loop else final
