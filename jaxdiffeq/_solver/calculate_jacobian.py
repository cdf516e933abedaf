"""`CalculateJacobian`: where an implicit Runge–Kutta method makes the Jacobian
of its stage equations."""

import enum


class CalculateJacobian(enum.IntEnum):
    """Where a Runge–Kutta method computes the Jacobian of its stage equations,
    Diffrax's enumeration (each method's class variable `calculate_jacobian`).

    - `never`: explicit methods.
    - `every_stage`: a DIRK method whose diagonal entries differ: one Newton
      matrix per stage.
    - `first_stage`: an SDIRK method (every diagonal entry the same): one
      Newton matrix per step, made before the first stage and used by all.
    - `second_stage`: an ESDIRK method (explicit first stage): one Newton matrix
      per step, made for the second stage and used by the rest.

    With the default root finder (`VeryChord` with a dense linear solver) the
    methods here go further and keep the Jacobian and its factorisation across
    steps (see `AbstractDIRK`); the member then says which stages use the kept
    matrix as is (`first_stage`, `second_stage`) and which refactorise it with
    their own diagonal entry (`every_stage`).
    """

    never = 0
    every_stage = 1
    first_stage = 2
    second_stage = 3
