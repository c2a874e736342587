"""What a trained model says about itself: its provenance card and description."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

from ..modelfile import SegmentationModel
from .annotations import count_objects

__all__ = ["TRAINED_KEYS", "has_been_trained", "interim_card", "write_card"]

#: provenance keys that say a model's weights were trained (by napari-unet or elsewhere)
TRAINED_KEYS = ("trained_from", "training", "training_data", "source")


def has_been_trained(model: SegmentationModel) -> bool:
    """True when ``model``'s card records training (so fine-tuning it turns the safeguards on)."""
    return any(k in model.provenance for k in TRAINED_KEYS)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def interim_card(start_name: str, cfg, done: int, best_iteration: int, n_images: int, start_provenance: dict) -> dict:
    """A checkpoint's own card: where it starts from and how far it got, never the start
    model's (that one is kept under ``start_provenance``)."""
    return {"trained_from": start_name, "iterations": done, "iterations_planned": cfg.iterations,
            "best_iteration": best_iteration, "finished": False, "training_images": n_images,
            "training": asdict(cfg), "start_provenance": start_provenance, "date": _now()}


def write_card(model: SegmentationModel, start: SegmentationModel, cfg, *, done: int, best_iteration: int,
               n_images: int, painted_pixels: int, finished: bool, fine_tune: bool, start_provenance: dict,
               labels=None, held_labels=None, image_names=None, scored_on: str = "", start_score=None,
               best_score=None, distillation: float = 0.0, mixed_with_start: float = 1.0) -> None:
    """Put the card of a finished (or stopped) training on ``model``: iterations, images, painted
    pixels, settings and date; for a fine-tuned model also the start model, the painted and
    held-out objects, the scores, how far the weights moved from the start model's
    (``mixed_with_start``), and a description that says what it was fine-tuned from and on."""
    start_name = start.name
    date = _now()
    card = {
        "trained_from": start_name,
        "iterations": done,
        "best_iteration": best_iteration,
        "training_images": n_images,
        "annotated_pixels": painted_pixels,
        "training": asdict(cfg),
        "date": date,
    }
    if fine_tune:
        names = list(image_names) if image_names is not None else [f"image {i + 1}" for i in range(n_images)]
        objects = count_objects(labels)
        held = count_objects(held_labels) if held_labels is not None else {"cells": 0, "background_strokes": 0}
        card.update({
            "fine_tuned": True,
            "start_model": {k: v for k, v in {
                "name": start_name, "description": start.description,
                "training_data": start.provenance.get("training_data"), "date": start.provenance.get("date"),
            }.items() if v},
            "images": names,
            "painted_pixels": painted_pixels,
            "painted_objects": objects,
            "held_out_objects": held,
            "scored_on": scored_on,
            "start_score": start_score,
            "best_score": best_score,
            "distillation": distillation,
            "mixed_with_start": mixed_with_start,
        })
        where = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        model.description = (
            f"{start_name} fine-tuned on {date[:10]} with napari-unet from {objects['cells']} painted cells and "
            f"{objects['background_strokes']} background strokes ({painted_pixels} pixels) on {where}"
            + (f"; {scored_on} score {start_score:.3f} -> {best_score:.3f}" if start_score is not None else "")
            + (f"; weights moved {mixed_with_start:g} of the way from the start model's to the fine-tuned ones"
               if mixed_with_start < 1 else "")
            + f". Start model: {start.description or start_name}"
        )
        model.provenance = card
    else:
        model.provenance.update(card)
    model.provenance.update({"iterations_planned": cfg.iterations, "finished": finished})
    if start_provenance and not fine_tune:
        model.provenance.setdefault("start_provenance", start_provenance)
