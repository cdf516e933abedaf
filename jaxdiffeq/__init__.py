"""jaxdiffeq: solve and differentiate differential equations in JAX.

The public API matches Diffrax's: `import jaxdiffeq as jd` and use
`jd.diffeqsolve(jd.ODETerm(f), jd.Tsit5(), t0, t1, dt0, y0, ...)`.
"""

from ._adjoint.backsolve import (
    BacksolveAdjoint as BacksolveAdjoint,
    adjoint_rms_seminorm as adjoint_rms_seminorm,
)
from ._adjoint.base import AbstractAdjoint as AbstractAdjoint
from ._adjoint.direct import DirectAdjoint as DirectAdjoint
from ._adjoint.forward import ForwardMode as ForwardMode
from ._adjoint.implicit import ImplicitAdjoint as ImplicitAdjoint
from ._adjoint.recursive import RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint
from ._adjoint.reversible import ReversibleAdjoint as ReversibleAdjoint
from ._citation import citation as citation, citation_rules as citation_rules
from ._controller.base import (
    AbstractAdaptiveStepSizeController as AbstractAdaptiveStepSizeController,
    AbstractStepSizeController as AbstractStepSizeController,
    rms_norm as rms_norm,
)
from ._controller.clip import ClipStepSizeController as ClipStepSizeController
from ._controller.constant import ConstantStepSize as ConstantStepSize, StepTo as StepTo
from ._controller.pid import PIDController as PIDController
from ._custom_types import (
    VF as VF,
    Args as Args,
    BoolScalarLike as BoolScalarLike,
    DenseInfo as DenseInfo,
    FloatScalarLike as FloatScalarLike,
    IntScalarLike as IntScalarLike,
    RealScalarLike as RealScalarLike,
    Y as Y,
)
from ._interpolation import (
    AbstractGlobalInterpolation as AbstractGlobalInterpolation,
    AbstractLocalInterpolation as AbstractLocalInterpolation,
    AbstractPath as AbstractPath,
    AbstractStagePolynomialInterpolation as AbstractStagePolynomialInterpolation,
    DenseInterpolation as DenseInterpolation,
    FourthOrderPolynomialInterpolation as FourthOrderPolynomialInterpolation,
    LocalLinearInterpolation as LocalLinearInterpolation,
    ThirdOrderHermitePolynomialInterpolation as ThirdOrderHermitePolynomialInterpolation,
)
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
)
from ._results import (
    RESULTS as RESULTS,
    is_event as is_event,
    is_okay as is_okay,
    is_successful as is_successful,
)
from ._root_finder import with_stepsize_controller_tols as with_stepsize_controller_tols
from ._saveat import SaveAt as SaveAt, SubSaveAt as SubSaveAt
from ._solution import Solution as Solution
from ._solve import diffeqsolve as diffeqsolve
from ._solver.base import (
    AbstractAdaptiveSolver as AbstractAdaptiveSolver,
    AbstractImplicitSolver as AbstractImplicitSolver,
    AbstractItoSolver as AbstractItoSolver,
    AbstractReversibleSolver as AbstractReversibleSolver,
    AbstractSolver as AbstractSolver,
    AbstractStratonovichSolver as AbstractStratonovichSolver,
    AbstractWrappedSolver as AbstractWrappedSolver,
)
from ._solver.bosh3 import Bosh3 as Bosh3
from ._solver.butcher import (
    ButcherTableau as ButcherTableau,
    MultiButcherTableau as MultiButcherTableau,
)
from ._solver.calculate_jacobian import CalculateJacobian as CalculateJacobian
from ._solver.dirk import (
    AbstractDIRK as AbstractDIRK,
    AbstractESDIRK as AbstractESDIRK,
    AbstractSDIRK as AbstractSDIRK,
)
from ._solver.dopri5 import Dopri5 as Dopri5
from ._solver.dopri8 import Dopri8 as Dopri8
from ._solver.euler import Euler as Euler
from ._solver.half import HalfSolver as HalfSolver
from ._solver.heun import Heun as Heun
from ._solver.implicit_euler import ImplicitEuler as ImplicitEuler
from ._solver.kencarp3 import KenCarp3 as KenCarp3
from ._solver.kencarp4 import KenCarp4 as KenCarp4
from ._solver.kencarp5 import KenCarp5 as KenCarp5
from ._solver.kvaerno3 import Kvaerno3 as Kvaerno3
from ._solver.kvaerno4 import Kvaerno4 as Kvaerno4
from ._solver.kvaerno5 import Kvaerno5 as Kvaerno5
from ._solver.leapfrog_midpoint import LeapfrogMidpoint as LeapfrogMidpoint
from ._solver.midpoint import Midpoint as Midpoint
from ._solver.ralston import Ralston as Ralston
from ._solver.reversible import Reversible as Reversible
from ._solver.reversible_heun import ReversibleHeun as ReversibleHeun
from ._solver.rodas4 import Rodas4 as Rodas4
from ._solver.rodas5p import Rodas5P as Rodas5P
from ._solver.rosenbrock import (
    AbstractRosenbrock as AbstractRosenbrock,
    RosenbrockTableau as RosenbrockTableau,
)
from ._solver.runge_kutta import AbstractRungeKutta as AbstractRungeKutta
from ._solver.semi_implicit_euler import SemiImplicitEuler as SemiImplicitEuler
from ._solver.sil3 import Sil3 as Sil3
from ._solver.tsit5 import Tsit5 as Tsit5
from ._term import (
    AbstractTerm as AbstractTerm,
    MultiTerm as MultiTerm,
    ODETerm as ODETerm,
)
from ._verychord import VeryChord as VeryChord
from ._while import while_loop as while_loop

AbstractERK = AbstractRungeKutta

__version__ = "0.1.0"
