"""Repository tooling, not part of the installed package: the app server and browser helpers
(the browser test, the screenshots, benchmarks/app_load.py), the screenshots of docs/img, and
the regeneration of the mask template's constants. Run from the repository root:
`python -m devtools.screenshots`, `python -m devtools.mask_template`."""
