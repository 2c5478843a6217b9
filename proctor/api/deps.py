"""Dependencies shared by the routes: settings and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from proctor import exceptions, users
from proctor.api.threads import run_blocking
from proctor.config import Settings


async def get_settings(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class BearerCaller(SecurityBase):
    """HTTP bearer authentication that resolves to the caller the token belongs to; see
    `users.TOKEN_CACHE_SECONDS`.

    A token accepted within the last few seconds is taken from the app's cache, with no
    database query and no thread-pool hop; any other token is looked up in the database.

    One dependency that is also the security scheme OpenAPI declares: FastAPI resolves
    its dependencies anew for each request, and `HTTPBearer` with a dependency on it and
    on the settings made three, a tenth of the CPU of a small request.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="a token from `proctor user add`")
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> users.Caller:
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        if scheme.lower() != "bearer" or not token:
            raise exceptions.Unauthorized("send a bearer token: Authorization: Bearer <token>")
        state = request.app.state
        cache: users.TokenCache = state.token_cache
        caller = cache.get(token)
        if caller is None:
            caller = await run_blocking(users.caller_of, state.settings, token)
            cache.put(token, caller)
        return caller


current_user = BearerCaller()
CurrentUser = Annotated[users.Caller, Depends(current_user)]
