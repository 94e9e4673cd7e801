"""Families by import path: any scikit-learn estimator or a user's own class (no Ray).

Real data: scikit-learn's bundled iris and wine.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_iris, load_wine
from sklearn.svm import SVC

from test_multiclass import bundled_table
from user_estimators import SoftCentroidClassifier

from ray_mlops.config import TrainConfig
from ray_mlops.errors import TrainError
from ray_mlops.train.estimators import declared_types
from ray_mlops.train.pipelines import build_pipeline, fit_pipeline
from ray_mlops.train.search import _split, check_train_config, evaluate, iterative_families

USER_CLASS = "user_estimators.SoftCentroidClassifier"


def config(**families) -> TrainConfig:
    return TrainConfig.model_validate({"families": families})


def test_svc_by_import_path_gets_probabilities_through_calibration():
    frame, schema = bundled_table(load_wine, words=True)
    train, valid = _split(frame, schema, 0.3)
    cfg = config(svm={"estimator": "sklearn.svm.SVC", "params": {"kernel": "rbf"}})
    model = fit_pipeline(schema, "svm", {"C": 3.0}, 0, train, cfg)
    wrapped = model.named_steps["model"]
    assert isinstance(wrapped, CalibratedClassifierCV) and isinstance(wrapped.estimator, SVC)
    assert (wrapped.estimator.C, wrapped.estimator.kernel, wrapped.estimator.random_state) == (3.0, "rbf", 0)
    metrics = evaluate(model, valid, schema)
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.97
    direct = build_pipeline(schema, "svm", {"probability": True}, 0, cfg).named_steps["model"]
    assert isinstance(direct, SVC)  # it has predict_proba itself: no wrapper


def test_a_users_own_class_trains_and_declares_its_type():
    frame, schema = bundled_table(load_iris)
    train, valid = _split(frame, schema, 0.3)
    cfg = config(mine={"estimator": USER_CLASS, "search_space": {"temperature": {"type": "uniform", "low": 0.5, "high": 4}},
                       "trusted_types": ["user_estimators.CentroidCounts"]})
    check_train_config(cfg, "classification", schema)
    model = fit_pipeline(schema, "mine", {"temperature": 2.0}, 0, train, cfg)
    assert isinstance(model.named_steps["model"], SoftCentroidClassifier)
    assert evaluate(model, valid, schema)["accuracy"] > 0.7
    family = cfg.families["mine"]
    assert declared_types("classification", "mine", family.estimator, family.trusted_types) == [
        "user_estimators.CentroidCounts", USER_CLASS]
    assert declared_types("classification", "svm", "sklearn.svm.SVC", []) == []
    assert iterative_families(config(mine={"estimator": USER_CLASS}, hist_gradient_boosting={}), schema) == {
        "hist_gradient_boosting"}


@pytest.mark.parametrize("path, message", [
    ("sklearn.svm.SVX", r"train.families.bad.estimator 'sklearn.svm.SVX' cannot be imported"),
    ("no_such_package.Model", r"train.families.bad.estimator 'no_such_package.Model' cannot be imported"),
    ("user_estimators.NotAnEstimator", r"train.families.bad.estimator .* is not a scikit-learn estimator"),
    ("numpy.linalg.norm", r"is not a scikit-learn estimator"),
    ("sklearn.linear_model.Ridge", r"train.families.bad: Ridge is not a classifier \(task: classification\)"),
])
def test_a_bad_estimator_is_one_line_naming_the_family(path, message):
    _, schema = bundled_table(load_iris)
    with pytest.raises(TrainError, match=message) as caught:
        check_train_config(config(bad={"estimator": path}), "classification", schema)
    assert "\n" not in str(caught.value)


def test_bad_parameters_of_an_import_path_estimator_are_named():
    _, schema = bundled_table(load_iris)
    negative = config(svm={"estimator": "sklearn.svm.SVC",
                           "search_space": {"C": {"type": "uniform", "low": -1.0, "high": 1.0}}})
    with pytest.raises(TrainError, match=r"train.families.svm.search_space.C: value -1.0"):
        check_train_config(negative, "classification", schema)
    with pytest.raises(TrainError, match=r"family 'svm': bad parameters \['gamma_typo'\]"):
        check_train_config(config(svm={"estimator": "sklearn.svm.SVC", "params": {"gamma_typo": 1}}),
                           "classification", schema)
    regressor = config(ridge={"estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 2.0}})
    frame, _ = bundled_table(load_iris)
    regression = schema.__class__("id", "f0", "regression", {f"f{i}": "numeric" for i in (1, 2, 3)})
    model = fit_pipeline(regression, "ridge", {}, 0, frame, regressor)
    assert model.named_steps["model"].alpha == 2.0 and np.isfinite(model.predict(frame[["f1", "f2", "f3"]])).all()
