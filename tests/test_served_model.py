"""A served version's outputs without Ray: labels as the model's classes, plain Python values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from ray_mlops.errors import ServingError
from ray_mlops.monitor.outputs import PREDICTION, model_outputs, output_frame
from ray_mlops.serve.model import Prediction, ServedModel, _check_outputs


@pytest.fixture(scope="module")
def iris():
    data = load_iris(as_frame=True)
    return data.data, np.asarray(data.target_names, dtype=object)[data.target]


@pytest.mark.parametrize("labels", ["names", "codes"])
def test_predictions_are_the_classes_as_plain_python_values(iris, labels):
    X, names = iris
    y = names if labels == "names" else pd.Series(names).map({"setosa": 0, "versicolor": 1, "virginica": 2}).to_numpy()
    model = LogisticRegression(max_iter=1000).fit(X, y)
    classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
    served = ServedModel("v1", model, {}, "classification", classes)
    out = served.predict(X.iloc[:20])
    json.dumps(out.predictions)  # JSON-ready: no numpy scalars
    assert out.predictions == model.predict(X.iloc[:20]).tolist()
    assert {type(p) for p in out.predictions} == {str if labels == "names" else int}
    assert served.unknown_label([classes[0], classes[2]]) is None
    assert served.unknown_label([classes[0], "1" if labels == "codes" else 1]) == 1
    _check_outputs("v1", out, 20, classes)


def test_a_classifier_without_probabilities_serves_labels_and_the_monitor_counts_them(iris):
    X, names = iris
    model = LinearSVC().fit(X, names)
    served = ServedModel("v1", model, {}, "classification", list(model.classes_))
    out = served.predict(X.iloc[::15])
    assert out.probabilities is None and set(out.predictions) <= set(names)
    _check_outputs("v1", out, len(out.predictions), served.classes)
    with pytest.raises(ServingError, match="not one of its classes"):
        _check_outputs("v1", Prediction(["unicorn"], None), 1, served.classes)
    outputs = model_outputs(model, X, "classification")
    assert list(outputs.columns) == [PREDICTION] and outputs[PREDICTION].tolist() == model.predict(X).tolist()
    assert output_frame(out.predictions, None, "classification")[PREDICTION].tolist() == out.predictions


def test_regression_serves_values_and_no_label_check(iris):
    X, _ = iris
    served = ServedModel("v1", type("Mean", (), {"predict": lambda self, X: np.full(len(X), 2.5)})(), {}, "regression")
    out = served.predict(X.iloc[:3])
    assert out == Prediction([2.5, 2.5, 2.5], None)
    assert served.unknown_label(["anything"]) is None
