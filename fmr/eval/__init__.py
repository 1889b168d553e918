"""Verification evaluation: metrics, calibration, the LFW pairs protocol, angle statistics, reports.

`fmr.eval.metrics` and `fmr.eval.calibration` need only numpy; `fmr.eval.protocols` and
`fmr.eval.report` load models, detectors and plotting libraries when called.
"""
