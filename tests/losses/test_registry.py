"""Distillers by name: registered names and a user's ``package.module:Class``, one-line errors."""

import pytest

from sakd.errors import SakdError
from sakd.losses import get_distiller, published_weights_of
from sakd.losses.at import AT


def test_a_module_path_names_a_distiller_class():
    assert get_distiller("sakd.losses.at:AT") is AT
    assert published_weights_of("sakd.losses.at:AT", "sakd") == AT.published_weights("sakd")


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("magic", "unknown distiller 'magic'.*package.module:Class"),
        ("no_such_module_xyz:Thing", "cannot import distiller 'no_such_module_xyz:Thing'"),
        ("sakd.losses.at:attention_map", "must define a subclass 'attention_map'"),
        ("sakd.losses.at:Missing", "must define a subclass 'Missing'"),
    ],
)
def test_bad_names_are_one_clear_error(name, message):
    with pytest.raises(SakdError, match=message) as caught:
        get_distiller(name)
    assert "\n" not in str(caught.value)
    assert published_weights_of(name, "sakd") is None
