"""What happened to each replica, and the definitions behind the words.

- solved: by the dataset's rule (`Rule`, from dataset.solved_accuracy and dataset.solved_cost):
  for xor and parity, accuracy 1.0 and cost below SOLVED_COST = 0.1 (the constant output
  h = 1/2 sits at ln 2 = 0.693, far above); for the Playground's noisy sets, accuracy at least
  0.9 on the held-out points (a noisy set cannot reach 1). Measured on the test split when the
  dataset has one, else on the training points. `first_step_solved` is the first step from
  which a replica stays solved to the end of the run.
- diverged: its cost became NaN or inf; from then on its rows in metrics.csv are NaN.
- stuck (a unit, at a step): |f'(z)| < STUCK_SLOPE = 1% of the activation's peak slope at every
  data point (a dead ReLU, a saturated sigmoid); `stuck_frac_i` is the fraction of layer i's
  units that are stuck.

An unsolved replica gets one cause, the first of these that holds:

- diverged: as above.
- dead: at the end, some hidden layer has every unit stuck (stuck_frac = 1): the output no
  longer depends on the input there. A net dead at initialization has 0/0 gradient ratios:
  that is dead, not vanished.
- vanished: at step 0 the gradient reaching layer 1 is orders of magnitude below the output
  layer's (grad_norm_1 / grad_norm_L < 1e-4), and the cost never got below the best constant
  output's cost (by more than 1e-3): the net never learned more than a constant.
- plateau: the final cost sits on a collapsed-network value (within 2e-3), while its units
  still move. The first is the best constant output's cost, the entropy of the training
  labels (ln 2 = 0.693 when they are balanced); for the lesson's 4 XOR points also 0.477
  (three points merged) and 0.347 (two pairs merged).
- overfit: with a test split, the final training accuracy reaches the dataset's solved
  accuracy but the held-out accuracy does not: the net learned the training points (and their
  noise), not the pattern.
- slow: the cost is still falling: the final cost is more than 1% below the cost at 90% of the
  run's steps (more steps would likely solve it).
- other: none of the above.

`Outcomes` computes all of it chunk by chunk as training goes: the cost and accuracy of every
step (logged or not: the outcome does not depend on `log_every`), and the logged rows for the
gradient ratio at step 0 and the final stuck fractions. The training job feeds it (xorrelu.train,
through the Recorder); for a job that never finished, the analysis feeds it the logged rows of
its metrics.csv (xorrelu.results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xorrelu.data import DATASETS, label_entropy

SOLVED_COST = 0.1
STUCK_SLOPE = 0.01
LN2 = math.log(2)
CAUSES = ["diverged", "dead", "vanished", "plateau", "overfit", "slow", "other"]
PLATEAU_COSTS = (
    LN2,
    0.75 * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)),
    LN2 / 2,
)
VANISHED_RATIO = 1e-4
LN2_BAND = 1e-3
PLATEAU_BAND = 2e-3
SLOW_DROP = 0.01
SLOW_AT = 0.9  # "still falling" compares the end with this fraction of the run


@dataclass(frozen=True)
class Rule:
    """What *solved* means for a dataset (its config's solved_accuracy and solved_cost)."""

    accuracy: float = 1.0
    cost: float | None = SOLVED_COST  # None: no cost condition
    held_out: bool = False  # measured on the test split


LESSON = Rule()


def solved(cost, accuracy, rule: Rule = LESSON):
    """The one rule for *solved* (tensors or pandas columns)."""
    return (accuracy >= rule.accuracy) & (cost < rule.cost if rule.cost is not None else True)


def judging(dataset_cfg, y_train) -> tuple[Rule, tuple[float, ...]]:
    """A dataset's rule for solved and its plateau costs (the first: the best constant
    output's), from its config and its training labels."""
    rule = Rule(
        accuracy=dataset_cfg.get("solved_accuracy", 1.0),
        cost=dataset_cfg.get("solved_cost", SOLVED_COST),
        held_out=dataset_cfg.get("test_fraction", 0.0) > 0,
    )
    if DATASETS.get(dataset_cfg.name).plateaus_of_xor and len(y_train) == 4:
        return rule, PLATEAU_COSTS
    return rule, (label_entropy(y_train),)


class Outcomes:
    """Per-replica outcome of one run of `run_steps` steps, updated with each chunk of logged
    rows. Its state (`state_dict`) is what a checkpoint keeps so a resumed run goes on exactly.

    State, one value per replica:
      diverged           the cost was NaN or inf at some step
      first_step_solved  first step of the current solved streak; -1 while unsolved
      first_ratio        grad_norm_1 / grad_norm_L at step 0 (NaN for 0/0)
      below_ln2          the cost was ever below the constant output's (plateaus[0]) - LN2_BAND
      cost_at_90         the cost at the last step <= SLOW_AT * run_steps
    """

    STATE = ("diverged", "first_step_solved", "first_ratio", "below_ln2", "cost_at_90")

    def __init__(
        self,
        replicas: int,
        run_steps: int,
        device="cpu",
        *,
        rule: Rule = LESSON,
        plateaus: tuple[float, ...] = PLATEAU_COSTS,
    ):
        self.rule, self.plateaus = rule, plateaus
        self.slow_mark = SLOW_AT * run_steps
        self.diverged = torch.zeros(replicas, dtype=torch.bool, device=device)
        self.first_step_solved = torch.full((replicas,), -1, dtype=torch.long, device=device)
        self.first_ratio = torch.full((replicas,), float("nan"), device=device)
        self.below_ln2 = torch.zeros(replicas, dtype=torch.bool, device=device)
        self.cost_at_90 = torch.full((replicas,), float("nan"), device=device)
        self.last: dict[str, torch.Tensor] | None = None  # the last logged row, NaN if diverged

    def update(
        self,
        steps: list[int],
        cost: torch.Tensor,
        accuracy: torch.Tensor,
        held_out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Take the cost and accuracy [steps, replicas] at every step in `steps` (increasing,
        logged or not, so that the outcome never depends on the logging cadence), and the test
        split's (`held_out`, which then decides solved). Returns `diverged` [steps, replicas]:
        where a replica's rows are to be blanked out."""
        step = torch.tensor(steps, device=cost.device)
        diverged = self.diverged | (~torch.isfinite(cost)).cummax(0).values
        judged = held_out if held_out is not None else (cost, accuracy)
        self._track_streaks(step, solved(*judged, self.rule) & ~diverged)
        self.diverged = diverged[-1]
        self.below_ln2 |= (cost < self.plateaus[0] - LN2_BAND).any(0)
        before_mark = step <= self.slow_mark
        if before_mark.any():
            at = int(before_mark.nonzero().max())
            self.cost_at_90 = blank(cost[at], diverged[at])
        return diverged

    def see_rows(self, steps: list[int], rows: dict[str, torch.Tensor]) -> None:
        """Take the logged rows at `steps`, blanked (`blank`): grad_norm [steps, layers,
        replicas] at step 0 gives the gradient ratio, the last row the final stuck fractions."""
        if steps[0] == 0:  # how much of the gradient reaches the input layer at the start
            self.first_ratio = rows["grad_norm"][0, 0] / rows["grad_norm"][0, -1]
        self.last = {name: values[-1] for name, values in rows.items()}

    def _track_streaks(self, step: torch.Tensor, solved_now: torch.Tensor) -> None:
        """first_step_solved: the step after the last unsolved one in this chunk, or the
        streak's start from earlier chunks when every step here is solved."""
        unsolved_any = (~solved_now).any(0)
        last_unsolved = len(step) - 1 - (~solved_now).flip(0).int().argmax(0)
        streak_start = torch.where(
            unsolved_any,
            step[(last_unsolved + 1).clamp(max=len(step) - 1)],
            torch.where(self.first_step_solved >= 0, self.first_step_solved, step[0]),
        )
        self.first_step_solved = torch.where(solved_now[-1], streak_start, -1)

    @property
    def solved(self) -> torch.Tensor:
        return self.first_step_solved >= 0

    def causes(self) -> list[str | None]:
        """Why each replica is not solved, None for the solved ones."""
        final_cost, final_stuck = self.last["cost"], self.last["stuck_frac"].T
        dead = (final_stuck >= 1).any(dim=1)
        vanished = (self.first_ratio < VANISHED_RATIO) & ~self.below_ln2
        plateau = torch.stack([(final_cost - c).abs() < PLATEAU_BAND for c in self.plateaus]).any(
            dim=0
        )
        overfit = torch.zeros_like(dead)
        if "test_accuracy" in self.last:  # the training points are learned, the held-out not
            overfit = (self.last["accuracy"] >= self.rule.accuracy) & (
                self.last["test_accuracy"] < self.rule.accuracy
            )
        slow = final_cost < (1 - SLOW_DROP) * self.cost_at_90
        flags = torch.stack([self.diverged, dead, vanished, plateau, overfit, slow]).cpu()
        solved_ = self.solved.cpu()
        return [
            None if solved_[r] else CAUSES[[*map(bool, flags[:, r]), True].index(True)]
            for r in range(len(solved_))
        ]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).cpu().clone() for name in self.STATE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])


def blank(values: torch.Tensor, diverged: torch.Tensor) -> torch.Tensor:
    """values [..., replicas] with NaN where `diverged` [replicas] (or [steps, replicas] for
    values [steps, ..., replicas]): metrics.csv keeps no number of a diverged replica."""
    if values.dim() > diverged.dim():
        middle = (1,) * (values.dim() - diverged.dim())
        diverged = diverged.reshape(diverged.shape[:-1] + middle + diverged.shape[-1:])
    return values.masked_fill(diverged, float("nan"))
