"""Imported only by the inference fork server (``set_forkserver_preload``): loads the worker code and ITK's
readers once for every worker it forks, and makes the fork server itself exit at once when the server stops.

Tearing down an interpreter with torch and MONAI loaded takes seconds of CPU (minutes on a busy
machine); the fork server holds nothing to flush, so it skips that with ``os._exit``.
"""

import atexit
import os

from monai_anon_app.imageio.itkio import load_readers
from monai_anon_app.server import worker_loop  # noqa: F401

load_readers()  # ITK's I/O modules, once here rather than on each worker's first DICOM, NRRD or MetaImage
atexit.register(os._exit, 0)
