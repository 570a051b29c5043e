"""A participant in Debian's headless Chromium: register, join, download, submit, wait for the score, find the team.

Screenshots of every page land in test-artifacts/screenshots/<test>/ for review.
"""
from __future__ import annotations

import threading
import zipfile

import httpx
import pytest

from deepsift.server import create_app
from platformkit import host_challenge
from serverkit import LiveServer, make_settings


@pytest.fixture
def site(tmp_path):
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'web.db'}", tmp_path / "data"))
    with LiveServer(app) as live:
        from deepsift.challenges.settings import ChallengeSettings
        from deepsift.challenges.worker import Worker

        worker = Worker(app.state.db, app.state.storage, ChallengeSettings(), poll_s=0.1)
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        with httpx.Client(base_url=live.url) as c:
            hosted = host_challenge(app, c, tmp_path, slug="d3-open", bootstrap=100)
        yield live, hosted
        worker.stop.set()
        t.join(30)
    app.state.db.dispose()


def test_register_download_submit_score_leaderboard(browser, screenshots, site, tmp_path):
    live, hosted = site
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    shot = lambda name: page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)  # noqa: E731

    page.goto(live.url + "/challenges")
    page.get_by_role("link", name="Challenge d3-open").click()
    page.wait_for_url("**/challenges/d3-open")
    shot("01-challenge-anonymous")
    page.get_by_role("link", name="register", exact=True).click()
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "ada-lovelace-1815")
    shot("02-register")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/challenges/d3-open")
    page.fill("#create-team input[name=name]", "Analytical Engines")
    page.get_by_role("button", name="Create team").click()
    assert "Analytical Engines" in page.inner_text("#team-name")
    shot("03-challenge-with-team")

    with page.expect_download() as dl:
        page.click("a.download")
    archive = tmp_path / "testset.zip"
    dl.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        ids = [n[len("images/"):] for n in zf.namelist() if n.startswith("images/")]
    assert sorted(ids) == sorted(hosted.names)
    preds = tmp_path / "predictions.csv"
    preds.write_text("id,score\n" + "".join(f"{i},{(k * 37 % 100) / 100}\n" for k, i in enumerate(ids)))

    page.get_by_role("link", name="Submit", exact=True).click()
    page.set_input_files("input[name=file]", str(preds))
    page.fill("input[name=note]", "first try")
    shot("04-submit")
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url("**/submissions/*")
    # the page polls the JSON API (static script: the CSP forbids inline and eval'd code) and reloads when done
    page.wait_for_selector("table.metrics", timeout=60_000)
    assert page.inner_text("#state") == "scored"
    assert page.locator("svg[aria-label='ROC curve']").count() >= 1
    assert "real + gen_a" in page.inner_text("table.metrics")
    # then the bootstrap intervals: the page, still polling, reloads itself once they are in; the intervals are
    # drawn by the server only, so their presence means that reload is over (navigating away during it aborted)
    page.wait_for_selector("table.metrics span.ci", timeout=60_000)
    assert page.inner_text("[data-field=intervals]") == "done" and "computing" not in page.inner_text("main")
    shot("05-result")

    page.goto(live.url + "/challenges/d3-open/submissions")
    assert page.inner_text("table.submissions").count("scored") == 1
    shot("06-my-submissions")
    page.goto(live.url + "/challenges/d3-open/phases/dev/leaderboard")
    assert "Analytical Engines" in page.inner_text("#leaderboard")
    page.get_by_role("link", name="AP", exact=True).click()  # sortable
    page.wait_for_url("**sort=ap**")
    shot("07-leaderboard")

    # the embeddable board: no login, no script, framable
    embed = ctx.new_page()
    r = embed.goto(live.url + "/embed/d3-open/dev/leaderboard")
    assert "frame-ancestors *" in r.headers["content-security-policy"] and "x-frame-options" not in r.headers
    assert "Analytical Engines" in embed.inner_text("#leaderboard")
    embed.screenshot(path=str(screenshots / "08-embed.png"), full_page=True)

    # the host's admin view
    page.get_by_role("button", name="Log out").click()
    page.goto(live.url + "/login?next=/challenges/d3-open/admin")
    page.fill("input[name=username]", "host-d3-open")
    page.fill("input[name=password]", "host-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin")
    assert "Analytical Engines" in page.inner_text("main") and "Answer key" in page.inner_text("main")
    shot("09-admin")
    ctx.close()
