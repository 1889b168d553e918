"""Mask styles, colours and patterns: names, defaults per style, and the random draw of options.

Colours are given by name (`COLOURS`) or hex (`#8fc3e0`, `8fc3e0`, `#abc`); patterns are procedural
(`PATTERNS`, drawn by `fmr.masks.texture`). Each style has default colours and patterns with
weights (a surgical mask is usually light blue, a cloth mask often patterned) and a default
coverage range. Coverage is where the mask's top edge sits on the nose: 0 just above the nose
tip, 1 high on the nose bridge just below the eyes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmr.errors import FmrError

MASK_STYLES = ("surgical", "N95", "KN95", "cloth", "gas")
PATTERNS = ("plain", "stripes", "checks", "dots", "floral")

# The training loader draws these styles; KN95 is held out so evaluation can report a mask shape
# the model never saw, and the whole "warp" renderer is held out too (see fmr.masks.__init__).
TRAIN_STYLES = ("surgical", "N95", "cloth", "gas")
EVAL_STYLES = ("KN95",)

COLOURS: dict[str, str] = {
    "white": "#f3f3f1",
    "off-white": "#e9e6dc",
    "black": "#232427",
    "grey": "#8b8e93",
    "dark-grey": "#4a4d52",
    "light-blue": "#93c4e4",
    "blue": "#3d72b8",
    "navy": "#27355c",
    "surgical-green": "#8fcdb6",
    "green": "#3f7d4f",
    "olive": "#6b6e3b",
    "teal": "#2f8c8c",
    "pink": "#f0b3c4",
    "red": "#c23a3a",
    "orange": "#e5843b",
    "yellow": "#efd060",
    "purple": "#7b5aa6",
    "brown": "#6b4a35",
    "beige": "#d8c2a3",
    "tan": "#c39a70",
    "khaki": "#b7a97a",
    "rubber-grey": "#54585d",
    "blue-grey": "#56687a",
    # Skin tones: a mask in these colours must still read as a mask (see the contrast guard).
    "skin-light": "#f1cfb5",
    "skin-medium": "#c58c68",
    "skin-dark": "#7b4f37",
    "peach": "#f2c5a5",
}
_ALIASES = {"gray": "grey", "dark-gray": "dark-grey", "blue-gray": "blue-grey", "rubber-gray":
            "rubber-grey", "lightblue": "light-blue", "sky-blue": "light-blue", "offwhite":
            "off-white", "cream": "off-white"}

STYLE_COLOURS: dict[str, tuple[tuple[str, float], ...]] = {
    "surgical": (("light-blue", 6), ("white", 2), ("surgical-green", 1), ("pink", 1), ("black", 1)),
    "N95": (("white", 6), ("off-white", 2), ("grey", 1), ("black", 1)),
    "KN95": (("white", 5), ("black", 2), ("grey", 1), ("pink", 1), ("light-blue", 1)),
    "cloth": (
        ("navy", 2), ("black", 2), ("grey", 1), ("red", 1), ("green", 1), ("beige", 1),
        ("purple", 1), ("yellow", 1), ("pink", 1), ("blue", 1), ("teal", 1), ("orange", 1),
    ),
    "gas": (("rubber-grey", 4), ("black", 3), ("blue-grey", 1), ("olive", 1)),
}
STYLE_PATTERNS: dict[str, tuple[tuple[str, float], ...]] = {
    "surgical": (("plain", 9), ("dots", 1)),
    "N95": (("plain", 1),),
    "KN95": (("plain", 8), ("stripes", 1), ("checks", 1)),
    "cloth": (("plain", 3), ("stripes", 2), ("checks", 2), ("dots", 1.5), ("floral", 2)),
    "gas": (("plain", 1),),
}
STYLE_COVERAGE: dict[str, tuple[float, float]] = {
    "surgical": (0.45, 0.85),
    "N95": (0.55, 0.9),
    "KN95": (0.55, 0.9),
    "cloth": (0.4, 0.85),
    "gas": (0.55, 0.85),
}
_PATTERN_ALIASES = {"check": "checks", "checked": "checks", "stripe": "stripes", "striped":
                    "stripes", "dot": "dots", "polka": "dots", "flowers": "floral", "none": "plain"}
# Second colours for patterns: drawn from these, skipping any too close to the main colour.
PATTERN_COLOURS = ("white", "black", "navy", "red", "yellow", "light-blue", "pink", "green",
                   "orange", "purple", "beige", "teal")


@dataclass(frozen=True)
class MaskOptions:
    """The choices behind one mask. Colours are RGB float32 (3,) in [0, 255]."""

    style: str
    colour: str  # hex, as given or drawn
    rgb: np.ndarray
    pattern: str
    secondary: np.ndarray  # the pattern's second colour
    pattern_weight: float  # 0: plain colour, 1: full-strength pattern
    pattern_scale: float  # pattern period multiplier (about 0.7-1.4)
    pattern_angle: float  # radians
    coverage: float

    def info(self) -> dict:
        return {
            "style": self.style,
            "colour": self.colour,
            "pattern": self.pattern,
            "coverage": round(float(self.coverage), 3),
        }


def canonical_style(style: str) -> str:
    """The style's canonical spelling (case-insensitive: "n95" -> "N95"); FmrError if unknown."""
    lookup = {s.lower(): s for s in MASK_STYLES}
    key = str(style).strip().lower().replace("_", "-")
    key = {"surgical-mask": "surgical", "respirator": "gas", "gas-mask": "gas"}.get(key, key)
    if key not in lookup:
        raise FmrError(
            f"unknown mask style {style!r}; choose one of {', '.join(MASK_STYLES)} (or random)"
        )
    return lookup[key]


def parse_colour(colour: str) -> tuple[str, np.ndarray]:
    """A colour name or hex code -> (hex '#rrggbb', RGB float32 (3,) in [0, 255]).

    Accepts the names in `COLOURS` (case-insensitive, `_` or space for `-`, "gray" for "grey"),
    `#rrggbb`, `rrggbb` and `#rgb`. Raises `FmrError` for anything else.
    """
    text = str(colour).strip().lower().replace("_", "-").replace(" ", "-")
    text = _ALIASES.get(text, text)
    if text in COLOURS:
        text = COLOURS[text]
    digits = text[1:] if text.startswith("#") else text
    if len(digits) == 3 and all(c in "0123456789abcdef" for c in digits):
        digits = "".join(c * 2 for c in digits)
    if len(digits) != 6 or any(c not in "0123456789abcdef" for c in digits):
        raise FmrError(
            f"unknown colour {colour!r}; use a name ({', '.join(sorted(COLOURS)[:8])}, ...: see "
            "fmr.masks.COLOURS) or a hex code such as #8fc3e0"
        )
    rgb = np.array([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)
    return f"#{digits}", rgb


def _weighted(rng: np.random.Generator, choices: tuple[tuple[str, float], ...]) -> str:
    names = [c for c, _ in choices]
    weights = np.array([w for _, w in choices], dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def parse_coverage(coverage) -> tuple[float, float] | None:
    """None, a number, a (low, high) pair or "LOW:HIGH" -> a range within [0, 1]."""
    if coverage is None:
        return None
    if isinstance(coverage, str):
        parts = coverage.split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise FmrError(f"bad coverage {coverage!r}; give a number or LOW:HIGH within 0..1")
    elif np.ndim(coverage) == 0:
        values = [float(coverage)]
    else:
        values = [float(v) for v in coverage]
    low, high = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if not (0.0 <= low <= high <= 1.0):
        raise FmrError(
            f"bad coverage {coverage!r}; give a number or LOW:HIGH with 0 <= LOW <= HIGH <= 1"
        )
    return low, high


def draw_options(
    style: str,
    rng: np.random.Generator,
    *,
    colour: str | None = None,
    pattern: str | None = None,
    coverage=None,
    pattern_weight: float | None = None,
) -> MaskOptions:
    """Draw one mask's options: given values are kept, the rest come from the style's defaults.

    The random draws happen in a fixed order whatever is given, so the same rng state gives the
    same mask geometry with or without, say, an explicit colour.
    """
    style = canonical_style(style)
    drawn_colour = _weighted(rng, STYLE_COLOURS[style])
    drawn_pattern = _weighted(rng, STYLE_PATTERNS[style])
    coverage_range = parse_coverage(coverage) or STYLE_COVERAGE[style]
    drawn_coverage = float(rng.uniform(*coverage_range))
    secondary_order = rng.permutation(len(PATTERN_COLOURS))
    scale = float(rng.uniform(0.7, 1.4))
    angle = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4], p=[0.4, 0.3, 0.15, 0.15]))

    hex_colour, rgb = parse_colour(colour if colour is not None else drawn_colour)
    if pattern is None:
        pattern = drawn_pattern
    pattern = str(pattern).strip().lower()
    pattern = _PATTERN_ALIASES.get(pattern, pattern)
    if pattern not in PATTERNS:
        raise FmrError(f"unknown pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    secondary = rgb
    for index in secondary_order:
        candidate = parse_colour(PATTERN_COLOURS[index])[1]
        if np.abs(candidate - rgb).sum() > 180:
            secondary = candidate
            break
    weight = 0.9 if pattern_weight is None else float(pattern_weight)
    if not 0.0 <= weight <= 1.0:
        raise FmrError(f"bad pattern weight {pattern_weight!r}; give a number within 0..1")
    return MaskOptions(style, hex_colour, rgb, pattern, secondary, weight, scale, angle,
                       drawn_coverage)
