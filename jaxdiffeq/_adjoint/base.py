"""The adjoint interface: how `diffeqsolve` runs its step loop so that it can be
differentiated."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._controller.base import AbstractStepSizeController
from .._custom_types import Args, RealScalarLike, Y
from .._loop import State
from .._saveat import SaveAt
from .._solver.base import AbstractSolver
from .._term import AbstractTerm, MultiTerm, ODETerm


class AbstractAdjoint(eqx.Module):
    """How a solve is differentiated.

    `diffeqsolve` validates its inputs and then hands the step loop to the
    adjoint: `loop(run, **kwargs)` must return what `run(**kwargs)` returns (the
    final loop state), computed so that the chosen kind of differentiation works.
    `run` is the step loop of `diffeqsolve`; it takes a `kind` keyword (`"lax"`,
    `"bounded"` or `"checkpointed"`, see `jaxdiffeq.while_loop`) and
    `checkpoints`.
    """

    @abc.abstractmethod
    def loop(self, run: Callable[..., State], **kwargs: Any) -> State:
        """Run the step loop `run(**kwargs)`, choosing its loop kind (and any
        custom differentiation rule around it)."""

    def prepare_terms(
        self, terms: PyTree[AbstractTerm], t0: RealScalarLike, y0: Y, args: Args
    ) -> PyTree[AbstractTerm]:
        """The terms the loop runs on. An adjoint that wraps the loop in a custom
        derivative rule returns them with closed-over arrays made explicit
        (`closure_convert_terms`); by default they are returned as they are."""
        del t0, y0, args
        return terms

    def prepare_solver(self, solver: AbstractSolver) -> AbstractSolver:
        """The solver the loop runs (e.g. `ReversibleAdjoint` wraps a solver in
        `Reversible`); by default the solver itself. Never modifies `solver`."""
        return solver

    def check(
        self,
        *,
        saveat: SaveAt,
        max_steps: int | None,
        event: None,
        solver: AbstractSolver,
        stepsize_controller: AbstractStepSizeController | None = None,
    ) -> None:
        """Raise a `ValueError` naming the fix if this adjoint cannot
        differentiate a solve with these settings (checked before tracing)."""
        del saveat, max_steps, event, solver, stepsize_controller


def _is_term(x):
    return isinstance(x, AbstractTerm)


def closure_convert_terms(terms, t0, y0, args):
    """Turn the arrays that each `ODETerm`'s vector field closes over into leaves
    of the term (with `equinox.filter_closure_convert`), so that a differentiated
    loop receives them as explicit inputs."""

    # A single term sees the whole state. In a structure of terms (the pair of
    # `SemiImplicitEuler`) a term may see one part of a tuple state instead: the
    # first example that traces is used.
    if isinstance(terms, AbstractTerm) or not isinstance(y0, tuple):
        examples = [y0]
    else:
        examples = [y0, *y0]

    def trace(fn):
        for example in examples[:-1]:
            try:
                return eqx.filter_closure_convert(fn, t0, example, args)
            except (TypeError, ValueError):
                pass
        return eqx.filter_closure_convert(fn, t0, examples[-1], args)

    def convert(term):
        if isinstance(term, MultiTerm):
            return MultiTerm(*[convert(t) for t in term.terms])
        if isinstance(term, ODETerm) and not isinstance(term.vector_field, eqx.Module):
            fn = trace(term.vector_field)
            # Nothing closed over that could be differentiated: keep the
            # function itself (no jaxpr to re-trace).
            if any(eqx.is_inexact_array(x) for x in jtu.tree_leaves(fn)):
                return ODETerm(fn)
        return term

    return jtu.tree_map(convert, terms, is_leaf=_is_term)
