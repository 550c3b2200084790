"""Tests for gateway.keys.format: generation, parsing, checksum, display prefix, KEY_ID refs."""

from __future__ import annotations

import re
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys.format import (
    BASE62,
    CHECKSUM_LENGTH,
    ID_LENGTH,
    SECRET_LENGTH,
    MalformedKey,
    base62_checksum,
    generate_key,
    parse_key,
    split_key_reference,
)

DEFAULT_PREFIXES = {"live": "kg_live_", "test": "kg_test_"}
PREFIX_CHARS = BASE62 + "_-"
# Every character that may appear anywhere in a key of any configured prefix.
KEY_CHARS = PREFIX_CHARS
prefixes = st.text(alphabet=PREFIX_CHARS, min_size=1, max_size=16)
# What a secret scanner would use: the spec's shape for the default prefixes.
SCANNER = re.compile(r"kg_(live|test)_[0-9A-Za-z]{8}[0-9A-Za-z]{32}[0-9A-Za-z]{6}")


def from_base62(digits: str) -> int:
    value = 0
    for ch in digits:
        value = value * 62 + BASE62.index(ch)
    return value


# --- generation and round trip ---------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["kg_live_", "kg_test_", "sk-", "wa_", "flwl_live_", "x", "A" * 16]
)
def test_generated_key_has_the_spec_shape(prefix: str) -> None:
    full, parts = generate_key(prefix)
    assert full.startswith(prefix)
    body = full[len(prefix) :]
    assert len(body) == ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH == 46
    assert set(body) <= set(BASE62)
    assert body[:ID_LENGTH] == parts.key_id
    assert body[ID_LENGTH : ID_LENGTH + SECRET_LENGTH] == parts.secret
    checksum = body[-CHECKSUM_LENGTH:]
    assert len(checksum) == 6 and set(checksum) <= set(BASE62)
    # The checksum is CRC32 of everything before it, readable back from base62.
    assert from_base62(checksum) == zlib.crc32(full[:-CHECKSUM_LENGTH].encode())


def test_default_keys_match_a_secret_scanner_regex() -> None:
    for prefix in DEFAULT_PREFIXES.values():
        full, _ = generate_key(prefix)
        assert SCANNER.fullmatch(full)


def test_ids_and_secrets_are_random() -> None:
    generated = [generate_key("kg_live_")[1] for _ in range(2000)]
    assert len({p.key_id for p in generated}) == len(generated)
    assert len({p.secret for p in generated}) == len(generated)
    # All 62 symbols turn up in the secrets: drawn from the whole alphabet.
    assert set("".join(p.secret for p in generated)) == set(BASE62)


@given(prefix=prefixes)
def test_every_generated_key_parses_back(prefix: str) -> None:
    full, made = generate_key(prefix)
    parsed = parse_key(full, {"live": prefix})
    assert (parsed.prefix, parsed.env, parsed.key_id, parsed.secret) == (
        prefix,
        "live",
        made.key_id,
        made.secret,
    )
    assert parsed.display_prefix == prefix + made.key_id


@pytest.mark.parametrize(
    ("prefixes_by_env", "env"),
    [
        (DEFAULT_PREFIXES, "live"),
        (DEFAULT_PREFIXES, "test"),
        ({"live": "sk-", "test": "sk-test-"}, "live"),
        ({"live": "sk-", "test": "sk-test-"}, "test"),
        ({"live": "wa_", "test": "wa_t_"}, "test"),
        ({"live": "flwl_live_", "test": "flwl_test_"}, "live"),
        # Prefixes that share leading characters, or differ in one character.
        ({"live": "a_", "test": "b_"}, "test"),
        ({"live": "k", "test": "kk"}, "live"),
        ({"live": "k", "test": "kk"}, "test"),
    ],
)
def test_env_is_detected_from_the_prefix(prefixes_by_env: dict[str, str], env: str) -> None:
    full, made = generate_key(prefixes_by_env[env])
    parsed = parse_key(full, prefixes_by_env)
    assert parsed.env == env
    assert parsed.display_prefix == prefixes_by_env[env] + made.key_id


def test_display_prefix_example() -> None:
    full, _ = generate_key("kg_live_", key_id="a1B2c3D4")
    assert parse_key(full, DEFAULT_PREFIXES).display_prefix == "kg_live_a1B2c3D4"
    assert full.startswith("kg_live_a1B2c3D4")


def test_parsed_key_repr_hides_the_secret() -> None:
    full, _ = generate_key("kg_live_")
    parsed = parse_key(full, DEFAULT_PREFIXES)
    assert parsed.secret not in repr(parsed)
    assert parsed.secret not in str(parsed)


# --- rejection -------------------------------------------------------------------------


@given(prefix=prefixes, data=st.data())
def test_any_single_character_substitution_is_rejected(prefix: str, data: st.DataObject) -> None:
    full, _ = generate_key(prefix)
    pos = data.draw(st.integers(min_value=0, max_value=len(full) - 1), label="position")
    char = data.draw(st.sampled_from(KEY_CHARS).filter(lambda c: c != full[pos]), label="char")
    typo = full[:pos] + char + full[pos + 1 :]
    with pytest.raises(MalformedKey):
        parse_key(typo, {"live": prefix})


@pytest.mark.parametrize("prefix", ["kg_live_", "sk-", "flwl_live_"])
def test_every_substitution_at_every_position_is_rejected(prefix: str) -> None:
    """Exhaustive for one key per prefix: len(key) * 63 typos, all refused."""
    full, _ = generate_key(prefix)
    configured = {"live": prefix, "test": "kg_test_"}
    for pos, original in enumerate(full):
        for char in KEY_CHARS:
            if char == original:
                continue
            with pytest.raises(MalformedKey):
                parse_key(full[:pos] + char + full[pos + 1 :], configured)


@given(prefix=prefixes, data=st.data())
def test_adjacent_transposition_is_rejected(prefix: str, data: st.DataObject) -> None:
    full, _ = generate_key(prefix)
    pos = data.draw(st.integers(min_value=0, max_value=len(full) - 2))
    if full[pos] == full[pos + 1]:
        return
    swapped = full[:pos] + full[pos + 1] + full[pos] + full[pos + 2 :]
    with pytest.raises(MalformedKey):
        parse_key(swapped, {"live": prefix})


@given(own=prefixes, live=prefixes, test=prefixes)
def test_keys_with_a_foreign_prefix_are_rejected(own: str, live: str, test: str) -> None:
    if own in (live, test):
        return
    full, _ = generate_key(own)
    with pytest.raises(MalformedKey):
        parse_key(full, {"live": live, "test": test})


@given(prefix=prefixes, data=st.data())
def test_inserting_or_deleting_a_character_is_rejected(prefix: str, data: st.DataObject) -> None:
    full, _ = generate_key(prefix)
    pos = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    char = data.draw(st.sampled_from(KEY_CHARS))
    for changed in (full[:pos] + full[pos + 1 :], full[:pos] + char + full[pos:]):
        with pytest.raises(MalformedKey):
            parse_key(changed, {"live": prefix})


@given(text=st.text(max_size=80))
def test_random_strings_are_rejected(text: str) -> None:
    # A random string carrying a valid checksum is a 1 in 62**6 event.
    with pytest.raises(MalformedKey):
        parse_key("kg_live_" + text, DEFAULT_PREFIXES)


def _valid() -> str:
    return generate_key("kg_live_")[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: "",
        lambda: "kg_live_",
        lambda: _valid()[len("kg_live_") :],  # body without prefix
        lambda: " " + _valid(),
        lambda: _valid() + "\n",
        lambda: _valid().upper(),
        lambda: _valid()[:-1],
        lambda: _valid() + "0",
        lambda: "kg_live_" + "é" * 46,
        lambda: "kg_live_" + "0" * 46,
        lambda: "x" * 17 + _valid()[len("kg_live_") :],  # prefix longer than 16
        lambda: "Bearer " + _valid(),
    ],
    ids=[
        "empty",
        "prefix-only",
        "no-prefix",
        "leading-space",
        "trailing-newline",
        "upper-cased",
        "truncated",
        "extended",
        "non-ascii",
        "zeros",
        "long-prefix",
        "with-scheme",
    ],
)
def test_malformed_inputs_are_rejected(make: object) -> None:
    assert callable(make)
    with pytest.raises(MalformedKey):
        parse_key(make(), DEFAULT_PREFIXES)


def test_wrong_checksum_with_a_valid_shape_is_rejected() -> None:
    full, _ = generate_key("kg_live_")
    body = full[:-CHECKSUM_LENGTH]
    good = base62_checksum(body)
    bad = "0" * CHECKSUM_LENGTH if good != "0" * CHECKSUM_LENGTH else "1" * CHECKSUM_LENGTH
    with pytest.raises(MalformedKey):
        parse_key(body + bad, DEFAULT_PREFIXES)


@pytest.mark.parametrize("text", ["", "a", "kg_live_a1B2c3D4", "x" * 200])
def test_checksum_is_six_base62_characters(text: str) -> None:
    digits = base62_checksum(text)
    assert len(digits) == 6 and set(digits) <= set(BASE62)
    assert from_base62(digits) == zlib.crc32(text.encode())


# --- KEY_ID references -----------------------------------------------------------------

REFERENCES = [
    ("a1B2c3D4", (None, "a1B2c3D4")),
    ("00000000", (None, "00000000")),
    ("kg_live_a1B2c3D4", ("kg_live_", "a1B2c3D4")),
    ("kg_test_a1B2c3D4", ("kg_test_", "a1B2c3D4")),
    ("sk-a1B2c3D4", ("sk-", "a1B2c3D4")),
    ("flwl_live_a1B2c3D4", ("flwl_live_", "a1B2c3D4")),
    ("x" * 16 + "a1B2c3D4", ("x" * 16, "a1B2c3D4")),
]


@pytest.mark.parametrize(("text", "expected"), REFERENCES)
def test_split_key_reference(text: str, expected: tuple[str | None, str]) -> None:
    assert split_key_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a1B2c3D",
        "a1B2c3D!",
        "kg_live_a1B2c3D",
        "kg_live_a1B2-3D4",
        "x" * 17 + "a1B2c3D4",
        "kg_live_a1B2c3D4 ",
        "не ключ",
    ],
)
def test_split_key_reference_rejects_garbage(text: str) -> None:
    with pytest.raises(MalformedKey) as info:
        split_key_reference(text)
    assert "key id" in str(info.value)


def test_a_full_key_given_as_reference_is_not_echoed() -> None:
    """Someone pastes the whole key where an id is asked: the error must not repeat it."""
    full, parts = generate_key("kg_live_")
    with pytest.raises(MalformedKey) as info:
        split_key_reference(full)
    assert parts.secret not in str(info.value)
    assert full not in str(info.value)


def test_display_prefix_of_a_generated_key_is_a_valid_reference() -> None:
    full, parts = generate_key("wa_")
    assert split_key_reference(parse_key(full, {"live": "wa_"}).display_prefix) == (
        "wa_",
        parts.key_id,
    )


def test_redact_keys_cuts_full_keys_to_their_display_prefix() -> None:
    from gateway.keys.format import generate_key, redact_keys

    full, parts = generate_key("kg_live_")
    assert redact_keys(f"/v1/x/{full}/y") == f"/v1/x/{parts.display_prefix}[redacted]/y"
    assert parts.secret not in redact_keys(f"/a{full}")
    # A long token that is not a key (bad checksum) is left alone.
    not_a_key = full[:-1] + ("A" if full[-1] != "A" else "B")
    assert redact_keys(f"/t/{not_a_key}") == f"/t/{not_a_key}"
    assert redact_keys("/short/path") == "/short/path"
