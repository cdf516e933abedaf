"""Terms: the pieces `vector_field * control` a differential equation is made of."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from ._custom_types import VF, Args, Control, RealScalarLike, Y
from ._misc import scale


class AbstractTerm(eqx.Module):
    """A term `f(t, y, args) dx(t)` of a differential equation.

    A solver sees a term through four operations: the vector field `vf`, the
    control increment `contr` over an interval, their product `prod`, and the fused
    `vf_prod`. For an ODE the control is time itself, so `contr(t0, t1) = t1 - t0`.
    """

    @abc.abstractmethod
    def vf(self, t: RealScalarLike, y: Y, args: Args) -> VF:
        """The vector field at time `t` and state `y`."""

    @abc.abstractmethod
    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs: Any) -> Control:
        """The increment of the control over `[t0, t1]`."""

    @abc.abstractmethod
    def prod(self, vf: VF, control: Control) -> Y:
        """Apply a vector field to a control increment; the result has `y`'s
        structure."""

    def vf_prod(self, t: RealScalarLike, y: Y, args: Args, control: Control) -> Y:
        """`prod(vf(t, y, args), control)`; override when the fused form is
        cheaper (e.g. a matrix-vector product instead of forming the matrix)."""
        return self.prod(self.vf(t, y, args), control)

    def is_vf_expensive(
        self, t0: RealScalarLike, t1: RealScalarLike, y: Y, args: Args
    ) -> bool:
        """Whether evaluating `vf` costs much more than `vf_prod`."""
        del t0, t1, y, args
        return False


class ODETerm(AbstractTerm):
    """The term `f(t, y, args) dt` of an ordinary differential equation.

    **Arguments:**

    - `vector_field`: a function `(t, y, args) -> dy/dt`, returning a PyTree of the
      same structure, shapes and dtypes as `y`. It may be an `equinox.Module`, whose
      array fields are then parameters that can be differentiated.

    ```python
    import jax.numpy as jnp
    import jaxdiffeq as jd
    term = jd.ODETerm(lambda t, y, args: -y)
    sol = jd.diffeqsolve(term, jd.Tsit5(), 0.0, 1.0, 0.1, jnp.array(1.0))
    ```
    """

    vector_field: Callable[[RealScalarLike, Y, Args], VF]

    def vf(self, t: RealScalarLike, y: Y, args: Args) -> VF:
        return self.vector_field(t, y, args)

    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs: Any) -> Array:
        del kwargs
        return jnp.subtract(t1, t0)

    def prod(self, vf: VF, control: RealScalarLike) -> Y:
        return jtu.tree_map(lambda v: scale(control, v), vf)


class MultiTerm(AbstractTerm):
    """A sum of terms `f_1 dx_1 + ... + f_n dx_n`, treated by the solver as one
    term. Its vector field and control are tuples with one entry per term.

    ```python
    import jaxdiffeq as jd
    drift = jd.ODETerm(lambda t, y, args: -y)
    forcing = jd.ODETerm(lambda t, y, args: 1.0 + 0 * y)
    terms = jd.MultiTerm(drift, forcing)
    ```
    """

    terms: tuple[AbstractTerm, ...]

    def __init__(self, *terms: AbstractTerm):
        if len(terms) == 0:
            raise ValueError("`MultiTerm` needs at least one term.")
        for term in terms:
            if not isinstance(term, AbstractTerm):
                raise TypeError(
                    f"`MultiTerm` takes terms (e.g. `ODETerm(f)`), got {type(term)}."
                )
        self.terms = terms

    def vf(self, t: RealScalarLike, y: Y, args: Args) -> tuple[VF, ...]:
        return tuple(term.vf(t, y, args) for term in self.terms)

    def contr(
        self, t0: RealScalarLike, t1: RealScalarLike, **kwargs: Any
    ) -> tuple[Control, ...]:
        return tuple(term.contr(t0, t1, **kwargs) for term in self.terms)

    def prod(self, vf: tuple[VF, ...], control: tuple[Control, ...]) -> Y:
        parts = [term.prod(v, c) for term, v, c in zip(self.terms, vf, control)]
        return jtu.tree_map(lambda *xs: sum(xs[1:], start=xs[0]), *parts)

    def vf_prod(
        self, t: RealScalarLike, y: Y, args: Args, control: tuple[Control, ...]
    ) -> Y:
        parts = [term.vf_prod(t, y, args, c) for term, c in zip(self.terms, control)]
        return jtu.tree_map(lambda *xs: sum(xs[1:], start=xs[0]), *parts)

    def is_vf_expensive(
        self, t0: RealScalarLike, t1: RealScalarLike, y: Y, args: Args
    ) -> bool:
        return any(term.is_vf_expensive(t0, t1, y, args) for term in self.terms)


class _DirectedTerm(AbstractTerm):
    """Internal: presents a term on the time axis `tau = direction * t`, so that the
    step loop always integrates forwards in `tau`.

    An ODE term becomes `direction * f(direction * tau, y) dtau`, so its vector field
    is `dy/dtau` (what dense output and the initial step selection need). Any other
    term keeps its vector field and has its control read at `direction * tau`.
    """

    term: AbstractTerm
    # `1.0` or `-1.0` where the direction is known while tracing (`t0` and `t1`
    # given as numbers); then forwards nothing is multiplied by it. A traced
    # direction, even one that is 1, is a multiplication XLA cannot drop
    # inside a conditional (a kernel of its own scaled every new Jacobian).
    direction: jax.Array | float

    def _forwards(self) -> bool:
        """Whether the direction is known to be forwards."""
        return isinstance(self.direction, float) and self.direction == 1.0

    def _directed(self, x):
        """`direction * x`, where the direction is not known to be forwards."""
        return x if self._forwards() else self.direction * x

    def vf(self, t: RealScalarLike, y: Y, args: Args) -> VF:
        out = self.term.vf(self._directed(t), y, args)
        if isinstance(self.term, ODETerm) and not self._forwards():
            out = jtu.tree_map(lambda v: scale(self.direction, v), out)
        return out

    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs: Any) -> Control:
        if isinstance(self.term, ODETerm):
            return jnp.subtract(t1, t0)
        return self.term.contr(self._directed(t0), self._directed(t1), **kwargs)

    def prod(self, vf: VF, control: Control) -> Y:
        return self.term.prod(vf, control)

    def vf_prod(self, t: RealScalarLike, y: Y, args: Args, control: Control) -> Y:
        if isinstance(self.term, ODETerm):
            control = self._directed(control)
        return self.term.vf_prod(self._directed(t), y, args, control)

    def is_vf_expensive(
        self, t0: RealScalarLike, t1: RealScalarLike, y: Y, args: Args
    ) -> bool:
        return self.term.is_vf_expensive(
            self._directed(t0), self._directed(t1), y, args
        )


def scales_by_control(term: AbstractTerm) -> bool:
    """Whether `term.prod(vf, control)` is `control * vf` leaf by leaf, with a scalar
    control (an ODE term, also one directed in time), so that a solver may fold the
    control into its own weighted sums."""
    if isinstance(term, _DirectedTerm):
        return scales_by_control(term.term)
    return isinstance(term, ODETerm) and type(term).prod is ODETerm.prod


def _direct_terms(
    terms: PyTree[AbstractTerm], direction: Array | float
) -> PyTree[AbstractTerm]:
    """Wrap every leaf term (descending into `MultiTerm`) in `_DirectedTerm`."""

    def wrap(term):
        if isinstance(term, MultiTerm):
            return MultiTerm(*(wrap(t) for t in term.terms))
        return _DirectedTerm(term, direction)

    return jtu.tree_map(wrap, terms, is_leaf=lambda x: isinstance(x, AbstractTerm))
