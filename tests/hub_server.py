"""A Hub-compatible HTTP server on 127.0.0.1 for tests and trial pushes: the real huggingface_hub client talks to it.

    make hub-server                         # or: python tests/hub_server.py [--port 8765]
    HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_local_trial_token make push RUN=runs/demo REPO=tester/smollm2-dpo

Implements what `create_repo`, `create_branch`, `upload_folder`/`create_commit` (without Xet),
`model_info`, `list_repo_files` and `hf_hub_download` send (read from huggingface_hub 2.x: hf_api.py,
_commit_api.py, lfs.py, file_download.py):

    POST /api/repos/create                                    {name, organization, visibility, type}
    POST /api/validate-yaml                                   {content, repoType}
    POST /api/{models,datasets}/{repo}/preupload/{rev}        files -> uploadMode regular|lfs, shouldIgnore, oid
    POST /{datasets/}{repo}.git/info/lfs/objects/batch        LFS batch -> upload/verify hrefs (basic transfer)
    PUT  /lfs/{oid}                                           LFS object bytes (sha256 checked)
    POST /lfs/{oid}/verify                                    {oid, size}
    POST /api/{models,datasets}/{repo}/commit/{rev}           ndjson: header, file (base64), lfsFile, deletedFile
    POST /api/{models,datasets}/{repo}/branch/{branch}
    GET  /api/{models,datasets}/{repo}[/revision/{rev}]       repo info with siblings
    GET  /api/{models,datasets}/{repo}/tree/{rev}[/{path}]    file listing
    HEAD/GET /{datasets/}{repo}/resolve/{rev}/{path}          file bytes with X-Repo-Commit and ETag

Files are kept in memory (`server.file(repo, path)` gives the committed bytes). Every request is recorded
(method, path, headers, body) so tests can check what was sent and grep for secrets. Failure injection:
`server.fail(method, path_regex, [503, "reset", ...])` answers the next matching requests with those
statuses ("reset" drops the connection without an answer); `server.delay(...)` slows matching requests; `server.token` set -> writes need that token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".png", ".jpg", ".gguf", ".parquet", ".arrow", ".zip")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]
    lfs: set[str]  # paths stored as LFS


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, list[Commit]] = field(default_factory=dict)

    def head(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.branches[rev][-1]
        for commits in self.branches.values():  # a commit oid
            for c in commits:
                if c.oid == rev:
                    return c
        return None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class HubServer:
    """Start with `HubServer().start()`; `url` is the endpoint to put in HF_ENDPOINT."""

    def __init__(self, token: str | None = None, username: str = "tester"):
        self.token = token
        self.username = username
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._failures: list[tuple[str, re.Pattern, list]] = []
        self._delays: list[tuple[str, re.Pattern, float]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, port: int = 0) -> HubServer:
        """Serve on 127.0.0.1:`port` (0: any free port) in a background thread."""
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- test helpers --------------------------------------------------------------------------------
    def fail(self, method: str, path_regex: str, answers: list) -> None:
        """Answer the next len(answers) requests matching (method, path_regex) with these statuses/'reset'."""
        with self._lock:
            self._failures.append((method.upper(), re.compile(path_regex), list(answers)))

    def delay(self, method: str, path_regex: str, seconds: float) -> None:
        """Answer every request matching (method, path_regex) only after `seconds` (a slow Hub)."""
        self._delays.append((method.upper(), re.compile(path_regex), seconds))

    def _take_failure(self, method: str, path: str):
        with self._lock:
            for m, rx, answers in self._failures:
                if m == method and rx.search(path) and answers:
                    return answers.pop(0)
        return None

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        return self.repo(repo_id, repo_type).head(revision).files[path]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        head = self.repo(repo_id, repo_type).head(revision)
        return dict(head.files) if head else {}

    def requests_to(self, pattern: str, method: str | None = None) -> list[Request]:
        rx = re.compile(pattern)
        return [r for r in self.requests if rx.search(r.path) and (method is None or r.method == method)]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body=b"", headers: dict[str, str] | None = None, content_type="application/json"
    ):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _authorized(self) -> bool:
        if self.hub.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _dispatch(self):
        parts = urlsplit(self.path)
        path, self.query = unquote(parts.path), parse_qs(parts.query)
        body = self._body() if self.command in ("POST", "PUT") else b""
        self.body = body
        self.hub.requests.append(
            Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        for m, rx, seconds in self.hub._delays:
            if m == self.command and rx.search(path):
                time.sleep(seconds)
        failure = self.hub._take_failure(self.command, path)
        if failure == "reset":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if failure is not None:
            return self._error(int(failure), f"injected failure {failure}")
        for method, rx, handler in ROUTES:
            if method == self.command:
                m = re.fullmatch(rx, path)
                if m:
                    return handler(self, **m.groupdict())
        self._error(404, f"no route for {self.command} {path}")

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    def _json(self):
        return json.loads(self.body or b"{}")

    def _get_repo(self, rtype: str, repo: str) -> Repo | None:
        r = self.hub.repos.get((rtype.rstrip("s"), repo))
        if r is None:
            self._error(404, f"Repository {repo} not found", "RepoNotFound")
        return r

    # -- routes --------------------------------------------------------------------------------------
    def create_repo(self):
        if not self._authorized():
            return
        payload = self._json()
        repo_id = f"{payload.get('organization') or self.hub.username}/{payload['name']}"
        rtype = payload.get("type") or "model"
        prefix = "" if rtype == "model" else f"{rtype}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        if (rtype, repo_id) in self.hub.repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        repo = Repo(repo_id, rtype, payload.get("visibility") == "private")
        repo.branches["main"] = [
            Commit(hashlib.sha1(repo_id.encode()).hexdigest(), "initial commit", {}, set())
        ]
        self.hub.repos[(rtype, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        content = self._json().get("content", "")
        m = re.match(r"^---\n(.*?)\n---", content, re.S)
        if not m:
            return self._send(
                200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
            )
        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError as err:
            return self._send(400, {"errors": [{"message": f"invalid yaml: {err}"}]})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}]})
        # As the Hub: base_model must name Hub repos (a local path is rejected).
        bases = meta.get("base_model") or []
        for base in [bases] if isinstance(bases, str) else bases:
            if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", str(base)):
                return self._send(
                    400, {"errors": [{"message": f'"base_model" must be a Hub model id, got {base}'}]}
                )
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, rtype, repo, rev):
        if not self._authorized():
            return
        r = self._get_repo(rtype, repo)
        if r is None:
            return
        head = r.head(rev)
        out = []
        for f in self._json()["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or f["size"] > 10_000_000
            oid = None
            if head and f["path"] in head.files:
                data = head.files[f["path"]]
                oid = hashlib.sha256(data).hexdigest() if f["path"] in head.lfs else git_blob_sha1(data)
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._send(200, {"files": out, "commitOid": head.oid if head else None})

    def lfs_batch(self, prefix, repo):
        if not self._authorized():
            return
        if self._get_repo("datasets" if prefix else "models", repo) is None:
            return
        payload = self._json()
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs/{obj['oid']}", "expires_in": 3600},
                    "verify": {"href": f"{self.hub.url}/lfs/{obj['oid']}/verify", "expires_in": 3600},
                }
            objects.append(entry)
        self._send(
            200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json"
        )

    def lfs_put(self, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            return self._error(400, "sha256 of the uploaded bytes does not match the oid")
        self.hub.lfs_objects[oid] = self.body
        self._send(200, b"")

    def lfs_verify(self, oid):
        payload = self._json()
        data = self.hub.lfs_objects.get(oid)
        if data is None or len(data) != payload.get("size"):
            return self._error(404, f"LFS object {oid} missing or wrong size")
        self._send(200, {})

    def commit(self, rtype, repo, rev):
        if not self._authorized():
            return
        r = self._get_repo(rtype, repo)
        if r is None:
            return
        if rev not in r.branches:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "ndjson must start with a header line")
        head = r.branches[rev][-1]
        files, lfs = dict(head.files), set(head.lfs)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    return self._error(
                        422, f"LFS object {value['oid']} for {value['path']} was never uploaded"
                    )
                files[value["path"]] = data
                lfs.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                for p in [
                    p for p in files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")
                ]:
                    del files[p]
            else:
                return self._error(400, f"unknown ndjson key {key}")
        oid = hashlib.sha1(head.oid.encode() + self.body).hexdigest()
        r.branches[rev].append(Commit(oid, lines[0]["value"]["summary"], files, lfs))
        prefix = "" if r.repo_type == "model" else f"{r.repo_type}s/"
        self._send(
            200,
            {"success": True, "commitOid": oid, "commitUrl": f"{self.hub.url}/{prefix}{repo}/commit/{oid}"},
        )

    def create_branch(self, rtype, repo, branch):
        if not self._authorized():
            return
        r = self._get_repo(rtype, repo)
        if r is None:
            return
        if branch in r.branches:
            return self._error(409, f"Reference already exists: {branch}")
        start = self._json().get("startingPoint") or "main"
        r.branches[branch] = [r.head(start)]
        self._send(200, {})

    def repo_info(self, rtype, repo, rev="main"):
        r = self._get_repo(rtype, repo)
        if r is None:
            return
        if r.private and not self._authorized():
            return
        head = r.head(rev)
        if head is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        self._send(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": head.oid,
                "private": r.private,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(head.files)],
            },
        )

    def tree(self, rtype, repo, rev, path=None):
        path = path or ""
        r = self._get_repo(rtype, repo)
        if r is None:
            return
        head = r.head(rev)
        if head is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        items = [
            {"type": "file", "path": p, "size": len(d), "oid": git_blob_sha1(d)}
            for p, d in sorted(head.files.items())
            if p.startswith(prefix)
        ]
        self._send(200, items)

    def resolve(self, prefix, repo, rev, path):
        r = self._get_repo("datasets" if prefix else "models", repo)
        if r is None:
            return
        head = r.head(rev)
        if head is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if path not in head.files:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        data = head.files[path]
        headers = {"X-Repo-Commit": head.oid, "ETag": f'"{git_blob_sha1(data)}"'}
        if path in head.lfs:
            headers.update(
                {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))}
            )
        self._send(200, data, headers, content_type="application/octet-stream")


REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/(?P<rtype>models|datasets)/{REPO}/preupload/(?P<rev>.+)", _Handler.preupload),
    ("POST", rf"/api/(?P<rtype>models|datasets)/{REPO}/commit/(?P<rev>.+)", _Handler.commit),
    ("POST", rf"/api/(?P<rtype>models|datasets)/{REPO}/branch/(?P<branch>.+)", _Handler.create_branch),
    ("POST", rf"/(?P<prefix>datasets/)?{REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    ("POST", r"/lfs/(?P<oid>[0-9a-f]{64})/verify", _Handler.lfs_verify),
    ("GET", rf"/api/(?P<rtype>models|datasets)/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    ("GET", rf"/api/(?P<rtype>models|datasets)/{REPO}/revision/(?P<rev>.+)", _Handler.repo_info),
    ("GET", rf"/api/(?P<rtype>models|datasets)/{REPO}", _Handler.repo_info),
    ("HEAD", rf"/(?P<prefix>datasets/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("GET", rf"/(?P<prefix>datasets/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C, logging each request: a trial push sees what a push sends, with nothing leaving the
    machine. Repos live in memory and are gone when it stops."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args(argv)
    hub = HubServer().start(args.port)
    print(
        f"Hub-compatible server on {hub.url} (in memory; Ctrl-C stops it). Push to it from another shell:\n"
        f"  HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_local_trial_token make push RUN=runs/demo REPO={hub.username}/smollm2-dpo",
        flush=True,
    )
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            for r in hub.requests[seen:]:
                print(f"{r.method} {r.path}", file=sys.stderr, flush=True)
            seen = len(hub.requests)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
