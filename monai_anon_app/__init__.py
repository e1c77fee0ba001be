"""monai-anon: privacy-preserving case-based explanations for medical images.

This folder is both the MONAI Label app (``main.py``) and the importable package.
"""

__version__ = "0.1.0"
