"""The web page in a real browser (Debian's Chromium driven by Playwright) against the real stack.

Screenshots are saved in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from servekit.testing import TEST_TOKEN, authorized, png_bytes
from tests.conftest import SERVICES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TRAIN_TIMEOUT_MS = 600_000
MODELS = sum(len(models) for _, models in SERVICES.values())  # eight: a card, a row, a table each
PAIRS = MODELS * (MODELS - 1) // 2


def wait_for_answer(page) -> None:
    """Wait for the prediction cards; on failure say what the page's status line said."""
    try:
        page.wait_for_selector("#cards .card", timeout=30_000)
    except Exception as exc:
        raise AssertionError(f"no cards; status: {page.locator('#predict-status').inner_text()!r}") from exc


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


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


def test_training_from_the_page_fills_every_progress_bar(page):
    page.fill("input[name=epochs]", "1")
    page.fill("input[name=train_limit]", "5000")
    page.click("#train")
    page.wait_for_selector(".progress-row", timeout=30_000)
    page.wait_for_function(
        "() => { const rows = document.querySelectorAll('.progress-row');"
        f" return rows.length === {MODELS} && [...rows].every(r => r.dataset.status === 'succeeded'); }}",
        timeout=TRAIN_TIMEOUT_MS,
    )
    for bar in page.locator(".progress-row progress").all():
        assert bar.get_attribute("value") == bar.get_attribute("max")
    assert "test accuracy" in page.locator("#progress").inner_text()


def test_draw_and_predict_shows_a_card_per_model(page):
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
