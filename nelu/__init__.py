"""nelu: pivotal sparse auto-encoders with the Self-Normalizing ReLU (NeLU).

Modules, in the order data flows through them:

* :mod:`nelu.functional` (thresholds and NeLU as functions), :mod:`nelu.nn` (layers),
  :mod:`nelu.reference` (cvxpy referees);
* :mod:`nelu.files` (safe loading, atomic writes), :mod:`nelu.data` (images, patches,
  noise), :mod:`nelu.metrics` (PSNR, SSIM);
* :mod:`nelu.models` (patch auto-encoders and denoisers), :mod:`nelu.conv`
  (convolutional auto-encoders), :mod:`nelu.baselines` (BM3D, a DnCNN-style network),
  :mod:`nelu.synthetic` (the synthetic experiment's data and models);
* :mod:`nelu.training` (the one training engine), :mod:`nelu.train` (the patch
  auto-encoders' config and run), :mod:`nelu.evaluation` (noisy images, PSNR/SSIM, timing);
* :mod:`nelu.experiments` (one module per experiment, the drift check),
  :mod:`nelu.results` (readers), :mod:`nelu.tables`, :mod:`nelu.plots` (for the book),
  :mod:`nelu.diagnostics` (measurements on models);
* :mod:`nelu.cli` (``python -m nelu``) and :mod:`nelu.bench` (``python -m nelu.bench``).
"""

from importlib.metadata import PackageNotFoundError, version

from .functional import nelu, shifted_relu, soft_threshold, sqrt_lasso_threshold

try:
    __version__ = version("nelu")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["nelu", "shifted_relu", "soft_threshold", "sqrt_lasso_threshold", "__version__"]
