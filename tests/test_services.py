"""The real services the platform and web tests rely on start here: PostgreSQL and Chromium."""
from __future__ import annotations


def test_postgres_server_answers_and_restarts(pg_server):
    import sqlalchemy as sa

    engine = sa.create_engine(pg_server.url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1 + 1")).scalar() == 2
    engine.dispose()
    pg_server.restart()
    engine = sa.create_engine(pg_server.url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == pg_server.dbname
    engine.dispose()


def test_chromium_renders_a_page(browser, screenshots):
    page = browser.new_page()
    page.set_content("<h1 id=t>deepsift</h1>")
    assert page.inner_text("#t") == "deepsift"
    page.screenshot(path=str(screenshots / "hello.png"))
    assert (screenshots / "hello.png").stat().st_size > 0
    page.close()
