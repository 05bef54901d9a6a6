import pytest

from nettle.registry import Registry, UnknownNameError


def test_register_get_and_list():
    reg = Registry("widget")

    @reg.register("Alpha")
    def alpha():
        return 1

    reg.add("beta", 2)
    assert reg.get("alpha") is alpha
    assert reg.get("ALPHA") is alpha  # case-insensitive
    assert reg.get(" beta ") == 2
    assert reg.names() == ["alpha", "beta"]
    assert "Beta" in reg
    assert 3 not in reg
    assert len(reg) == 2
    assert list(reg) == ["alpha", "beta"]


def test_default_name_is_dunder_name():
    reg = Registry("widget")

    @reg.register()
    def gamma():
        return 3

    assert reg.names() == ["gamma"]


def test_duplicate_raises():
    reg = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="widget 'A' is already registered"):
        reg.add("A", 2)
    assert reg.get("a") == 1


def test_unknown_name_lists_known():
    reg = Registry("widget")
    reg.add("b", 1)
    reg.add("a", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("c")
    assert str(info.value) == "unknown widget 'c'; known: a, b"
    assert isinstance(info.value, KeyError)


def test_unknown_name_in_empty_registry():
    with pytest.raises(UnknownNameError, match=r"known: \(none\)"):
        Registry("widget").get("x")
