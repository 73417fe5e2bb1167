"""Secret redaction: a value is caught in the forms a handler commonly prints it in, whole
or split by line breaks, and text without it is left as it was."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from usetl.invocation import ErrorInfo, InvocationResult
from usetl.platform.secrets import Redactor, encoded_forms, redact

VALUE = "hunter2-s3cr3t/+é'\"x"
MARK = "[secret PW]"


def _printed(value: str) -> dict[str, str]:
    data = value.encode()
    return {
        "plain": f"password={value}",
        "json": json.dumps({"password": value}),
        "json, not ASCII-only": json.dumps({"password": value}, ensure_ascii=False),
        "repr of a dict": repr({"password": value}),
        "repr of bytes": repr(data),
        "URL path": "https://example.com/" + urllib.parse.quote(value),
        "URL query": "?pw=" + urllib.parse.quote_plus(value),
        "form, nothing safe": urllib.parse.quote(value, safe=""),
        "hex": data.hex(),
        "HEX": data.hex().upper(),
        "base64": base64.b64encode(data).decode(),
        "URL-safe base64": base64.urlsafe_b64encode(data).decode(),
        "HTTP Basic": "Basic " + base64.b64encode(b"alice:" + data).decode(),
        "base64 offset 1": base64.b64encode(b"a" + data + b"tail").decode(),
        "base64 offset 2": base64.b64encode(b"ab" + data + b"t").decode(),
        "two prints, one after the other": f"it is {value[:7]}\n{value[7:]} it was\n",
        "CRLF": f"{value[:4]}\r\n{value[4:]}",
        "MIME base64, wrapped at 76": base64.encodebytes(b"x" * 50 + data).decode(),
    }


@pytest.mark.parametrize("how", list(_printed(VALUE)))
def test_a_value_printed_in_a_common_form_is_caught(how):
    text = _printed(VALUE)[how]
    cleaned = Redactor({"PW": VALUE}).clean(text)
    assert MARK in cleaned
    for form in encoded_forms(VALUE):
        assert form not in cleaned.replace("\r", "").replace("\n", "")


def test_text_without_the_value_is_left_alone_and_lines_stay():
    redactor = Redactor({"PW": VALUE})
    text = "rows: 20000\nkept: 14877\n" + "x" * 100 + "\r\n"
    assert redactor.clean(text) == text
    assert redactor.clean(f"a\n{VALUE}\nb\n") == f"a\n{MARK}\nb\n"
    split = redactor.clean(f"one {VALUE[:9]}\n{VALUE[9:]} two\nthree\n")
    assert split == f"one {MARK} two\nthree\n"  # the break inside the value goes with it


def test_short_derived_forms_are_not_redacted_but_the_value_always_is():
    assert encoded_forms("ab") == {"ab"}  # its hex and base64 are under 6 characters
    assert len(encoded_forms(VALUE)) > 10
    assert Redactor({"K": "ab"}).clean("cab") == "c[secret K]"
    assert Redactor({"K": "ab"}).clean("a\nb") == "a\nb"  # too short to look for across lines


def test_longest_value_first_and_every_part_of_an_outcome():
    values = {"OUTER": "open-sesame-123", "INNER": "sesame"}
    outcome = InvocationResult(
        value={"echo open-sesame-123": ["sesame", 3, {"k": "x sesame"}]},
        stdout="open-sesame-123\n", stderr="sesa\nme\n",
        error=ErrorInfo("ValueError", "bad open-sesame-123", "Traceback: sesame"))
    redact(outcome, values)
    assert outcome.stdout == "[secret OUTER]\n"
    assert outcome.stderr == "[secret INNER]\n"
    assert outcome.value == {"echo [secret OUTER]": ["[secret INNER]", 3,
                                                      {"k": "x [secret INNER]"}]}
    assert outcome.error.message == "bad [secret OUTER]"
    assert outcome.error.traceback == "Traceback: [secret INNER]"
