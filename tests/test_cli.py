"""The command line, run in-process through `main(argv)`."""

import re
import subprocess
import sys

import jax.numpy as jnp
import pytest

from jaxdiffeq.__main__ import adaptive_solvers, main
from jaxdiffeq.problems import PROBLEMS


def _table(text: str) -> dict[str, str]:
    """The `key  value` rows of a `solve` table."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^(\S.*?)\s{2,}(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def _exit_code(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err  # pyright: ignore


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, problem in PROBLEMS.items():
        assert name in out
        assert problem.description in out
    stiff = [line for line in out.splitlines() if line.startswith("rober ")]
    assert len(stiff) == 1 and " yes " in stiff[0]


@pytest.mark.parametrize("solver", ["Kvaerno5", "Rodas5P"])
def test_solve_hires_with_a_stiff_solver(capsys, solver):
    # Issue 14, item 7: the stiff problem with an implicit solver, its error
    # against the published reference.
    assert main(["solve", "hires", "--solver", solver, "--repeats", "1"]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows["solver"].startswith(solver)
    assert rows["result"] == "successful"
    assert "note" not in rows
    assert int(rows["accepted steps"]) < 1000
    assert float(rows["relative error at t1"].split()[0]) < 1e-3


def test_imex_solvers_are_not_offered():
    # They need a `MultiTerm` of a non-stiff and a stiff part; a problem has one.
    assert "KenCarp4" not in adaptive_solvers()
    assert "Kvaerno5" in adaptive_solvers() and "Rodas5P" in adaptive_solvers()


def test_solve_stiff_problem_with_an_explicit_solver(capsys):
    # An explicit solver on ROBER over [0, 1e11]: the step limit, said plainly,
    # with a note on stiffness and a failing exit code.
    assert main(["solve", "rober", "--max-steps", "2000", "--repeats", "1"]) == 1
    rows = _table(capsys.readouterr().out)
    assert rows["note"].startswith("rober is stiff")
    assert rows["result"].startswith("FAILED (max_steps_reached)")
    assert "stiff" in rows["result"]


def test_solve_lorenz_with_plot(tmp_path, capsys):
    path = tmp_path / "lorenz.png"
    assert main(["solve", "lorenz", "--plot", str(path)]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows["problem"].startswith("lorenz")
    assert rows["solver"].startswith("Tsit5")
    assert rows["precision"] == "float64"
    assert rows["result"] == "successful"
    assert int(rows["accepted steps"]) > 10
    assert int(rows["rejected steps"]) >= 0
    # rtol = atol = 1e-8 on a chaotic problem over t in [0, 1].
    assert float(rows["max-norm error at t1"]) < 1e-6
    assert float(rows["relative error at t1"].split()[0]) < 1e-7
    assert rows["compile time"].endswith("s")
    assert "best of 3" in rows["run time"]
    assert rows["plot"] == str(path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_solve_batch_with_progress(tmp_path, capsys):
    path = tmp_path / "arenstorf.png"
    argv = ["solve", "arenstorf", "--solver", "Bosh3", "--batch", "3"]
    argv += ["--rtol", "1e-7", "--atol", "1e-7", "--progress", "text"]
    assert main([*argv, "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["solver"].startswith("Bosh3")
    assert rows["batch"].startswith("3 initial values")
    assert rows["result"] == "successful (3 of 3 lanes successful)"
    assert re.fullmatch(r"mean \S+, min \d+, max \d+", rows["accepted steps"])
    # Lane 0 is the unperturbed orbit; a third-order method at 1e-7 follows it to
    # about 6e-3 (as Diffrax's Bosh3 does).
    assert float(rows["max-norm error at t1 (lane 0)"]) < 0.05
    # One meter for the batch, which ends at 100%.
    percentages = [line for line in out.splitlines() if line.endswith("%")]
    assert percentages[0] == "0.00%" and percentages[-1] == "100.00%"
    assert percentages.count("0.00%") == 1
    assert path.stat().st_size > 10_000


def test_solve_float32_other_t1_and_tqdm(capsys):
    argv = ["solve", "pendulum", "--no-x64", "--t1", "3", "--progress"]
    assert main([*argv, "--rtol", "1e-5", "--atol", "1e-5"]) == 0
    captured = capsys.readouterr()
    rows = _table(captured.out)
    assert rows["precision"] == "float32"
    assert rows["interval"] == "[0, 3]"
    assert rows["error at t1"].startswith("n/a: no reference at t1 = 3")
    assert "100.00%" in captured.err  # the tqdm bar
    # `main` leaves the caller's precision alone.
    assert jnp.asarray(1.0).dtype == jnp.float64


def test_failed_solve_exits_1(capsys):
    assert main(["solve", "van_der_pol", "--max-steps", "10"]) == 1
    rows = _table(capsys.readouterr().out)
    assert rows["result"].startswith("FAILED (max_steps_reached)")


def test_solver_list():
    solvers = adaptive_solvers()
    assert {"Tsit5", "Bosh3"} <= set(solvers)
    # Not adaptive (no error estimate), a wrapper needing a solver, an abstract base.
    assert not {"Euler", "HalfSolver", "AbstractRungeKutta"} & set(solvers)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", "nope"], "Unknown problem 'nope'; valid names: lorenz"),
        (["solve", "lorenz", "--solver", "Nope"], "choose one of: "),
        (["solve", "lorenz", "--solver", "Euler"], "non-adaptive solver 'Euler'"),
        (["solve", "lorenz", "--rtol", "-1e-6"], "argument --rtol"),
        (["solve", "lorenz", "--atol", "nan"], "argument --atol"),
        (["solve", "lorenz", "--rtol", "0", "--atol", "0"], "cannot both be zero"),
        (["solve", "lorenz", "--batch", "0"], "argument --batch"),
        (["solve", "lorenz", "--t1", "0"], "--t1 must differ"),
        (["solve", "lorenz", "--progress", "bar"], "argument --progress"),
        (["solve", "lorenz", "--plot", "/no/such/folder/x.png"], "does not exist"),
        (["solve"], "PROBLEM"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_exits_2(argv, message, capsys):
    code, err = _exit_code(argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_solver_error_lists_valid_names(capsys):
    _, err = _exit_code(["solve", "lorenz", "--solver", "Nope"], capsys)
    for name in adaptive_solvers():
        assert name in err


def test_python_dash_m():
    # The module runs as `python -m jaxdiffeq`.
    result = subprocess.run(
        [sys.executable, "-m", "jaxdiffeq", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "pleiades" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "jaxdiffeq", "solve", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "valid names" in result.stderr
