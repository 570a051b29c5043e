"""A minimal domain package used by the server tests, and a template for real ones (demo, challenges).

It shows every extension point: a table on the shared Base, its own Alembic branch, a JSON router,
a page extending base.html, a static file, a settings section and a setup hook.
"""
