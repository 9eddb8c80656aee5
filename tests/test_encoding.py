"""Decoding pages: declared encodings first, detection only for undeclared pages."""

from __future__ import annotations

import pytest

from crawler.encoding import decode_html

CAFE = "Le café « Über » – “quoted” naïve"
FRENCH = ("Le café « Über » a fermé ses portes après soixante années : les habitués, émus, évoquent une "
          "époque révolue où l’on débattait de politique à chaque table. ") * 6
RUSSIAN = "Правительство объявило о новых мерах поддержки экономики и промышленности страны. " * 8


@pytest.mark.parametrize(
    ("body", "content_type", "expected_text", "expected_how"),
    [
        (CAFE.encode("cp1252"), "text/html; charset=windows-1252", CAFE, "header"),
        (CAFE.encode("utf-8"), "text/html; charset=utf-8", CAFE, "header"),
        (b'<meta charset="iso-8859-15">' + "caf\u00e9".encode("iso-8859-15"), "text/html", "caf\u00e9", "meta"),
        (b"\xef\xbb\xbf" + CAFE.encode("utf-8"), "text/html; charset=cp1252", CAFE, "bom"),
        (CAFE.encode("utf-8"), "text/html", CAFE, "utf-8"),
        (FRENCH.encode("cp1252"), "text/html; charset=x-unknown-charset", FRENCH, "detected"),
        (RUSSIAN.encode("cp1251"), None, RUSSIAN, "detected"),
        (FRENCH.encode("cp1252"), "text/html; charset=utf-8", FRENCH, "detected"),  # mislabelled
    ],
)
def test_decode_html(body: bytes, content_type: str | None, expected_text: str, expected_how: str) -> None:
    text, _encoding, how = decode_html(body, content_type)
    assert expected_text in text
    assert how == expected_how


def test_invalid_bytes_never_raise() -> None:
    text, encoding, _ = decode_html(b"<p>ok \xff\xfe\xfa broken</p>", "text/html; charset=utf-8")
    assert "ok" in text and "broken" in text
    assert encoding
