"""Train an fmr face recogniser: `python train.py --help`.

The loop lives in `fmr.train` (config, data, augmentation, validation, checkpoints); this file
only hands the command line to it, so it also runs under `torchrun`.
"""

import sys

from fmr.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
