from __future__ import annotations

import pytest

from supervisor.cli import build_parser, main


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    assert "emulator" in help_text


def test_version_flag_prints_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "athena-supervisor" in capsys.readouterr().out
