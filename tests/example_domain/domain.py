"""The example domain's registration: ``DOMAIN`` is all the server needs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select

from deepsift.server.deps import CsrfProtect, DbSession, RequireUser
from deepsift.server.domains import Domain
from deepsift.server.settings import Settings
from deepsift.server.web import render

from .models import Note

HERE = Path(__file__).parent


class NotesSettings(BaseSettings):
    """This domain's settings: env DEEPSIFT_NOTES_*, or Settings(domain_overrides={"notes": {...}})."""

    model_config = SettingsConfigDict(env_prefix="DEEPSIFT_NOTES_")
    greeting: str = "hello"


class NoteOut(BaseModel):
    id: str
    text: str


api = APIRouter(prefix="/api/notes", tags=["notes"])
pages = APIRouter(prefix="/notes", include_in_schema=False)


@api.get("", response_model=list[NoteOut])
def list_notes(session: DbSession) -> list[NoteOut]:
    """Every note."""
    return [NoteOut(id=n.id, text=n.text) for n in session.scalars(select(Note).order_by(Note.created_at))]


@api.post("", response_model=NoteOut, status_code=201, dependencies=[CsrfProtect])
def add_note(body: NoteOut, user: RequireUser, session: DbSession) -> NoteOut:
    """Add a note (authenticated)."""
    note = Note(user_id=user.id, text=body.text)
    session.add(note)
    session.flush()
    return NoteOut(id=note.id, text=note.text)


@pages.get("")
def notes_page(request: Request, session: DbSession):  # type: ignore[no-untyped-def]
    notes = session.scalars(select(Note).order_by(Note.created_at)).all()
    return render(request, "notes/index.html", {"notes": notes, "greeting": request.app.state.notes.greeting})


@pages.post("", dependencies=[CsrfProtect])
def notes_form(user: RequireUser, session: DbSession, text: Annotated[str, Form(max_length=500)]):  # type: ignore[no-untyped-def]
    session.add(Note(user_id=user.id, text=text))
    return RedirectResponse("/notes", status_code=303)


def setup(app: FastAPI, settings: Settings) -> None:
    app.state.notes = settings.section(NotesSettings, "notes")


DOMAIN = Domain(
    name="notes",
    routers=lambda: [api, pages],
    migrations=HERE / "migrations",
    templates=HERE / "templates",
    static=HERE / "static",
    nav=[("Notes", "/notes")],
    setup=setup,
)
