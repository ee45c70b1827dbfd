"""`python -m recaccel.cli VERB ...`: the `recaccel` command without the installed script (the
bench and the scripts start servers this way, with the interpreter they run under)."""

import sys

from recaccel.cli import main

if __name__ == "__main__":
    sys.exit(main())
