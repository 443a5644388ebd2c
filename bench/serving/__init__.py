"""bench/serving: hub://model_server vs ``mlflow models serve``, same model, same client."""
