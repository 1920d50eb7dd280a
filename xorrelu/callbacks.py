"""Hydra callback: write the comparison plots after every run and every --multirun (plot=true).

A plotting failure is reported and never fails the job or touches its results.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("xorrelu.plot")


def plot_safely(run_dir: Path) -> None:
    """write_report for a run or sweep that just ended. Any failure is one logged line; Ctrl-C is
    one line too and then raised again, so the caller still exits 130 (the plotter writes every
    file whole or not at all, so nothing is left half-written)."""
    try:
        from xorrelu.plot import write_report

        out = write_report([run_dir])
        log.info("plots and summary: %s", out)
    except KeyboardInterrupt:
        log.warning(
            "plotting interrupted (training results are saved; plots written so far are whole); "
            "draw them again with: xorrelu-plot %s",
            run_dir,
        )
        raise
    except Exception as error:  # noqa: BLE001 — plots are a bonus; training results are already safe
        message = " ".join(str(error).splitlines())
        log.error(
            "plotting failed (training results are intact): %s: %s", type(error).__name__, message
        )


class AutoPlot(Callback):
    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("plot", True):
            plot_safely(Path(config.hydra.run.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("plot", True):
            plot_safely(Path(config.hydra.sweep.dir))
