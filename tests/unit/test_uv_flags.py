"""tools/uv_flags.py: pip's configured indexes, links and constraints as `uv pip install`'s
options, its environment variables winning over its files, as in pip."""

from __future__ import annotations

from tools.uv_flags import flags

CONFIG = """:env:.find-links='/opt/wheels'
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/elsewhere'
global.index-url='https://mirror.example/simple'
"""


def test_pips_configuration_becomes_uvs_options() -> None:
    assert flags(CONFIG) == [
        "--index-strategy",
        "unsafe-best-match",
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "file:///opt/pypi/simple",
        "--extra-index-url",
        "file:///opt/pypi-more/simple",
        "--find-links",
        "/opt/wheels",
        "--constraint",
        "/etc/xdg/pip/constraints.txt",
    ]


def test_no_configuration_leaves_uvs_defaults() -> None:
    assert flags("") == ["--index-strategy", "unsafe-best-match"]
