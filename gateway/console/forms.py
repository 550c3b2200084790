"""Reading the console's own form posts: one strict reader for every page.

The console's forms are small and plain (`application/x-www-form-urlencoded`, UTF-8, a
handful of fields), so anything else is refused in words (400, 413, 415) before a
handler sees it: no multipart parser, no guessed charsets, no body larger than a form
needs, and never an exception that would surface as a 500.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from gateway.keys.errors import ServiceError

MAX_FORM = 16 * 1024  # the largest console form (invite: name, two passwords) is < 10 KiB
MAX_FIELDS = 16
FORM_TYPE = "application/x-www-form-urlencoded"


class FormRefused(ServiceError):
    """A post that is not one of the console's forms (the error page words it)."""

    code = "invalid_request"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted fields (the first value of each), or FormRefused.

    The body is read here, bounded by MAX_FORM whatever Content-Length says (a chunked
    body has none), and decoded as strict UTF-8: the console's pages send nothing else.
    """
    if request.content_type != FORM_TYPE:
        raise FormRefused("This page accepts only its own form.", status=415)
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise FormRefused("The form must be sent as UTF-8.", status=415)
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise FormRefused("The form is larger than any of the console's forms.", status=413)
    body = bytearray()
    while len(body) <= MAX_FORM:
        chunk = await request.content.read(MAX_FORM + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_FORM:
        raise FormRefused("The form is larger than any of the console's forms.", status=413)
    try:
        pairs = parse_qsl(
            bytes(body).decode("ascii"),  # urlencoded bodies are ASCII: bytes are %-escaped
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise FormRefused("The form could not be read: send it again from the page.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields
