"""The params.toml schema: defaults, overrides, validation messages, round trip."""
from __future__ import annotations

import tomllib

import pytest

from npp_core import params as P

REQUIRED = [
    "casa.eps_max", "casa.ndvi_range", "casa.halving", "casa.pet_zero", "estarfm.window", "estarfm.classes",
    "kriging.model", "lcc.window", "lcc.min_valid", "sampling.n_points", "sampling.seed", "rf.n_trees",
    "rf.seed", "rf.importance", "dominance.threshold", "ensemble.members", "ensemble.vary", "run.mode",
    "run.chunk", "run.memory_gb",
]


def test_required_keys_have_documented_defaults():
    d = P.defaults()
    for dotted in REQUIRED:
        sec, key = dotted.split(".")
        assert key in d[sec], dotted
        assert P.SCHEMA[sec][key].help, dotted
    # study defaults
    assert d["dominance"]["threshold"] == 60.0
    assert d["rf"]["n_trees"] == 500
    assert d["sampling"]["n_points"] == 1000
    assert d["estarfm"]["window"] == 51
    assert d["casa"]["eps_max"]["deciduous_broadleaf"] == pytest.approx(0.692)
    assert d["casa"]["ndvi_range"] == "zhu_table"


def test_set_overrides_are_typed_and_validated():
    p = P.load(None, ["dominance.threshold=55", "rf.n_trees=200", "casa.halving=false", "kriging.model=spherical"])
    assert p["dominance"]["threshold"] == 55.0 and isinstance(p["dominance"]["threshold"], float)
    assert p["rf"]["n_trees"] == 200 and isinstance(p["rf"]["n_trees"], int)
    assert p["casa"]["halving"] is False
    assert p["kriging"]["model"] == "spherical"


@pytest.mark.parametrize(
    "assignment, words",
    [
        ("dominance.threshold=160", ["dominance.threshold", "maximum"]),
        ("kriging.model=linear", ["kriging.model", "spherical"]),
        ("lcc.window=10", ["lcc.window", "odd"]),
        ("rf.trees=10", ["unknown key rf.trees", "n_trees"]),
        ("nosuch.key=1", ["unknown section", "nosuch"]),
        ("rf.n_trees=abc", ["rf.n_trees", "not a valid int"]),
        ("threshold", ["section.key=value"]),
    ],
)
def test_bad_settings_name_key_and_fix(assignment, words):
    with pytest.raises(P.ParamsError) as e:
        P.load(None, [assignment])
    for w in words:
        assert w in str(e.value)


def test_eps_max_partial_override_merges_with_table():
    p = P.loads('[casa]\neps_max = { deciduous_broadleaf = 0.8 }\n')
    assert p["casa"]["eps_max"]["deciduous_broadleaf"] == 0.8
    assert p["casa"]["eps_max"]["grassland"] == pytest.approx(0.542)
    with pytest.raises(P.ParamsError, match="implausible"):
        P.loads('[casa]\neps_max = { grassland = 54.2 }\n')


def test_dumps_round_trips_through_toml():
    p = P.load(None, ["dominance.threshold=70", "casa.pet_zero=previous"])
    text = P.dumps(p)
    assert tomllib.loads(text)  # valid TOML
    assert P.loads(text) == p


def test_invalid_toml_names_file():
    with pytest.raises(P.ParamsError, match="my.toml: not valid TOML"):
        P.loads("[rf\nn_trees=", "my.toml")


def test_class_overrides_validated_and_round_trip():
    p = P.loads('[casa.overrides]\nforest = { eps_max = 0.7, ndvi_max = 0.8 }\n"bare spoil" = { eps_max = 0.1 }\n')
    assert p["casa"]["overrides"]["forest"] == {"eps_max": 0.7, "ndvi_max": 0.8}
    assert P.loads(P.dumps(p)) == p
    with pytest.raises(P.ParamsError, match="ndvi_min must be below ndvi_max"):
        P.loads('[casa.overrides]\nforest = { ndvi_min = 0.9, ndvi_max = 0.8 }\n')
    with pytest.raises(P.ParamsError, match="unknown; use eps_max"):
        P.loads('[casa.overrides]\nforest = { epsmax = 0.9 }\n')


def test_ahp_override_validated():
    p = P.loads('[degradation.ahp_override]\nnames = ["a", "b"]\nmatrix = [[1, 3], [0.3333, 1]]\n')
    assert p["degradation"]["ahp_override"]["matrix"][0] == [1.0, 3.0]
    assert P.loads(P.dumps(p)) == p
    with pytest.raises(P.ParamsError, match="square"):
        P.loads('[degradation.ahp_override]\nnames = ["a", "b"]\nmatrix = [[1, 3]]\n')
