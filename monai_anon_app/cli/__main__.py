"""``python -m monai_anon_app.cli``: the ``monai-anon`` command."""

import sys

from monai_anon_app.cli import main

sys.exit(main())
