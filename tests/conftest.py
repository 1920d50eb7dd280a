"""Shared helpers: compose a config exactly as `python -m xorrelu` would,
and run train() in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from xorrelu.jobdir import compose

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def make_cfg(*overrides: str):
    """Not validated: tests compose values out of range on purpose, to test what refuses them."""
    return compose(overrides, validated=False)


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None):
    """`python -m xorrelu ARGS` in a subprocess; returns the CompletedProcess."""
    import os
    import subprocess

    env = {**os.environ, **(env_extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "xorrelu", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def train_run(tmp_path):
    """train_run(*overrides) -> (summary, metrics DataFrame, job dir)."""
    from xorrelu.train import train

    def run(*overrides: str):
        out = tmp_path / f"job{len(list(tmp_path.iterdir()))}"
        summary = train(make_cfg(*overrides), out)
        return summary, pd.read_csv(out / "metrics.csv"), out

    return run


def snapshot(root: Path, exclude: tuple[str, ...] = ()) -> dict:
    """{relative path: bytes, "dir", the target of a link, or a special file's mode} for
    everything below `root` but the dirs named in `exclude`: refused input must leave it equal."""
    import os

    found = {}
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow links: a loop is read once
        dirnames[:] = [d for d in dirnames if d not in exclude]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_file():
                found[rel] = path.read_bytes()
            else:
                found[rel] = ("special", path.stat().st_mode)
    return found
