"""Importing this module loads the models `fmr mask` needs on photos: MTCNN's weights and dlib's
68-point shape predictor.

`fmr mask --workers N` imports it once in the fork server that starts its worker processes, so
every worker begins with the models in memory instead of loading them again (dlib's predictor
alone takes about a second per process). Nothing else should import it.
"""

from fmr.faces.detect import _mtcnn_weights
from fmr.faces.landmarks import shape_predictor

_mtcnn_weights()
shape_predictor(68)
