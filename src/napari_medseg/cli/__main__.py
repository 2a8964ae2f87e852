"""``python -m napari_medseg.cli`` (and ``torchrun -m napari_medseg.cli``) runs :func:`main`."""

import sys

from napari_medseg.cli.parser import main

sys.exit(main())
