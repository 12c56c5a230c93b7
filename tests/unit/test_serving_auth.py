"""Bearer tokens for ``dlpipe serve`` (issue 16): read from a file, compared in constant time."""

from __future__ import annotations

import pytest

from dlpipe.core.errors import ConfigError
from dlpipe.serving.auth import authorized, read_tokens


def test_tokens_are_one_a_line_without_blanks_or_comments(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# clients\n\n  first  \nsecond\n")
    assert read_tokens(path) == (b"first", b"second")


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_a_file_without_a_token_stops_the_server(tmp_path, content):
    path = tmp_path / "tokens"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"serving\.auth_tokens_file"):
        read_tokens(path)


@pytest.mark.parametrize("header, ok", [
    ("Bearer second", True), ("bearer first", True), (b"Bearer first", True),
    ("Bearer third", False), ("Bearer ", False), ("Basic first", False), ("first", False),
    (None, False), ("Bearer firstsecond", False),
])
def test_only_a_listed_bearer_token_is_authorized(header, ok):
    assert authorized(header, (b"first", b"second")) is ok
