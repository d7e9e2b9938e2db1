"""HTTP routes: inference (``/predict``, ``/visualize``) and operations (health, metrics)."""
