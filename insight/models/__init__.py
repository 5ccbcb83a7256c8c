"""Predictors trained on mined logs and ticket text (scikit-learn-style estimators) and their registry."""

from insight.models.intent import IntentClassifier, IntentPrediction  # noqa: F401
