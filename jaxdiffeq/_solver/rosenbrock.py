"""Rosenbrock–Wanner (ROW) methods: linearly implicit Runge–Kutta methods for
stiff problems, one Jacobian and one factorisation per step and no Newton
iteration.

In the form of Hairer & Wanner (*Solving Ordinary Differential Equations II*,
§IV.7, the form their RODAS code uses), with `W = I / (gamma h) - J`, `J` the
Jacobian of the vector field at `(t0, y0)` and `f_t` its time derivative there,
stage `i` is

    U_i = y0 + sum_{j<i} a_ij k_j
    W k_i = f(t0 + c_i h, U_i) + sum_{j<i} (C_ij / h) k_j + d_i h f_t

`y1` and the error estimate are weighted sums of the `k_i` (`b_sol`,
`b_error`). The stages after the first run in a `lax.scan`, so the vector field
is traced a fixed number of times whatever the number of stages. The step works
on the flattened state, with a dense `W` (factorised once by the `lineax`
solver, LU by default) or, with a Jacobian-free solver such as
`lineax.GMRES`, `W` as a function (Jacobian-vector products).

Unlike a DIRK method's chord iteration, the Jacobian is part of the method
here: gradients flow through it (the exact derivative of the discrete scheme).
"""

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import _fraction, _ValueOnStep
from .._results import RESULTS
from .._term import AbstractTerm, scales_by_control
from .base import AbstractAdaptiveSolver
from .implicit import failed_error, linearising


class RosenbrockTableau(eqx.Module):
    """The coefficients of a Rosenbrock method in Hairer–Wanner's `W`-form:
    `gamma`, `a` and `C` (`(s, s)`, strictly lower triangular), the nodes `c`
    and the time-derivative weights `d` (length `s`), `b_sol` and `b_error`
    (length `s`), and `dense` (`(m, s)`: the rows that combine the stages into
    the coefficients of the dense-output polynomial, see
    `RosenbrockInterpolation`)."""

    gamma: float
    a: np.ndarray
    C: np.ndarray
    c: np.ndarray
    d: np.ndarray
    b_sol: np.ndarray
    b_error: np.ndarray
    dense: np.ndarray

    def __check_init__(self):
        s = len(self.c)
        for name in ("a", "C"):
            m = getattr(self, name)
            if m.shape != (s, s) or np.any(np.triu(m) != 0):
                raise ValueError(
                    f"`{name}` must be strictly lower triangular, {s}x{s}."
                )
        if len(self.d) != s or len(self.b_sol) != s or len(self.b_error) != s:
            raise ValueError(f"`d`, `b_sol` and `b_error` need length {s}.")
        if self.dense.ndim != 2 or self.dense.shape[1] != s:
            raise ValueError(f"`dense` must have {s} columns.")


class RosenbrockInterpolation(_ValueOnStep):
    """The dense output of the Rodas methods:
    `y(t0 + s h) = (1 - s) y0 + s (y1 + (1 - s) (q_1 + s (q_2 + s q_3 ...)))`,
    with the `q_m` (stacked on the first axis of `q`) combinations of the
    stages."""

    t0: RealScalarLike
    t1: RealScalarLike
    y0: Y
    y1: Y
    q: Y

    def _at(self, t: RealScalarLike, left: bool) -> PyTree[Array]:
        del left
        s = _fraction(t, self.t0, self.t1)

        def leaf(y0, y1, q):
            s_ = jnp.asarray(s).astype(y0.dtype)
            inner = q[-1]
            for m in range(q.shape[0] - 2, -1, -1):
                inner = q[m] + s_ * inner
            return (1 - s_) * y0 + s_ * (y1 + (1 - s_) * inner)

        return jax.tree.map(leaf, self.y0, self.y1, self.q)


def _w_operator(jac_vp, jac, h_gamma, structure, dense: bool):
    """`W = I / (gamma h) - J`: a matrix, or a function for iterative solvers."""
    if dense:
        eye = jnp.eye(jac.shape[0], dtype=jac.dtype)
        return lx.MatrixLinearOperator(eye / h_gamma.astype(jac.dtype) - jac)

    def matvec(v):
        return v / h_gamma.astype(v.dtype) - jac_vp(v)

    return lx.FunctionLinearOperator(matvec, structure)


class AbstractRosenbrock(AbstractAdaptiveSolver):
    """A Rosenbrock–Wanner method defined by its class variable `tableau` (a
    `RosenbrockTableau`), for stiff ODEs (`ODETerm`). A new method is a
    subclass that sets `tableau` and `order`; see `Rodas5P`.

    **Arguments:**

    - `linear_solver`: the `lineax` solver for `W` (default
      `lineax.AutoLinearSolver(well_posed=True)`: LU of the dense matrix). With
      a solver that does not need a matrix (`lineax.GMRES`, `lineax.BiCGStab`)
      `W` is applied through Jacobian-vector products and never formed.
    - `jacobian`: `None` (default: `jax.jacfwd` of the vector field, or its
      Jacobian-vector products), or a function `jacobian(t, y, args)` returning
      the Jacobian of the vector field at `(t, y)` as a `lineax` linear operator
      on `y`'s structure (e.g. a `lineax.TridiagonalLinearOperator` for a 1-D
      diffusion, or a `lineax.FunctionLinearOperator` of an analytic product).
      It must be exact: the method's order depends on it. The time derivative
      still comes from `jax.jvp` of the vector field.
    """

    tableau: ClassVar[RosenbrockTableau]
    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = RosenbrockInterpolation
    linear_solver: lx.AbstractLinearSolver = lx.AutoLinearSolver(well_posed=True)
    jacobian: Callable[[RealScalarLike, Y, Args], lx.AbstractLinearOperator] | None = (
        None
    )

    def init(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> None:
        del terms, t0, t1, y0, args
        return None

    def func(self, terms: AbstractTerm, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)

    def _dense(self) -> bool:
        return isinstance(self.linear_solver, (lx.AutoLinearSolver, lx.LU, lx.QR))

    def _jacobian(self, terms, f, t0, flat0, unravel, args):
        """`(J, None)` as a dense matrix, or `(None, v -> J v)`."""
        if self.jacobian is None:
            with linearising():
                if self._dense():
                    return jax.jacfwd(lambda v: f(t0, v))(flat0), None
                return None, jax.linearize(lambda v: f(t0, v), flat0)[1]
        # The user's Jacobian is of `f(t, y)`; the loop integrates in
        # `tau = direction * t`, where the vector field is `direction * f`.
        direction = getattr(terms, "direction", None)
        sign = 1.0 if direction is None else direction
        t = t0 if direction is None else t0 * direction
        op = self.jacobian(t, unravel(flat0), args)
        if self._dense():
            matrix = op.as_matrix()
            return (jnp.asarray(sign, matrix.dtype) * matrix).astype(flat0.dtype), None

        def jac_vp(v):
            out = ravel_pytree(op.mv(unravel(v)))[0]
            return jnp.asarray(sign, out.dtype) * out

        return None, jac_vp

    def step(
        self,
        terms: AbstractTerm,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: None,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, None, RESULTS]:
        del solver_state, made_jump
        if not scales_by_control(terms):
            raise TypeError(
                f"`{type(self).__name__}` is a Rosenbrock method, for ODEs: pass one "
                f"`ODETerm` (got {type(terms).__name__}). For a stiff part and a "
                "non-stiff one use `KenCarp4` with `MultiTerm`."
            )
        tab = self.tableau
        flat0, unravel = ravel_pytree(y0)
        h, zero = _step_size(t0, t1)
        time_dtype = jnp.result_type(h)

        def f(t, v):
            return ravel_pytree(terms.vf(t, unravel(v), args))[0]

        with linearising():
            f0, f_t = jax.jvp(lambda t: f(t, flat0), (t0,), (jnp.ones_like(t0),))
        f_t = f_t.astype(flat0.dtype)
        jac, jac_vp = self._jacobian(terms, f, t0, flat0, unravel, args)
        structure = jax.eval_shape(lambda: flat0)
        h_gamma = h * jnp.asarray(tab.gamma, time_dtype)
        w = _w_operator(jac_vp, jac, h_gamma, structure, self._dense())
        state = self.linear_solver.init(w, options={})
        ks, code = _stages(tab, f, f0, f_t, w, state, self.linear_solver, t0, h, flat0)
        # A zero-length step leaves the state as it is (`_step_size`).
        ks = jnp.where(zero, jnp.zeros_like(ks), ks)
        y1 = flat0 + jnp.tensordot(jnp.asarray(tab.b_sol, ks.dtype), ks, 1)
        error = jnp.tensordot(jnp.asarray(tab.b_error, ks.dtype), ks, 1)
        finite = jnp.all(jnp.isfinite(y1))
        code = jnp.where((code == 0) & ~finite, RESULTS.singular.value, code)
        result = RESULTS(code)
        q = jnp.asarray(tab.dense, ks.dtype) @ ks
        dense_info = dict(y0=y0, y1=unravel(y1), q=jax.vmap(unravel)(q))
        return (
            unravel(y1),
            failed_error(unravel(error), result),
            dense_info,
            None,
            result,
        )


def _step_size(t0, t1):
    """The step size, and whether the step has zero length. A Rosenbrock step
    divides by its size (`W = I / (gamma h) - J`, the `C / h` terms), so a step
    of zero length, such as the step loop's body takes in a finished lane of a
    `vmap`, would be NaN; under differentiation `lineax` then raised on the
    non-finite values ("non-finite input"), even though the step is discarded.
    Such a step is taken with a step size at the rounding level of `t0`
    instead, whose stages stay finite, and its stages are then set to zero."""
    h = jnp.subtract(t1, t0)
    zero = h == 0
    tiny = jnp.finfo(jnp.result_type(h)).eps * jnp.maximum(jnp.abs(t0), 1)
    return jnp.where(zero, tiny.astype(h.dtype), h), zero


def _stages(tab, f, f0, f_t, w, state, solver, t0, h, flat0):
    """All the stage increments `(s, n)` and a `RESULTS` code (singular `W`)."""
    s = len(tab.c)
    dtype = flat0.dtype
    hd = jnp.asarray(h, dtype)

    def solve(rhs):
        # A step too large for the vector field (it overflows) is rejected by
        # its code; its non-finite values are zeroed first, so that the
        # linear solves, and their tangent solves in `lineax` (which raise on
        # non-finite values), see finite ones: forward mode through such a
        # step raised. (A NaN of `0 * inf` in reverse mode is not caught.)
        finite = jnp.isfinite(rhs)
        rhs = jnp.where(finite, rhs, jnp.zeros_like(rhs))
        sol = lx.linear_solve(w, rhs, solver, state=state, throw=False)
        bad = (sol.result != lx.RESULTS.successful) | ~jnp.all(jnp.isfinite(sol.value))
        return sol.value, bad | ~jnp.all(finite)

    k_first, bad = solve(f0 + jnp.asarray(tab.d[0], dtype) * hd * f_t)
    ks = jnp.zeros((s, *flat0.shape), dtype).at[0].set(k_first)

    def stage(carry, xs):
        ks, bad = carry
        i, a_row, c_row, node, d_i = xs
        u = flat0 + jnp.tensordot(a_row.astype(dtype), ks, 1)
        rhs = f(t0 + node * h, u) + jnp.tensordot(c_row.astype(dtype), ks, 1) / hd
        k, bad_i = solve(rhs + d_i.astype(dtype) * hd * f_t)
        # (Not `.at[i].set`: see `dirk_stages.run_stages`.)
        return (lax.dynamic_update_index_in_dim(ks, k, i, 0), bad | bad_i), None

    time_dtype = jnp.result_type(h)
    xs = (
        np.arange(1, s),
        np.asarray(tab.a[1:]),
        np.asarray(tab.C[1:]),
        np.asarray(tab.c[1:], dtype=time_dtype),
        np.asarray(tab.d[1:]),
    )
    (ks, bad), _ = lax.scan(stage, (ks, bad), xs)
    code = jnp.where(bad, RESULTS.singular.value, 0)
    return ks, code
