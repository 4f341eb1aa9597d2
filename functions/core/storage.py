"""One facade over object storage: the only code that knows which backend is in use.

Contract: :class:`ObjectStore` wraps Lithops' ``Storage`` (localhost, Ceph, MinIO,
AWS S3, IBM COS, ... chosen by the Lithops configuration) and offers what the
pipeline needs — head, whole and ranged GETs, puts, staging of local files, listing
and deletion — under one key prefix. Every GET is counted (requests and bytes) so
functions and the run summary can report what was read.

Nothing this facade writes can land outside its store: bucket and prefix are checked
when the facade is made (:func:`check_bucket`, :func:`check_prefix`: no ``..``, no
absolute path, no empty segment), and with the local store every path is proven to
stay inside the bucket's folder before it is read or written. A PUT is atomic on every
backend: S3 and the like publish an object whole; the local store writes a hidden
temporary file beside the object and renames it, so a reader never sees half of one.
Staging into the local store links the input (a symbolic link) and never replaces a
file that is not such a link: that file is not ours.

A store is described to a serverless function by a plain dict holding only its
bucket and prefix (:meth:`ObjectStore.describe`): no credentials travel in task
arguments. The function rebuilds the facade over the ``storage`` object Lithops
hands it in the worker (built from the worker's own Lithops config) with
:meth:`ObjectStore.from_description`.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.core.errors import SvcError

logger = logging.getLogger(__name__)


class StorageError(SvcError, RuntimeError):
    """Object storage could not do what was asked."""


class ObjectMissingError(StorageError):
    """The key does not exist in the bucket."""

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"object {key!r} not found in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key


# GETs of a range that came back short before the read is given up (the pauses between
# them add up to 0.7 s).
SHORT_READ_TRIES = 4

# A ranged read into a file is made of GETs of at most PART_BYTES, each body read in
# pieces of STREAM_PIECE: what a function holds in memory does not grow with its slice.
PART_BYTES = 64 << 20
STREAM_PIECE = 1 << 20

# What a bucket and a key prefix may be: names, never paths that climb or start at the root.
BUCKET_RULE = ("use 3-63 letters, digits, '.', '_' and '-', starting and ending with a letter or digit, "
               "with no '..' (a bucket name, not a path)")
PREFIX_RULE = ("use segments of letters, digits, '.', '_' and '-' separated by '/', none empty and none "
               "starting with '.' (no '..', no leading '/': a key prefix inside the bucket, not a path)")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_bucket(bucket: str) -> str:
    """``bucket`` if it is a plain bucket name (see :data:`BUCKET_RULE`), else StorageError."""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise StorageError(f"bucket {bucket!r} is not allowed: {BUCKET_RULE}; fix storage.bucket (or the "
                           "Lithops config's storage_bucket)")
    return bucket


def check_prefix(prefix: str) -> str:
    """``prefix`` without surrounding slashes if it is a key prefix (see :data:`PREFIX_RULE`)."""
    if prefix and (prefix.startswith("/") or not all(_SEGMENT.fullmatch(p) for p in prefix.rstrip("/").split("/"))):
        raise StorageError(f"storage prefix {prefix!r} is not allowed: {PREFIX_RULE}; fix storage.prefix")
    return prefix.strip("/")


def is_object_url(path: str) -> bool:
    """True for ``s3://...``: an input already in object storage, not a local path."""
    return path.startswith("s3://")


def split_url(path: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://bucket/key`` URL; None for a local path."""
    if not is_object_url(path):
        return None
    bucket, _, key = path[5:].partition("/")
    if not bucket or not key:
        raise StorageError(f"{path!r} is not a valid object URL; write s3://BUCKET/KEY")
    return bucket, key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None

    @property
    def fingerprint(self) -> str:
        """What identifies this object's content cheaply: its ETag, else its size."""
        return self.etag.strip('"') if self.etag else f"size:{self.size}"


@dataclass
class IoCounts:
    """Requests and bytes moved through one store object."""

    gets: int = 0
    get_bytes: int = 0
    puts: int = 0
    put_bytes: int = 0

    def line(self) -> str:
        """One line for logs and reports."""
        return (f"{self.gets} GETs ({self.get_bytes / 1e6:.3f} MB), "
                f"{self.puts} PUTs ({self.put_bytes / 1e6:.3f} MB)")

    def as_dict(self) -> dict[str, int]:
        return {
            "gets": self.gets,
            "get_bytes": self.get_bytes,
            "puts": self.puts,
            "put_bytes": self.put_bytes,
        }


class ObjectStore:
    """Object storage under one bucket and key prefix, through Lithops ``Storage``."""

    def __init__(
        self, lithops_config: dict[str, Any] | None, bucket: str | None = None, prefix: str = "",
        storage: Any = None,
    ) -> None:
        """Open the store of ``lithops_config``, or wrap ``storage``, an open ``lithops.Storage``."""
        if storage is None:
            storage = open_lithops_storage(lithops_config or {})
        self._storage = storage
        self.backend: str = self._storage.backend
        self.bucket: str = check_bucket(bucket or self._storage.bucket)
        self.prefix = check_prefix(prefix)
        self.counts = IoCounts()

    @property
    def lithops_storage(self) -> Any:
        """The open ``lithops.Storage`` underneath (for an in-process runner)."""
        return self._storage

    def __repr__(self) -> str:
        return f"ObjectStore(backend={self.backend!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- description, so a function can rebuild the same store -------------------
    def describe(self) -> dict[str, Any]:
        """What a function needs to find this store's objects: no credentials, no endpoint."""
        return {"backend": self.backend, "bucket": self.bucket, "prefix": self.prefix}

    @classmethod
    def from_description(cls, desc: dict[str, Any], storage: Any) -> ObjectStore:
        """The store of :meth:`describe` over ``storage``, the worker's ``lithops.Storage``."""
        if storage is None:
            raise StorageError("no object storage handed to the function (Lithops passes it as `storage`)")
        if storage.backend != desc["backend"]:
            raise StorageError(
                f"the function's Lithops storage is {storage.backend!r} but the pipeline's is "
                f"{desc['backend']!r}: run both from the same Lithops config"
            )
        return cls(None, desc.get("bucket"), desc.get("prefix", ""), storage=storage)

    # -- keys --------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    # -- reads -------------------------------------------------------------------
    def head(self, key: str, bucket: str | None = None) -> ObjectInfo:
        self._guard(key, bucket)
        try:
            meta = self._storage.head_object(bucket or self.bucket, key)
        except Exception as exc:
            raise self._translate(exc, key, bucket=bucket) from exc
        lower = {k.lower(): v for k, v in meta.items()}
        size = int(lower.get("content-length", 0))
        etag = lower.get("etag")
        if etag is None and self.backend == "localhost":
            st = os.stat(self._local_path(key))
            etag = f"{st.st_size}-{st.st_mtime_ns}"
        return ObjectInfo(key, size, etag)

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectMissingError:
            return False
        return True

    def get(self, key: str, bucket: str | None = None) -> bytes:
        """A whole object: only for small ones (metadata, fragments, indexes)."""
        return self._get(key, {}, bucket)

    def get_range(self, key: str, start: int, end: int, bucket: str | None = None) -> bytes:
        """Bytes [start, end) of an object, in one ranged GET; all of them, or StorageError.

        Every range the pipeline asks for lies inside its object, so a shorter answer is a
        failed read, never the end of the object: seen against the Ceph gateway, where one
        of two simultaneous GETs of the same range came back empty (and, once, three times
        in a row for one function's tries). A short answer is asked again, up to
        :data:`SHORT_READ_TRIES` GETs in all with a growing pause, and is never taken as data.
        """
        if end <= start:
            return b""
        got: list[bytes] = []

        def get() -> int:
            got[:] = [self._get(key, {"Range": f"bytes={start}-{end - 1}"}, bucket)]
            return len(got[0])

        self._whole(key, start, end, get)
        return got[0]

    def get_range_into(self, key: str, start: int, end: int, out: Any, bucket: str | None = None) -> None:
        """Write bytes [start, end) of an object at ``out``'s position (a binary file), in
        GETs of at most :data:`PART_BYTES` whose bodies are streamed in pieces; a short
        answer is asked again as in :meth:`get_range`."""
        for a in range(start, end, PART_BYTES):
            b = min(end, a + PART_BYTES)
            at = out.tell()

            def get(a: int = a, b: int = b, at: int = at) -> int:
                out.seek(at)
                return self._get_into(key, a, b, out, bucket)

            self._whole(key, a, b, get)

    def _whole(self, key: str, start: int, end: int, get: Callable[[], int]) -> None:
        """Call ``get`` (one GET of bytes [start, end) of ``key``, returning how many came)
        until all came: up to :data:`SHORT_READ_TRIES` GETs with a growing pause, then
        StorageError. A short answer is never taken as data (see :meth:`get_range`)."""
        for attempt in range(SHORT_READ_TRIES):
            n = get()
            if n == end - start:
                return
            logger.debug("short read of %s bytes %d-%d (%d bytes), GET %d of %d", key, start, end - 1, n,
                         attempt + 1, SHORT_READ_TRIES)
            if attempt + 1 < SHORT_READ_TRIES:
                time.sleep(0.1 * 2**attempt)
        raise StorageError(
            f"{self.backend} storage at {self.endpoint} returned {n} of the {end - start} bytes "
            f"asked for of {key!r} (bytes {start}-{end - 1}): a short read, {SHORT_READ_TRIES} times"
        )

    def _get_into(self, key: str, start: int, end: int, out: Any, bucket: str | None) -> int:
        """One streamed ranged GET into ``out``; the number of bytes written."""
        self._guard(key, bucket)
        got = 0
        try:
            if self.backend == "localhost" and bucket in (None, self.bucket):
                # Lithops' local backend would read the whole range into memory first.
                body: Any = open(self._local_path(key), "rb")  # noqa: SIM115 -- closed below
                body.seek(start)
                limit = end - start
            else:
                body = self._storage.get_object(bucket or self.bucket, key, stream=True,
                                                extra_get_args={"Range": f"bytes={start}-{end - 1}"})
                limit = end - start + 1  # read on: an answer longer than asked is refused too
            try:
                while got < limit and (piece := body.read(min(STREAM_PIECE, limit - got))):
                    out.write(piece)
                    got += len(piece)
            finally:
                body.close()
        except FileNotFoundError as exc:
            raise ObjectMissingError(self.bucket, key) from exc
        except Exception as exc:
            raise self._translate(exc, key, bucket=bucket) from exc
        self.counts.gets += 1
        self.counts.get_bytes += got
        return got

    def _get(self, key: str, extra: dict[str, str], bucket: str | None) -> bytes:
        self._guard(key, bucket)
        try:
            data = self._storage.get_object(bucket or self.bucket, key, extra_get_args=extra)
        except Exception as exc:
            raise self._translate(exc, key, bucket=bucket) from exc
        if isinstance(data, str):
            data = data.encode()
        self.counts.gets += 1
        self.counts.get_bytes += len(data)
        return bytes(data)

    def list(self, prefix: str) -> list[str]:
        self._guard(prefix)
        try:
            return list(self._storage.list_keys(self.bucket, prefix))
        except Exception as exc:
            raise self._translate(exc, prefix) from exc

    # -- writes ------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, atomically: readers see the old object or the new one."""
        try:
            if self.backend == "localhost":
                self._put_local(key, data)
            else:
                self._storage.put_object(self.bucket, key, data)
        except Exception as exc:
            raise self._translate(exc, key) from exc
        self.counts.puts += 1
        self.counts.put_bytes += len(data)

    def put_file(self, key: str, path: str, fingerprint: str | None = None) -> bool:
        """Stage a local file at ``key``; False when it is there already.

        With the local store the object is a symbolic link to the file (always
        refreshed, so it can never go stale); elsewhere the file is uploaded unless an
        object of its size is there and, when the caller names the file's content by a
        ``fingerprint``, the one recorded beside that object (``<key>.fingerprint``) is
        the same: a file replaced by another of the same size is uploaded again.
        """
        path = os.path.abspath(path)
        size = os.path.getsize(path)
        if self.backend == "localhost":
            dest = self._local_path(key, write=True)
            if os.path.islink(dest) and os.readlink(dest) == path:
                return False
            if os.path.lexists(dest) and not os.path.islink(dest):
                raise StorageError(
                    f"the local store already holds a file at {dest} that is not a staged input (staging "
                    "links inputs, it never copies them): it is not the pipeline's to replace; move it away, "
                    "or set storage.prefix to a key prefix of this project's own"
                )
            tmp = self._local_temp(dest)
            os.symlink(path, tmp)
            os.replace(tmp, dest)
            return True
        mark = f"{key}.fingerprint"
        try:
            if self.head(key).size == size and (fingerprint is None or self.get(mark).decode() == fingerprint):
                return False
        except ObjectMissingError:
            pass
        try:
            self._storage.upload_file(path, self.bucket, key)
        except Exception as exc:
            raise self._translate(exc, key) from exc
        self.counts.puts += 1
        self.counts.put_bytes += size
        if fingerprint is not None:
            self.put(mark, fingerprint.encode())
        return True

    def delete(self, key: str) -> None:
        self._guard(key)
        try:
            self._storage.delete_object(self.bucket, key)
        except Exception as exc:
            raise self._translate(exc, key) from exc

    # -- internals ---------------------------------------------------------------
    def _local_root(self) -> str:
        """The local store's folder for this bucket: nothing of ours is read or written elsewhere."""
        from lithops.constants import LITHOPS_TEMP_DIR

        return os.path.join(os.path.realpath(LITHOPS_TEMP_DIR), self.bucket)

    def _local_path(self, key: str, write: bool = False) -> str:
        """Where the local store keeps ``key``, proven to lie inside :meth:`_local_root`.

        For a write, the folder it goes into is created and resolved through any symbolic
        link (a linked folder could lead out of the store); the object itself may be a
        link, which is how staged inputs are kept, and is replaced, never written through.
        """
        root = self._local_root()
        path = os.path.normpath(os.path.join(root, key))
        if not key or os.path.isabs(key) or os.path.commonpath([root, path]) != root:
            raise StorageError(f"object key {key!r} would lie outside the local store {root}; "
                               "fix storage.prefix (a key prefix, not a path)")
        if write:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            real = os.path.realpath(folder)
            if os.path.commonpath([os.path.realpath(root), real]) != os.path.realpath(root):
                raise StorageError(f"folder {folder} of the local store leads outside it (to {real}): "
                                   "remove that link from the store")
        return path

    def _guard(self, key: str, bucket: str | None = None) -> None:
        """With the local store, refuse a key (or another bucket) that would lead out of it."""
        if self.backend == "localhost":
            if bucket is not None and bucket != self.bucket:
                check_bucket(bucket)
            if key:
                self._local_path(key)

    @staticmethod
    def _local_temp(dest: str) -> str:
        """A hidden name beside ``dest`` that no other writer uses."""
        folder, name = os.path.split(dest)
        return os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")

    def _put_local(self, key: str, data: bytes) -> None:
        """Write a local object under a temporary name, then rename it over ``key``."""
        dest = self._local_path(key, write=True)
        tmp = self._local_temp(dest)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        except BaseException:
            if os.path.lexists(tmp):
                os.remove(tmp)
            raise

    def check(self) -> None:
        """Fail early, with the fix in the message, if the bucket cannot be used."""
        if self.backend == "localhost":
            return  # a folder, created on the first write
        try:
            self._storage.head_bucket(self.bucket)
        except Exception as exc:
            raise self._translate(exc, "", bucket_level=True) from exc

    @property
    def endpoint(self) -> str:
        section = self._storage.config.get(self.backend) or {}
        return str(section.get("endpoint") or section.get("region") or self.backend)

    def _translate(
        self, exc: Exception, key: str, bucket_level: bool = False, bucket: str | None = None
    ) -> StorageError:
        from lithops.storage.utils import StorageNoSuchKeyError

        if isinstance(exc, StorageError):
            return exc
        text = str(exc)
        where = f"{self.backend} storage at {self.endpoint}"
        bucket = bucket or self.bucket
        if any(s in text for s in ("403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")):
            return StorageError(
                f"access to bucket {bucket!r} denied by {where}: check the access key and "
                f"secret in the '{self.backend}' section of the Lithops config"
            )
        if "NoSuchBucket" in text or (bucket_level and (isinstance(exc, StorageNoSuchKeyError) or "404" in text)):
            return StorageError(
                f"bucket {bucket!r} does not exist on {where}: create it, or set "
                "storage.bucket (or the Lithops storage_bucket) to an existing bucket"
            )
        if any(s in text for s in ("Could not connect", "Connection refused", "EndpointConnectionError",
                                   "Connect timeout", "Name or service not known")):
            return StorageError(
                f"cannot reach {where}: check that the server is running and that the "
                f"endpoint in the '{self.backend}' section of the Lithops config is right"
            )
        if isinstance(exc, StorageNoSuchKeyError) or "NoSuchKey" in text or "404" in text:
            return ObjectMissingError(bucket, key)
        return StorageError(f"{where} failed on {key!r}: {text}")


def open_lithops_storage(lithops_config: dict[str, Any]) -> Any:
    """A ``lithops.Storage`` for ``lithops_config``; a bad config becomes a StorageError."""
    import lithops  # imported here: importing lithops is slow and logs

    from functions.core.private_dirs import make_lithops_dirs_private

    make_lithops_dirs_private()

    try:
        return lithops.Storage(config=copy_lithops_config(lithops_config))
    except Exception as exc:  # Lithops raises bare exceptions for bad configs
        raise StorageError(f"cannot open object storage: {exc}") from exc


def copy_lithops_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Deep-enough copy of a Lithops config: Lithops mutates the dict it is given."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
