"""The adapter registry's HTTP API (mounted under /v1/adapters).

    POST   /v1/adapters                   multipart: file=<peft folder as tar.gz>, name, [version, visibility, owner]
                                          or (admins only) JSON {"name", "uri", [version, visibility, owner]}:
                                          import a folder or an s3://bucket/prefix under `adapters.import_roots`
    GET    /v1/adapters                   every adapter: latest version, versions, servable or why not
    GET    /v1/adapters/{name[@version]}  one version's manifest (`name` = the latest)
    GET    /v1/adapters/{name[@version]}/archive   the version's files as a tar.gz (for `pull`)
    DELETE /v1/adapters/{name[@version]}  one version, or every version of `name`

The store (local directory or S3) is the single source of truth: nothing here keeps
state, so any number of ingress replicas agree, and engines pick a new version up on
its first request. An upload is spooled to a private temp folder on disk (never held
in memory), unpacked there with streaming limits and validated with the same rules as
serving before anything is written to the store, so a bad upload (400/413) leaves the
store exactly as it was. Uploads and imports run at most `adapters.max_concurrent_uploads`
at a time per ingress replica (503 + Retry-After beyond), and every slow step (unpacking,
hashing, copying, deleting) runs off the event loop.

Who may do what (the ingress authenticates, `deployments.tenancy.access` holds the rules):
every route sees only the adapter versions the caller may use (others are 404, as if
missing, and never listed); uploading a new version of an existing adapter, and
deleting, need an admin or the owning tenant; a tenant's upload is owned by that tenant
(it may not name another owner); importing by URI is an admin's tool, limited to the
configured import roots and never reading inside the store itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapters.archive import ArchiveLimits, extract_adapter_archive
from adapters.errors import AdapterInvalid, LorafleetError, NameTaken, PayloadTooLarge
from adapters.manifest import hash_folder
from adapters.store import AdapterStore, StoreEntry
from adapters.validation import PICKLE_SUFFIXES, check_adapter_name
from deployments.api.body import read_capped, replay_file, spool_capped
from deployments.api.models import visible_entry
from deployments.config import AdapterStoreConfig
from deployments.errors import InvalidRequest, Overloaded, PermissionDenied
from deployments.tenancy.access import can_use, require_admin, require_admin_or_owner
from deployments.tenancy.admission import AdmissionGate
from deployments.tenancy.keys import Principal

MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries around the archive
MAX_IMPORT_BODY = 64 * 1024
IMPORT_FIELDS = {"name", "uri", "version", "owner", "visibility"}


def _check_name(name: object) -> str:
    return check_adapter_name(name, param="name")


def _optional_str(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"`{field}` must be a string", param=field)
    return value


class Registry:
    def __init__(self, store: AdapterStore, settings: AdapterStoreConfig, uploads: AdmissionGate, *,
                 body_timeout_s: float = 30.0):
        self.store = store
        self.settings = settings
        self.uploads = uploads
        self.body_timeout_s = body_timeout_s
        self.limits = ArchiveLimits(max_unpacked_bytes=settings.max_unpacked_bytes, max_files=settings.max_files)

    # ------------------------------------------------------------------ routes

    async def create(self, request: Request, principal: Principal) -> dict:
        content_type = request.headers.get("content-type", "")
        if not (content_type.startswith("multipart/form-data") or content_type.startswith("application/json")):
            raise InvalidRequest("send multipart/form-data (file=<adapter tar.gz>, name=...) or JSON {\"name\", \"uri\"}")
        if content_type.startswith("application/json"):
            require_admin(principal, "importing an adapter by URI (POST /v1/adapters with `uri`)")
        slot = self.uploads.try_enter()
        if slot is None:
            raise Overloaded(f"This server is processing {self.uploads.limit} adapter uploads already "
                             "(adapters.max_concurrent_uploads); retry shortly.", retry_after_s=2)
        staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="lorafleet-upload-"))
        try:
            if content_type.startswith("multipart/form-data"):
                fields, folder = await self._read_upload(request, staging, principal)
                source = "upload"
            else:
                fields = await self._read_import(request)
                name = _check_name(fields.get("name"))
                await asyncio.to_thread(self._owner_for_upload, principal, name, _optional_str(fields.get("owner"), "owner"))
                folder = await asyncio.to_thread(self._import, fields.get("uri"), staging)
                source = "import"
            name = _check_name(fields.get("name"))
            owner = await asyncio.to_thread(self._owner_for_upload, principal, name, _optional_str(fields.get("owner"), "owner"))
            manifest = await asyncio.to_thread(
                self.store.publish, folder, name,
                version=_optional_str(fields.get("version"), "version"),
                owner=owner,
                visibility=_optional_str(fields.get("visibility"), "visibility") or "public",
                source=source,
            )
            return manifest.to_public()
        finally:
            slot.release()
            await asyncio.to_thread(shutil.rmtree, staging, True)

    async def list(self, principal: Principal) -> dict:
        def summaries() -> list[dict]:
            data = []
            for name in self.store.names():
                visible = [v for v in self.store.versions(name) if can_use(principal, v)]
                if visible:
                    data.append(self._summary(name, visible))
            return data

        return {"object": "list", "data": await asyncio.to_thread(summaries)}

    async def show(self, model: str, principal: Principal) -> dict:
        def describe() -> dict:
            entry = self._visible_entry(model, principal)
            visible = [v.version for v in self.store.versions(entry.name) if can_use(principal, v)]
            body = self._describe(entry)
            body["versions"] = visible
            body["latest"] = visible[-1] if visible else None
            return body

        return await asyncio.to_thread(describe)

    async def delete(self, model: str, principal: Principal) -> dict:
        def remove() -> list[str]:
            entry = self._visible_entry(model, principal)
            require_admin_or_owner(principal, entry.owner, f"DELETE /v1/adapters/{model}")
            return self.store.delete(model)

        return {"deleted": await asyncio.to_thread(remove)}

    async def archive(self, model: str, principal: Principal) -> Response:
        def servable():
            entry = visible_entry(self.store, model, principal)
            if entry.spec is None:
                raise AdapterInvalid(f"The adapter `{model}` is not servable: {entry.error}", param="model")
            return entry.spec

        spec = await asyncio.to_thread(servable)
        chunks = self.store.iter_archive(spec)  # streamed and verified: a version is never held in memory
        first = await asyncio.to_thread(next, chunks, b"")  # an error before any byte is still a JSON error
        filename = f"{spec.name}@{spec.version}.tar.gz"
        return StreamingResponse(itertools.chain([first], chunks), media_type="application/gzip",
                                 headers={"content-disposition": f'attachment; filename="{filename}"'})

    # ----------------------------------------------------------------- helpers

    def _visible_entry(self, model: str, principal: Principal) -> StoreEntry:
        return visible_entry(self.store, model, principal)

    def _owner_for_upload(self, principal: Principal, name: str, requested: str | None) -> str | None:
        """The new version's owner: a tenant's own tenant (naming another is refused), an
        admin's choice. A new version of an existing adapter needs its owner or an admin;
        whether the existing versions are public or private, the refusal is the same."""
        if not principal.is_admin and requested not in (None, principal.tenant):
            raise PermissionDenied(f"A tenant key uploads adapters owned by its own tenant ({principal.tenant!r}), not {requested!r}.")
        owner = requested if principal.is_admin else principal.tenant
        if principal.is_admin and principal.tenant == "anonymous":
            owner = requested  # auth off (the local demo): no tenant to own it
        claim = self.store.name_owner(name)
        if claim is not None:
            if not (principal.is_admin or (claim.owner is not None and claim.owner == principal.tenant)):
                raise NameTaken(name, owner=claim.owner)  # one answer, whoever owns it and however visible
            if principal.is_admin and requested is None:
                owner = claim.owner  # a name has one owner: a new version keeps it
        return owner

    async def _read_upload(self, request: Request, staging: Path, principal: Principal) -> tuple[dict, Path]:
        """Spool the multipart body to disk under the compressed-size limit, parse it from
        there, check the name and the right to publish it, then unpack its archive."""
        limit = self.settings.max_upload_bytes
        spooled = staging / "body"
        await spool_capped(request, spooled, limit=limit + MULTIPART_OVERHEAD,
                           deadline_s=self.settings.upload_timeout_s, setting="adapters.max_upload_bytes")
        receive = replay_file(spooled)
        try:
            form = await Request(request.scope, receive).form(max_files=1, max_fields=16)
        except Exception as err:  # noqa: BLE001 - starlette raises plain errors for bad multipart
            raise InvalidRequest(f"malformed multipart upload: {type(err).__name__}") from None
        finally:
            receive.close()
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("the upload needs a `file` part holding the adapter folder as a tar.gz", param="file")
            if upload.size is not None and upload.size > limit:
                raise PayloadTooLarge(f"the archive is larger than the limit of {limit} bytes (adapters.max_upload_bytes)")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            name = _check_name(fields.get("name"))  # a bad name fails before the archive is unpacked
            await asyncio.to_thread(self._owner_for_upload, principal, name, _optional_str(fields.get("owner"), "owner"))
            target = staging / "archive"
            target.mkdir()
            folder = await asyncio.to_thread(extract_adapter_archive, upload.file, target, self.limits)
        finally:
            await form.close()
        await asyncio.to_thread(os.unlink, spooled)
        return fields, folder

    async def _read_import(self, request: Request) -> dict:
        raw = await read_capped(request, limit=MAX_IMPORT_BODY, deadline_s=self.body_timeout_s,
                                setting="the import request's limit")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidRequest(f"the body is not valid JSON: {err}") from None
        except RecursionError:
            raise InvalidRequest("the body is nested too deeply") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object")
        unknown = sorted(set(data) - IMPORT_FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown field(s) {unknown}", param=unknown[0])
        return data

    def _import(self, uri: object, staging: Path) -> Path:
        """Copy the adapter at `uri` into `staging` (so it cannot change while being
        validated), within the same size limits as an upload. Only from an import root,
        never from inside the store; a refused `uri` gets one answer whether or not the
        path exists, so the API reveals nothing about the server's files."""
        if not isinstance(uri, str) or not uri:
            raise InvalidRequest("`uri` must be a folder path or an s3://bucket/prefix under adapters.import_roots", param="uri")
        target = staging / "import"
        target.mkdir()
        if uri.startswith("s3://"):
            self._import_s3(self._allowed_s3(uri), target)
            return target
        source = self._allowed_folder(uri)
        if not source.is_dir():
            raise InvalidRequest(f"nothing to import at {uri!r} (not a folder)", param="uri")
        total, count = 0, 0
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            count += 1  # folders count too: a tree of empty folders is not free
            if path.is_symlink():
                raise AdapterInvalid(f"symbolic links are refused in an adapter folder: {relative.as_posix()}")
            self._check_totals(total, count)
            if path.is_dir():
                continue
            if not path.is_file():
                raise AdapterInvalid(f"{relative.as_posix()} is not a regular file")
            if path.name.endswith(PICKLE_SUFFIXES):
                raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {relative.as_posix()}")
            total += path.stat().st_size
            self._check_totals(total, count)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
        return target

    def _refused_uri(self, uri: str) -> PermissionDenied:
        return PermissionDenied(
            f"`uri` {uri!r} is not under an import root of this server (adapters.import_roots), or is inside the "
            "adapter store itself; publish from an allowed folder or bucket prefix.", param="uri")

    def _allowed_folder(self, uri: str) -> Path:
        raw = uri.removeprefix("file://")
        if "://" in raw or not Path(raw).is_absolute():
            raise InvalidRequest("`uri` must be an absolute folder path or an s3://bucket/prefix", param="uri")
        path = Path(os.path.realpath(raw))  # symlinks resolved before the containment check
        roots = [Path(os.path.realpath(r)) for r in self.settings.import_roots if not r.startswith("s3://")]
        store_root = getattr(self.store, "root", None)
        if store_root is not None and path.is_relative_to(Path(os.path.realpath(store_root))):
            raise self._refused_uri(uri)
        if not any(path.is_relative_to(root) for root in roots):
            raise self._refused_uri(uri)
        return path

    def _allowed_s3(self, uri: str) -> str:
        from adapters.store_s3 import parse_s3_uri

        def key(u: str) -> str:  # "bucket/prefix/" (always ends with "/"): prefix matching by whole segments
            bucket, prefix = parse_s3_uri(u)
            return f"{bucket}/{prefix}"

        try:
            wanted = key(uri)
        except ValueError:
            raise InvalidRequest("`uri` must be an s3://bucket/prefix", param="uri") from None
        if ".." in wanted.split("/"):
            raise self._refused_uri(uri)
        roots = [key(r) for r in self.settings.import_roots if r.startswith("s3://")]
        inside_store = self.settings.uri.startswith("s3://") and wanted.startswith(key(self.settings.uri))
        if inside_store or not any(wanted.startswith(root) for root in roots):
            raise self._refused_uri(uri)
        return uri

    def _import_s3(self, uri: str, target: Path) -> None:
        from adapters.store_s3 import make_s3_client, parse_s3_uri

        bucket, prefix = parse_s3_uri(uri)
        client = make_s3_client(self.settings.s3_endpoint_url, self.settings.s3_region)
        total, count = 0, 0
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(prefix):]
                    count += 1
                    self._check_totals(total, count)
                    if not relative or relative.endswith("/"):
                        continue
                    parts = relative.split("/")
                    if ".." in parts or relative.startswith("/"):
                        raise AdapterInvalid(f"unsafe object key {obj['Key']!r}")
                    if parts[-1].endswith(PICKLE_SUFFIXES):
                        raise AdapterInvalid(f"pickle weight files are refused (use safetensors): {relative}")
                    total += obj["Size"]
                    self._check_totals(total, count)
                    path = target / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, obj["Key"], str(path))
        except LorafleetError:
            raise
        except Exception as err:  # noqa: BLE001 - botocore's errors: report, never crash the ingress
            raise InvalidRequest(f"could not read {uri}: {type(err).__name__}", param="uri") from None
        if count == 0:
            raise InvalidRequest(f"nothing to import at {uri!r}", param="uri")

    def _check_totals(self, total: int, count: int) -> None:
        if count > self.settings.max_files:
            raise PayloadTooLarge(f"the adapter holds more than {self.settings.max_files} files and folders (adapters.max_files)")
        if total > self.settings.max_unpacked_bytes:
            raise PayloadTooLarge(f"the adapter is larger than {self.settings.max_unpacked_bytes} bytes (adapters.max_unpacked_bytes)")

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
        body["base"] = entry.spec.base if entry.spec else None  # the served base it is bound to
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
            "base": spec.base if spec else None,  # the served base it is bound to (None: not servable)
            "base_model": spec.base_model if spec else (m.base_model if m else None),
            "created": m.created if m else None,
            "source": m.source if m else "legacy",
        }

