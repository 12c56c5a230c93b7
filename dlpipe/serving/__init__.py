"""``dlpipe serve``: the TensorFlow Serving REST (and gRPC) API over the model store.

- ``servable``: one loaded SavedModel version, its signatures and their metadata.
- ``registry``: which version of each model is live; polls the store and swaps in a newly
  promoted version once it is downloaded, loaded and warmed up.
- ``protocol``: TF Serving's JSON request and response formats, as pure functions.
- ``images``: the cheap header checks an encoded image passes before TensorFlow sees it.
- ``tensors``: a gRPC ``TensorProto`` checked by its declared shape before it is expanded.
- ``predict``: the predict path both front ends share (admission, checks, deadlines, errors).
- ``batching``: requests that arrive together run as one TensorFlow call, from a bounded queue.
- ``app``: the HTTP routes (FastAPI on uvicorn), health and Prometheus metrics.
- ``grpc_api``: TF Serving's gRPC ``PredictionService`` and ``ModelService`` on the same models.
"""
