"""xorrelu: Lab 10-1 ("ReLU: better non-linearity") as an instrument — deep narrow nets on XOR,
many seeds at once, per-step metrics to CSV."""

from pathlib import Path

__all__ = ["load", "load_summary"]

# Where Hydra finds the configs: a source checkout's top-level conf/, else the copy installed as
# xorrelu.conf (pyproject maps conf/ there).
_CHECKOUT_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = (
    str(_CHECKOUT_CONF) if (_CHECKOUT_CONF / "config.yaml").is_file() else "pkg://xorrelu.conf"
)


def __getattr__(name: str):
    """`xorrelu.load` / `xorrelu.load_summary` without importing pandas for `python -m xorrelu`."""
    if name in __all__:
        from xorrelu import results

        return getattr(results, name)
    raise AttributeError(f"module 'xorrelu' has no attribute {name!r}")
