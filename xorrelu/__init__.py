"""xorrelu: Lab 10-1 ("ReLU: better non-linearity") as an instrument — deep narrow nets on XOR,
many seeds at once, per-step metrics to CSV."""

__all__ = ["load", "load_points", "load_summary"]


def __getattr__(name: str):
    """`xorrelu.load`, `xorrelu.load_points`, `xorrelu.load_summary` without importing pandas
    for `python -m xorrelu`."""
    if name in __all__:
        from xorrelu import results

        return getattr(results, name)
    raise AttributeError(f"module 'xorrelu' has no attribute {name!r}")
