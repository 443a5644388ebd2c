"""Run in the MLflow venv: save a joblib'd scikit-learn model as an MLflow model folder.

/tmp/mlflow-venv/bin/python mlflow_export.py MODEL.joblib OUT_DIR
"""

import sys

import joblib
import mlflow.sklearn

model = joblib.load(sys.argv[1])
mlflow.sklearn.save_model(model, sys.argv[2])
print(sys.argv[2])
