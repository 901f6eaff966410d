"""Paired gradient comparisons on the synthetic regression tasks: the library's :mod:`myopia.synthetic.compare`,
re-exported under its former experiments name for ``myopia synthetic``."""

from ..synthetic.compare import EVAL_SEED, UNIT, build_regressor, compare_regression, train_regression

__all__ = ["UNIT", "EVAL_SEED", "build_regressor", "train_regression", "compare_regression"]
