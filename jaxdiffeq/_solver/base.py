"""The solver interface: `AbstractSolver` and its capability markers."""

import abc
from collections.abc import Callable
from typing import Any, ClassVar, TypeGuard, TypeVar

import equinox as eqx
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, PyTree

from .._custom_types import VF, Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interpolation import AbstractLocalInterpolation
from .._results import RESULTS
from .._term import AbstractTerm

SolverState = PyTree[Any]
_T = TypeVar("_T")


class _SolverMeta(type(eqx.Module)):
    """The metaclass of solvers: a wrapped solver (`AbstractWrappedSolver`, e.g.
    `HalfSolver(Euler())`) passes the `isinstance` checks of the solver it wraps
    as well as its own, as in Diffrax: `isinstance(HalfSolver(Euler()), Euler)` is
    true, `isinstance(HalfSolver(Euler()), Heun)` is not.

    Only `isinstance` is affected; `issubclass(type(solver), cls)` (see
    `is_directly`) still answers for the wrapper alone, which is what the
    library's own capability checks use."""

    def __instancecheck__(cls, obj):
        if super().__instancecheck__(obj):
            return True
        if issubclass(type(obj), AbstractWrappedSolver):
            # One level, as in Diffrax: `HalfSolver(HalfSolver(Heun()))` is not a
            # `Heun`.
            return super().__instancecheck__(obj.solver)
        return False


# Passed as `**_metaclass` so that type checkers keep treating solvers as the
# dataclasses `equinox.Module` makes them (an explicit `metaclass=` hides that).
_metaclass: dict[str, Any] = dict(metaclass=_SolverMeta)


def is_directly(solver: Any, cls: type[_T]) -> TypeGuard[_T]:
    """`isinstance(solver, cls)` for the solver itself, not for a solver it wraps
    (e.g. whether `solver` implements `AbstractReversibleSolver.backward_step`)."""
    return issubclass(type(solver), cls)


class AbstractSolver(eqx.Module, **_metaclass):
    """A numerical method that advances a differential equation by one step.

    Subclass it to write a new method. The contract:

    - `term_structure`: the PyTree of term types the solver accepts (e.g.
      `AbstractTerm` for any single term); `diffeqsolve` checks the terms against it.
    - `interpolation_cls(t0=, t1=, **dense_info)`: builds the step's interpolant.
    - `init(terms, t0, t1, y0, args) -> solver_state`: state carried between steps
      (e.g. the first-same-as-last stage); `None` when there is none.
    - `step(terms, t0, t1, y0, args, solver_state, made_jump)` returns
      `(y1, y_error, dense_info, solver_state, result)`: the state at `t1`, an
      estimate of the local error (`None` if the method has none), the information
      for `interpolation_cls`, the new solver state and a `RESULTS` code.
      `made_jump` is `True` when the vector field may be discontinuous at `t0`, so
      that cached evaluations must not be reused.
    - `func(terms, t0, y0, args)`: the vector field, used e.g. to choose the
      first step size.

    Manual stepping:

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    solver = jd.Tsit5()
    y, t, dt = jnp.array(1.0), 0.0, 0.1
    state = solver.init(term, t, t + dt, y, None)
    for _ in range(10):
        y, y_error, dense_info, state, result = solver.step(
            term, t, t + dt, y, None, state, made_jump=False
        )
        t += dt
    ```
    """

    term_structure: ClassVar[Any]
    interpolation_cls: ClassVar[Callable[..., AbstractLocalInterpolation]]
    # Whether the state `step` returns is kept after a rejected step too (a cache
    # valid at the step's start, such as a Jacobian), not only after an accepted
    # one (which a first-same-as-last stage needs).
    keeps_state_on_reject: ClassVar[bool] = False

    def retries(self, solver_state: SolverState) -> Array | None:
        """Whether the step that returned `solver_state` is to be attempted
        again at the same size, not rejected (the step-size controller is not
        asked), e.g. with a fresh Jacobian; `None` where it never is."""
        del solver_state
        return None

    def tape_width(self) -> int:
        """How many int32 values `step_with_tape` records per step attempt (0:
        none). A method whose step makes discrete decisions that rounding can
        flip (an implicit method's iteration counts) records them, so that the
        backward pass of `RecursiveCheckpointAdjoint`, which recomputes steps,
        makes the same ones."""
        return 0

    def step_with_tape(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: SolverState,
        made_jump: BoolScalarLike,
        tape: Array | None,
    ) -> tuple[Y, Y | None, DenseInfo, SolverState, RESULTS, Array]:
        """`step`, given the record `tape` of an earlier attempt of the same
        step (`None`, or zeros: none), and returning this attempt's record
        (`tape_width()` int32s)."""
        del tape
        out = self.step(terms, t0, t1, y0, args, solver_state, made_jump)
        return (*out, jnp.zeros((self.tape_width(),), jnp.int32))

    def stats(self, solver_state: SolverState) -> dict[str, Any]:
        """Counts the method keeps in its final state, added to `Solution.stats`
        (e.g. the implicit methods' `num_jacobians`)."""
        del solver_state
        return {}

    def order(self, terms: PyTree[AbstractTerm]) -> int | None:
        """The order of convergence on ODEs (`None` if not meaningful)."""
        del terms
        return None

    def strong_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        """The strong order of convergence on SDEs (`None` if not meaningful)."""
        del terms
        return None

    def error_order(self, terms: PyTree[AbstractTerm]) -> float | None:
        """The exponent `k` used by adaptive step-size control (`h ∝ error^(-1/k)`).

        For an embedded pair of orders `p(p-1)` the error estimate is that of the
        lower-order method, whose local error is `O(h^p)`: so `k = p`, the order.
        """
        return self.order(terms)

    @abc.abstractmethod
    def init(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
    ) -> SolverState:
        """The initial solver state."""

    @abc.abstractmethod
    def step(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y | None, DenseInfo, SolverState, RESULTS]:
        """Advance from `t0` to `t1`; see the class docstring for the contract."""

    @abc.abstractmethod
    def func(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> VF:
        """The vector field of `terms` at `(t0, y0)`."""


class AbstractAdaptiveSolver(AbstractSolver):
    """Marker: `step` returns a local error estimate, so the solver can be used with
    adaptive step-size controllers."""


class AbstractItoSolver(AbstractSolver):
    """Marker: converges to the Itô solution of an SDE."""


class AbstractStratonovichSolver(AbstractSolver):
    """Marker: converges to the Stratonovich solution of an SDE."""


class AbstractImplicitSolver(AbstractSolver):
    """A solver whose step solves a nonlinear system (for stiff problems).

    - `root_finder`: an `optimistix` root finder for the stage equations. Built
      with `with_stepsize_controller_tols`, it takes `rtol`, `atol` and `norm`
      from the step-size controller.
    - `root_find_max_steps`: the most iterations of one stage equation. One that
      does not converge in them (or diverges, or meets a singular matrix)
      rejects the step under an adaptive controller, which retries it with a
      smaller one; otherwise the solve stops with that `RESULTS` code.
    """

    root_finder: eqx.AbstractVar[optx.AbstractRootFinder]
    root_find_max_steps: eqx.AbstractVar[int]


class AbstractReversibleSolver(AbstractSolver):
    """A solver whose step can be undone exactly (algebraically reversible), so
    that `ReversibleAdjoint` can rebuild every state backwards from the last one
    instead of storing them.

    Besides the `AbstractSolver` contract it implements `backward_step`.
    """

    # Whether `backward_step` is exact only when every step has the same size
    # (e.g. `LeapfrogMidpoint`, whose state does not record the previous step's
    # size); `ReversibleAdjoint` then requires `ConstantStepSize`.
    constant_steps_only: ClassVar[bool] = False

    @abc.abstractmethod
    def backward_step(
        self,
        terms: PyTree[AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y1: Y,
        args: Args,
        solver_state: SolverState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, DenseInfo, SolverState, RESULTS]:
        """Undo the step from `t0` to `t1`: from the state `y1` and solver state at
        `t1` (what `step` returned), rebuild the state and solver state at `t0`.

        Returns `(y0, dense_info, solver_state0, result)`, where `dense_info` is
        that of the forward step. Up to rounding, `step(terms, t0, t1, y0, args,
        solver_state0, made_jump)` returns `y1` and `solver_state` again.
        """


class AbstractWrappedSolver(AbstractSolver):
    """A solver that wraps another one, e.g. `HalfSolver(Euler())`."""

    solver: eqx.AbstractVar[AbstractSolver]
