"""Root finders of implicit solvers that take their tolerances from the step-size
controller: `with_stepsize_controller_tols` and the substitution `diffeqsolve`
makes (`with_controller_tolerances`)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.tree_util as jtu
import optimistix as optx

from ._controller.base import AbstractAdaptiveStepSizeController
from ._controller.clip import innermost_controller

_FIELDS = ("rtol", "atol", "norm")


class _UseControllerTolerance:
    """The placeholder a root finder holds until `diffeqsolve` replaces it by the
    step-size controller's tolerance (one object, compared by identity)."""

    def __repr__(self) -> str:
        return "<taken from `diffeqsolve(..., stepsize_controller=...)` argument>"


USE_CONTROLLER_TOLERANCE = _UseControllerTolerance()


def with_stepsize_controller_tols(
    cls: type[optx.AbstractRootFinder],
) -> Callable[..., optx.AbstractRootFinder]:
    """A constructor of the root finder `cls` (e.g. `optimistix.Chord`,
    `VeryChord`) whose `rtol`, `atol` and `norm` are those of the step-size
    controller passed to `diffeqsolve`. It is how the implicit solvers' default
    root finders are built: a stage equation is then solved as accurately as the
    step is controlled, and no more.

    ```python
    import optimistix as optx
    import jaxdiffeq as jd

    solver = jd.ImplicitEuler(
        root_finder=jd.with_stepsize_controller_tols(optx.Newton)()
    )
    ```

    With a controller that has no tolerances (`ConstantStepSize`) `diffeqsolve`
    raises: give the root finder its own, e.g. `optx.Chord(rtol=1e-8,
    atol=1e-8)`."""

    def make(*args: Any, **kwargs: Any) -> optx.AbstractRootFinder:
        placeholders = {name: USE_CONTROLLER_TOLERANCE for name in _FIELDS}
        return cls(*args, **placeholders, **kwargs)

    return make


def _tolerances_of(controller) -> Any:
    controller = innermost_controller(controller)
    return (
        controller
        if isinstance(controller, AbstractAdaptiveStepSizeController)
        else None
    )


def with_controller_tolerances(root_finder, controller):
    """`root_finder` with its placeholder tolerances replaced by `controller`'s."""
    names = [
        n for n in _FIELDS if getattr(root_finder, n, None) is USE_CONTROLLER_TOLERANCE
    ]
    if not names:
        return root_finder
    source = _tolerances_of(controller)
    if source is None or not all(hasattr(source, n) for n in names):
        raise ValueError(
            f"The implicit solver's root finder ({type(root_finder).__name__}) takes "
            f"its tolerances from the step-size controller, but "
            f"`{type(controller).__name__}` has none. Pass a root finder with its "
            "own, e.g. `root_finder=optimistix.Chord(rtol=1e-8, atol=1e-8)`, or use "
            "`PIDController`."
        )
    return eqx.tree_at(
        lambda r: [getattr(r, n) for n in names],
        root_finder,
        [getattr(source, n) for n in names],
    )


def resolve_root_finders(solver, controller):
    """`solver`, with the root finder of every implicit solver in it (itself, or
    one it wraps) given `controller`'s tolerances where it asks for them."""
    from ._solver.base import AbstractImplicitSolver

    def is_implicit(x) -> bool:
        return isinstance(x, AbstractImplicitSolver)

    def resolve(x):
        if not is_implicit(x):
            return x
        found = with_controller_tolerances(x.root_finder, controller)
        return eqx.tree_at(lambda s: s.root_finder, x, found)

    return jtu.tree_map(resolve, solver, is_leaf=is_implicit)


def default_root_finder() -> optx.AbstractRootFinder:
    """The implicit Runge–Kutta methods' default root finder: `VeryChord` with
    the step-size controller's tolerances. It stops on the rate of convergence
    rather than on two close iterates, so it gives up early on a stage equation
    that converges slowly, which the controller then retries with a smaller
    step. (With a Cauchy test instead, `optimistix.Chord`'s default, E5 of the
    Bari test set with `Kvaerno5` stalled near t = 430 after 20,000 steps.)"""
    from ._verychord import VeryChord

    return with_stepsize_controller_tols(VeryChord)()
