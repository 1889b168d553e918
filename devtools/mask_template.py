"""Regenerate `fmr.masks.template`'s TEMPLATE_LANDMARKS68 and SHAPE_MODES from the faces of
training-side LFW people in the shared data (a maintainer's tool, not part of the package):

    python -m devtools.mask_template      # prints the two constants to paste into the module
"""

import random

import numpy as np

from fmr.data.splits import shared_split
from fmr.masks.template import fit_template_shape, measure_aligned_shapes
from fmr.settings import data_dir


def main() -> None:
    split = shared_split(data_dir())
    people = sorted(k for k in split.train if k.startswith("lfw/"))
    random.Random(1).shuffle(people)
    shapes = measure_aligned_shapes(split.train[p][0] for p in people[:1500])
    mean, modes = fit_template_shape(shapes)
    np.set_printoptions(precision=1, suppress=True)
    print("TEMPLATE_LANDMARKS68 =", repr(mean))
    print("SHAPE_MODES =", repr(modes))


if __name__ == "__main__":
    main()
