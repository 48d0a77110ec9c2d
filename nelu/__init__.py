"""nelu: pivotal sparse auto-encoders with the Self-Normalizing ReLU (NeLU).

Modules: :mod:`nelu.functional` (thresholds and NeLU as functions),
:mod:`nelu.nn` (layers), :mod:`nelu.reference` (cvxpy referees),
:mod:`nelu.data` (images, patches, noise), :mod:`nelu.metrics` (PSNR, SSIM),
:mod:`nelu.models` (auto-encoders and denoisers), :mod:`nelu.train`
(training and evaluation), :mod:`nelu.synthetic`, :mod:`nelu.cli`
(``python -m nelu``) and :mod:`nelu.bench` (``python -m nelu.bench``).
"""

from importlib.metadata import PackageNotFoundError, version

from .functional import nelu, shifted_relu, soft_threshold, sqrt_lasso_threshold

try:
    __version__ = version("nelu")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["nelu", "shifted_relu", "soft_threshold", "sqrt_lasso_threshold", "__version__"]
