import pytest

from tfnas.errors import RegistryError, UsageError
from tfnas.registry import Registry


def test_register_and_lookup():
    r = Registry("widget")
    r.register("a", 1)

    @r.register("b")
    def b():
        return 2

    assert r.get("a") == 1 and r.get("b") is b
    assert r.names() == ["a", "b"] and "a" in r and len(r) == 2


def test_unknown_name_lists_registered():
    r = Registry("widget")
    r.register("alpha", 1)
    r.register("beta", 2)
    with pytest.raises(RegistryError, match=r"unknown widget 'gamma'; registered: alpha, beta"):
        r.get("gamma")
    assert issubclass(RegistryError, UsageError)


def test_duplicate_registration_is_an_error():
    r = Registry("widget")
    r.register("a", 1)
    with pytest.raises(RegistryError, match="widget 'a' is already registered"):
        r.register("a", 2)
    assert r.get("a") == 1
