"""The SageMaker inference container contract of the built-in Image Classification algorithm, without a web framework:
which request and answer types it takes, the body limit, and each refusal as a status with a one-line message.

Sources (docs/serve.md has them all): the container answers ``GET /ping`` and ``POST /invocations`` on port 8080
(SageMaker developer guide, "Custom Inference Code with Hosting Services"); the algorithm takes ``image/png``,
``image/jpeg`` and ``application/x-image`` and answers the JSON list of class probabilities, or a JSON Lines
``{"prediction": [...]}`` line (developer guide, "Image Classification - MXNet", inference); an InvokeEndpoint body
is at most 6291456 bytes (the API's ``Body`` length limit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = ["CONTENT_TYPES", "ACCEPT_TYPES", "MAX_BODY_BYTES", "DEFAULT_PORT", "DEFAULT_HOST", "RequestRefused",
           "content_type_of", "negotiate_accept", "format_probabilities", "error_body"]

CONTENT_TYPES = ("application/x-image", "image/jpeg", "image/png")
# what the algorithm answers: the JSON list (real-time endpoint), and batch transform's JSON Lines
ACCEPT_TYPES = ("application/json", "application/jsonlines")
MAX_BODY_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's Body limit, 6291456 bytes
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"


class RequestRefused(Exception):
    """A request the server answers with a 4xx (or 5xx) status and ``{"error": message}``; ``headers`` go with it."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.headers = headers or {}


def content_type_of(header: str | None) -> str:
    """The request's media type, or :class:`RequestRefused` 415 that names the types the algorithm takes."""
    media = (header or "").split(";")[0].strip().lower()
    if media not in CONTENT_TYPES:
        given = f"Content-Type {header!r}" if header else "no Content-Type"
        raise RequestRefused(415, f"{given} is not an image type the algorithm takes; send the JPEG or PNG bytes "
                                  f"with Content-Type {', '.join(CONTENT_TYPES)}.")
    return media


_WILDCARDS = {"*/*": ACCEPT_TYPES[0], "application/*": ACCEPT_TYPES[0]}


def negotiate_accept(header: str | None) -> str:
    """The answer's media type for an ``Accept`` header (none or ``*/*``: JSON), or :class:`RequestRefused` 406."""
    if not header or not header.strip():
        return ACCEPT_TYPES[0]
    offers: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        media, q = fields[0].lower(), 1.0
        for param in fields[1:]:
            found = re.fullmatch(r"q\s*=\s*([0-9.]+)", param)
            if found:
                try:
                    q = float(found.group(1))
                except ValueError:
                    q = 0.0
        chosen = media if media in ACCEPT_TYPES else _WILDCARDS.get(media)
        if chosen and q > 0:
            offers.append((-q, i, chosen))
    if not offers:
        raise RequestRefused(406, f"Accept {header!r} asks for no type this server answers; ask for "
                                  f"{' or '.join(ACCEPT_TYPES)}.")
    return sorted(offers)[0][2]


def format_probabilities(probs: Sequence[float], accept: str) -> bytes:
    """The algorithm's answer: ``[p_0, ...]`` (application/json) or ``{"prediction": [p_0, ...]}`` and a newline
    (application/jsonlines), as batch transform writes it."""
    values = [float(p) for p in probs]
    if accept == "application/jsonlines":
        return (json.dumps({"prediction": values}) + "\n").encode()
    return json.dumps(values).encode()


def error_body(message: str, request_id: str | None = None) -> bytes:
    """One line of JSON: ``{"error": "...", "request_id": "..."}``."""
    body: dict[str, str] = {"error": " ".join(str(message).split())}
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode() + b"\n"
