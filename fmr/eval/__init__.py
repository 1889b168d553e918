"""Verification evaluation: the LFW pairs protocol runner and its reports.

The runner (`fmr.eval.protocols`) sits above `fmr.verify`: it embeds pair lists with a backbone
and scores them. The maths it uses (metrics, calibration, angles) is in `fmr.metrics` (numpy
only); `fmr.eval.report` writes tables and charts.
"""
