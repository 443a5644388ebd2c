from __future__ import annotations

import pytest

from tickrun.hub.versions import Version, VersionPin


def test_versions_order_numerically_not_lexically() -> None:
    assert Version.parse("1.10.0") > Version.parse("1.9.3")
    assert str(Version.parse("2.0.1")) == "2.0.1"


@pytest.mark.parametrize("text", ["1", "1.2.3.4", "v1.0.0", "01.0.0", "1.0", ""])
def test_bad_versions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a version"):
        Version.parse(text)


def test_partial_pins_pick_the_newest_match() -> None:
    versions = [Version.parse(v) for v in ("1.0.0", "1.2.0", "1.2.3", "1.10.0", "2.0.0")]
    assert str(VersionPin.parse("1").best(versions)) == "1.10.0"
    assert str(VersionPin.parse("1.2").best(versions)) == "1.2.3"
    assert str(VersionPin.parse("1.2.0").best(versions)) == "1.2.0"
    assert str(VersionPin.parse(None).best(versions)) == "2.0.0"
    assert str(VersionPin.parse("latest").best(versions)) == "2.0.0"
    assert VersionPin.parse("3").best(versions) is None


def test_bad_pin() -> None:
    with pytest.raises(ValueError, match="version pin"):
        VersionPin.parse("1.x")
