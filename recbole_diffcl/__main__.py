"""``python -m recbole_diffcl``: the same command line as run_recbole_diffcl.py."""
import sys

from recbole_diffcl.cli import main

sys.exit(main())
