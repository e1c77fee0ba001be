"""``monai-anon serve``: start the MONAI Label server with this app (see ``docs/serving.md``)."""

from __future__ import annotations

import argparse

from monai_anon_app.server.launch import launch


def run(args: argparse.Namespace) -> int:
    return launch(args)
