"""The organization's accent colour, made safe to read: WCAG 2 contrast of at least 4.5:1 for
text on the accent (buttons, header) and for accent-coloured text on the white page (links,
focus rings), whatever colour the organization picked."""

from dataclasses import dataclass

WHITE = "#ffffff"
BLACK = "#000000"
MIN_CONTRAST = 4.5


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def relative_luminance(colour: str) -> float:
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    la, lb = relative_luminance(a), relative_luminance(b)
    lighter, darker = max(la, lb), min(la, lb)
    return (lighter + 0.05) / (darker + 0.05)


@dataclass(frozen=True)
class Palette:
    accent: str  # the organization's colour, as chosen (backgrounds)
    on_accent: str  # text on the accent: black or white, whichever reads better
    accent_text: str  # the accent darkened until it reads on white


def palette(accent: str) -> Palette:
    accent = accent.lower()
    # One of black or white always reaches 4.58:1 on any colour (their contrasts multiply to 21).
    on_accent = WHITE if contrast_ratio(accent, WHITE) >= contrast_ratio(accent, BLACK) else BLACK
    r, g, b = _rgb(accent)
    text = accent
    step = 0
    while contrast_ratio(text, WHITE) < MIN_CONTRAST:
        step += 1  # darken toward black in 5% steps: keeps the hue, ends at black at worst
        factor = max(0.0, 1 - step * 0.05)
        text = _hex((round(r * factor), round(g * factor), round(b * factor)))
    return Palette(accent=accent, on_accent=on_accent, accent_text=text)
