"""lqs — learned quantization schemes.

Keras 3 layers that learn their own quantization scale factors (a nested quantizer with a
threshold-driven scale gradient), loss terms that push networks toward coarse quantization,
baselines, memory accounting and the experiment engine behind the companion book.
"""

__version__ = "0.1.0"

from lqs.quantizers import NestedQuantizer, nested_quantize, ste_quantize  # noqa: E402
from lqs.layers import QConv2D, QDense  # noqa: E402

__all__ = ["__version__", "NestedQuantizer", "nested_quantize", "ste_quantize", "QDense", "QConv2D"]
