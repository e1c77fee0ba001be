"""Defaults the command line, the REST tasks and the inference API share, declared once."""

from __future__ import annotations

__all__ = ["ANONYMIZE_MODE", "CANDIDATES", "COUNTERFACTUAL_MODE", "MODES", "MODE_HELP"]

#: how pixels come out of the model: the whole image regenerated, or the model's change added to the original
MODES = ("full", "residual")
MODE_HELP = {
    "full": "regenerate the whole image from the edited features",
    "residual": "add the model's change to the original pixels (keeps fine detail of the original, including "
                "identifying detail)",
}
ANONYMIZE_MODE = "full"
COUNTERFACTUAL_MODE = "residual"
#: synthetic identities drawn per image; the most typical one that passes the novelty check is used
CANDIDATES = 8
