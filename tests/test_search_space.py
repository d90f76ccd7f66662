"""Search-space parsing: exact mapping to skopt and Tune, and errors that name the key and file."""

import pytest
import yaml

from nlbpipe.search_space import SearchSpaceError, load_search_space, space_from_dict


def test_randint_high_is_exclusive_in_skopt_as_in_tune():
    space = space_from_dict({"train.mask_max_span": {"sample_fn": "randint", "low": 1, "high": 8}})
    (dim,) = space.skopt_dimensions()
    assert (dim.low, dim.high) == (1, 7)  # skopt Integer is inclusive
    tune_dim = space.tune_param_space()["train.mask_max_span"]
    assert (tune_dim.lower, tune_dim.upper) == (1, 8)  # tune.randint is exclusive
    values = {v for v in dim.rvs(n_samples=400, random_state=0)}
    assert values == set(range(1, 8))


def test_each_sample_fn_maps_to_its_skopt_dimension():
    from skopt.space import Categorical, Integer, Real

    space = space_from_dict({
        "model.dropout": {"sample_fn": "uniform", "low": 0.3, "high": 0.7},
        "train.lr": {"sample_fn": "loguniform", "low": 1e-5, "high": 5e-3},
        "model.context_forward": {"sample_fn": "randint", "low": 10, "high": 101},
        "model.activation": {"sample_fn": "choice", "opts": ["relu", "gelu"]},
    })
    dropout, lr, ctx, act = space.skopt_dimensions()
    assert isinstance(dropout, Real) and dropout.prior == "uniform" and dropout.bounds == (0.3, 0.7)
    assert isinstance(lr, Real) and lr.prior == "log-uniform" and lr.bounds == (1e-5, 5e-3)
    assert isinstance(ctx, Integer) and ctx.bounds == (10, 100)
    assert isinstance(act, Categorical) and list(act.categories) == ["relu", "gelu"]
    point = space.point_to_config([0.5, 1e-4, 50, "gelu"])
    assert point == {"model.dropout": 0.5, "train.lr": 1e-4, "model.context_forward": 50, "model.activation": "gelu"}
    assert space.config_to_point(point) == [0.5, 1e-4, 50, "gelu"]


@pytest.mark.parametrize("spec, problem", [
    ({"sample_fn": "uniform", "low": 0.7, "high": 0.3}, "must be below high"),
    ({"sample_fn": "uniform", "low": 0.5, "high": 0.5}, "must be below high"),
    ({"sample_fn": "loguniform", "low": 0.0, "high": 1.0}, "loguniform needs low > 0"),
    ({"sample_fn": "normal", "low": 0.0, "high": 1.0}, "sample_fn 'normal' is not one of"),
    ({"sample_fn": "choice"}, "choice needs a non-empty list"),
    ({"sample_fn": "choice", "opts": []}, "choice needs a non-empty list"),
    ({"sample_fn": "randint", "low": 1.5, "high": 4}, "randint bounds must be integers"),
    ({"sample_fn": "uniform", "low": 0.1}, "needs `high`"),
    ({"sample_fn": "uniform", "low": 0.1, "high": 0.2, "step": 1}, "unknown field"),
])
def test_bad_ranges_name_key_and_file(tmp_path, spec, problem):
    path = tmp_path / "space.search.yaml"
    path.write_text(yaml.safe_dump({"model.dropout": spec}))
    with pytest.raises(SearchSpaceError) as err:
        load_search_space(path)
    assert str(path) in str(err.value) and "model.dropout" in str(err.value) and problem in str(err.value)


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "x.search.yaml"
    path.write_text("model.dropuot: {sample_fn: uniform, low: 0.1, high: 0.2}\n")
    with pytest.raises(SearchSpaceError, match=r"x\.search\.yaml: model\.dropuot: not a run-config key"):
        load_search_space(path)
