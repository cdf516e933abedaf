"""`citation` prints the BibTeX of the methods a solve uses; `citation_rules`
takes rules of the user's own."""

import re

import jax.numpy as jnp
import pytest

import jaxdiffeq as jd


def _keys(text: str) -> list[str]:
    return re.findall(r"^@\w+\{([^,]+),", text, flags=re.MULTILINE)


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_citation_of_a_whole_call(capsys):
    """`diffeqsolve` replaced by `citation`, positional arguments included."""
    jd.citation(
        jd.ODETerm(lambda t, y, args: -y),
        jd.HalfSolver(jd.Tsit5()),
        0.0,
        1.0,
        None,
        jnp.array(1.0),
        stepsize_controller=jd.ClipStepSizeController(
            jd.PIDController(rtol=1e-6, atol=1e-8)
        ),
        adjoint=jd.BacksolveAdjoint(
            stepsize_controller=jd.PIDController(
                rtol=1e-6, atol=1e-8, norm=jd.adjoint_rms_seminorm
            )
        ),
    )
    out = capsys.readouterr().out
    assert _balanced(out)
    keys = _keys(out)
    for key in (
        "kidger2021on",  # the library's design
        "hairer1993solving-i",  # step doubling, the controller, the first step
        "tsitouras2011runge",  # the wrapped solver
        "soderlind2003digital",
        "chen2018neural",
        "kidger2021hey",  # the seminorm
    ):
        assert key in keys, key


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(solver=jd.Dopri5()), "shampine1986some"),
        (dict(solver=jd.Reversible(jd.Bosh3())), "bogacki1989a32"),
        (dict(solver=jd.Reversible(jd.Bosh3())), "mccallum2024efficient"),
        (dict(adjoint=jd.RecursiveCheckpointAdjoint()), "stumm2010new"),
        (dict(adjoint=jd.ReversibleAdjoint()), "mccallum2024efficient"),
        (dict(adjoint=jd.ImplicitAdjoint()), "blondel2022efficient"),
    ],
)
def test_citation_of_a_part(capsys, kwargs, key):
    jd.citation(**kwargs)
    assert key in _keys(capsys.readouterr().out)


def test_nothing_given_cites_the_library_only(capsys):
    jd.citation()
    assert _keys(capsys.readouterr().out) == ["kidger2021on"]


def test_user_rules(capsys, monkeypatch):
    seen = {}

    def rule(solver, saveat=None):
        seen["args"] = (solver, saveat)
        return "% mine\n@misc{mine, title={Mine}}"

    def never(event):  # `event` not given: not called
        raise AssertionError

    monkeypatch.setattr(jd, "citation_rules", jd.citation_rules)
    jd.citation_rules.append(rule)
    jd.citation_rules.append(never)
    try:
        jd.citation(solver=jd.Euler())
    finally:
        jd.citation_rules.remove(rule)
        jd.citation_rules.remove(never)
    assert "mine" in _keys(capsys.readouterr().out)
    assert seen["args"][1] is None


def test_unknown_argument():
    with pytest.raises(TypeError):
        jd.citation(not_an_argument=1)
