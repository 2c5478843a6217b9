"""Dependencies shared by the routes: settings and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proctor import exceptions, users
from proctor.api.threads import run_blocking
from proctor.config import Settings

_bearer = HTTPBearer(auto_error=False, description="a token from `proctor user add`")


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def current_user(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> users.Caller:
    """The caller the bearer token belongs to; see `users.TOKEN_CACHE_SECONDS`.

    A token accepted within the last few seconds is taken from the app's cache, with no
    database query and no thread-pool hop; any other token is looked up in the database.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise exceptions.Unauthorized("send a bearer token: Authorization: Bearer <token>")
    token = credentials.credentials
    cache: users.TokenCache = request.app.state.token_cache
    caller = cache.get(token)
    if caller is None:
        caller = await run_blocking(users.caller_of, settings, token)
        cache.put(token, caller)
    return caller


CurrentUser = Annotated[users.Caller, Depends(current_user)]
