"""One error type that carries its HTTP status and a user-facing message.

Rendered as a FHIR OperationOutcome on /fhir and as a localised message elsewhere.
Issue codes: https://hl7.org/fhir/R4/valueset-issue-type.html
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Issue:
    severity: str  # fatal | error | warning | information
    code: str  # invalid | structure | required | value | not-found | conflict | ...
    diagnostics: str
    expression: list[str] = field(default_factory=list)

    def as_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class YiyunError(Exception):
    """A failure a caller can cause: status + message (+ FHIR issues)."""

    status: int = 400
    code: str = "invalid"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        issues: list[Issue] | None = None,
        expression: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.issues = issues or [Issue("error", self.code, message, expression or [])]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class BadRequest(YiyunError):
    status, code = 400, "invalid"


class NotFound(YiyunError):
    status, code = 404, "not-found"


class Gone(YiyunError):
    status, code = 410, "deleted"


class Conflict(YiyunError):
    status, code = 409, "conflict"


class PreconditionFailed(YiyunError):
    status, code = 412, "conflict"


class TooLarge(YiyunError):
    status, code = 413, "too-costly"


class Unprocessable(YiyunError):
    status, code = 422, "processing"


class MethodNotAllowed(YiyunError):
    status, code = 405, "not-supported"


class Forbidden(YiyunError):
    status, code = 403, "forbidden"


class Unauthorized(YiyunError):
    status, code = 401, "login"


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in issues]}


def information_outcome(message: str) -> dict[str, Any]:
    return operation_outcome([Issue("information", "informational", message)])
