"""What the packaging sandbox hides and shows again of the server's own directories."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from usetl.image import packaging


@pytest.fixture
def open_dir():
    """A directory in the system's temporary directory that anyone may pass."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_private_directory_above_the_interpreters_environment_is_hidden_and_it_shown(
        open_dir, monkeypatch):
    private = open_dir / "private"
    env = private / "checkout" / ".venv"
    env.mkdir(parents=True)
    private.chmod(0o700)  # the sandbox's user could not pass it to reach the venv
    monkeypatch.setattr(sys, "prefix", str(env))
    hidden = packaging._hidden()
    assert hidden == [*(h for h in packaging.HOMES if os.path.isdir(h)), str(private)]
    assert str(env) in packaging._shown_again(hidden)


def test_an_environment_the_sandbox_can_reach_is_neither_hidden_nor_shown(open_dir,
                                                                            monkeypatch):
    env = open_dir / "checkout" / ".venv"
    env.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(env))
    hidden = packaging._hidden()
    assert not any(str(env).startswith(h + "/") for h in hidden)
    assert str(env) not in packaging._shown_again(hidden)
