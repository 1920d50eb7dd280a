"""Draw docs/causes.png, the README's failure taxonomy: one replica per cause, from real runs.

python docs/causes.py        # ~30 s; trains small runs in a temp dir with xorrelu itself
"""

import logging
import sys
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xorrelu import plot  # noqa: E402
from xorrelu.jobdir import compose  # noqa: E402
from xorrelu.train import train  # noqa: E402

RUNS = [  # (overrides, causes to look for in this run)
    (["activation=relu", "steps=2000"], ["solved", "dead", "plateau"]),
    (["activation=sigmoid", "steps=2000"], ["vanished"]),
    (["activation=tanh", "steps=50"], ["slow", "other"]),
    (["activation=elu", "optimizer.lr=10", "depth=3", "steps=50", "replicas=8"], ["diverged"]),
]


def main() -> None:
    logging.disable(logging.INFO)
    figure = Figure(figsize=(13, 2.6), layout="constrained")
    axes = figure.subplots(1, 7)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (overrides, wanted) in enumerate(RUNS):
            train(compose(overrides + ["plot=false"]), Path(tmp) / str(i))
            results = plot.collect([Path(tmp) / str(i)])
            for cause in wanted:
                rows = results.replicas[results.replicas.cause.fillna("solved") == cause]
                if len(rows):
                    found[cause] = (
                        results,
                        rows.job.iloc[0],
                        int(rows.seed.iloc[0]),
                        " ".join(overrides),
                    )
        for ax, cause in zip(
            axes,
            ["solved", "diverged", "dead", "vanished", "plateau", "slow", "other"],
            strict=True,
        ):
            results, job, seed, how = found[cause]
            plot.plot_decision_boundary(results, job, seed, ax=ax)
            ax.set_title(f"{cause}\n{ax.get_title()}", fontsize="small")
            ax.set_xlabel(how.replace(" steps", "\nsteps"), fontsize="x-small")
        figure.savefig(ROOT / "docs" / "causes.png", dpi=90)
    print("wrote docs/causes.png")


if __name__ == "__main__":
    main()
