import sys

from fmr.cli import main

sys.exit(main())
