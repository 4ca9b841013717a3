"""S3: bytes moved by a boto3 S3 client, measured through botocore's event hooks.

One event per object written or read:

* ``put_object`` → ``operation=upload``, ``objects=1``, ``bytes`` = body size;
* multipart uploads (``upload_file``/``upload_fileobj`` above the threshold, or
  ``create_multipart_upload``/``upload_part``/``complete_multipart_upload`` by hand) → one event
  when the upload is completed, ``bytes`` = sum of the completed parts (a part uploaded again
  counts once), ``objects=1``; an aborted upload emits nothing;
* ``get_object`` → ``operation=download``, ``objects=0``, ``bytes`` = the response's
  ``Content-Length`` (what S3 sent; for a ranged GET, the range);
* ``download_file``/``download_fileobj`` → one event for the whole transfer (the ranged GETs
  it makes in parallel are summed), also when it fails part-way (with ``error``).

Server-side copies (``copy_object``, ``upload_part_copy``, ``copy``) move no bytes through the
client and are not metered. Failed calls are not metered.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any

from meterline.strategies._base import Emitter

logger = logging.getLogger("meterline")

_CTX = "meterline_s3"
_OPERATIONS = (
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "GetObject",
)


def body_size(body: Any) -> int | None:
    if body is None:
        return 0
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    if isinstance(body, memoryview):
        return body.nbytes
    if isinstance(body, bytes | bytearray):
        return len(body)
    if hasattr(body, "__len__"):  # s3transfer's ReadFileChunk
        try:
            return len(body)
        except TypeError:
            pass
    try:
        fileno = body.fileno()
        return max(os.fstat(fileno).st_size - body.tell(), 0)
    except (AttributeError, OSError, ValueError):
        pass
    try:
        if body.seekable():
            position = body.tell()
            end = body.seek(0, os.SEEK_END)
            body.seek(position)
            return max(end - position, 0)
    except (AttributeError, OSError, ValueError):
        pass
    return None


class S3Meter:
    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self._lock = threading.Lock()
        self._uploads: dict[str, dict[str, Any]] = {}
        self._transfers: dict[tuple[str, str], list[dict[str, Any]]] = {}

    # --- hooks -----------------------------------------------------------------------------
    def before_parameter_build(self, params: dict[str, Any], model: Any, context: Any, **_: Any):
        try:
            info = {
                "operation": model.name,
                "bucket": params.get("Bucket"),
                "key": params.get("Key"),
                "content_type": params.get("ContentType"),
                "upload_id": params.get("UploadId"),
                "part_number": params.get("PartNumber"),
            }
            if model.name in ("PutObject", "UploadPart"):
                length = params.get("ContentLength")
                info["bytes"] = int(length) if length is not None else body_size(params.get("Body"))
            if model.name == "CompleteMultipartUpload":
                parts = (params.get("MultipartUpload") or {}).get("Parts") or []
                info["parts"] = [p.get("PartNumber") for p in parts if isinstance(p, dict)]
            context[_CTX] = info
        except Exception:
            logger.exception("meterline: S3 parameter hook failed")

    def after_call(self, http_response: Any, parsed: Any, model: Any, context: Any, **_: Any):
        try:
            info = context.get(_CTX) if context is not None else None
            if info is None or http_response is None or http_response.status_code >= 300:
                return
            getattr(self, "_after_" + model.name)(info, parsed or {})
        except Exception:
            logger.exception("meterline: S3 response hook failed")

    # --- per operation -----------------------------------------------------------------------
    def _emit(self, info: dict[str, Any], operation: str, nbytes: int, objects: int, **extra):
        measured: dict[str, Any] = {
            "operation": operation,
            "bytes": int(nbytes),
            "objects": objects,
            "bucket": str(info.get("bucket") or "")[:500],
            "key": str(info.get("key") or "")[:500],
        }
        if info.get("content_type"):
            measured["content_type"] = str(info["content_type"])[:500]
        measured.update(extra)
        self.emitter.emit(measured)

    def _after_PutObject(self, info: dict[str, Any], parsed: Any) -> None:
        if info.get("bytes") is None:
            logger.warning("meterline: size of a put_object body unknown; counted as 0 bytes")
        self._emit(info, "upload", info.get("bytes") or 0, 1)

    def _after_CreateMultipartUpload(self, info: dict[str, Any], parsed: Any) -> None:
        upload_id = parsed.get("UploadId")
        if upload_id:
            with self._lock:
                self._uploads[upload_id] = {**info, "part_sizes": {}}

    def _after_UploadPart(self, info: dict[str, Any], parsed: Any) -> None:
        with self._lock:
            upload = self._uploads.get(info.get("upload_id") or "")
            if upload is not None:
                upload["part_sizes"][info.get("part_number")] = info.get("bytes") or 0

    def _after_CompleteMultipartUpload(self, info: dict[str, Any], parsed: Any) -> None:
        with self._lock:
            upload = self._uploads.pop(info.get("upload_id") or "", None)
        if upload is None:
            logger.warning("meterline: completed a multipart upload this client did not start")
            return
        sizes = upload["part_sizes"]
        listed = info.get("parts") or list(sizes)
        total = sum(sizes.get(number, 0) for number in listed)
        self._emit(upload, "upload", total, 1, parts=len(listed))

    def _after_AbortMultipartUpload(self, info: dict[str, Any], parsed: Any) -> None:
        with self._lock:
            self._uploads.pop(info.get("upload_id") or "", None)

    def _after_GetObject(self, info: dict[str, Any], parsed: Any) -> None:
        nbytes = int(parsed.get("ContentLength") or 0)
        if parsed.get("ContentType") and not info.get("content_type"):
            info = {**info, "content_type": parsed["ContentType"]}
        with self._lock:
            transfers = self._transfers.get((info.get("bucket"), info.get("key")))
            if transfers:
                transfer = transfers[0]
                transfer["bytes"] += nbytes
                transfer["content_type"] = transfer.get("content_type") or info.get("content_type")
                return
        self._emit(info, "download", nbytes, 0)

    # --- transfer grouping -------------------------------------------------------------------
    def grouped_download(self, original: Any) -> Any:
        """Wrap ``download_file``/``download_fileobj`` so their GETs make one event."""

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bucket = kwargs.get("Bucket", args[0] if args else None)
            key = kwargs.get("Key", args[1] if len(args) > 1 else None)
            transfer: dict[str, Any] = {"bucket": bucket, "key": key, "bytes": 0}
            group = (bucket, key)
            with self._lock:
                self._transfers.setdefault(group, []).append(transfer)
            error: BaseException | None = None
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                with self._lock:
                    transfers = self._transfers.get(group, [])
                    if transfer in transfers:
                        transfers.remove(transfer)
                    if not transfers:
                        self._transfers.pop(group, None)
                if transfer["bytes"] or error is None:
                    extra = {"error": type(error).__name__} if error is not None else {}
                    self._emit(transfer, "download", transfer["bytes"], 0, **extra)

        wrapper.__meterline_wrapped__ = original  # type: ignore[attr-defined]
        return wrapper


def instrument_s3(client: Any, emitter: Emitter) -> Any:
    """Register the hooks on ``client.meta.events`` (replacing an earlier instrumentation of
    the same client) and return the same client."""
    events = client.meta.events
    previous: S3Meter | None = getattr(client, "_meterline_s3", None)
    meter = S3Meter(emitter)
    for operation in _OPERATIONS:
        for event, handler, old in (
            (
                "before-parameter-build",
                meter.before_parameter_build,
                previous and previous.before_parameter_build,
            ),
            ("after-call", meter.after_call, previous and previous.after_call),
        ):
            name = f"{event}.s3.{operation}"
            uid = f"meterline-{event}-{operation}"
            if old:
                events.unregister(name, old, unique_id=uid)
            events.register(name, handler, unique_id=uid)
    for method in ("download_file", "download_fileobj"):
        original = getattr(client, method, None)
        if original is None:
            continue
        original = getattr(original, "__meterline_wrapped__", original)
        setattr(client, method, meter.grouped_download(original))
    client._meterline_s3 = meter
    return client
