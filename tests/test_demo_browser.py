"""The demo in Debian's headless Chromium: upload, drop, paste a URL, read the verdict, heatmap, bad input, quiz.

Screenshots of the main states (desktop and phone) land in test-artifacts/screenshots/<test>/ for review.
"""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

from PIL import Image

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
                                   quiz=labelled_folders["real"].parent,
                                   generator_names={"gen_a": "Generator Alpha", "gen_b": "Generator Beta"}))
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
    page.wait_for_selector("article.result.band-fake")
    page.wait_for_selector("article.result.band-real")
    cards = page.locator("article.result")
    assert [cards.nth(i).locator(".source").inner_text() for i in range(2)] == ["000.jpg", "001.png"]  # as picked
    by_name = {cards.nth(i).locator(".source").inner_text(): cards.nth(i) for i in range(2)}
    assert re.fullmatch(r"Likely real: \d+ %", by_name["000.jpg"].locator(".band").inner_text())
    assert re.fullmatch(r"Likely AI-generated: \d+ %", by_name["001.png"].locator(".band").inner_text())
    assert "P(fake)" not in by_name["001.png"].locator(".answer").inner_text()  # expert words only behind the toggle
    assert by_name["001.png"].locator(".generator").inner_text() in (
        "It looks most like images made with Generator Alpha.", "It looks most like images made with Generator Beta.")
    assert by_name["000.jpg"].locator(".generator").is_hidden()
    colours = {n: c.locator(".meter .fill").evaluate("e => getComputedStyle(e).backgroundColor") for n, c in by_name.items()}
    rgb = {n: [int(v) for v in re.findall(r"\d+", c)[:3]] for n, c in colours.items()}
    assert rgb["000.jpg"][1] > rgb["000.jpg"][0] and rgb["001.png"][0] > rgb["001.png"][1]  # colour follows value
    log = page.inner_text("#verdicts-log")
    assert page.get_attribute("#verdicts-log", "aria-live") == "polite"
    assert "000.jpg: Likely real" in log and "001.png: Likely AI-generated" in log  # announced
    shot("02-desktop-verdicts")

    card = by_name["001.png"]
    canvas = card.locator("canvas.heat")
    assert canvas.is_hidden()
    card.locator(".toggle-heatmap").click()
    assert canvas.is_visible() and card.locator(".toggle-heatmap").get_attribute("aria-pressed") == "true"
    painted = canvas.evaluate("c => { const d = c.getContext('2d').getImageData(c.width / 2, c.height / 2, 1, 1).data;"
                              " return d[3]; }")
    assert painted > 0  # the overlay is drawn
    card.locator("details.expert summary").click()
    card.locator("details.meta summary").click()
    assert card.locator(".expert tbody tr").count() == 3 and "P(fake), calibrated" in card.locator(".expert").inner_text()
    assert re.match(r"Heatmap of 4 parts: chance of AI from \d+ %", canvas.get_attribute("aria-label"))
    assert card.locator(".heat-table td").count() == 4
    shot("03-desktop-heatmap-on")
    card.locator(".toggle-heatmap").click()
    assert canvas.is_hidden()

    url = images.base + "/cat.jpg"
    page.fill("#url-input", url)
    page.get_by_role("button", name="Check link").click()
    page.wait_for_selector("article.result:not(.pending) >> nth=2")
    assert page.locator("article.result").first.locator(".source").inner_text() == url

    page.evaluate("u => { const dt = new DataTransfer(); dt.setData('text/plain', u);"
                  " document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt})); }", url + "?pasted=1")
    page.wait_for_selector("article.result:not(.pending) >> nth=3")
    assert page.locator("article.result").first.locator(".source").inner_text() == url + "?pasted=1"

    drop = "b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0)); const dt = new DataTransfer();" \
           " dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));" \
           " document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true," \
           " cancelable: true})); }"
    page.evaluate(drop, base64.b64encode(real.read_bytes()).decode())
    page.wait_for_selector("article.result:not(.pending) >> nth=4")
    first = page.locator("article.result").first
    assert first.locator(".source").inner_text() == "dropped.jpg"
    assert first.locator(".band").inner_text().startswith("Likely real")

    bad = tmp_path / "holiday.png"
    bad.write_text("<!DOCTYPE html><html><body>not a picture</body></html>")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("article.result.band-error")
    err = page.locator("article.result.band-error").first
    assert err.locator("p.error").inner_text() == ("This file is not an image the demo can read (send a JPEG, PNG, "
                                                    "WebP, GIF, BMP, TIFF or AVIF image).")
    assert "not an image the demo can read" in page.inner_text("#status")
    assert "SVG/HTML/XML document" in err.locator(".tech").text_content()  # the developer's words, one click away
    page.fill("#url-input", images.base + "/nothing.jpg")
    page.get_by_role("button", name="Check link").click()
    page.wait_for_selector("article.result.band-error >> nth=1")
    assert page.locator("article.result.band-error").first.locator("p.error").inner_text() == \
        "The site says there is no image at this link."
    shot("04-desktop-url-paste-and-bad-input")
    page.get_by_role("button", name="Clear results").click()
    assert page.locator("article.result").count() == 0 and page.inner_text("#status") == ""
    assert page.locator("#clear-results").is_hidden()
    icon = page.get_attribute("link[rel=icon]", "href")
    assert page.request.get(live.url + icon).headers["content-type"].startswith("image/svg+xml")
    assert only_own_origin(requests, live) == []
    ctx.close()

    requests.clear()
    ctx, page = new_page(browser, live, PHONE, requests)
    page.goto(live.url + "/")
    many = [str(fake)] + [str(p) for p in sorted(labelled_folders["real"].iterdir())[:8]]
    page.evaluate("() => { window.statuses = []; const s = document.getElementById('status');"
                  " new MutationObserver(() => window.statuses.push(s.textContent))"
                  ".observe(s, {childList: true, characterData: true, subtree: true}); }")
    page.set_input_files("#file-input", many)  # 9 files: sent as 8 + 1 (the server takes 8 per request)
    page.wait_for_selector("#status:text-is('Checked 9 of 9 images.')")
    assert "Checked 8 of 9 images…" in page.evaluate("() => window.statuses")  # progress between the requests
    assert page.locator("article.result.band-error").count() == 0
    assert [page.locator("article.result .source").nth(i).inner_text() for i in range(9)] == \
        [p.rsplit("/", 1)[-1] for p in many]  # in the order picked
    top = page.locator("article.result").first.bounding_box()
    assert 0 <= top["y"] < PHONE["height"]  # the page scrolled to the first result
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


# -- metadata as text, phones, EXIF orientation, accessibility (issue 18 items 7-11, issue 20) ------------------------
XSS = "<i class=xss-probe>x</i><img class=xss-probe src=x>"  # (no quotes: a browser sends " in a file name as %22)
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


def drop_files(page, files: dict[str, tuple[bytes, str]]) -> None:
    """Drop files (name -> (bytes, media type)) on the drop zone, in this order."""
    payload = [[name, base64.b64encode(data).decode(), kind] for name, (data, kind) in files.items()]
    page.evaluate("fs => { const dt = new DataTransfer(); for (const [n, b, t] of fs) dt.items.add(new File("
                  "[Uint8Array.from(atob(b), c => c.charCodeAt(0))], n, {type: t}));"
                  " document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt,"
                  " bubbles: true, cancelable: true})); }", payload)


def axe_violations(page) -> list[dict]:
    """axe-core's violations of every impact level on the page as it is now (axe injected from tests/vendor)."""
    page.evaluate(AXE.read_text())
    return page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map("
                         "v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 4).map(n => n.target.join(' '))}))")


def no_horizontal_overflow(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def metadata_files() -> dict[str, tuple[bytes, str]]:
    """One file per metadata kind; every text field carries markup and long unbroken text."""
    from PIL import ExifTags

    from demokit import c2pa_signed_jpeg, png_bytes

    unbroken = "Sampler:" + "DPM++2M_Karras," * 40
    a1111 = f"a cat {XSS}\nNegative prompt: {XSS}\nSteps: 20, {unbroken} Seed: 1234567890"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131], exif[0x013B] = XSS, "M11-" + "X" * 180, XSS, XSS
    exif.get_ifd(ExifTags.IFD.Exif)[0x9286] = b"ASCII\x00\x00\x00" + a1111.encode()
    gen = png_bytes(2, 300, 200, text={"parameters": a1111, "prompt": '{"1": {"text": "' + XSS + '"}}',
                                       "workflow": unbroken, "invokeai_metadata": XSS, "sd-metadata": XSS, "Dream": XSS})
    avif = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(4, 320, 240))).save(avif, "AVIF")
    return {f"{XSS}.jpg": (jpeg_bytes(1, 640, 480, exif=exif.tobytes()), "image/jpeg"),
            "generator-settings.png": (gen, "image/png"),
            "content-credentials.jpg": (c2pa_signed_jpeg(generator=f"{XSS} Leica Camera AG M11"), "image/jpeg"),
            "photo_" + "0123456789" * 12 + ".avif": (avif.getvalue(), "image/avif"),  # a long unbroken name
            f"{XSS}.png": (b"<html>" + XSS.encode() + b"</html>", "image/png")}


def test_metadata_is_text_fits_a_phone_and_c2pa_is_said_first(browser, screenshots, site):
    live, _ = site
    requests: list[str] = []
    ctx, page = new_page(browser, live, PHONE, requests)
    page.goto(live.url + "/")
    files = metadata_files()
    drop_files(page, files)
    page.wait_for_selector(f"#status:has-text('Checked {len(files)} of {len(files)} images.')")
    page.evaluate("() => { document.querySelectorAll('details').forEach(d => { d.open = true; }); }")
    for btn in page.locator(".toggle-heatmap:visible").all():
        btn.click()
    page.screenshot(path=str(screenshots / "phone-every-metadata-kind.png"), full_page=True)
    assert page.evaluate("() => document.querySelectorAll('.xss-probe').length") == 0  # none of it became markup
    cards = {c.locator(".source").inner_text(): c for c in page.locator("article.result").all()}
    assert list(cards) == list(files)  # the file names, shown as they are
    assert cards[f"{XSS}.png"].locator(".tech").text_content().count(XSS) >= 1
    exif = cards[f"{XSS}.jpg"].locator(".meta dd").all_inner_texts()
    assert exif.count(XSS) == 3 and any("Steps: 20" in t and XSS in t for t in exif)
    chunks = cards["generator-settings.png"].locator(".meta dd").all_inner_texts()
    assert sum(XSS in t for t in chunks) == 5
    signed = cards["content-credentials.jpg"]
    assert XSS in signed.locator(".meta").inner_text()
    first = signed.locator("p.provenance")
    assert first.is_visible() and first.inner_text() == ("Content Credentials (C2PA) in this file say it was made by "
                                                         "AI (signed, signer not verified).")
    assert signed.locator(".provenance").bounding_box()["y"] < signed.locator(".band").bounding_box()["y"]
    assert "signed, signer not verified" in signed.locator(".meta").inner_text()
    assert "present, valid" not in page.inner_text("#results")
    avif = cards["photo_" + "0123456789" * 12 + ".avif"]
    assert re.fullmatch(r"Likely real: \d+ %|Likely AI-generated: \d+ %|Unsure: \d+ % chance of AI",
                        avif.locator(".band").inner_text())  # AVIF accepted and answered
    assert no_horizontal_overflow(page) <= 0
    for card in cards.values():
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert only_own_origin(requests, live) == []
    ctx.close()


def test_exif_orientation_turns_preview_and_heatmap_for_display(browser, screenshots, site):
    import httpx
    import numpy as np

    from conftest import checker_image, smooth_image

    live, _ = site
    rng = np.random.default_rng(3)
    stored = np.concatenate([smooth_image(rng, 224, 224), checker_image(rng, 224, 224)], axis=1)  # 448 wide, 224 high
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: shown turned 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    api = httpx.post(live.url + "/api/v1/detect", files={"files": ("portrait.jpg", buf.getvalue())},
                     data={"heatmap": "true"}, timeout=60).json()["results"][0]
    hm = api["heatmap"]
    assert (hm["width"], hm["height"], hm["rows"], hm["cols"]) == (448, 224, 1, 2)  # the detector saw stored pixels
    left, right = (round(100 * v) for v in hm["values"][0])
    assert left != right

    requests: list[str] = []
    ctx, page = new_page(browser, live, DESKTOP, requests)
    page.goto(live.url + "/")
    drop_files(page, {"portrait.jpg": (buf.getvalue(), "image/jpeg")})
    page.wait_for_selector("#status:text-is('Checked 1 image.')")
    card = page.locator("article.result").first
    card.locator(".toggle-heatmap").click()
    card.locator("details.heat-text summary").click()
    w, h = card.locator("img").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert h > w  # a portrait, as the phone took it
    cells = card.locator(".heat-table tr").all()
    assert [r.locator("td").all_inner_texts() for r in cells] == [[f"{left} %"], [f"{right} %"]]  # stored left = top
    assert "(top)" in card.locator("canvas.heat").get_attribute("aria-label")
    page.screenshot(path=str(screenshots / "portrait-heatmap.png"), full_page=True)
    ctx.close()


def test_phone_quiz_buttons_in_first_screen_focus_and_no_axe_violation(browser, screenshots, site, labelled_folders):
    live, _ = site
    requests: list[str] = []
    ctx, page = new_page(browser, live, PHONE, requests)
    page.goto(live.url + "/quiz")
    page.wait_for_selector("#guess-fake:enabled")
    for sel in ("#guess-real", "#guess-fake", "#quiz-img"):
        box = page.locator(sel).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], sel  # no scrolling to answer
    assert no_horizontal_overflow(page) <= 0
    assert axe_violations(page) == []
    page.click("#guess-real")
    page.wait_for_selector("#next-round:visible")
    assert axe_violations(page) == []
    page.click("#next-round")
    page.wait_for_selector("#guess-fake:enabled")
    page.wait_for_selector("#quiz-img:focus")  # focus back on the new image
    page.screenshot(path=str(screenshots / "phone-quiz-next.png"))
    page.goto(live.url + "/quiz/results")
    assert axe_violations(page) == [] and no_horizontal_overflow(page) <= 0
    ctx.close()

    ctx, page = new_page(browser, live, DESKTOP, requests)
    page.goto(live.url + "/")
    assert axe_violations(page) == []
    drop_files(page, {"real.jpg": ((labelled_folders["real"] / "000.jpg").read_bytes(), "image/jpeg"),
                      "fake.png": ((labelled_folders["gen_a"] / "001.png").read_bytes(), "image/png"),
                      "bad.png": (b"<html></html>", "image/png")})
    page.wait_for_selector("#status:has-text('Checked 3 of 3 images.')")
    page.evaluate("() => { document.querySelectorAll('details').forEach(d => { d.open = true; }); }")
    page.locator(".toggle-heatmap:visible").first.click()
    assert axe_violations(page) == []
    assert only_own_origin(requests, live) == []
    ctx.close()


def test_no_likely_generator_under_an_unsure_verdict_and_url_refusals_in_plain_words(browser, code_model_dir, heads_dir,
                                                                                     labelled_folders, tmp_path):
    app = create_app(demo_settings(f"sqlite:///{tmp_path / 'u.db'}", tmp_path / "data", code_model_dir, heads_dir,
                                   unsure_low=0.0, unsure_high=1.0,  # every answer is 'unsure'
                                   allow_private_urls=False))  # the production URL policy
    try:
        with LiveServer(app) as live:
            ctx, page = new_page(browser, live, DESKTOP, [])
            page.goto(live.url + "/")
            page.set_input_files("#file-input", str(labelled_folders["gen_a"] / "001.png"))
            page.wait_for_selector("#status:text-is('Checked 1 image.')")
            card = page.locator("article.result").first
            assert re.fullmatch(r"Unsure: \d+ % chance of AI", card.locator(".band").inner_text())
            assert card.locator(".generator").is_hidden()
            card.locator("details.expert summary").click()
            assert re.search(r"Most likely generator \(model's name\)\s*gen_[ab]", card.locator(".expert").inner_text())
            for url in ("http://127.0.0.1:9/cat.jpg", "http://0.0.0.0/cat.jpg", "http://10.1.2.3/cat.jpg"):
                page.fill("#url-input", url)
                page.get_by_role("button", name="Check link").click()
                page.wait_for_selector(f"article.result.band-error[aria-label='{url}']")
                err = page.locator(f"article.result.band-error[aria-label='{url}']")
                assert err.locator("p.error").inner_text() == ("This link points to a private or local address. "
                                                               "The demo only fetches images from public web sites.")
                assert "refused by the URL policy" in err.locator(".tech").text_content()
            ctx.close()
    finally:
        app.state.db.dispose()
