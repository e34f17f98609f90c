"""The emulator over real HTTP, so batchline talks to it through the official openai SDK unchanged.

Handlers here only parse (JSON bodies, multipart uploads, query strings), call OpenAIEmulator and
serialise; every refusal is an EmulatorError turned into OpenAI's error shape and status, so the
SDK raises the same exception class it would against api.openai.com.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote

from batchline.settings import BATCH_ENDPOINTS, Settings
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from .core import OpenAIEmulator
from .errors import EmulatorError, InvalidRequest, MissingApiKey, NotFound
from .faults import Faults

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"
SHUTDOWN_POLL_SECONDS = 0.05


def _routes() -> Map:
    rules = [
        Rule("/v1/files", methods=["POST"], endpoint="create_file"),
        Rule("/v1/files", methods=["GET"], endpoint="list_files"),
        Rule("/v1/files/<file_id>", methods=["GET"], endpoint="retrieve_file"),
        Rule("/v1/files/<file_id>", methods=["DELETE"], endpoint="delete_file"),
        Rule("/v1/files/<file_id>/content", methods=["GET"], endpoint="file_content"),
        Rule("/v1/batches", methods=["POST"], endpoint="create_batch"),
        Rule("/v1/batches", methods=["GET"], endpoint="list_batches"),
        Rule("/v1/batches/<batch_id>", methods=["GET"], endpoint="retrieve_batch"),
        Rule("/v1/batches/<batch_id>/cancel", methods=["POST"], endpoint="cancel_batch"),
        Rule("/v1/models", methods=["GET"], endpoint="list_models"),
        Rule("/v1/models/<path:model_id>", methods=["GET"], endpoint="retrieve_model"),
        Rule("/_emulator/ledger", methods=["GET"], endpoint="ledger"),
        Rule("/_emulator/stats", methods=["GET"], endpoint="stats"),
        Rule("/_emulator/health", methods=["GET"], endpoint="health"),
    ]
    rules += [Rule(url, methods=["POST"], endpoint="realtime") for url in BATCH_ENDPOINTS]
    return Map(rules, strict_slashes=False)


def _client_request_id(request: Request) -> str | None:
    """The caller's custom_id: batchline percent-encodes it into the header (a header is ASCII only)."""
    value = request.headers.get("X-Client-Request-Id")
    return unquote(value) if value else None


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return body


def _int_arg(request: Request, name: str) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer.", param=name, code="invalid_type") from None


def _has_api_key(request: Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


class EmulatorApp:
    """The WSGI application: routes a request to OpenAIEmulator and answers in OpenAI's shapes."""

    def __init__(self, emulator: OpenAIEmulator) -> None:
        self.emulator = emulator
        self._routes = _routes()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        started = time.monotonic()
        try:
            if request.path.startswith(API_PREFIX) and not _has_api_key(request):
                raise MissingApiKey(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                    code="missing_api_key",
                )
            try:
                endpoint, args = self._routes.bind_to_environ(environ).match()
            except HTTPException:
                raise NotFound(f"Invalid URL ({request.method} {request.path})", code="unknown_url") from None
            response = getattr(self, f"_{endpoint}")(request, **args)
        except EmulatorError as error:
            response = self._json(error.body(), status=error.status_code)
            response.headers.update(error.headers)
        except Exception:
            logger.exception("emulator failed on %s %s", request.method, request.path)
            response = self._json(EmulatorError("The emulator failed; see its log.").body(), status=500)
        response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        response.headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        return response(environ, start_response)

    @staticmethod
    def _json(payload: Any, status: int = 200) -> Response:
        return Response(json.dumps(payload), status=status, mimetype="application/json")

    # ----- files --------------------------------------------------------------------------------

    def _create_file(self, request: Request) -> Response:
        upload = request.files.get("file")
        if upload is None:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        created = self.emulator.create_file(
            filename=upload.filename or "upload.jsonl",
            purpose=request.form.get("purpose", ""),
            content=upload.read(),
        )
        return self._json(created)

    def _list_files(self, request: Request) -> Response:
        return self._json(
            self.emulator.list_files(
                purpose=request.args.get("purpose"),
                after=request.args.get("after"),
                limit=_int_arg(request, "limit"),
                order=request.args.get("order", "desc"),
            )
        )

    def _retrieve_file(self, request: Request, file_id: str) -> Response:
        return self._json(self.emulator.retrieve_file(file_id))

    def _delete_file(self, request: Request, file_id: str) -> Response:
        return self._json(self.emulator.delete_file(file_id))

    def _file_content(self, request: Request, file_id: str) -> Response:
        return Response(self.emulator.file_content(file_id), mimetype="application/octet-stream")

    # ----- batches ------------------------------------------------------------------------------

    def _create_batch(self, request: Request) -> Response:
        body = _json_body(request)
        return self._json(
            self.emulator.create_batch(
                input_file_id=body.get("input_file_id"),
                endpoint=body.get("endpoint"),
                completion_window=body.get("completion_window"),
                metadata=body.get("metadata"),
            )
        )

    def _list_batches(self, request: Request) -> Response:
        return self._json(self.emulator.list_batches(after=request.args.get("after"), limit=_int_arg(request, "limit")))

    def _retrieve_batch(self, request: Request, batch_id: str) -> Response:
        return self._json(self.emulator.retrieve_batch(batch_id))

    def _cancel_batch(self, request: Request, batch_id: str) -> Response:
        return self._json(self.emulator.cancel_batch(batch_id))

    # ----- models -------------------------------------------------------------------------------

    def _list_models(self, request: Request) -> Response:
        return self._json(self.emulator.list_models())

    def _retrieve_model(self, request: Request, model_id: str) -> Response:
        return self._json(self.emulator.retrieve_model(model_id))

    # ----- realtime and emulator-only routes ----------------------------------------------------

    def _realtime(self, request: Request) -> Response:
        answer = self.emulator.realtime(
            request.path, _json_body(request), client_request_id=_client_request_id(request)
        )
        response = self._json(answer.body)
        response.headers.update(answer.headers)
        return response

    def _ledger(self, request: Request) -> Response:
        return self._json({"object": "list", "data": self.emulator.ledger()})

    def _stats(self, request: Request) -> Response:
        return self._json(self.emulator.stats())

    def _health(self, request: Request) -> Response:
        return self._json({"status": "ok"})


class _QuietRequestHandler(WSGIRequestHandler):
    """Drops the per-request access log, which would drown test output; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class EmulatorServer:
    """The emulator on a free localhost port in a daemon thread, for tests and the local run.

    ``with EmulatorServer(settings=settings) as server:`` then
    ``openai.OpenAI(base_url=server.base_url, api_key="x")``. Built from ``settings=``, it takes its
    pace, rate limits and faults from ``settings.emulator``; the faults are overridden by
    BATCHLINE_EMULATOR_FAULTS when that is set, and by ``faults=`` over both. Pass ``emulator=``
    instead of ``settings=`` to serve an emulator built with test limits or a test clock.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        emulator: OpenAIEmulator | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if emulator is None:
            if settings is None:
                raise TypeError("EmulatorServer needs settings or an emulator")
            emulator = OpenAIEmulator.from_settings(settings, faults=faults)
        elif faults is not None:
            raise TypeError("faults= goes with settings=; an emulator passed in already has its faults")
        self.emulator = emulator
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator server is not running")
        return self._server.server_port

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give ``openai.OpenAI(base_url=...)``."""
        return f"{self.root_url}{API_PREFIX}"

    def start(self) -> EmulatorServer:
        if self._server is not None:
            return self
        self._server = make_server(
            self._host,
            self._port,
            EmulatorApp(self.emulator),
            threaded=True,
            request_handler=_QuietRequestHandler,
        )
        # A short poll interval keeps stop() quick: shutdown waits for the serving loop to look.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"openai-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(host: str, port: int, settings: Settings, *, faults: Faults | None = None) -> None:
    """Serve the emulator in the foreground until interrupted (the CLI's entry point).

    ``faults`` (the command line's ``--faults``) wins over BATCHLINE_EMULATOR_FAULTS and the settings.
    """
    emulator = OpenAIEmulator.from_settings(settings, faults=faults)
    server = make_server(host, port, EmulatorApp(emulator), threaded=True)
    logger.info("OpenAI emulator listening on http://%s:%s%s", host, server.server_port, API_PREFIX)
    if emulator.faults.describe():
        logger.warning("OpenAI emulator injecting faults: %s", emulator.faults.describe())
    server.serve_forever()
