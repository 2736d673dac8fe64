"""`geogan demo`: a page to try a model in a browser, and to compare two registered versions on the same faces.

    geogan demo --model models:/geogan-Eyeglasses@champion [--examples faces/] [--port 7860]

A plain page from the standard library's HTTP server over the code `geogan transfer` runs: no web framework
to keep in step with the model code (docs/serving.md). A registered model's page lists every version of that
name with its aliases and evaluation; a local generator file is the only choice.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geogan.data.faces import FaceError
from geogan.stages._common import StageError, exit_with, prog_name, run_main
from geogan.stages.demo_page import PAGE
from geogan.stages.transfer import IMAGE_SUFFIXES, LoadedModel, load_model, preparer

MAX_UPLOAD = 20 * 1024 * 1024  # two photos as base64, with room to spare


def registered_versions(model: str) -> tuple[list[dict[str, Any]], str]:
    """Every version of the model's registered name ({uri, label}), newest first, and the one `model` names.

    A file or run URI is the only choice.
    """
    if not model.startswith("models:/"):
        return [{"uri": model, "label": Path(model).name}], model
    from mlflow import MlflowClient

    from geogan.registry import version_metrics
    from geogan.tracking import checked_tracking_uri

    ref = model[len("models:/"):]
    name, alias = ref.partition("@")[::2] if "@" in ref else (ref.partition("/")[0], None)
    uri = checked_tracking_uri("sqlite:///mlflow/mlflow.db")
    client = MlflowClient(uri, registry_uri=uri)
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    out = []
    for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        metrics = version_metrics(v)
        shown = ", ".join(f"{k} {metrics[k]:.3g}" for k in sorted(metrics) if k.startswith("transfer_success"))
        version = str(v.version)  # a string from a server, an int from a SQLite store
        label = f"{name} v{version}" + (f" ({', '.join(sorted(aliases[version]))})" if version in aliases else "")
        out.append({"uri": f"models:/{name}/{version}", "label": label + (f": {shown}" if shown else "")})
    named = next((v for v, names in aliases.items() if alias in names), None) if alias else ref.partition("/")[2]
    return out, f"models:/{name}/{named}" if named else model


def _data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _decode(data_url: str, what: str) -> Any:
    """A data URL or bare base64 from the page -> PIL image; FaceError naming `what` when it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data_url.split(",", 1)[-1], validate=True)
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image
    except (ValueError, TypeError, OSError, UnidentifiedImageError) as e:
        raise FaceError(f"{what}: not a PNG or JPEG image ({type(e).__name__})") from None


class Demo:
    """The models behind the page, loaded on first use and kept; one transfer at a time (CPU or one GPU)."""

    def __init__(self, model: str, examples: Path | None = None, align: str = "auto") -> None:
        self.model, self.align = model, align
        self.versions, self.default = registered_versions(model)
        self.examples = examples
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def example_names(self) -> list[str]:
        if self.examples is None:
            return []
        return sorted(p.name for p in self.examples.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def example_bytes(self, name: str) -> bytes | None:
        return (self.examples / name).read_bytes() if name in self.example_names() else None

    def transfer(self, source: str, reference: str, uris: list[str]) -> list[dict[str, str]]:
        """Each chosen version's result, warped reference and mask for one pair, as data URLs."""
        known = {v["uri"] for v in self.versions}
        if not uris or any(u not in known for u in uris):
            raise FaceError(f"choose one or two of the listed models, got {uris}")
        src, ref = _decode(source, "source"), _decode(reference, "reference")
        out = []
        with self._lock:
            for uri in uris[:2]:
                if uri not in self._loaded:
                    self._loaded[uri] = load_model(uri)
                loaded = self._loaded[uri]
                prep = preparer(loaded, self.align)
                a, b = prep.from_image(src, "source"), prep.from_image(ref, "reference")
                o = loaded.run([a], [b])
                from geogan.model import to_uint8

                parts = {"output": o.x_out, "warped": o.x_warp, "mask": o.mask.expand(-1, 3, -1, -1) * 2 - 1}
                out.append({"uri": uri, "source": _data_url(a.image), "reference": _data_url(b.image),
                            **{k: _data_url(to_uint8(v)[0]) for k, v in parts.items()}})
        return out


def make_handler(demo: Demo) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to one Demo."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # one line per request would drown the terminal; errors reach the page

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path == "/":
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/api/models":
                self._json(200, {"models": demo.versions, "default": demo.default, "examples": demo.example_names()})
            elif self.path.startswith("/examples/"):
                data = demo.example_bytes(urllib.parse.unquote(self.path[len("/examples/"):]))
                self._send(200, data, "application/octet-stream") if data else self._json(404, {"error": "no such example"})
            else:
                self._json(404, {"error": f"no page {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            if self.path != "/api/transfer" or not 0 < length <= MAX_UPLOAD:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "POST /api/transfer with a JSON body under 20 MB"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                results = demo.transfer(body.get("source", ""), body.get("reference", ""), list(body.get("models", [])))
            except (FaceError, json.JSONDecodeError, AttributeError) as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                return
            except (StageError, ValueError, OSError) as e:  # a model that cannot be loaded
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
                return
            self._json(200, {"results": results})

    return Handler


def serve(demo: Demo, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """The page's server, bound (port 0: any free port); call serve_forever() on it."""
    server = ThreadingHTTPServer((host, port), make_handler(demo))
    server.daemon_threads = True
    return server


def run(model: str, host: str, port: int, examples: Path | None, align: str) -> dict:
    if examples is not None and not examples.is_dir():
        raise StageError(f"{examples}: no such folder")
    demo = Demo(model, examples, align)
    load_model(model)  # a model that cannot load fails here, in one line, not in the browser
    server = serve(demo, host, port)
    print(f"geogan demo: http://{host}:{server.server_address[1]}/  ({len(demo.versions)} model(s); Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return {"stopped": True}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog_name(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="models:/<name>@<alias>, models:/<name>/<version>, or a generator file")
    p.add_argument("--examples", type=Path, help="a folder of faces the page offers to pick from")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--align", choices=("auto", "dlib", "none"), default="auto", help="face framing, as geogan transfer")
    args = p.parse_args(argv)
    exit_with(run_main("demo", lambda: run(args.model, args.host, args.port, args.examples, args.align)))


if __name__ == "__main__":
    main()
