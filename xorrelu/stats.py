"""Statistics across replicas: XOR outcomes are bimodal (solved or stuck), so rates with
intervals say more than mean +- std."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from xorrelu.outcomes import CAUSES


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a success rate; (nan, nan) for no trials."""
    if trials == 0:
        return float("nan"), float("nan")
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def objective_value(replicas: list[dict], objective) -> float:
    """A job's number for a searching sweeper (config.Objective), from summary.json's replicas,
    measured where *solved* is: on the test split when the job has one."""
    from xorrelu.config import Objective

    objective = Objective(objective)
    if objective is Objective.solved_rate:
        return sum(r["solved"] for r in replicas) / len(replicas)
    where = "final_test_" if "final_test_accuracy" in replicas[0] else "final_"
    if objective is Objective.mean_accuracy:
        return float(np.mean([0.0 if r["diverged"] else r[where + "accuracy"] for r in replicas]))
    return float(np.median([np.inf if r["diverged"] else r[where + "cost"] for r in replicas]))


def group_summary(replicas: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group of replicas: solved rate with a Wilson 95% interval, median final cost
    with its IQR (diverged replicas left out and counted apart), and steps to solve. When some
    replicas have a test split (final_test_accuracy), also the final accuracy on the training
    and on the held-out points: median, IQR and mean (NaN for a group without a test split)."""
    tested = "final_test_accuracy" in replicas
    rows = []
    for values, group in (
        replicas.groupby(keys, sort=False, dropna=False) if keys else [((), replicas)]
    ):
        values = values if isinstance(values, tuple) else (values,)
        n, solved = len(group), int(group.solved.sum())
        low, high = wilson_interval(solved, n)
        finite = group.final_cost[~group.diverged]
        q25, median, q75 = np.percentile(finite, [25, 50, 75]) if len(finite) else (np.nan,) * 3
        steps_to_solve = group.first_step_solved.dropna()
        rows.append(
            {
                **dict(zip(keys, values, strict=False)),
                "replicas": n,
                "solved": solved,
                "solved_rate": solved / n,
                "solved_ci_low": low,
                "solved_ci_high": high,
                "median_final_cost": median,
                "final_cost_q25": q25,
                "final_cost_q75": q75,
                "diverged": int(group.diverged.sum()),
                "median_steps_to_solve": steps_to_solve.median() if len(steps_to_solve) else np.nan,
                "unsolved": n - solved,
                "steps": int(group.last_step.max()),
                **{f"cause_{cause}": int((group.cause == cause).sum()) for cause in CAUSES},
                **(_accuracy(group, "final_accuracy") if tested else {}),
                **(_accuracy(group, "final_test_accuracy") if tested else {}),
            }
        )
    return pd.DataFrame(rows)


def _accuracy(group: pd.DataFrame, column: str) -> dict:
    """median_<column>, <column>_q25, <column>_q75 and mean_<column> over the replicas that have
    a value (not diverged; NaN for none)."""
    values = group[column][~group.diverged].dropna()
    q25, median, q75 = np.percentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
    return {
        f"median_{column}": median,
        f"{column}_q25": q25,
        f"{column}_q75": q75,
        f"mean_{column}": values.mean() if len(values) else np.nan,
    }


def _accuracy_cell(row: dict, column: str) -> str:
    if np.isnan(row[f"median_{column}"]):
        return "-"
    return (
        f"{row[f'median_{column}']:.3g} [{row[f'{column}_q25']:.3g}, {row[f'{column}_q75']:.3g}], "
        f"mean {row[f'mean_{column}']:.3g}"
    )


TABLE_HEADER = [
    "replicas",
    "solved (95% CI)",
    "median final cost [IQR]",
    "diverged",
    "steps to solve (median of solved)",
    "unsolved by cause",
]


def table_rows(summary: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """The group table as a person reads it: header and formatted rows (summary.md, report.html);
    with a test split, train and test accuracy side by side after the cost."""
    tested = "median_final_test_accuracy" in summary
    accuracies = ["final_accuracy", "final_test_accuracy"] if tested else []
    rows = []
    for row in summary.to_dict("records"):
        solved = (
            f"{row['solved']}/{row['replicas']} = {row['solved_rate']:.0%} "
            f"[{row['solved_ci_low']:.0%}, {row['solved_ci_high']:.0%}]"
        )
        cost = (
            f"{row['median_final_cost']:.3g} "
            f"[{row['final_cost_q25']:.3g}, {row['final_cost_q75']:.3g}]"
        )
        steps = (
            "" if np.isnan(row["median_steps_to_solve"]) else f"{row['median_steps_to_solve']:.0f}"
        )
        if row["unsolved"]:
            steps += ("; " if steps else "") + f"{row['unsolved']} unsolved: > {row['steps']}"
        causes = ", ".join(
            f"{cause} {row[f'cause_{cause}']}" for cause in CAUSES if row.get(f"cause_{cause}")
        )
        rows.append(
            [
                *(str(row[k]) for k in keys),
                str(row["replicas"]),
                solved,
                cost,
                *(_accuracy_cell(row, column) for column in accuracies),
                str(row["diverged"]),
                steps,
                causes,
            ]
        )
    header = list(TABLE_HEADER)
    if tested:
        header[3:3] = ["train accuracy: median [IQR], mean", "test accuracy: median [IQR], mean"]
    return [*keys, *header], rows


def markdown_table(summary: pd.DataFrame, keys: list[str]) -> str:
    """summary.md: the group table in Markdown."""
    header, rows = table_rows(summary, keys)
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A table cell: a config value may hold | or a newline, which would break the row."""
    return " ".join(text.splitlines()).replace("|", "\\|")
