"""The one Lloyd loop and what it is parameterised by.

- ``lloyd.py``: the loop (``lloyd``), the restarts and the pick of the best (``fit``), the convergence rule;
- ``sources.py``: in-memory batches with masks (``BatchSource``), chunked streams with weights (``StreamSource``);
- ``comm.py``: one process (``LOCAL``) or ``torch.distributed`` ranks (``DistComm``);
- ``bounds.py``: the bounds pass strategy (``TorchBounds``, the ``Backend.bounds`` hook, ``algorithm=`` policy);
- ``relocate.py``: empty clusters take the farthest points (``Candidates`` merges them over processes);
- ``batched.py``: ``fit_batched``, what every in-memory entry point calls; ``init.py``, ``init_scalable.py``,
  ``histogram.py``: k-means++, random, explicit, k-means|| and the lightweight coreset, the exact color histogram;
- ``subsample.py``: uniform subsamples of rows (``random_subset``; ``capped_rows`` for ``max_points_per_cluster``).
"""
