"""The layout checks themselves, on hand-written pages: each one catches what it is for and
passes what is fine (the browser tests rely on both)."""

import pytest

from .layout import (
    PHONE,
    chromium,
    horizontal_scroll,
    labels_cut,
    long_decimals,
    wrapped_numbers,
)


@pytest.fixture(scope="module")
def page():
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 800, "height": 600})


def test_svg_label_past_the_viewport_is_cut(page):
    page.set_content(
        '<svg width="200" height="50" viewBox="0 0 200 50">'
        '<text x="5" y="20">Nov 1</text><text x="180" y="20">Dec 01</text>'
        '<text x="-8" y="45">,000,000</text></svg>'
    )
    problems = labels_cut(page)
    assert len(problems) == 2
    assert problems[0].startswith('"Dec 01" in text') and "leaves its svg" in problems[0]
    assert problems[1].startswith('",000,000" in text')


def test_cell_text_cut_by_a_clipping_box_and_past_its_cell(page):
    page.set_content(
        '<div style="width:120px;overflow:hidden"><table style="width:300px"><tr>'
        "<td>short</td><td>far to the right</td></tr></table></div>"
        '<table style="table-layout:fixed;width:100px"><tr>'
        '<td style="width:40px;white-space:nowrap">a long heading</td><td>x</td></tr></table>'
        '<p style="width:60px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap" '
        'title="0c3f-uuid-long-value">0c3f-uuid-long-value</p>'
        '<span style="position:absolute;width:1px;height:1px;overflow:hidden;'
        'clip:rect(0 0 0 0)">screen reader text</span>'
    )
    problems = labels_cut(page)
    assert [p.split(" [")[0] for p in problems] == ['"far to the right"', '"a long heading"']
    assert "is cut by div" in problems[0] and "overflows td" in problems[1]


def test_scroll_containers_cut_sideways_unless_allowed(page):
    page.set_content(
        '<div style="width:100px;overflow-x:auto"><p style="width:400px">'
        "<span style='margin-left:300px'>hidden</span></p></div>"
    )
    assert len(labels_cut(page)) == 1
    assert labels_cut(page, allow_scroll=True) == []
    # a sidebar taller than its scroll box: what is below is scrolled to, not cut
    page.set_content(
        '<nav style="height:40px;overflow:auto"><p>one</p><p>two</p><p>three</p></nav>'
        '<button style="width:24px;overflow:hidden;text-indent:-9999px">Choose all</button>'
    )
    assert labels_cut(page) == []


def test_numbers_across_lines(page):
    page.set_content(
        '<p style="width:70px;word-break:break-all">355,786,286 units</p>'
        '<p style="width:300px">$1,234.56 and 12 and 7</p>'
        '<p style="width:60px">INV-0025</p>'
    )
    assert wrapped_numbers(page) == ['"355,786,286" in p spans 2 lines']


def test_horizontal_scroll(page):
    page.set_viewport_size(PHONE)
    page.set_content('<body style="margin:0"><div style="width:375px">fits</div>')
    assert horizontal_scroll(page) == []
    page.set_content('<body style="margin:0"><div style="width:500px">too wide</div>')
    assert horizontal_scroll(page) == ["the page is 500 px wide in a 375 px window"]
    page.set_viewport_size({"width": 800, "height": 600})


def test_decimals_beyond_the_allowed_digits(page):
    page.set_content(
        "<p>Total $82.69206145966709346991037131882202304738, tax 0.000000000000</p>"
        "<p>$1,234.50 on 2026.01.05, version 1.15.2</p>"
        '<p class="unit">$0.005</p><input value="0.500000000000">'
        '<input type="hidden" value="0.123456">'
    )
    found = long_decimals(page, 2, exclude=".unit")
    assert [p.split(" in ")[0] for p in found] == [
        '"82.69206145966709346991037131882202304738"',
        '"0.000000000000"',
        '"0.500000000000"',
    ]
    assert found[2].endswith("input[value] has 12 fraction digits (at most 2)")
    assert long_decimals(page, 3, ".unit") == []
    assert len(long_decimals(page, 2, ".unit")) == 1
