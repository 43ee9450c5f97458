"""The credit decision model as *models from code* (``mlflow.pyfunc.log_model(python_model=<this file>)``).

MLflow stores this file's source with the model and runs it when the model is loaded: the model is
whatever it hands to ``set_model``. Nothing is pickled, so the stored model does not depend on how
cloudpickle serialised a class in the Python that logged it.
"""

from mlflow.models import set_model

from mlops_lab.custom_models import CreditDecisionModel

set_model(CreditDecisionModel())
