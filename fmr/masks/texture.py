"""Procedural fabric patterns, written once for numpy and torch.

Every function takes surface coordinates `x`, `y` in centimetres of mask fabric (arrays of any
shape, broadcastable with the parameters) and returns the weight of the pattern's second colour
in [0, 1]. `xp` is the array namespace: `numpy` or `torch`. Per-sample parameters (the torch
path) are arrays shaped (N, 1, 1); on the numpy path they are plain floats. Edges are smooth
(clipped sines, not step functions) so patterns do not alias on small faces.
"""

from __future__ import annotations

import math

# Repeat lengths at pattern_scale 1, in cm of fabric.
STRIPE_PERIOD_CM = 1.6
CHECK_PERIOD_CM = 2.0
DOT_PERIOD_CM = 1.3
FLOWER_PERIOD_CM = 2.6


def _rotate(x, y, angle, xp):
    c, s = xp.cos(angle), xp.sin(angle)
    return x * c + y * s, y * c - x * s


def _square_wave(t, xp, sharpness: float = 3.0):
    """0..1 square wave of period 1 with soft edges."""
    return 0.5 + 0.5 * xp.clip(sharpness * xp.sin(2 * math.pi * t), -1.0, 1.0)


def stripes(x, y, scale, angle, xp):
    """Even stripes, `angle` from horizontal."""
    along, _ = _rotate(x, y, angle + math.pi / 2, xp)
    return _square_wave(along / (STRIPE_PERIOD_CM * scale), xp)


def checks(x, y, scale, angle, xp):
    """Gingham: two crossed stripe sets; crossings full strength, single bands half."""
    a, b = _rotate(x, y, angle, xp)
    period = CHECK_PERIOD_CM * scale
    return 0.5 * (_square_wave(a / period, xp) + _square_wave(b / period, xp))


def dots(x, y, scale, angle, xp):
    """Polka dots on a staggered grid."""
    a, b = _rotate(x, y, angle, xp)
    period = DOT_PERIOD_CM * scale
    row = xp.floor(b / period)
    a = a / period + 0.5 * (row - 2 * xp.floor(row / 2))  # every other row shifted half a cell
    fa = a - xp.floor(a) - 0.5
    fb = b / period - row - 0.5
    radius = xp.sqrt(fa * fa + fb * fb)
    return xp.clip((0.24 - radius) * 14.0, 0.0, 1.0)


def _hash(i, j, xp):
    """A repeatable pseudo-random value in [0, 1) per integer cell (the classic sine hash)."""
    h = xp.sin(i * 127.1 + j * 311.7) * 43758.5453
    return h - xp.floor(h)


def floral(x, y, scale, angle, xp):
    """Five-petal flowers of varying size and turn, one per jittered cell."""
    a, b = _rotate(x, y, angle * 0.25, xp)
    period = FLOWER_PERIOD_CM * scale
    ci, cj = xp.floor(a / period), xp.floor(b / period)
    h1, h2 = _hash(ci, cj, xp), _hash(cj + 17.0, ci + 5.0, xp)
    fa = a / period - ci - 0.5 - 0.25 * (h1 - 0.5)
    fb = b / period - cj - 0.5 - 0.25 * (h2 - 0.5)
    radius = xp.sqrt(fa * fa + fb * fb) + 1e-6
    theta = xp.atan2(fb, fa) if hasattr(xp, "atan2") else xp.arctan2(fb, fa)
    size = 0.24 + 0.12 * h1
    petal_edge = size * (0.55 + 0.45 * xp.abs(xp.cos(2.5 * theta + 6.2832 * h2)))
    petals = xp.clip((petal_edge - radius) * 16.0, 0.0, 1.0)
    centre = xp.clip((0.06 - radius) * 30.0, 0.0, 1.0)
    return petals * (1.0 - centre)


PATTERN_FUNCTIONS = {"stripes": stripes, "checks": checks, "dots": dots, "floral": floral}


def pattern_weight_map(pattern: str, x, y, scale, angle, xp):
    """The second colour's weight for one named pattern ("plain" gives zeros)."""
    if pattern == "plain":
        return x * 0.0
    return PATTERN_FUNCTIONS[pattern](x, y, scale, angle, xp)
