"""Population expressions: parse, evaluate over label columns, and one clear line for each mistake."""

from __future__ import annotations

import numpy as np
import pytest

from geogan.config import ConfigError, config_from_dict
from geogan.data.population import PopulationError, parse_population, select
from tests.helpers.params import tiny_params_dict

LABELS = {"Male": np.array([1, 1, 0, 0]), "Goatee": np.array([1, 0, 1, 0]), "No_Beard": np.array([0, 1, 0, 1])}


@pytest.mark.parametrize("expr, rows", [
    ("", [0, 1, 2, 3]),
    ("Male", [0, 1]),
    ("~Male", [2, 3]),
    ("male & ~goatee", [1]),  # column names ignore case
    ("Male and not Goatee", [1]),
    ("Male | Goatee", [0, 1, 2]),
    ("~(Male | Goatee)", [3]),
    ("Male & Goatee | No_Beard", [0, 1, 3]),  # & binds tighter than |
    ("Male & (Goatee | No_Beard)", [0, 1]),
])
def test_select(expr, rows):
    assert np.flatnonzero(select(expr, LABELS, 4)).tolist() == rows


@pytest.mark.parametrize("expr, message", [
    ("Male &", "ends where a column name was expected"),
    ("(Male", "missing '\\)'"),
    ("Male Goatee", "unexpected 'Goatee' after a complete expression"),
    ("Male = 1", "cannot read '= 1'"),
    ("& Male", "unexpected '&'"),
])
def test_syntax_errors_named(expr, message):
    with pytest.raises(PopulationError, match=message):
        parse_population(expr)


def test_unknown_column_suggests():
    with pytest.raises(PopulationError, match="no label column 'Mal'; did you mean 'Male'"):
        select("Mal", LABELS, 4)


def test_config_checks_populations_at_load():
    params = tiny_params_dict()
    params["split"]["populations"] = {"Mustache": "Male &"}
    with pytest.raises(ConfigError, match=r"'split.populations.Mustache': population 'Male &': ends where"):
        config_from_dict(params)
    params["split"]["populations"] = {"Beard": "Male"}
    with pytest.raises(ConfigError, match=r"'split.populations.Beard': not one of the attributes"):
        config_from_dict(params)


def test_config_checks_evaluation_populations_and_judge_confusions_at_load():
    params = tiny_params_dict()
    params["evaluate"]["populations"] = {"Mustache": "Male | "}
    with pytest.raises(ConfigError, match=r"'evaluate.populations.Mustache': population 'Male | ': ends where"):
        config_from_dict(params)
    params["evaluate"]["populations"] = {}
    params["judge"]["confusions"] = {"Goatee": ["No_Beard"]}
    with pytest.raises(ConfigError, match=r"'judge.confusions.Goatee': not one of the attributes"):
        config_from_dict(params)
