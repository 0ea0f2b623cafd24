"""The whole-suite benchmark picks free ports before ``fengqiao up`` binds them: with other
benchmarks on the machine one may be taken meanwhile, and a start that failed so is tried again on
new ports (a bounded number of times), so a series of runs stays whole."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import suite

UVICORN = (
    "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 41211): "
    "address already in use\n"
)
TANSU = 'Error: Io(Os { code: 98, kind: AddrInUse, message: "Address in use" }) (os error 98)\n'


def _logs(var_dir: Path, **texts: str) -> None:
    (var_dir / "log").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (var_dir / "log" / f"{name}.log").write_text(text)


def test_a_taken_port_is_told_from_other_failures(tmp_path: Path) -> None:
    _logs(tmp_path / "a", up="RuntimeError: intake exited with 3; see its log\n", intake=UVICORN)
    _logs(tmp_path / "b", up="", broker=TANSU)
    _logs(tmp_path / "c", up="RuntimeError: intake exited with 1\n", intake="ImportError: x\n")
    assert suite.port_taken(tmp_path / "a" / "log")
    assert suite.port_taken(tmp_path / "b" / "log")
    assert not suite.port_taken(tmp_path / "c" / "log")


def test_a_start_that_found_a_port_taken_is_tried_again_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bases = iter([20000, 30000, 40000])
    tried: list[int] = []
    process: Any = object()

    def start(env: dict[str, str], var_dir: Path, base: int) -> subprocess.Popen[bytes]:
        tried.append(base)
        # Each try sees its own logs only: the failed one's are gone.
        assert not list((var_dir / "log").glob("*.log"))
        if len(tried) < 3:
            _logs(var_dir, up="", intake=UVICORN)
            raise suite.PortTaken(f"port {base} taken")
        return process  # type: ignore[no-any-return]

    (tmp_path / "log").mkdir()
    monkeypatch.setattr(suite, "free_base_port", lambda count=4: next(bases))
    monkeypatch.setattr(suite, "start_suite", start)
    assert suite.start_suite_on_free_ports({}, tmp_path) == (process, 40000)
    assert tried == [20000, 30000, 40000]


def test_the_tries_are_bounded_and_other_failures_are_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[int] = []

    def clash(env: dict[str, str], var_dir: Path, base: int) -> subprocess.Popen[bytes]:
        tried.append(base)
        raise suite.PortTaken("taken")

    (tmp_path / "log").mkdir()
    monkeypatch.setattr(suite, "start_suite", clash)
    with pytest.raises(suite.PortTaken):
        suite.start_suite_on_free_ports({}, tmp_path, tries=3)
    assert len(tried) == 3

    def broken(env: dict[str, str], var_dir: Path, base: int) -> subprocess.Popen[bytes]:
        tried.append(base)
        raise RuntimeError("fengqiao up exited (1)")

    tried.clear()
    monkeypatch.setattr(suite, "start_suite", broken)
    with pytest.raises(RuntimeError, match="exited"):
        suite.start_suite_on_free_ports({}, tmp_path, tries=3)
    assert len(tried) == 1
