"""Static files served from memory: read once when the app is built, never from disk again.

The quick start's second command (`pip install -e '.[test]'` into the venv the first one's
server runs from) uninstalls the package under the running process: pip deletes the installed
files and the server, opening them on each request, answered 500 for the booking page. Read at
start-up, the files served are always those of the code that runs, whatever happens to the
install location later. The page and Swagger UI are a few megabytes in all."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    last_modified: str

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type in ("application/javascript",):
            media_type += "; charset=utf-8"
        return cls(
            body=body,
            media_type=media_type,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            last_modified=formatdate(path.stat().st_mtime, usegmt=True),
        )

    def response(
        self, scope: Scope, headers: Mapping[str, str], *, status_code: int = 200
    ) -> Response:
        """The file, or a 304 when the request's If-None-Match names it; a HEAD gets the
        headers only (with the file's Content-Length)."""
        sent = {"ETag": self.etag, "Last-Modified": self.last_modified, **headers}
        if self.etag in _if_none_match(scope):
            return Response(status_code=304, headers=sent)
        response = Response(self.body, status_code, headers=sent, media_type=self.media_type)
        if scope.get("method") == "HEAD":
            response.body = b""
        return response


def _if_none_match(scope: Scope) -> set[str]:
    for name, value in scope.get("headers", []):
        if name == b"if-none-match":
            return {t.strip().removeprefix("W/") for t in value.decode("latin-1").split(",")}
    return set()


def load(directory: Path) -> dict[str, Asset]:
    """Every file under `directory` by its relative path ('js/main.js')."""
    return {
        path.relative_to(directory).as_posix(): Asset.read(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
    }


class MemoryFiles:
    """An ASGI app to mount: GET and HEAD of the files given, each with `headers`."""

    def __init__(self, files: Mapping[str, Asset], headers: Mapping[str, str]) -> None:
        self.files = dict(files)
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        path, root = scope["path"], scope.get("root_path", "")
        name = (path[len(root) :] if root and path.startswith(root) else path).lstrip("/")
        asset = self.files.get(name)
        if asset is None:
            raise HTTPException(404)
        await asset.response(scope, self.headers)(scope, receive, send)
