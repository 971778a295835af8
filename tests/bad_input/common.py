"""What every group of the bad-input table shares: driving `lvdm` as a user does and reading
what it said (see tests/test_bad_input.py for the table's groups)."""

from __future__ import annotations

import contextlib
import io
import socket
from dataclasses import dataclass

from pipelines.cli import main
from tests.conftest import PIPELINES

DEMO = str(PIPELINES / "demo.yaml")


def set_args(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Seen:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_lvdm(capsys, *argv: str) -> Seen:
    capsys.readouterr()  # drop what earlier steps printed
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Seen(code, out, err)


def assert_names(message: str, parts: list[str]) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in:\n{message}"


def run_quietly(argv: list[str]) -> Seen:
    """`main(argv)` with its output captured, for module fixtures (capsys is per test)."""
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    return Seen(code, out.getvalue(), err.getvalue())
