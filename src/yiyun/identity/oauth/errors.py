"""OAuth error responses (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 7662 §2.3).

`error_description` is "中文说明 (English)", as every message of the platform."""

from __future__ import annotations

from fastapi.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


class OAuthError(Exception):
    """A refusal the client caused; rendered as `{"error", "error_description"}`."""

    def __init__(self, error: str, description: str, *, status: int = 400, basic_challenge: bool = False) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status
        self.basic_challenge = basic_challenge
        # a grant to revoke once the request's own transaction has ended (a replayed code or
        # refresh token): the revocation must stay although the request fails
        self.revoke_grant: str | None = None
        self.revoke_reason = "replayed code or refresh token"

    def response(self) -> JSONResponse:
        headers = dict(NO_STORE)
        if self.status == 401:
            # RFC 6749 §5.2: invalid_client answered 401 names the scheme the client may use
            headers["WWW-Authenticate"] = 'Basic realm="yiyun"' if self.basic_challenge else 'Bearer realm="yiyun"'
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=headers)


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str, *, basic: bool = False) -> OAuthError:
    return OAuthError("invalid_client", description, status=401, basic_challenge=basic)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description)


def unauthorized_client(description: str) -> OAuthError:
    return OAuthError("unauthorized_client", description)
