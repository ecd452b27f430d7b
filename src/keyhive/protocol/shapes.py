"""Request parsing and response encoding driven by botocore's own KMS model.

Shapes, enums, lengths, ranges and patterns come from
``botocore/data/kms/2014-11-01/service-2.json``, so they are never retyped here.
A wrong JSON type is a SerializationException; a value outside the model's
constraints is a ValidationException in AWS's "N validation errors detected"
shape.  Values of sensitive shapes (plaintexts) are never echoed in messages.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from keyhive.errors import (
    SerializationException,
    UnknownOperationException,
    ValidationException,
)

_B64 = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("kms")


@functools.cache
def operation_model(name: str) -> OperationModel:
    try:
        return service_model().operation_model(name)
    except Exception:  # botocore raises OperationNotFoundError
        raise UnknownOperationException() from None


def parse_request(operation: str, body: bytes) -> dict[str, Any]:
    """The request's members as Python values (blobs decoded), or an AWS error."""
    shape = operation_model(operation).input_shape
    try:
        doc = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise SerializationException("Malformed JSON in the request body") from None
    if not isinstance(doc, dict):
        raise SerializationException("Start of list found where not expected")
    problems: list[str] = []
    value = _structure(shape, doc, "", problems) if shape is not None else {}
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationException(f"{count} validation {noun} detected: " + "; ".join(problems))
    return value


def _field(path: str, name: str) -> str:
    member = name[:1].lower() + name[1:]
    return f"{path}.{member}" if path else member


def _structure(shape: Any, doc: dict[str, Any], path: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in shape.required_members:
        if doc.get(name) is None:
            problems.append(f"Value null at '{_field(path, name)}' failed to satisfy constraint: Member must not be null")
    for name, raw in doc.items():
        member = shape.members.get(name)
        if member is None or raw is None:
            continue  # unknown members are ignored, as AWS does
        out[name] = _value(member, raw, _field(path, name), problems)
    return out


def _value(shape: Shape, raw: Any, path: str, problems: list[str]) -> Any:
    kind = shape.type_name
    if kind == "string":
        _expect(raw, str, "STRING_VALUE", path)
        _check_string(shape, raw, path, problems)
        return raw
    if kind == "blob":
        _expect(raw, str, "STRING_VALUE", path)
        data = _b64decode(raw, path)
        _check_length(shape, len(data), None, path, problems)
        return data
    if kind in ("integer", "long"):
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise SerializationException(f"NUMBER_VALUE expected at '{path}'")
        _check_range(shape, raw, path, problems)
        return raw
    if kind == "boolean":
        _expect(raw, bool, "BOOLEAN_VALUE", path)
        return raw
    if kind == "list":
        _expect(raw, list, "Start of list", path)
        _check_length(shape, len(raw), None, path, problems)
        return [_value(shape.member, item, f"{path}.{i + 1}.member", problems) for i, item in enumerate(raw)]  # type: ignore[attr-defined]
    if kind == "map":
        _expect(raw, dict, "Start of structure or map", path)
        return {
            _value(shape.key, k, f"{path}.key", problems): _value(shape.value, v, f"{path}.{k}", problems)  # type: ignore[attr-defined]
            for k, v in raw.items()
        }
    if kind == "structure":
        _expect(raw, dict, "Start of structure or map", path)
        return _structure(shape, raw, path, problems)
    if kind == "timestamp":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise SerializationException(f"NUMBER_VALUE expected at '{path}'")
        return float(raw)
    raise SerializationException(f"Unsupported value at '{path}'")


def _expect(raw: Any, kind: type, wire_name: str, path: str) -> None:
    if not isinstance(raw, kind) or (kind is not bool and isinstance(raw, bool)):
        raise SerializationException(f"{wire_name} expected at '{path}'")
    if kind is str and not _is_unicode(raw):
        raise SerializationException(f"Invalid UTF-8 in the string at '{path}'")


def _is_unicode(raw: str) -> bool:
    """False if JSON escapes smuggled in a lone surrogate, which no UTF-8 can carry."""
    try:
        raw.encode()
    except UnicodeEncodeError:
        return False
    return True


def _b64decode(raw: str, path: str) -> bytes:
    encoded = raw.encode()
    if len(encoded) % 4 or not _B64.match(encoded):
        raise SerializationException(f"Invalid base64 value at '{path}'")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationException(f"Invalid base64 value at '{path}'") from None


def _shown(shape: Shape, raw: str) -> str:
    return "" if shape.metadata.get("sensitive") else f" '{raw}'"


def _check_string(shape: Shape, raw: str, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    shown = _shown(shape, raw)
    enum = meta.get("enum")
    if enum and raw not in enum:
        problems.append(
            f"Value{shown} at '{path}' failed to satisfy constraint: Member must satisfy enum value set: [{', '.join(enum)}]"
        )
        return
    _check_length(shape, len(raw), raw, path, problems)
    pattern = meta.get("pattern")
    if pattern and raw and not _compiled(pattern).fullmatch(raw):
        problems.append(
            f"Value{shown} at '{path}' failed to satisfy constraint: Member must satisfy regular expression pattern: {pattern}"
        )


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # Java-style patterns from the model: strip anchors, Python's re understands \uXXXX.
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


def _check_length(shape: Shape, length: int, raw: str | None, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    shown = "" if raw is None else _shown(shape, raw)
    if "min" in meta and length < meta["min"]:
        problems.append(
            f"Value{shown} at '{path}' failed to satisfy constraint: Member must have length greater than or equal to {meta['min']}"
        )
    elif "max" in meta and length > meta["max"]:
        problems.append(
            f"Value{shown} at '{path}' failed to satisfy constraint: Member must have length less than or equal to {meta['max']}"
        )


def _check_range(shape: Shape, raw: int, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    if "min" in meta and raw < meta["min"]:
        problems.append(
            f"Value '{raw}' at '{path}' failed to satisfy constraint: Member must have value greater than or equal to {meta['min']}"
        )
    elif "max" in meta and raw > meta["max"]:
        problems.append(
            f"Value '{raw}' at '{path}' failed to satisfy constraint: Member must have value less than or equal to {meta['max']}"
        )


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_response(result: dict[str, Any]) -> bytes:
    """JSON 1.1 body: bytes become base64, timestamps are already epoch seconds."""
    return json.dumps({k: v for k, v in result.items() if v is not None}, default=_default).encode()
