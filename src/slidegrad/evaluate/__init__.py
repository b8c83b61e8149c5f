"""Evidence that a saliency map is faithful to the model.

* :mod:`.perturbation` — deletion / insertion curves (Petsiuk et al. 2018), their random-order
  chance level, and overlap with a ground truth (the pointing ratio; the demo's DAB);
* :mod:`.pic` — PIC (SIC and AIC, Kapishnikov et al. 2019), equal to PAIR's ``compute_pic_metric``, batched;
* :mod:`.sanity` — model-randomisation sanity check (Adebayo et al. 2018), PyTorch and Keras models;
* :mod:`.stability` — max-sensitivity under small input perturbations (Yeh et al. 2019);
* :mod:`.jobs` and :mod:`.figure` — the workflow's evaluate stage (``evaluate:`` in the config):
  per-chunk jobs, ``evaluation.csv`` and one figure per slide.

The workflow's metrics are declared in :data:`slidegrad.metrics.METRICS`: each names its
columns, its figure panels, its methods text and options, and the function in its module
here that computes it from a :class:`~slidegrad.metrics.MetricInputs` (``*_result``,
``*_chance``).
"""

from .perturbation import dab_truth, deletion_insertion, pointing_ratio, random_order_deletion_insertion  # noqa: F401
from .pic import PicResults, pic_metric  # noqa: F401
from .sanity import SANITY_THRESHOLD, model_randomisation  # noqa: F401
from .stability import max_sensitivity  # noqa: F401
