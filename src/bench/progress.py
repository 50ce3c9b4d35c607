"""Live progress for a search: a bar over the study's trials and one over the running trial's epochs."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SearchProgress:
    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console or Console(stderr=True),
        )
        self.trials = self.epochs = None
        self.best: float | None = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def begin(self, study_done: int, total: int, best: float | None = None) -> None:
        self.best = best  # a resumed study starts from its best so far
        self.trials = self.progress.add_task("trials", total=total, completed=study_done, info="")
        self.epochs = self.progress.add_task("  epochs", total=None, info="")

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def start_trial(self, number: int) -> None:
        self.progress.update(self.epochs, description=f"  trial {number}", completed=0, total=None, info="")

    def epoch(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        info = " ".join(f"{k}={metrics[k]:.3f}" for k in ("loss", "val_accuracy") if k in metrics)
        self.progress.update(self.epochs, completed=epoch + 1, total=total or None, info=info)

    def trial_done(self, number: int, state: str, value: float | None, seconds: float, done: int | None = None,
                   failure: str | None = None) -> None:
        """Count a finished trial (done: the study's total, when another worker may have finished some too);
        a failed one gets a line with its reason, on a terminal too."""
        if value is not None and state == "complete":  # a pruned trial's value is from an unfinished run
            self.best = max(self.best or 0.0, value)
        best = f"best val_acc={self.best:.3f}" if self.best is not None else ""
        if done is None:
            done = int(self.progress.tasks[0].completed) + 1
        self.progress.update(self.trials, completed=done, info=f"{state}  {best}")
        if failure or not self.progress.console.is_terminal:  # logs and CI get a line per trial instead of a live bar
            shown = f" val_acc={value:.3f}" if value is not None else ""
            line = f"trial {number} {state}{shown} in {seconds:.1f} s ({done}/{self.progress.tasks[0].total})"
            line += f" {best}" * bool(best) + f": {failure}" * bool(failure)
            self.progress.console.print(line, highlight=False, markup=False)  # a failure reason may hold [brackets]

    def on_trial_finished(self, study, trial) -> None:
        """Optuna callback: count every finished trial of the study, this worker's and the others'."""
        self.trial_done(**trial_done_args(study, trial))


def trial_done_args(study, trial) -> dict:
    """SearchProgress.trial_done's arguments for a finished Optuna trial."""
    from bench.backends.optuna import finished_count

    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    value = trial.values[0] if trial.values else None
    state = trial.state.name.lower()
    if state == "pruned" and trial.last_step is not None:
        state = f"pruned at epoch {trial.last_step}"  # the value shown is the one it had there
    return {"number": trial.number, "state": state, "value": value, "seconds": seconds, "done": finished_count(study),
            "failure": trial.user_attrs.get("failure_reason")}
