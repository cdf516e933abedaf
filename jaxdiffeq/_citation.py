"""`citation` and `citation_rules`: the BibTeX of the methods a solve uses.

A rule is a function whose parameters are named after those of `diffeqsolve`;
`citation(...)` calls every rule whose parameters without defaults it was
given, and prints what the rules return (a string of BibTeX with comments, or
`None` for nothing). Users append rules of their own to `citation_rules`.

The references are bibliographic facts, kept here as data, one table for the
solvers, one for the step-size controllers and one for the adjoints; a class
not in a table (a user's own) is cited by nothing.
"""

import inspect
from collections.abc import Callable
from typing import Any

from ._adjoint.backsolve import BacksolveAdjoint, adjoint_rms_seminorm
from ._adjoint.implicit import ImplicitAdjoint
from ._adjoint.recursive import RecursiveCheckpointAdjoint
from ._adjoint.reversible import ReversibleAdjoint
from ._controller.base import AbstractStepSizeController
from ._controller.clip import innermost_controller
from ._controller.pid import PIDController
from ._solve import diffeqsolve
from ._solver.base import AbstractSolver, AbstractWrappedSolver, is_directly
from ._solver.bosh3 import Bosh3
from ._solver.dopri5 import Dopri5
from ._solver.dopri8 import Dopri8
from ._solver.euler import Euler
from ._solver.half import HalfSolver
from ._solver.heun import Heun
from ._solver.leapfrog_midpoint import LeapfrogMidpoint
from ._solver.midpoint import Midpoint
from ._solver.ralston import Ralston
from ._solver.reversible import Reversible
from ._solver.reversible_heun import ReversibleHeun
from ._solver.semi_implicit_euler import SemiImplicitEuler
from ._solver.tsit5 import Tsit5

_HAIRER_I = r"""@book{hairer1993solving-i,
  author={Hairer, E. and N{\o}rsett, S. P. and Wanner, G.},
  title={Solving Ordinary Differential Equations {I}: Nonstiff Problems},
  edition={Second Revised Edition},
  publisher={Springer},
  address={Berlin},
  year={1993}
}"""

_KIDGER_THESIS = r"""@phdthesis{kidger2021on,
  title={On Neural Differential Equations},
  author={Patrick Kidger},
  school={University of Oxford},
  year={2021},
  note={arXiv:2202.02435}
}"""

_MCCALLUM_FOSTER = r"""@article{mccallum2024efficient,
  title={Efficient, Accurate and Stable Gradients for Neural {ODE}s},
  author={McCallum, Sam and Foster, James},
  journal={arXiv:2410.11648},
  year={2024}
}"""

_SOLVERS: dict[type, tuple[str, str]] = {
    Euler: (
        "The Euler method is classical; see e.g. Section II.1 of:",
        _HAIRER_I,
    ),
    Heun: (
        "Heun's method is from:",
        r"""@article{heun1900neue,
  title={Neue {M}ethoden zur approximativen {I}ntegration der
         {D}ifferentialgleichungen einer unabh{\"a}ngigen {V}er{\"a}nderlichen},
  author={Heun, Karl},
  journal={Zeitschrift f{\"u}r Mathematik und Physik},
  volume={45},
  pages={23--38},
  year={1900}
}""",
    ),
    Midpoint: (
        "The explicit midpoint method is from:",
        r"""@article{runge1895numerische,
  title={{\"U}ber die numerische {A}ufl{\"o}sung von {D}ifferentialgleichungen},
  author={Runge, Carl},
  journal={Mathematische Annalen},
  volume={46},
  number={2},
  pages={167--178},
  year={1895}
}""",
    ),
    Ralston: (
        "Ralston's method is from:",
        r"""@article{ralston1962runge,
  title={Runge-{K}utta methods with minimum error bounds},
  author={Ralston, Anthony},
  journal={Mathematics of Computation},
  volume={16},
  number={80},
  pages={431--437},
  year={1962}
}""",
    ),
    Bosh3: (
        "The Bogacki--Shampine 3(2) method is from:",
        r"""@article{bogacki1989a32,
  title={A 3(2) pair of {R}unge--{K}utta formulas},
  author={Bogacki, P. and Shampine, L. F.},
  journal={Applied Mathematics Letters},
  volume={2},
  number={4},
  pages={321--325},
  year={1989}
}""",
    ),
    Tsit5: (
        "Tsitouras' 5(4) method is from:",
        r"""@article{tsitouras2011runge,
  title={Runge--{K}utta pairs of order 5(4) satisfying only the first column
         simplifying assumption},
  author={Tsitouras, Ch.},
  journal={Computers \& Mathematics with Applications},
  volume={62},
  number={2},
  pages={770--775},
  year={2011}
}""",
    ),
    Dopri5: (
        "The Dormand--Prince 5(4) method is from the first, its dense output "
        "from the second of:",
        r"""@article{dormand1980family,
  title={A family of embedded {R}unge--{K}utta formulae},
  author={Dormand, J. R. and Prince, P. J.},
  journal={Journal of Computational and Applied Mathematics},
  volume={6},
  number={1},
  pages={19--26},
  year={1980}
}

@article{shampine1986some,
  title={Some practical {R}unge--{K}utta formulas},
  author={Shampine, Lawrence F.},
  journal={Mathematics of Computation},
  volume={46},
  number={173},
  pages={135--150},
  year={1986}
}""",
    ),
    Dopri8: (
        "The Dormand--Prince 8(7) method is from:",
        r"""@article{prince1981high,
  title={High order embedded {R}unge--{K}utta formulae},
  author={Prince, P. J. and Dormand, J. R.},
  journal={Journal of Computational and Applied Mathematics},
  volume={7},
  number={1},
  pages={67--75},
  year={1981}
}""",
    ),
    HalfSolver: (
        "Error estimation by step doubling (Richardson extrapolation) is "
        "described in Section II.4 of:",
        _HAIRER_I,
    ),
    ReversibleHeun: (
        "The reversible Heun method is from:",
        r"""@inproceedings{kidger2021efficient,
  title={Efficient and Accurate Gradients for Neural {SDE}s},
  author={Kidger, Patrick and Foster, James and Li, Xuechen and Lyons, Terry},
  booktitle={Advances in Neural Information Processing Systems},
  volume={34},
  year={2021}
}""",
    ),
    LeapfrogMidpoint: (
        "The leapfrog/midpoint method as a reversible integrator for neural ODEs "
        "is from:",
        r"""@inproceedings{zhuang2021mali,
  title={{MALI}: A memory efficient and reverse accurate integrator for
         {N}eural {ODE}s},
  author={Zhuang, Juntang and Dvornek, Nicha C. and Tatikonda, Sekhar and
          Duncan, James S.},
  booktitle={International Conference on Learning Representations},
  year={2021}
}""",
    ),
    SemiImplicitEuler: (
        "The semi-implicit (symplectic) Euler method is described in:",
        r"""@book{hairer2006geometric,
  title={Geometric Numerical Integration: Structure-Preserving Algorithms for
         Ordinary Differential Equations},
  author={Hairer, Ernst and Lubich, Christian and Wanner, Gerhard},
  edition={Second},
  publisher={Springer},
  address={Berlin},
  year={2006}
}""",
    ),
    Reversible: (
        "Making a single-step method algebraically reversible is from:",
        _MCCALLUM_FOSTER,
    ),
}

_PID = (
    "Step-size control on the scaled error (the integral controller) is from "
    "Section II.4 of the first, proportional--integral--derivative control "
    "from the second of:",
    _HAIRER_I
    + "\n\n"
    + r"""@article{soderlind2003digital,
  title={Digital filters in adaptive time-stepping},
  author={S{\"o}derlind, Gustaf},
  journal={ACM Transactions on Mathematical Software},
  volume={29},
  number={1},
  pages={1--26},
  year={2003}
}""",
)

_ADJOINTS: dict[type, tuple[str, str]] = {
    RecursiveCheckpointAdjoint: (
        "Online checkpointing for a loop of unknown length is from:",
        r"""@article{stumm2010new,
  title={New algorithms for optimal online checkpointing},
  author={Stumm, Philipp and Walther, Andrea},
  journal={SIAM Journal on Scientific Computing},
  volume={32},
  number={2},
  pages={836--854},
  year={2010}
}

@article{wang2009minimal,
  title={Minimal repetition dynamic checkpointing algorithm for unsteady
         adjoint calculation},
  author={Wang, Qiqi and Moin, Parviz and Iaccarino, Gianluca},
  journal={SIAM Journal on Scientific Computing},
  volume={31},
  number={4},
  pages={2549--2567},
  year={2009}
}""",
    ),
    BacksolveAdjoint: (
        "The continuous adjoint for neural ODEs (optimise-then-discretise) is from:",
        r"""@inproceedings{chen2018neural,
  title={Neural Ordinary Differential Equations},
  author={Chen, Ricky T. Q. and Rubanova, Yulia and Bettencourt, Jesse and
          Duvenaud, David},
  booktitle={Advances in Neural Information Processing Systems},
  volume={31},
  year={2018}
}""",
    ),
    ImplicitAdjoint: (
        "Differentiating a steady state by the implicit function theorem, as in:",
        r"""@inproceedings{blondel2022efficient,
  title={Efficient and Modular Implicit Differentiation},
  author={Blondel, Mathieu and Berthet, Quentin and Cuturi, Marco and
          Frostig, Roy and Hoyer, Stephan and Llinares-L{\'o}pez, Felipe and
          Pedregosa, Fabian and Vert, Jean-Philippe},
  booktitle={Advances in Neural Information Processing Systems},
  volume={35},
  year={2022}
}""",
    ),
    ReversibleAdjoint: (
        "Exact, constant-memory gradients through reversible solvers are from:",
        _MCCALLUM_FOSTER,
    ),
}

_SEMINORM = r"""@inproceedings{kidger2021hey,
  title={``{H}ey, that's not an {ODE}'': Faster {ODE} Adjoints via Seminorms},
  author={Kidger, Patrick and Chen, Ricky T. Q. and Lyons, Terry},
  booktitle={International Conference on Machine Learning},
  year={2021}
}"""


def _lookup(table: dict[type, tuple[str, str]], obj) -> tuple[str, str] | None:
    # The exact class and its bases in order (not `isinstance`: a wrapped
    # solver also passes the checks of what it wraps, and is cited apart).
    for cls in type(obj).__mro__:
        if cls in table:
            return table[cls]
    return None


def _entry(reference: tuple[str, str]) -> str:
    comment, bibtex = reference
    return f"% {comment}\n{bibtex}"


def _library() -> str:
    return _entry(
        (
            "jaxdiffeq follows the design and public API of Diffrax, described in:",
            _KIDGER_THESIS,
        )
    )


def _solver(solver: AbstractSolver) -> str | None:
    entries = []
    while True:
        reference = _lookup(_SOLVERS, solver)
        if reference is not None:
            entries.append(_entry(reference))
        if not is_directly(solver, AbstractWrappedSolver):
            break
        assert isinstance(solver, AbstractWrappedSolver)
        solver = solver.solver
    return "\n\n".join(entries) if entries else None


def _stepsize_controller(stepsize_controller: AbstractStepSizeController):
    # A wrapping controller cites what it wraps.
    controller = innermost_controller(stepsize_controller)
    if not isinstance(controller, PIDController):
        return None
    return _entry(_PID)


def _initial_step(dt0, stepsize_controller=None):
    controller = innermost_controller(stepsize_controller)
    if dt0 is not None or not isinstance(controller, PIDController):
        return None
    return _entry(
        (
            "The first step size (`dt0=None`) is chosen as in Section II.4 of:",
            _HAIRER_I,
        )
    )


def _adjoint(adjoint):
    reference = _lookup(_ADJOINTS, adjoint)
    entries = [] if reference is None else [_entry(reference)]
    if isinstance(adjoint, BacksolveAdjoint):
        controller = adjoint.kwargs.get("stepsize_controller")
        if (
            isinstance(controller, PIDController)
            and controller.norm is adjoint_rms_seminorm
        ):
            entries.append(
                _entry(("The seminorm of the backward solve is from:", _SEMINORM))
            )
    return "\n\n".join(entries) if entries else None


citation_rules: list[Callable[..., str | None]] = [
    _library,
    _solver,
    _stepsize_controller,
    _initial_step,
    _adjoint,
]

_SIGNATURE = inspect.signature(diffeqsolve)
_START = (
    "% --- REFERENCES PRODUCED BY `jaxdiffeq.citation(...)` ---\n"
    "% The numerical methods this solve uses (not any modelling choices)."
)
_END = "% --- END OF REFERENCES ---"


def _call(rule: Callable[..., str | None], given: dict) -> str | None:
    parameters = inspect.signature(rule).parameters.values()
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)
    required = {
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind != inspect.Parameter.VAR_KEYWORD
    }
    if not required <= set(given):
        return None
    if takes_any:
        return rule(**given)
    names = {p.name for p in parameters}
    return rule(**{k: v for k, v in given.items() if k in names})


def citation(*args: Any, **kwargs: Any) -> None:
    """Print the BibTeX references of the numerical methods a solve uses.

    Takes any subset of the arguments of `diffeqsolve` (replacing `diffeqsolve`
    by `citation` in a call works) and prints, to standard output, one BibTeX
    entry with a comment for each method that has a reference: the solver
    (and any solver it wraps), the step-size controller, the choice of the
    first step, the adjoint. Returns nothing.

    Each rule of `citation_rules` is called whose parameters without defaults
    were all given; append a function to `citation_rules` to cite methods of
    your own (its parameters are named after those of `diffeqsolve`; it
    returns a string or `None`).

    ```python
    import jaxdiffeq as jd
    jd.citation(solver=jd.Tsit5(),
                stepsize_controller=jd.PIDController(rtol=1e-6, atol=1e-8),
                adjoint=jd.BacksolveAdjoint())
    ```
    """
    bound = _SIGNATURE.bind_partial(*args, **kwargs)
    given = dict(bound.arguments)
    cites = [_START]
    for rule in citation_rules:
        cite = _call(rule, given)
        if cite is not None:
            cites.append(cite.strip())
    cites.append(_END)
    print("\n\n".join(cites))
