"""The command line as Flux users' habits expect it (issue 17): `herald version` and `--version`,
and the global options before the command as well as after it."""

from __future__ import annotations

from importlib.metadata import version as dist_version
from pathlib import Path

import pytest

from herald.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "herald.yaml")


def test_version_is_a_command_and_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"herald {dist_version('herald')}\n"
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"herald {dist_version('herald')}\n"


@pytest.mark.parametrize("argv", [
    ["validate", "--offline", "-c", EXAMPLE],
    ["-c", EXAMPLE, "validate", "--offline"],
    ["--log-level", "debug", "-c", EXAMPLE, "validate", "--offline"],
])
def test_global_options_may_come_before_or_after_the_command(argv: list[str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: ")


def test_an_option_after_the_command_wins_over_the_same_one_before_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.yaml")
    assert main(["-c", missing, "validate", "--offline", "-c", EXAMPLE]) == 0
    capsys.readouterr()
