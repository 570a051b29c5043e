"""The demo in Debian's headless Chromium: upload, drop, paste a URL, read the verdict, heatmap, bad input, quiz.

Screenshots of the main states (desktop and phone) land in test-artifacts/screenshots/<test>/ for review.
"""
from __future__ import annotations

import base64

import pytest

from deepsift.server import create_app
from demokit import demo_settings, fit_demo_heads, jpeg_bytes
from httpserver import LocalServer
from serverkit import LiveServer

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def heads_dir(code_model_dir, labelled_folders, tmp_path_factory):
    return fit_demo_heads(code_model_dir, labelled_folders, tmp_path_factory.mktemp("demo-heads"))


@pytest.fixture(scope="module")
def site(code_model_dir, heads_dir, labelled_folders, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo-site")
    app = create_app(demo_settings(f"sqlite:///{tmp / 'web.db'}", tmp / "data", code_model_dir, heads_dir,
                                   quiz=labelled_folders["real"].parent))
    with LiveServer(app) as live, LocalServer({"/cat.jpg": (200, "image/jpeg", jpeg_bytes(7, 800, 600))}) as images:
        yield live, images
    app.state.db.dispose()


def new_page(browser, live, viewport, requests):
    ctx = browser.new_context(viewport=viewport)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.on("request", lambda req: requests.append(req.url))
    return ctx, page


def only_own_origin(requests, live):
    return [u for u in requests if not (u.startswith(live.url + "/") or u.startswith("data:"))]


def test_upload_heatmap_url_paste_and_bad_input(browser, screenshots, site, labelled_folders, tmp_path):
    live, images = site
    requests: list[str] = []
    ctx, page = new_page(browser, live, DESKTOP, requests)
    shot = lambda name: page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)  # noqa: E731
    page.goto(live.url + "/")
    assert "Real or AI-generated?" in page.inner_text("h1")
    shot("01-desktop-empty")

    real, fake = labelled_folders["real"] / "000.jpg", labelled_folders["gen_a"] / "001.png"
    page.set_input_files("#file-input", [str(real), str(fake)])
    page.wait_for_selector("article.result >> nth=1")
    cards = page.locator("article.result")
    by_name = {cards.nth(i).locator(".source").inner_text(): cards.nth(i) for i in range(2)}
    assert by_name["000.jpg"].locator(".band").inner_text() == "Real"
    assert by_name["001.png"].locator(".band").inner_text() == "AI-generated"
    assert "P(fake) =" in by_name["001.png"].locator(".prob").inner_text()
    assert "gen_a" in by_name["001.png"].locator(".generator").inner_text() or \
        "gen_b" in by_name["001.png"].locator(".generator").inner_text()
    shot("02-desktop-verdicts")

    card = by_name["001.png"]
    canvas = card.locator("canvas.heat")
    assert canvas.is_hidden()
    card.locator(".toggle-heatmap").click()
    assert canvas.is_visible() and card.locator(".toggle-heatmap").get_attribute("aria-pressed") == "true"
    painted = canvas.evaluate("c => { const d = c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data;"
                              " return d[3]; }")
    assert painted > 0  # the overlay is drawn
    card.locator("details.heads summary").click()
    card.locator("details.meta summary").click()
    assert card.locator(".heads tbody tr").count() == 3
    shot("03-desktop-heatmap-on")
    card.locator(".toggle-heatmap").click()
    assert canvas.is_hidden()

    url = images.base + "/cat.jpg"
    page.fill("#url-input", url)
    page.get_by_role("button", name="Check URL").click()
    page.wait_for_selector("article.result >> nth=2")
    assert page.locator("article.result").first.locator(".source").inner_text() == url

    page.evaluate("u => { const dt = new DataTransfer(); dt.setData('text/plain', u);"
                  " document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt})); }", url + "?pasted=1")
    page.wait_for_selector("article.result >> nth=3")
    assert page.locator("article.result").first.locator(".source").inner_text() == url + "?pasted=1"

    drop = "b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)); const dt = new DataTransfer();" \
           " dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));" \
           " document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true," \
           " cancelable: true})); }"
    page.evaluate(drop, base64.b64encode(real.read_bytes()).decode())
    page.wait_for_selector("article.result >> nth=4")
    first = page.locator("article.result").first
    assert first.locator(".source").inner_text() == "dropped.jpg" and first.locator(".band").inner_text() == "Real"

    bad = tmp_path / "holiday.png"
    bad.write_text("<!DOCTYPE html><html><body>not a picture</body></html>")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("article.result.band-error")
    err = page.locator("article.result.band-error").first
    assert "SVG/HTML/XML document" in err.locator("p.error").inner_text()
    assert "SVG/HTML/XML document" in page.inner_text("#status")
    shot("04-desktop-url-paste-and-bad-input")
    assert only_own_origin(requests, live) == []
    ctx.close()

    requests.clear()
    ctx, page = new_page(browser, live, PHONE, requests)
    page.goto(live.url + "/")
    many = [str(fake)] + [str(p) for p in sorted(labelled_folders["real"].iterdir())[:8]]
    page.set_input_files("#file-input", many)  # 9 files: sent as 8 + 1 (the server takes 8 per request)
    page.wait_for_selector("article.result >> nth=8")
    assert page.locator("article.result.band-error").count() == 0
    page.locator("article.result.band-fake").locator(".toggle-heatmap").click()
    page.locator("article.result.band-fake").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "05-phone-verdict-heatmap.png"), full_page=True)
    assert only_own_origin(requests, live) == []
    ctx.close()


def test_three_quiz_rounds_change_the_tally(browser, screenshots, site):
    live, _ = site
    for viewport, tag in ((DESKTOP, "desktop"), (PHONE, "phone")):
        requests: list[str] = []
        ctx, page = new_page(browser, live, viewport, requests)
        page.goto(live.url + "/quiz")
        for i in range(3):
            page.wait_for_selector("#guess-fake:enabled")
            if i == 0:
                page.screenshot(path=str(screenshots / f"{tag}-01-quiz-question.png"), full_page=True)
            page.click("#guess-fake" if i % 2 else "#guess-real")
            page.wait_for_selector(f"#tally-rounds:text-is('{i + 1}')")  # (no wait_for_function: the CSP bans eval)
            text = page.inner_text("#reveal")
            assert f"You said {'AI-generated' if i % 2 else 'real'}; it is " in text and "The detector said" in text
            you, det = int(page.inner_text("#tally-you")), int(page.inner_text("#tally-detector"))
            assert 0 <= you <= i + 1 and 0 <= det <= i + 1
            if i == 0:
                page.screenshot(path=str(screenshots / f"{tag}-02-quiz-reveal.png"), full_page=True)
            page.click("#next-round")
        page.goto(live.url + "/quiz/results")
        assert page.locator("svg.chart rect").count() >= 2
        assert int(page.locator("#stats tbody tr").first.locator("td").nth(1).inner_text()) >= 1
        page.screenshot(path=str(screenshots / f"{tag}-03-quiz-results.png"), full_page=True)
        assert only_own_origin(requests, live) == []
        ctx.close()
