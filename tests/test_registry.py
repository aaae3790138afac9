import pytest

from damoxing.core.errors import ConfigError
from damoxing.core.registry import Registry


def test_register_get_and_names():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha():
        return 1

    assert reg.get("alpha") is alpha and reg.names() == ["alpha"] and "alpha" in reg


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("a")(object())
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object())


def test_unknown_name_lists_valid_ones_with_did_you_mean():
    reg = Registry("widget")
    reg.register("gamma")(1)
    reg.register("delta")(2)
    with pytest.raises(ConfigError) as info:
        reg.get("gama")
    assert "Did you mean 'gamma'" in str(info.value) and "'delta'" in str(info.value)
