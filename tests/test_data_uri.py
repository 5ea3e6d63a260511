"""The data-URI check of inline `content`: the grammar it has always had, in memory that does not grow with the data."""

from __future__ import annotations

import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refactor_mcp.models import check_data_uri

GRAMMAR = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[^;,]*)*;base64,"
    r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
)
"""Padded base64 as a regular expression says it most plainly (and as the check once did, at 40 bytes per character)."""


def accepted(value: str) -> bool:
    try:
        check_data_uri(value)
    except ValueError:
        return False
    return True


@settings(max_examples=3000)
@given(
    st.sampled_from(["data:text/plain;base64,", "data:a/b;x=1;base64,", "data:text;base64,", "data:a/b;base64"]),
    st.text(alphabet="Aa0+/=-_ \n", max_size=14),
)
def test_the_check_accepts_exactly_padded_base64(header: str, data: str) -> None:
    value = header + data
    assert accepted(value) == (GRAMMAR.fullmatch(value) is not None), value


@pytest.mark.parametrize("data", ["", "QQ==", "QUI=", "QUJD", "QUJDRA==", "QUJDREU=", "QUJDREVG"])
def test_padded_base64_of_every_length_is_accepted(data: str) -> None:
    assert accepted("data:text/plain;base64," + data)


@pytest.mark.parametrize("data", ["Q", "QQ", "QUI", "QQ=", "Q===", "QUJDR", "QUJD=", "QUJD====", "QU=I", "QUJD\n"])
def test_truncated_or_misplaced_padding_is_refused(data: str) -> None:
    assert not accepted("data:text/plain;base64," + data)


def test_checking_8_mib_takes_no_memory_that_grows_with_it() -> None:
    value = "data:application/octet-stream;base64," + "QUJD" * (2 * 1024 * 1024)
    tracemalloc.start()
    try:
        check_data_uri(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak:,} bytes to check {len(value):,} characters"
