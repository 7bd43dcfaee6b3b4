"""Signal-propagation diagnosis: predicted (mean field) vs measured statistics through depth.

``parse_diagnose(body, limits)`` validates a request (422/413-style errors naming the field);
``diagnose(request, check=...)`` runs it. Pure numpy; the weights are the engine's own tensors.
See docs/diagnose.md for the formulas.
"""

from .activations import ACTIVATIONS, Activation, activation
from .meanfield import fixed_point, hanin_band
from .request import JACOBIAN_MAX_WIDTH, DiagnoseRequest, LimitExceeded, Limits, layer_name, parse_diagnose
from .run import Cancelled, diagnose
from .statistics import HISTOGRAM_BINS, histogram_edges

__all__ = [
    "ACTIVATIONS",
    "HISTOGRAM_BINS",
    "JACOBIAN_MAX_WIDTH",
    "Activation",
    "Cancelled",
    "DiagnoseRequest",
    "LimitExceeded",
    "Limits",
    "activation",
    "diagnose",
    "fixed_point",
    "hanin_band",
    "histogram_edges",
    "layer_name",
    "parse_diagnose",
]
