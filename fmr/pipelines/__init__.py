"""Pipelines: the jobs that run the lower layers end to end over many files.

- `fmr.pipelines.prepare`: `fmr prepare`, raw photos -> a training pack (detect, align, clean,
  teacher embeddings, masks, splits).
- `fmr.pipelines.embedding`: lists of images -> embeddings per backbone and condition (`fmr eval`,
  `fmr embed`, the app's score files) and the validation scores thresholds are calibrated on.

They sit above `fmr.verify`, `fmr.eval`, `fmr.faces`, `fmr.masks` and `fmr.data`, and below
the command line (`fmr.commands`) and the app (`fmr.app`): see docs/architecture.md.
"""
