"""The adapter registry's HTTP API (mounted by the ingress under /v1/adapters).

    POST   /v1/adapters                   multipart: file=<peft folder as tar.gz>, name, [version, visibility, owner]
                                          or JSON {"name", "uri", [version, visibility, owner]}: import a
                                          local folder or an s3://bucket/prefix
    GET    /v1/adapters                   every adapter: latest version, versions, servable or why not
    GET    /v1/adapters/{name[@version]}  one version's manifest (`name` = the latest)
    GET    /v1/adapters/{name[@version]}/archive   the version's files as a tar.gz (for `pull`)
    DELETE /v1/adapters/{name[@version]}  one version, or every version of `name`

The store (local directory or S3) is the single source of truth: nothing here keeps
state, so any number of ingress replicas agree, and engines pick a new version up on
its first request. An upload is unpacked into a private temp folder and validated with
the same rules as serving before anything is written to the store, so a bad upload
(400/413) leaves the store exactly as it was.

Who may do what (the ingress authenticates, `deployments.access` holds the rules):
every route sees only the adapters the caller may use (others are 404, as if
missing); uploading a new version of an existing adapter, and deleting, need an
admin or the owning tenant; a tenant's upload is owned by that tenant (it may not
name another owner); an admin may set any owner, or none (the operator's).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from adapters.archive import ArchiveLimits, extract_adapter_archive
from adapters.errors import AdapterInvalid, InvalidRequest, LorafleetError, PayloadTooLarge, PermissionDenied
from adapters.manifest import hash_folder
from adapters.store import AdapterStore, StoreEntry
from adapters.validation import PICKLE_SUFFIXES, check_adapter_name
from deployments.access import can_use, not_found, require_admin_or_owner
from deployments.auth import Principal
from deployments.config import AdapterStoreConfig
from deployments.errors import to_http_error

MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries around the archive


def _error(err: LorafleetError) -> Response:
    http = to_http_error(err)
    return Response(http.body, status_code=http.status, media_type="application/json", headers=http.headers)


def _check_name(name: object) -> str:
    return check_adapter_name(name, param="name")


def _optional_str(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"`{field}` must be a string", param=field)
    return value


class AdminAPI:
    def __init__(self, store: AdapterStore, settings: AdapterStoreConfig):
        self.store = store
        self.settings = settings
        self.limits = ArchiveLimits(max_unpacked_bytes=settings.max_unpacked_bytes, max_files=settings.max_files)

    # ------------------------------------------------------------------ routes

    async def create(self, request: Request, principal: Principal) -> Response:
        staging = Path(tempfile.mkdtemp(prefix="lorafleet-upload-"))
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                fields, folder = await self._read_upload(request, staging)
                source = "upload"
            elif content_type.startswith("application/json"):
                fields = await self._read_json(request)
                _check_name(fields.get("name"))
                folder = await asyncio.to_thread(self._import, fields.get("uri"), staging)
                source = "import"
            else:
                raise InvalidRequest(
                    "send multipart/form-data (file=<adapter tar.gz>, name=...) or JSON {\"name\", \"uri\"}", param=None
                )
            name = _check_name(fields.get("name"))
            owner = await asyncio.to_thread(self._owner_for_upload, principal, name, _optional_str(fields.get("owner"), "owner"))
            manifest = await asyncio.to_thread(
                self.store.publish, folder, name,
                version=_optional_str(fields.get("version"), "version"),
                owner=owner,
                visibility=_optional_str(fields.get("visibility"), "visibility") or "public",
                source=source,
            )
            return JSONResponse(manifest.to_public(), status_code=201)
        except LorafleetError as err:
            return _error(err)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def list(self, principal: Principal) -> Response:
        entries = await asyncio.to_thread(lambda: [(name, self.store.versions(name)) for name in self.store.names()])
        data = [self._summary(name, versions) for name, versions in entries if versions and can_use(principal, versions[-1])]
        return JSONResponse({"object": "list", "data": data})

    async def show(self, model: str, principal: Principal) -> Response:
        try:
            entry = await asyncio.to_thread(self._visible_entry, model, principal)
            versions = await asyncio.to_thread(self.store.versions, entry.name)
        except LorafleetError as err:
            return _error(err)
        body = await asyncio.to_thread(self._describe, entry)
        body["versions"] = [e.version for e in versions]
        body["latest"] = versions[-1].version if versions else None
        return JSONResponse(body)

    async def delete(self, model: str, principal: Principal) -> Response:
        try:
            entry = await asyncio.to_thread(self._visible_entry, model, principal)
            require_admin_or_owner(principal, entry.owner, f"DELETE /v1/adapters/{model}")
            deleted = await asyncio.to_thread(self.store.delete, model)
        except LorafleetError as err:
            return _error(err)
        return JSONResponse({"deleted": deleted})

    async def archive(self, model: str, principal: Principal) -> Response:
        try:
            spec = await asyncio.to_thread(self.store.resolve, model, lambda entry: can_use(principal, entry))
            chunks = self.store.iter_archive(spec)  # streamed: a version is never held in memory
            first = await asyncio.to_thread(next, chunks, b"")  # an error before any byte is still a JSON error
        except LorafleetError as err:
            return _error(err)
        filename = f"{spec.name}@{spec.version}.tar.gz"
        return StreamingResponse(itertools.chain([first], chunks), media_type="application/gzip",
                                 headers={"content-disposition": f'attachment; filename="{filename}"'})

    # ----------------------------------------------------------------- helpers

    def _visible_entry(self, model: str, principal: Principal) -> StoreEntry:
        entry = self.store.entry(model)
        if not can_use(principal, entry):
            raise not_found(model)
        return entry

    def _owner_for_upload(self, principal: Principal, name: str, requested: str | None) -> str | None:
        """The new version's owner: a tenant's own tenant (naming another is refused), an
        admin's choice. A new version of an existing adapter needs its owner or an admin."""
        if not principal.is_admin and requested not in (None, principal.tenant):
            raise PermissionDenied(f"A tenant key uploads adapters owned by its own tenant ({principal.tenant!r}), not {requested!r}.")
        owner = requested if principal.is_admin else principal.tenant
        if principal.is_admin and principal.tenant == "anonymous":
            owner = requested  # auth off (the local demo): no tenant to own it
        claim = self.store.name_owner(name)
        if claim is not None:
            require_admin_or_owner(principal, claim.owner, f"publishing a new version of `{name}`")
            if principal.is_admin and requested is None:
                owner = claim.owner  # a name has one owner: a new version keeps it
        return owner

    async def _read_upload(self, request: Request, staging: Path) -> tuple[dict, Path]:
        """Read the multipart body under the compressed-size limit, then unpack its archive."""
        limit = self.settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
            raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes (adapters.max_upload_bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit + MULTIPART_OVERHEAD:
                raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes (adapters.max_upload_bytes)")
        replay = Request(request.scope, _replay(bytes(body)))
        try:
            form = await replay.form(max_files=1, max_fields=16)
        except Exception as err:  # noqa: BLE001 - starlette raises plain errors for bad multipart
            raise InvalidRequest(f"malformed multipart upload: {err}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("the upload needs a `file` part holding the adapter folder as a tar.gz", param="file")
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"the archive is larger than the limit of {limit} bytes (adapters.max_upload_bytes)")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        _check_name(fields.get("name"))  # a bad name fails before the archive is unpacked
        target = staging / "archive"
        target.mkdir()
        folder = await asyncio.to_thread(extract_adapter_archive, upload.file, target, self.limits)
        return fields, folder

    async def _read_json(self, request: Request) -> dict:
        raw = await request.body()
        if len(raw) > 64 * 1024:
            raise PayloadTooLarge("the import request body is too large")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidRequest(f"the body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        unknown = sorted(set(data) - {"name", "uri", "version", "owner", "visibility"})
        if unknown:
            raise InvalidRequest(f"unknown field(s) {unknown}", param=unknown[0])
        return data

    def _import(self, uri: object, staging: Path) -> Path:
        """Copy the adapter at `uri` into `staging` (so it cannot change while being
        validated), within the same size limits as an upload."""
        if not isinstance(uri, str) or not uri:
            raise InvalidRequest("`uri` must be a local folder or an s3://bucket/prefix", param="uri")
        target = staging / "import"
        target.mkdir()
        if uri.startswith("s3://"):
            self._import_s3(uri, target)
            return target
        source = Path(uri.removeprefix("file://"))
        if "://" in uri and not uri.startswith("file://") or not source.is_absolute():
            raise InvalidRequest("`uri` must be an absolute local folder path or an s3://bucket/prefix", param="uri")
        if not source.is_dir():
            raise InvalidRequest(f"`uri` {uri!r} is not a folder on the server", param="uri")
        total, count = 0, 0
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if path.is_symlink():
                raise AdapterInvalid(f"symbolic links are refused in an adapter folder: {relative.as_posix()}")
            if path.is_dir():
                continue
            if not path.is_file():
                raise AdapterInvalid(f"{relative.as_posix()} is not a regular file")
            if path.name.endswith(PICKLE_SUFFIXES):
                raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {relative.as_posix()}")
            count += 1
            total += path.stat().st_size
            self._check_totals(total, count)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
        return target

    def _import_s3(self, uri: str, target: Path) -> None:
        from adapters.store_s3 import make_s3_client, parse_s3_uri

        bucket, prefix = parse_s3_uri(uri)
        client = make_s3_client(self.settings.s3_endpoint_url, self.settings.s3_region)
        total, count = 0, 0
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(prefix):]
                    if not relative or relative.endswith("/"):
                        continue
                    parts = relative.split("/")
                    if ".." in parts or relative.startswith("/"):
                        raise AdapterInvalid(f"unsafe object key {obj['Key']!r}")
                    if parts[-1].endswith(PICKLE_SUFFIXES):
                        raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {relative}")
                    count += 1
                    total += obj["Size"]
                    self._check_totals(total, count)
                    path = target / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj["Key"], str(path))
        except LorafleetError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore's errors: report, never crash the ingress
            raise InvalidRequest(f"could not read {uri}: {type(err).__name__}: {err}", param="uri") from None
        if count == 0:
            raise InvalidRequest(f"nothing found at {uri}", param="uri")

    def _check_totals(self, total: int, count: int) -> None:
        if count > self.settings.max_files:
            raise PayloadTooLarge(f"the adapter holds more than {self.settings.max_files} files")
        if total > self.settings.max_unpacked_bytes:
            raise PayloadTooLarge(f"the adapter is larger than {self.settings.max_unpacked_bytes} bytes")

    def _describe(self, entry: StoreEntry) -> dict:
        """The version's manifest; a legacy flat folder gets one computed on the fly."""
        if entry.manifest is not None:
            body = entry.manifest.to_public()
        else:
            spec = entry.spec
            folder = self.store.backend.flat_folder(entry.name)
            body = {
                "id": entry.id, "name": entry.name, "version": entry.version, "owner": entry.owner, "visibility": entry.visibility,
                "source": "legacy", "files": hash_folder(folder) if folder else {},
                "base_model": spec.base_model if spec else None, "rank": spec.rank if spec else None,
                "alpha": spec.alpha if spec else None, "target_modules": list(spec.target_modules) if spec else None,
                "fingerprint": spec.fingerprint if spec else None, "created": None,
            }
            body["size"] = sum(f["size"] for f in body["files"].values())
        body["servable"] = entry.spec is not None
        body["error"] = entry.error
        return body

    @staticmethod
    def _summary(name: str, versions: list[StoreEntry]) -> dict:
        latest = versions[-1]
        m, spec = latest.manifest, latest.spec
        return {
            "id": name,
            "object": "adapter",
            "latest": latest.version,
            "versions": [e.version for e in versions],
            "servable": spec is not None,
            "error": latest.error,
            "owner": latest.owner,
            "visibility": latest.visibility,
            "rank": spec.rank if spec else (m.rank if m else None),
            "base_model": spec.base_model if spec else (m.base_model if m else None),
            "created": m.created if m else None,
            "source": m.source if m else "legacy",
        }


def _replay(body: bytes):
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
