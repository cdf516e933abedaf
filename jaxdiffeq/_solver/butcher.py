"""The coefficients of a Runge–Kutta method (`ButcherTableau`), and the pair of
them an implicit–explicit method uses (`MultiButcherTableau`)."""

import equinox as eqx
import numpy as np


def lower_triangular(rows) -> np.ndarray:
    """The square matrix whose row `i` starts with `rows[i]` (strictly lower
    triangular when row `i` has at most `i` entries)."""
    m = np.zeros((len(rows), len(rows)))
    for i, row in enumerate(rows):
        m[i, : len(row)] = row
    return m


class ButcherTableau(eqx.Module):
    """The coefficients of a Runge–Kutta method: explicit, or diagonally implicit.

    With stages `k_1 .. k_s`:

    ```
    k_1 = h f(t0 + c1 h, y0 + d[0] k_1)
    k_i = h f(t0 + c[i-2] h, y0 + sum_j a_lower[i-2][j] k_j + d[i-1] k_i)   i = 2 .. s
    y1  = y0 + sum_i b_sol[i] k_i
    err =      sum_i b_error[i] k_i       (solution minus embedded solution)
    ```

    where `d` is `a_diagonal` (zero for an explicit method).

    **Arguments:** `c` (length `s - 1`: the nodes of stages 2 .. s), `b_sol`
    (length `s`), `b_error` (length `s`, or `None` for a method without an error
    estimate; `AbstractRungeKutta` needs one and raises without it), `a_lower` (a
    tuple whose entry `i` has length `i + 1`), `c1` (the node of the first stage,
    normally 0), and for diagonally implicit methods (`AbstractDIRK`)
    `a_diagonal` (length `s`) and `a_predictor` (like `a_lower`: the initial
    guess of stage `i`'s increment for its stage equation is
    `sum_j a_predictor[i-2][j] k_j`; `None` takes the previous stage's
    increment).

    The tableau is checked on construction: each row of `a` (with its diagonal
    entry) sums to its node, `b_sol` sums to 1 and `b_error` sums to 0.
    """

    c: np.ndarray
    b_sol: np.ndarray
    b_error: np.ndarray | None
    a_lower: tuple[np.ndarray, ...]
    a_diagonal: np.ndarray | None = None
    a_predictor: tuple[np.ndarray, ...] | None = None
    c1: float = 0.0

    def __check_init__(self):
        s = len(self.b_sol)
        if len(self.c) != s - 1 or len(self.a_lower) != s - 1:
            raise ValueError(
                f"A tableau with {s} stages needs `c` and `a_lower` of length {s - 1}; "
                f"got {len(self.c)} and {len(self.a_lower)}."
            )
        diagonal = np.zeros(s) if self.a_diagonal is None else self.a_diagonal
        if len(diagonal) != s:
            raise ValueError(f"`a_diagonal` must have length {s}.")
        if not np.isclose(diagonal[0], self.c1, rtol=1e-10, atol=1e-12):
            raise ValueError("The first stage's diagonal entry must equal `c1`.")
        for i, (row, node) in enumerate(zip(self.a_lower, self.c)):
            if len(row) != i + 1:
                raise ValueError(f"`a_lower[{i}]` must have length {i + 1}.")
            total = np.sum(row) + diagonal[i + 1]
            if not np.allclose(total, node, rtol=1e-10, atol=1e-12):
                raise ValueError(
                    f"Row {i} of `a_lower` (with its diagonal entry) sums to {total}, "
                    f"but its node `c[{i}]` is {node}; the rows of `a` must sum to `c`."
                )
        if self.a_predictor is not None:
            lengths = [len(row) for row in self.a_predictor]
            if lengths != [i + 1 for i in range(s - 1)]:
                raise ValueError("`a_predictor` must have the shape of `a_lower`.")
        if not np.isclose(np.sum(self.b_sol), 1.0, rtol=1e-10):
            raise ValueError(f"`b_sol` must sum to 1, got {np.sum(self.b_sol)}.")
        if self.b_error is not None:
            if len(self.b_error) != s:
                raise ValueError(f"`b_error` must have length {s}.")
            if not np.isclose(np.sum(self.b_error), 0.0, atol=1e-10):
                raise ValueError(
                    f"`b_error` must sum to 0, got {np.sum(self.b_error)}."
                )

    @property
    def implicit(self) -> bool:
        """Whether some stage is implicit (a non-zero diagonal entry)."""
        return self.a_diagonal is not None and bool(np.any(self.a_diagonal != 0))

    @property
    def num_stages(self) -> int:
        return len(self.b_sol)

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at `(t1, y1)`, so it is
        the next step's first stage."""
        return (
            self.num_stages > 1
            and self.c1 == 0
            and float(self.c[-1]) == 1.0
            and float(self.b_sol[-1]) == 0.0
            and np.allclose(self.a_lower[-1], self.b_sol[:-1], rtol=0, atol=1e-15)
        )

    def a_matrix(self) -> np.ndarray:
        """The strictly lower-triangular `(s, s)` matrix of stage coefficients."""
        return lower_triangular([(), *self.a_lower])

    def nodes(self) -> np.ndarray:
        """All `s` nodes, `c1` first."""
        return np.concatenate([[self.c1], np.asarray(self.c, dtype=float)])


class MultiButcherTableau(eqx.Module):
    """The pair of tableaux of an implicit–explicit (IMEX) Runge–Kutta method:
    `MultiButcherTableau(explicit, implicit)`, the first for the non-stiff term
    and the second (with `a_diagonal`) for the stiff one of
    `MultiTerm(explicit_term, implicit_term)`. Both have the same number of
    stages and the same nodes.

    With stages `k^E_i` (explicit term) and `k^I_i` (implicit term), stage `i` is
    evaluated at `y0 + sum_{j<i} (aE_ij k^E_j + aI_ij k^I_j) + dI_i k^I_i`, and
    `y1 = y0 + sum_i (bE_i k^E_i + bI_i k^I_i)` (likewise the error estimate).
    """

    tableaus: tuple[ButcherTableau, ButcherTableau]

    def __init__(self, *tableaus: ButcherTableau):
        if len(tableaus) != 2:
            raise ValueError(
                "`MultiButcherTableau` takes two tableaux (explicit, implicit); "
                f"got {len(tableaus)}."
            )
        explicit, implicit = tableaus
        if explicit.implicit:
            raise ValueError("The first (explicit) tableau has a diagonal.")
        if explicit.num_stages != implicit.num_stages or not np.allclose(
            explicit.nodes(), implicit.nodes(), rtol=1e-10, atol=1e-12
        ):
            raise ValueError(
                "The explicit and implicit tableaux of an IMEX method need the "
                "same number of stages and the same nodes."
            )
        if (explicit.b_error is None) != (implicit.b_error is None):
            raise ValueError("Both tableaux need an error estimate, or neither.")
        self.tableaus = (explicit, implicit)
