"""The public demo: upload or link an image, see the verdict and where it looks fake, and play the quiz.

Runs in the same ``deepsift serve`` app as the benchmark platform (:mod:`deepsift.server.domains`):
``POST /api/v1/detect`` answers with the same fields as ``deepsift detect`` on the same file and
model (it runs the one :class:`~deepsift.model.detector.Detector` and the one decision rule), plus
per-head scores, a heatmap of local-crop scores and metadata signals (EXIF, PNG text chunks, C2PA).
The page at ``/`` and the quiz at ``/quiz`` are clients of that API.
"""
