"""The web page in a real browser (Debian's Chromium driven by Playwright) against the real stack.

Screenshots are saved in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests

from servekit.testing import TEST_TOKEN, authorized, png_bytes
from tests.conftest import SERVICES

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TRAIN_TIMEOUT_MS = 600_000
EPOCHS = 2  # of the page's training run: two points per curve
MODELS = sum(len(models) for _, models in SERVICES.values())  # eight: a card, a row, a table each
PAIRS = MODELS * (MODELS - 1) // 2


def hex_colour(css: str) -> str:
    """'rgb(214, 39, 40)' -> '#d62728'."""
    return "#" + "".join(f"{int(c):02x}" for c in re.findall(r"\d+", css)[:3])


def compare_colours(stack) -> dict[str, str]:
    """Each model's colour as /compare gives it."""
    rows = requests.get(stack.url + "/compare", timeout=60).json()["models"]
    return {row["model"]: row["colour"] for row in rows}


def chart_colours(stack) -> dict[str, str]:
    """Each model's accuracy bar colour in /compare/chart.svg."""
    root = ET.fromstring(requests.get(stack.url + "/compare/chart.svg", timeout=120).content)
    colours = {}
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        if (group.get("id") or "").startswith("accuracy-bar-"):
            style = group.find("{http://www.w3.org/2000/svg}path").get("style")
            colours[group.get("id").removeprefix("accuracy-bar-")] = re.search(r"fill: (#[0-9a-f]{6})", style).group(1)
    return colours


def curves(page) -> dict[str, dict[str, list]]:
    """Per plot ('loss', 'val_accuracy'), per model: (points it says it has, dots drawn, its line's colour)."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#curves figure.curve')].map(f =>
        [f.dataset.series, Object.fromEntries([...f.querySelectorAll('g.series')].map(g => [g.dataset.model,
          [Number(g.dataset.points), g.querySelectorAll('circle').length,
           g.querySelector('path').getAttribute('stroke')]]))]))""")


def wait_for_answer(page) -> None:
    """Wait for the prediction cards; on failure say what the page's status line said."""
    try:
        page.wait_for_selector("#cards .card", timeout=30_000)
    except Exception as exc:
        raise AssertionError(f"no cards; status: {page.locator('#predict-status').inner_text()!r}") from exc


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.url}/#token={TEST_TOKEN}")  # the link the gateway prints at start
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_page_loads_offline_with_status_and_network(page, stack):
    # Every asset comes from the gateway itself: nothing external.
    page.wait_for_selector("#services li[data-service='torch'].up")
    assert page.locator("#services li").count() == len(stack.services)
    page.wait_for_selector("#layer-tables table")
    assert page.locator("#layer-tables h3").count() == MODELS
    assert page.locator("#diagram .block").count() == 8  # input + 7 layers
    html = page.content()
    assert "http://" not in html.replace(stack.url, "") and "https://" not in html


def test_training_from_the_page_fills_every_progress_bar_and_draws_the_curves(page, stack):
    page.fill("input[name=epochs]", str(EPOCHS))
    page.fill("input[name=train_limit]", "3000")
    page.click("#train")
    page.wait_for_selector(".progress-row", timeout=30_000)
    # The curves grow while the run trains: a model's first epoch is drawn while others still train.
    page.wait_for_function(
        "() => document.querySelector('#curve-loss g.series') !== null"
        " && [...document.querySelectorAll('.progress-row')].some(r => r.dataset.status !== 'succeeded')",
        timeout=TRAIN_TIMEOUT_MS,
    )
    page.wait_for_function(
        "() => { const rows = document.querySelectorAll('.progress-row');"
        f" return rows.length === {MODELS} && [...rows].every(r => r.dataset.status === 'succeeded'); }}",
        timeout=TRAIN_TIMEOUT_MS,
    )
    for bar in page.locator(".progress-row progress").all():
        assert bar.get_attribute("value") == bar.get_attribute("max")
    assert "test accuracy" in page.locator("#progress").inner_text()
    # Every model's loss and validation accuracy, a point per epoch, in the model's colour.
    drawn = curves(page)
    colours = compare_colours(stack)
    assert sorted(drawn) == ["loss", "val_accuracy"]
    for plot in drawn.values():
        assert plot == {model: [EPOCHS, EPOCHS, colour] for model, colour in colours.items()}
    assert len(colours) == MODELS and page.locator("#curves path").count() == 2 * MODELS


def test_the_latest_runs_curves_show_when_the_page_opens_in_the_charts_colours(page, stack):
    page.wait_for_selector("#curves:not([hidden]) #curve-val-accuracy g.series")
    page.wait_for_function(f"() => document.querySelectorAll('#curve-legend li .swatch').length === {MODELS}")
    assert "succeeded" in page.locator("#curves-caption").inner_text()
    # The curves are drawn again in the models' colours once /compare has answered.
    page.wait_for_function("() => [...document.querySelectorAll('#curve-legend .swatch')]"
                           ".every(s => s.style.backgroundColor !== 'rgb(127, 127, 127)')")
    colours = compare_colours(stack)
    assert len(set(colours.values())) == MODELS  # eight models, eight colours
    assert chart_colours(stack) == colours  # the chart's bars
    for plot in curves(page).values():  # the page's curves
        assert {model: colour for model, (_, _, colour) in plot.items()} == colours
    legend = page.evaluate("() => Object.fromEntries([...document.querySelectorAll('#curve-legend li')].map(li =>"
                           " [li.dataset.model, getComputedStyle(li.querySelector('.swatch')).backgroundColor]))")
    assert {model: hex_colour(css) for model, css in legend.items()} == colours
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#train-section").screenshot(path=str(ARTIFACTS / "curves.png"))


def test_draw_and_predict_shows_a_card_per_model(page, stack):
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()  # the training test may have left the pad outside the viewport
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 240, steps=12)  # a "1"
    page.mouse.up()
    page.click("#predict")
    wait_for_answer(page)
    cards = page.locator("#cards .card")
    assert cards.count() == MODELS
    for card in cards.all():
        assert card.locator(".digit").inner_text().isdigit()
        assert "ms" in card.locator(".times").inner_text()
        assert card.locator(".served").inner_text().startswith("version 1 · ")  # which version, which replica
    assert "Consensus" in page.locator("#consensus").inner_text()
    # Each card's top border in its model's colour, the chart's.
    colours = compare_colours(stack)
    page.wait_for_function("() => [...document.querySelectorAll('#cards .card')]"
                           ".every(c => c.style.borderTopColor && c.style.borderTopColor !== 'rgb(127, 127, 127)')")
    for card in cards.all():
        border = card.evaluate("c => getComputedStyle(c).borderTopColor")
        assert hex_colour(border) == colours[card.get_attribute("data-model")]


def test_the_pad_stays_put_when_the_service_strip_fills(browser, stack):
    # The draw test above once failed ("Draw a digit or choose an image first."): /services answered between its
    # reading of the pad's place and its stroke, the strip of service chips above the pad grew from nothing to
    # two rows and pushed the pad 60 px down, and the stroke began above it. Here /services is held until the
    # pad's place is read: the pad must not move, and a stroke at that place must draw.
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        page = context.new_page()
        held = []
        page.route("**/services", lambda route: held.append(route))
        page.goto(f"{stack.url}/#token={TEST_TOKEN}")
        for _ in range(100):
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the page did not ask for /services"
        box = page.locator("#pad").bounding_box()
        held[0].continue_()
        page.wait_for_selector("#services li")
        assert page.locator("#pad").bounding_box() == box
        page.mouse.move(box["x"] + 140, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + 140, box["y"] + 240, steps=12)
        page.mouse.up()
        # The stroke went down the middle of the pad: its centre is white ink.
        assert page.evaluate("() => [...document.querySelector('#pad').getContext('2d')"
                             ".getImageData(140, 140, 1, 1).data]") == [255, 255, 255, 255]
    finally:
        context.close()


def test_keyboard_alone_draws_and_predicts(page, digits, tmp_path):
    # Listening from the start turns Chromium's file-chooser interception on before any key is pressed
    # (expect_file_chooser would turn it on asynchronously, racing the key press).
    choosers = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.focus("#pad")
    for key in ["ArrowUp"] * 8 + ["ArrowDown"] * 16:  # a vertical stroke: a "1"
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    wait_for_answer(page)
    assert page.locator("#cards .card").count() == MODELS
    # The drop zone opens the file picker from the keyboard too.
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(digits[0][2]))
    page.focus("#drop")
    page.keyboard.press("Enter")
    for _ in range(50):
        if choosers:
            break
        page.wait_for_timeout(100)
    assert choosers, "Enter on the drop zone did not open the file picker"
    choosers[0].set_files(str(path))
    page.wait_for_function("() => document.querySelector('#predict-status').textContent.includes('digit.png ready')")


def test_upload_of_a_real_digit_wins_the_consensus(page, digits, tmp_path):
    images, labels = digits
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes(255 - images[0]))  # black ink on white, as a photo or scan would be
    page.set_input_files("#file", str(path))
    page.click("#predict")
    page.wait_for_selector("#cards .card", timeout=30_000)
    assert page.locator("#consensus strong").inner_text() == str(labels[0])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "predict.png"), full_page=True)


def test_compare_table_and_chart(page, stack):
    authorized().post(stack.url + "/benchmark", json={"requests": 20}, timeout=600).raise_for_status()
    page.click("#refresh-compare")
    page.wait_for_function(f"() => document.querySelectorAll('#compare-table tbody tr').length === {MODELS}")
    # The table drawn at page load has every row too: wait for the refreshed one, with serving figures.
    page.wait_for_function(
        "() => document.querySelector('#compare-table tbody tr td:nth-child(12)').textContent !== '–'")
    page.wait_for_function("() => document.querySelector('#chart').naturalWidth > 0")
    assert page.locator("#compare-table tbody tr").first.locator("td").nth(11).inner_text() != "–"
    # The verdict: every pair of models tested, a sentence, and the digits they disagree on as images.
    page.wait_for_function(f"() => document.querySelectorAll('#verdict-pairs tbody tr').length === {PAIRS}",
                           timeout=120_000)
    assert "McNemar" in page.locator("#verdict-summary").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery figure img')].some(i => i.naturalWidth === 28)", timeout=60_000)
    first = page.locator("#gallery figure").first
    assert first.locator("li").count() == MODELS and first.locator("li.wrong").count() >= 1
    # The first batch of each model's own pipeline, as images with their hashes.
    page.click("#show-batches")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#pipelines figure img')].filter(i => i.naturalWidth > 0).length"
        f" === {MODELS}",
        timeout=120_000)
    assert "sha256" in page.locator("#pipelines").inner_text()
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)


def test_the_report_link_opens_the_report_in_a_new_tab(page, stack):
    link = page.locator("#report-link")
    assert link.is_visible() and link.get_attribute("href") == "/report"  # a GET: it needs no token
    assert link.get_attribute("target") == "_blank" and "noopener" in link.get_attribute("rel")
    assert page.evaluate("() => document.querySelector('#report-link').href") == stack.url + "/report"


def test_stopped_service_shows_error_card_while_others_answer(page, stack, digits):
    torch = stack.services["torch"]
    torch.stop()
    try:
        path = Path(stack.data_dir) / "digit.png"
        path.write_bytes(png_bytes(digits[0][0]))
        page.set_input_files("#file", str(path))
        page.click("#predict")
        page.wait_for_selector("#cards .card.failed", timeout=30_000)
        failed = page.locator("#cards .card.failed")
        assert sorted(card.get_attribute("data-model") for card in failed.all()) == sorted(SERVICES["torch"][1])
        assert page.locator("#cards .card:not(.failed)").count() == MODELS - len(SERVICES["torch"][1])
        page.screenshot(path=str(ARTIFACTS / "service-down.png"), full_page=True)
    finally:
        torch.start()


def test_the_token_leaves_the_address_bar_and_without_it_the_page_says_where_to_find_it(page, browser, stack):
    assert "token" not in page.url  # kept for the tab, not left in the address bar or the history
    context = browser.new_context()
    try:
        anonymous = context.new_page()
        anonymous.goto(stack.url + "/")
        anonymous.click("#evaluate")
        # (a locator wait: the page's CSP forbids the eval that wait_for_function's string form needs)
        anonymous.locator("#compare-status", has_text="token").wait_for(timeout=30_000)
        assert "/#token=" in anonymous.locator("#compare-status").inner_text()
    finally:
        context.close()


def test_a_run_started_from_the_page_can_be_cancelled_from_it(page):
    page.fill("input[name=epochs]", "3")
    page.fill("input[name=train_limit]", "")
    page.click("#train")
    page.wait_for_selector("#cancel-run:not([hidden])")
    page.wait_for_selector(".progress-row[data-status=running]", timeout=120_000)
    page.click("#cancel-run")
    page.locator("#train-status", has_text="cancelled").wait_for(timeout=120_000)
    assert page.locator("#cancel-run").is_hidden() and page.locator("#train").is_enabled()
    assert page.locator(".progress-row[data-status=cancelled]").count() >= 1
