"""Layout checks for pages rendered in a real browser (Playwright's sync API, Debian Chromium).

Each check takes a Playwright `page` and returns a list of problems (one readable line each); the
`assert_*` wrappers fail with all of them at once, so one run shows everything a page gets wrong:

- labels_cut: text (SVG <text>, table cells, labels, anything) that does not lie fully inside
  its box: the SVG viewport for SVG text, every clipping ancestor for all text (overflow hidden
  or clip both ways; a scroll box sideways only: a table's right-hand columns behind a
  scrollbar are cut, a sidebar taller than the window is not), and the box of the element
  holding the text (horizontally).
- wrapped_numbers: a number (digits with separators, an optional sign and currency symbol) whose
  characters land on more than one line.
- horizontal_scroll: the document is wider than the window.
- long_decimals: a decimal (in text or in a visible form field) with more fraction digits than
  the caller allows; callers give a page-wide maximum and may give other maxima per selector
  (unit prices, meter values).

Text an element truncates on purpose (text-overflow: ellipsis with the full value in its title)
and hidden text (screen-reader labels clipped to 1 px, labels moved out by text-indent) are not
"cut".

`chromium()` starts the browser; `screenshot()` saves a full-page PNG and copies it to
METERLINE_SCREENSHOTS_DIR when set (docs/img/ is made that way). The ORM must only be used
before the browser starts and after it stops: Playwright's sync API runs an event loop in this
thread, where Django refuses synchronous database access.
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1440, "height": 900}

# Shared by the checks below: which text nodes count, and how to describe an element.
_JS_PRELUDE = r"""
const describe = (el) => {
  let s = el.tagName.toLowerCase();
  if (el.id) s += '#' + el.id;
  const cls = el.getAttribute && el.getAttribute('class');
  if (cls) s += '.' + cls.trim().split(/\s+/).join('.');
  return s;
};
const visuallyHidden = (el) => {
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const st = getComputedStyle(e);
    if (st.display === 'none' || st.visibility === 'hidden') return true;
    if (st.clip && st.clip !== 'auto') return true;
    if (st.clipPath && st.clipPath !== 'none') return true;
    // image replacement: a button's label pushed out of sight (Django's selector arrows)
    if (parseFloat(st.textIndent) < -500) return true;
    const r = e.getBoundingClientRect();
    if (r.width <= 1 && r.height <= 1 && e.tagName !== 'tspan') return true;
  }
  return false;
};
const truncatedOnPurpose = (el) => {
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const st = getComputedStyle(e);
    if (st.textOverflow === 'ellipsis' && e.hasAttribute('title')) return true;
  }
  return false;
};
const textNodes = (root) => {
  const out = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (n) => {
      const p = n.parentElement;
      if (!p || !n.textContent.trim()) return NodeFilter.FILTER_REJECT;
      if (['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'TITLE'].includes(p.tagName))
        return NodeFilter.FILTER_REJECT;
      if (p.closest('details:not([open]) > :not(summary)')) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    },
  });
  while (walker.nextNode()) out.push(walker.currentNode);
  return out.filter((n) => !visuallyHidden(n.parentElement));
};
const rangeOf = (node, start, end) => {
  const r = document.createRange();
  r.setStart(node, start);
  r.setEnd(node, end);
  return r;
};
const trimmedRange = (node) => {
  const t = node.textContent;
  const start = t.length - t.trimStart().length;
  const end = t.trimEnd().length;
  return rangeOf(node, start, end);
};
"""

_LABELS_CUT = (
    _JS_PRELUDE
    + r"""
([selector, tolerance, allowScroll]) => {
  const problems = [];
  const outside = (inner, outer) =>
    inner.left < outer.left - tolerance || inner.right > outer.right + tolerance ||
    inner.top < outer.top - tolerance || inner.bottom > outer.bottom + tolerance;
  const outsideX = (inner, outer) =>
    inner.left < outer.left - tolerance || inner.right > outer.right + tolerance;
  const fmt = (r) => `[${Math.round(r.left)}..${Math.round(r.right)} x ` +
                     `${Math.round(r.top)}..${Math.round(r.bottom)}]`;
  for (const root of document.querySelectorAll(selector)) {
    for (const node of textNodes(root)) {
      const el = node.parentElement;
      if (truncatedOnPurpose(el)) continue;
      const text = node.textContent.trim();
      const rects = [...trimmedRange(node).getClientRects()].filter((r) => r.width > 0);
      if (!rects.length) continue;
      const svg = el.closest('svg');
      if (svg) {
        // The SVG's viewport is its box: text past it is cut (or spills over the page).
        const box = svg.getBoundingClientRect();
        for (const r of rects) if (outside(r, box)) {
          problems.push(`"${text}" in ${describe(el)} ${fmt(r)} leaves its svg ${fmt(box)}`);
          break;
        }
      } else {
        // The element holding the text: text past its sides overlaps the next cell/column.
        const st = getComputedStyle(el);
        if (st.display !== 'inline' && st.display !== 'contents') {
          const box = el.getBoundingClientRect();
          for (const r of rects) if (outsideX(r, box)) {
            problems.push(`"${text}" ${fmt(r)} overflows ${describe(el)} ${fmt(box)}`);
            break;
          }
        }
      }
      // Every clipping ancestor (overflow hidden/clip; auto/scroll unless allowed).
      for (let a = el; a && a !== document.documentElement; a = a.parentElement) {
        if (a.tagName === 'BODY') break;
        const st = getComputedStyle(a);
        // Hidden/clip cut both ways. A scroll box cuts sideways (a table's right-hand columns
        // behind a scrollbar) but not downwards (a sidebar taller than the window).
        const cuts = (o) => o === 'hidden' || o === 'clip';
        const scrolls = (o) => !allowScroll && (o === 'auto' || o === 'scroll');
        const cutX = cuts(st.overflowX) || scrolls(st.overflowX);
        const cutY = cuts(st.overflowY);
        if (!(cutX || cutY) || a.tagName.toLowerCase() === 'svg') continue;
        const box = a.getBoundingClientRect();
        const hit = rects.find((r) =>
          (cutX && outsideX(r, box)) ||
          (cutY && (r.top < box.top - tolerance || r.bottom > box.bottom + tolerance)));
        if (hit) {
          problems.push(`"${text}" ${fmt(hit)} is cut by ${describe(a)} ${fmt(box)}`);
          break;
        }
      }
    }
  }
  return problems;
}
"""
)

_WRAPPED_NUMBERS = (
    _JS_PRELUDE
    + r"""
([selector]) => {
  const problems = [];
  // a sign (not a hyphen after a word: INV-0025), a currency symbol, digits joined by
  // separators (, . no-break and thin spaces ')
  const number = /(?:(?<![\w.])[-\u2212+](?=[$€£¥\d]))?[$€£¥]?\d(?:[\d,.'\u00a0\u202f\u2009]*\d)?%?/g;
  for (const root of document.querySelectorAll(selector)) {
    for (const node of textNodes(root)) {
      const text = node.textContent;
      for (const m of text.matchAll(number)) {
        const rects = [...rangeOf(node, m.index, m.index + m[0].length).getClientRects()]
          .filter((r) => r.width > 0);
        const lines = new Set(rects.map((r) => Math.round(r.top)));
        if (lines.size > 1)
          problems.push(`"${m[0]}" in ${describe(node.parentElement)} spans ${lines.size} lines`);
      }
    }
  }
  return problems;
}
"""
)

_DECIMALS = (
    _JS_PRELUDE
    + r"""
([selector, excluded]) => {
  const found = [];
  // a decimal point between digits, not part of a dotted run (dates, versions, addresses)
  const decimal = /(?<![\w.])[-\u2212]?\d[\d,]*\.(\d+)(?![\w.])/g;
  const skip = (el) => excluded && el.closest(excluded);
  for (const root of document.querySelectorAll(selector)) {
    for (const node of textNodes(root)) {
      if (skip(node.parentElement)) continue;
      for (const m of node.textContent.matchAll(decimal))
        found.push([m[0], m[1].length, describe(node.parentElement)]);
    }
    const fields = root.querySelectorAll(
      'input:not([type=hidden]):not([type=checkbox]):not([type=radio]), textarea');
    for (const f of fields) {
      if (skip(f) || visuallyHidden(f)) continue;
      for (const m of (f.value || '').matchAll(decimal))
        found.push([m[0], m[1].length, describe(f) + '[value]']);
    }
  }
  return found;
}
"""
)


def labels_cut(page, selector: str = "body", *, tolerance: float = 1.0, allow_scroll=False):
    """Text under `selector` not fully inside its box (see the module's docstring)."""
    return page.evaluate(_LABELS_CUT, [selector, tolerance, allow_scroll])


def wrapped_numbers(page, selector: str = "body") -> list[str]:
    return page.evaluate(_WRAPPED_NUMBERS, [selector])


def horizontal_scroll(page) -> list[str]:
    width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    return [] if width <= inner else [f"the page is {width} px wide in a {inner} px window"]


def long_decimals(page, max_digits: int, selector: str = "body", *, exclude: str = ""):
    """Decimals under `selector` (not under `exclude`) with more than max_digits fraction
    digits."""
    found = page.evaluate(_DECIMALS, [selector, exclude])
    return [
        f'"{text}" in {where} has {digits} fraction digits (at most {max_digits})'
        for text, digits, where in found
        if digits > max_digits
    ]


def assert_labels_inside(page, selector: str = "body", **kwargs):
    problems = labels_cut(page, selector, **kwargs)
    assert not problems, "cut text:\n" + "\n".join(problems)


def assert_no_wrapped_numbers(page, selector: str = "body"):
    problems = wrapped_numbers(page, selector)
    assert not problems, "numbers across lines:\n" + "\n".join(problems)


def assert_no_horizontal_scroll(page):
    problems = horizontal_scroll(page)
    assert not problems, problems[0]


def assert_decimals_at_most(page, max_digits: int, selector: str = "body", *, exclude: str = ""):
    problems = long_decimals(page, max_digits, selector, exclude=exclude)
    assert not problems, "long decimals:\n" + "\n".join(problems)


def assert_readable(
    page,
    *,
    max_decimals: int = 2,
    decimals: dict[str, int] | None = None,
    no_scroll: bool = True,
    allow_scroll_containers: bool = False,
):
    """All four checks on the whole page. `decimals` maps selectors to their own maximum (e.g.
    {".unit-price": 6}); everything else allows `max_decimals`."""
    decimals = decimals or {}
    problems = labels_cut(page, allow_scroll=allow_scroll_containers)
    problems += wrapped_numbers(page)
    if no_scroll:
        problems += horizontal_scroll(page)
    problems += long_decimals(page, max_decimals, exclude=", ".join(decimals))
    for selector, digits in decimals.items():
        problems += long_decimals(page, digits, selector)
    assert not problems, f"{page.url}:\n" + "\n".join(problems)


@contextmanager
def chromium():
    """Debian's Chromium through Playwright (no other browser download)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), "./dev test installs chromium"
    with sync_playwright() as playwright:
        # --no-sandbox: the test command may run as root (CI containers)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def phone_page(browser):
    """A page in a 375 px wide phone context (closed with the browser)."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    return context.new_page()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in tmp_path, copied to METERLINE_SCREENSHOTS_DIR when that is set."""
    path = Path(tmp_path) / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("METERLINE_SCREENSHOTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path
