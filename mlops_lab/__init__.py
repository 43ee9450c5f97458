"""mlops_lab: the tested helpers behind the "Model Evaluation & Deployment in MLOps" workbook.

Every notebook imports from here; nothing in this package does work at import time.
Modules are named after the lifecycle stage they serve (see the README's map).
"""

__version__ = "0.1.0"
