"""Reading a `multipart/form-data` body (a file upload) in memory, with python-multipart.

Batch input files are JSONL the gateway must read anyway (to attribute, check and rename
the models in every line), so the parts are collected whole rather than spooled to disk; the
caller bounds the body size first."""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["Part", "parse_multipart"]


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Part]:
    """Form parts by field name. Raises ValueError for a body that is not multipart."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ValueError("expected a multipart/form-data body with a boundary")
    parts: dict[str, Part] = {}
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        value.append(buf[start:end])

    def on_header_end() -> None:
        headers[b"".join(field).lower()] = b"".join(value)
        field.clear()
        value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        ctype = headers.get(b"content-type")
        parts[name] = Part(
            name,
            filename.decode("utf-8", "replace") if filename is not None else None,
            ctype.decode("latin-1") if ctype is not None else None,
            b"".join(data),
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(raw)
    parser.finalize()
    return parts
