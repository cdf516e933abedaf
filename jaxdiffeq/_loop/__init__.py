"""The step loop: a loop over steps, outputs written in place.

One step attempts a step (`solver.step`) and lets the controller accept or reject it
(`controller.adapt_step_size`); the outputs that fall inside an accepted step are
then written to preallocated buffers. Everything here works on the forward time
axis `tau = direction * t`; `diffeqsolve` maps times in and out.

Why it looks the way it does (see DESIGN.md, facts 1–4):

- Outputs at `SaveAt(ts)` are interpolated inside the step where they fall (output
  `s` belongs to step `[t_k, t_{k+1}]` iff `t_k < s <= t_{k+1}`), several at once
  (one vectorised evaluation of the interpolant at the next outputs, `width` of
  them, see `config.ts_width`), rather than looping over output times.
- Under `vmap` every loop predicate is reduced across the batch (`any_lane`) and the
  bodies mask their own updates (`lane_mask`): there is no `select` over the output
  buffers, which are written in place with `dynamic_update_slice`.
- Steps run in an inner loop whose carry holds only the small per-step state; it
  exits after any step that has something to write (in any lane), and the outer
  loop writes the outputs and re-enters it. Lanes never wait for each other: an
  exit only pauses stepping for one write. The split matters for speed on CPU:
  XLA compiles a loop whose carry is small (about 1 kB) into a single kernel, and
  runs a sequence of operations without scheduling overhead only when none of
  them touches a large buffer; keeping the output buffers out of the stepping loop
  makes small problems several times faster.

The parts, in the order data flows through them: `config` (the static
`Settings` and the differentiable `Env` of one solve), `select` (new or old
values of the carry), `state` (the loop state and buffer writes), `setup` (the
initial carry), `attempt` (one step attempt), `outputs` (the output writes),
`drive` (the loop forms) and `run`.
"""

from .config import width_class as width_class
from .run import run as run
from .state import (
    State as State,
    layout as layout,
    t1_row_written as t1_row_written,
    value_in_step as value_in_step,
)
