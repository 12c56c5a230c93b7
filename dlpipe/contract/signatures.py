"""Names of the exported SavedModel's signatures.

Training exports them, batch scoring calls one and the server answers for them; a rename in
one place would otherwise break the other two only at run time.
"""

from __future__ import annotations

DEFAULT_SIGNATURE = "serving_default"   # TF Serving's default; the same function as BYTES
BYTES_SIGNATURE = "serving_bytes"       # encoded PNG or JPEG bytes in
PIXELS_SIGNATURE = "serving_pixels"     # float pixels in [0, 1] in
