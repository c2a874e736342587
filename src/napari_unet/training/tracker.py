"""The best model seen so far, and its checkpoint on disk."""

from __future__ import annotations

import copy
from pathlib import Path

from ..modelfile import SegmentationModel, save_model
from .card import interim_card

__all__ = ["BestModelTracker"]


class BestModelTracker:
    """Keeps the best weights by score. When fine-tuning, :meth:`start` enters the start model
    first (iteration 0); a later iteration must then beat it by more than ``cfg.min_gain``, while
    later iterations may tie earlier fine-tuned ones (the later one wins). With ``checkpoint``, every new best
    fine-tuned state is written there with its own card (:func:`~.card.interim_card`); the files
    written are listed in ``saved``."""

    def __init__(self, model: SegmentationModel, cfg, *, checkpoint: Path | None = None, name: str | None = None,
                 n_images: int = 1):
        self.model, self.cfg, self.checkpoint, self.name, self.n_images = model, cfg, checkpoint, name, n_images
        self.start_name = model.name
        self.start_provenance = copy.deepcopy(model.provenance)
        self.state: dict | None = None
        self.score: float | None = None
        self.iteration = 0
        self.saved: list[Path] = []

    def start(self, state: dict, score: float) -> None:
        """Enter the start model (iteration 0) with its score."""
        self.state, self.score, self.iteration = state, score, 0

    def consider(self, score: float, iteration: int, net, done: int | None = None) -> bool:
        """Keep ``net``'s weights if ``score`` is the best so far (see the class); ``done``:
        iterations done, for the checkpoint's card. True when kept."""
        if self.score is None:
            better = True
        elif self.iteration == 0:  # the start model: beaten only by more than min_gain
            better = score > self.score + self.cfg.min_gain
        else:
            better = score >= self.score
        if better:
            self.score, self.iteration = score, iteration
            self.state = copy.deepcopy(net.state_dict())
            self._save(iteration if done is None else done)
            return True
        return False

    def _save(self, done: int) -> None:
        if self.checkpoint is None or self.iteration <= 0:
            return
        snap = copy.deepcopy(self.model)
        snap.network.load_state_dict(self.state)
        snap.name = self.name or f"{self.start_name} (training)"
        snap.description = f"unfinished training from {self.start_name}: best of {done} iterations"
        snap.provenance = interim_card(self.start_name, self.cfg, done, self.iteration, self.n_images,
                                       self.start_provenance)
        self.write(snap)

    def write(self, model: SegmentationModel) -> None:
        """Write ``model`` to the checkpoint (if any; atomically, replacing what this run wrote)."""
        if self.checkpoint is not None:
            save_model(model, self.checkpoint, overwrite=True)  # checked at entry; ours from now on
            self.saved.append(self.checkpoint)
