"""Writes that never leave a half-written file: write beside the target, then rename over it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _replace(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n"))


def save_torch(path: Path, obj: Any) -> None:
    _replace(Path(path), lambda tmp: torch.save(obj, tmp))
