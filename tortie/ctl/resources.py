"""The resource half of tortiectl: create, apply, replace, delete, get, patch, label, validate.

Each command returns its exit code: 0 when everything it was asked to do was done, 1 when
anything failed (the output says which resources and why). Input files are validated as a
whole before the first write, so a bad document never leaves the others half-applied.
"""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from tortie.ctl.errors import CtlError
from tortie.ctl.inputs import Document, InputError, load_documents, read_sources

if TYPE_CHECKING:
    from tortie.api import KindInfo, Resource
    from tortie.datastore.client import ResourceClient

ClientFactory = Callable[[], "ResourceClient"]

# Kinds calicoctl only reads: the cluster's identity is written by the node at start-up.
READ_ONLY_KINDS = ("ClusterInformation",)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def _kind_info(name: str) -> KindInfo:
    from tortie.api import all_kinds, lookup

    info = lookup(name)
    if info is None:
        known = ", ".join(sorted(i.plural for i in all_kinds().values()))
        raise CtlError(f"resource type {name!r} is not supported; known types: {known}")
    return info


def _documents(args: Namespace) -> list[Document]:
    try:
        sources = read_sources(args.filename, args.recursive)
    except InputError as exc:
        raise CtlError(str(exc)) from None
    return load_documents(sources, args.namespace, skip_empty=args.skip_empty)


def _valid_or_report(docs: list[Document], action: str) -> list[Resource]:
    """The resources, or (when any document is invalid) a report of every problem and exit 1."""
    bad = [d for d in docs if d.errors]
    if bad:
        for d in bad:
            _err(f"{d.source}: {d.description} is invalid:")
            for e in d.errors:
                _err(f"  {e}")
        raise CtlError(
            f"Failed to {action}: {len(bad)} of {len(docs)} resource(s) invalid; "
            f"nothing was {_past(action)}"
        )
    return [d.resource for d in docs if d.resource is not None]


def _past(action: str) -> str:
    return {"apply": "applied", "create": "created", "replace": "replaced"}.get(
        action, action + "d"
    )


def _summary(action: str, done: list[Resource], failed: int, skipped: int = 0) -> int:
    kinds = Counter(r.KIND for r in done)
    what = f"'{next(iter(kinds))}' " if len(kinds) == 1 else ""
    if done:
        _out(f"Successfully {_past(action)} {len(done)} {what}resource(s)")
    if skipped:
        _out(f"Skipped {skipped} resource(s)")
    if failed:
        _err(f"Failed to {action} {failed} resource(s)")
        return 1
    if not done and not skipped:
        _out(f"No resources to {action}")
    return 0


# --- create / apply / replace ---------------------------------------------------------------


def cmd_write(args: Namespace, client_factory: ClientFactory) -> int:
    """create, apply and replace share everything but the operation."""
    from tortie.datastore.client import ResourceError, ResourceExists

    action: str = args.command
    resources = _valid_or_report(_documents(args), action)
    _guard_writes(resources, action)
    client = client_factory()
    done: list[Resource] = []
    failed = skipped = 0
    for res in resources:
        try:
            if action == "create":
                client.create(res)
            elif action == "replace":
                client.update(res)
            else:
                client.apply(res)
            done.append(res)
            if len(resources) > 1:
                _out(f"{_past(action)} {res.ref}")
        except ResourceExists as exc:
            if action == "create" and args.skip_exists:
                skipped += 1
                _out(f"skipped {res.ref}: already exists")
            else:
                failed += 1
                _err(f"Failed to {action} {res.ref}: {exc}")
        except ResourceError as exc:
            failed += 1
            _err(f"Failed to {action} {res.ref}: {exc}")
    return _summary(action, done, failed, skipped)


def _guard_writes(resources: list[Resource], action: str) -> None:
    """Writes Calico refuses outright (checked before any write)."""
    for res in resources:
        if res.KIND in READ_ONLY_KINDS:
            raise CtlError(
                f"Failed to {action}: {res.ref}: {res.KIND} is managed by tortie-node and "
                "cannot be written with tortiectl"
            )
        if res.KIND == "Tier" and res.name == "default":
            spec = res.spec  # type: ignore[attr-defined]
            if spec.order not in (None, 1_000_000.0) or spec.default_action not in (None, "Deny"):
                raise CtlError(
                    f"Failed to {action}: the default tier's order and defaultAction cannot be "
                    "changed"
                )


# --- delete -----------------------------------------------------------------------------------


def cmd_delete(args: Namespace, client_factory: ClientFactory) -> int:
    from tortie.datastore.client import ResourceError, ResourceNotFound

    targets: list[tuple[KindInfo, str, str | None, str | None]] = []
    if args.filename:
        for res in _valid_or_report(_documents(args), "delete"):
            info = _kind_info(res.KIND)
            targets.append((info, res.name, res.namespace, res.metadata.resource_version))
    else:
        if not args.kind or not args.names:
            raise CtlError("delete needs a resource type and name(s), or --filename", code=2)
        info = _kind_info(args.kind)
        ns = (args.namespace or "default") if info.namespaced else None
        targets = [(info, n, ns, None) for n in args.names]
    client = client_factory()
    done: list[Resource] = []
    failed = skipped = 0
    for info, name, ns, rv in targets:
        if info.kind in READ_ONLY_KINDS:
            failed += 1
            _err(f"Failed to delete {info.kind}({name}): it is managed by tortie-node")
            continue
        if info.kind == "Tier" and name == "default":
            failed += 1
            _err("Failed to delete Tier(default): the default tier cannot be deleted")
            continue
        try:
            done.append(client.delete(info.kind, name, ns, rv))
        except ResourceNotFound as exc:
            if args.skip_not_exists:
                skipped += 1
            else:
                failed += 1
                _err(f"Failed to delete: {exc}")
        except ResourceError as exc:
            failed += 1
            _err(f"Failed to delete: {exc}")
    return _summary("delete", done, failed, skipped)


# --- get ---------------------------------------------------------------------------------------


def cmd_get(args: Namespace, client_factory: ClientFactory) -> int:
    from tortie.ctl.output import OutputError, render
    from tortie.datastore.client import ResourceError

    if args.filename:
        wanted = [
            (_kind_info(r.KIND), r.name, r.namespace)
            for r in _valid_or_report(_documents(args), "get")
        ]
    else:
        if not args.kind:
            raise CtlError("get needs a resource type, or --filename", code=2)
        info = _kind_info(args.kind)
        ns = (args.namespace or "default") if info.namespaced else None
        wanted = [(info, n, ns) for n in args.names] if args.names else []
    client = client_factory()
    failed = 0
    groups: dict[str, tuple[KindInfo, list[Resource]]] = {}
    revision = None
    if wanted:
        for info, name, ns in wanted:
            try:
                res = client.get(info.kind, name, ns)
            except ResourceError as exc:
                failed += 1
                _err(f"Failed to get resources: {exc}")
                continue
            groups.setdefault(info.kind, (info, []))[1].append(res)
    else:
        info = _kind_info(args.kind)
        ns = None if (args.all_namespaces or not info.namespaced) else (args.namespace or "default")
        try:
            listing = client.list(info.kind, ns)
        except ResourceError as exc:
            raise CtlError(f"Failed to list {info.plural}: {exc}") from None
        groups[info.kind] = (info, listing.items)
        revision = listing.revision
    single = bool(wanted) and len(wanted) == 1
    for info, items in groups.values():
        if args.export:
            items = [_export(r) for r in items]
        try:
            text = render(
                info,
                items,
                args.output,
                all_namespaces=args.all_namespaces,
                as_list=not single,
                revision=revision,
            )
        except OutputError as exc:
            raise CtlError(str(exc), code=2) from None
        if items or args.output in ("yaml", "json") or not wanted:
            sys.stdout.write(text)
    return 1 if failed else 0


def _export(res: Resource) -> Resource:
    from tortie.api.base import SERVER_SET_METADATA

    out = res.copy()
    for attr in SERVER_SET_METADATA:
        setattr(out.metadata, attr, None)
    return out


# --- patch and label -------------------------------------------------------------------------


def _read_modify_write(
    client: ResourceClient,
    info: KindInfo,
    name: str,
    ns: str | None,
    change: Callable[[dict], dict],
) -> Resource:
    """Get, change the dict, validate and write back conditionally; retry on conflicts."""
    from tortie.api import ValidationError, validate
    from tortie.datastore.client import ResourceConflict

    for _ in range(5):
        current = client.get(info.kind, name, ns)
        data = change(current.to_dict())
        meta = data.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise CtlError("the patch must leave metadata a mapping")
        for fixed, value in (("name", name), ("namespace", ns)):
            if value is not None and meta.get(fixed) != value:
                raise CtlError(f"a patch cannot change metadata.{fixed}")
        meta["resourceVersion"] = current.metadata.resource_version
        try:
            updated = validate(data)
        except ValidationError as exc:
            raise CtlError(
                f"the result is not a valid {info.kind}:\n"
                + "\n".join(f"  {e}" for e in exc.errors)
            ) from None
        try:
            return client.update(updated)
        except ResourceConflict:
            continue
    raise CtlError(f"{info.kind}({name}) keeps changing; try again")


def cmd_patch(args: Namespace, client_factory: ClientFactory) -> int:
    from tortie.ctl.patch import PatchError, json_patch, merge_patch
    from tortie.datastore.client import ResourceError

    info = _kind_info(args.kind)
    ns = (args.namespace or "default") if info.namespaced else None
    try:
        patch = json.loads(args.patch)
    except json.JSONDecodeError:
        try:
            import yaml

            patch = yaml.safe_load(args.patch)
        except yaml.YAMLError as exc:
            raise CtlError(f"the patch is neither JSON nor YAML: {exc}", code=2) from None

    def change(data: dict) -> dict:
        try:
            if args.type == "json":
                return json_patch(data, patch)
            if not isinstance(patch, dict):
                raise PatchError("a merge patch must be a mapping")
            return merge_patch(data, patch)
        except PatchError as exc:
            raise CtlError(f"Failed to patch {info.kind}({args.name}): {exc}") from None

    try:
        _read_modify_write(client_factory(), info, args.name, ns, change)
    except ResourceError as exc:
        raise CtlError(f"Failed to patch: {exc}") from None
    _out(f"Successfully patched 1 '{info.kind}' resource")
    return 0


def cmd_label(args: Namespace, client_factory: ClientFactory) -> int:
    from tortie.datastore.client import ResourceError

    info = _kind_info(args.kind)
    ns = (args.namespace or "default") if info.namespaced else None
    key, eq, value = args.label.partition("=")
    if args.remove and eq:
        raise CtlError("--remove takes a label key, not key=value", code=2)
    if not args.remove and not eq:
        raise CtlError("give the label as key=value (or a key with --remove)", code=2)

    def change(data: dict) -> dict:
        labels = data.setdefault("metadata", {}).setdefault("labels", {})
        if args.remove:
            if key not in labels:
                raise CtlError(f"label {key} is not set on {info.plural} {args.name}")
            del labels[key]
        else:
            if key in labels and not args.overwrite and labels[key] != value:
                raise CtlError(
                    f"label {key} already has a value ({labels[key]}) on {info.plural} "
                    f"{args.name}; use --overwrite to change it"
                )
            labels[key] = value
        return data

    try:
        _read_modify_write(client_factory(), info, args.name, ns, change)
    except ResourceError as exc:
        raise CtlError(f"Failed to label: {exc}") from None
    if args.remove:
        _out(f"Successfully removed label {key} from {info.plural} {args.name}")
    else:
        _out(f"Successfully set label {key} on {info.plural} {args.name}")
    return 0


# --- validate ----------------------------------------------------------------------------------


def cmd_validate(args: Namespace, client_factory: ClientFactory) -> int:
    docs = _documents(args)
    bad = 0
    for d in docs:
        if d.errors:
            bad += 1
            _err(f"{d.source}: {d.description} is invalid:")
            for e in d.errors:
                _err(f"  {e}")
        elif d.resource is not None:
            _out(f"{d.source}: {d.resource.ref} is valid")
    if bad:
        _err(f"{bad} of {len(docs)} resource(s) invalid")
        return 1
    _out(f"All {len(docs)} resource(s) valid")
    return 0
