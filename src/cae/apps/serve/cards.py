"""The model card beside the page's model picker: a shipped model's MODEL_CARD.md as HTML.

Only the shipped models have cards (`cae.report.card`); a run found under --runs has its
figures in its own folder, and the answer says so instead of failing.
"""

from __future__ import annotations

import markdown

from cae.report.card import SHIPPED_MODELS, read_card
from cae.errors import CaeError

SHIPPED_PREFIX = "shipped/"  # the page's ids of the shipped models: 'shipped/colorizer' (models.list_models)


def card_answer(model_id: str) -> dict:
    """{"model", "html", "message"}: the card of the model the page's select names, rendered, or
    (a run's id) no card and why."""
    if model_id.startswith(SHIPPED_PREFIX) and model_id[len(SHIPPED_PREFIX):] in SHIPPED_MODELS:
        text = read_card(model_id[len(SHIPPED_PREFIX):])
        return {"model": model_id, "html": markdown.markdown(text, extensions=["tables"]), "message": ""}
    if model_id.startswith("runs/"):
        return {"model": model_id, "html": None,
                "message": "Model cards come with the shipped models; a run's figures are in its test_metrics.json."}
    raise CaeError(f"no model {model_id!r}; pick one of the page's models (shipped/reference, shipped/colorizer, "
                   "or a run under --runs)")
