"""Dependencies shared by the routes: settings and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proctor import db, exceptions, users
from proctor.config import Settings
from proctor.models import User

_bearer = HTTPBearer(auto_error=False, description="a token from `proctor user add`")


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def current_user(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise exceptions.Unauthorized("send a bearer token: Authorization: Bearer <token>")
    with db.session_scope(settings) as session:
        return users.authenticate(session, credentials.credentials)


CurrentUser = Annotated[User, Depends(current_user)]
