"""Run in the MLflow venv: save a model tickrun logged as an MLflow model folder.

$TICKRUN_MLFLOW_PYTHON mlflow_export.py MODEL_FILE OUT_DIR [sklearn|xgboost] [MODEL_CLASS]

scikit-learn models are tickrun's joblib files; XGBoost models are XGBoost's own JSON, reloaded
into the class tickrun recorded (``xgboost.sklearn.XGBClassifier`` by default).
"""

import sys

model_file, out = sys.argv[1], sys.argv[2]
flavor = sys.argv[3] if len(sys.argv) > 3 else "sklearn"
if flavor == "sklearn":
    import joblib
    import mlflow.sklearn

    mlflow.sklearn.save_model(joblib.load(model_file), out)
elif flavor == "xgboost":
    import mlflow.xgboost
    import xgboost

    cls_name = (sys.argv[4] if len(sys.argv) > 4 else "XGBClassifier").rsplit(".", 1)[-1]
    model = getattr(xgboost, cls_name)()
    model.load_model(model_file)
    mlflow.xgboost.save_model(model, out)
else:
    sys.exit(f"unknown model flavor {flavor!r}: sklearn or xgboost")
print(out)
