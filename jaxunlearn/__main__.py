"""``python -m jaxunlearn`` runs the command-line interface."""

import sys

from jaxunlearn.cli import main

sys.exit(main())
