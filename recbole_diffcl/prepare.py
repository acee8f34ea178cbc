"""``python -m recbole_diffcl.prepare``: the command is :mod:`recbole_diffcl.data.prepare`."""
import sys

from recbole_diffcl.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
