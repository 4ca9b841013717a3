"""Browser tests and the layout checks they share (layout.py): Debian's Chromium via Playwright."""
