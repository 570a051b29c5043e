"""The benchmark platform: challenges on hidden-label test sets, automatic scoring, leaderboards.

Hosts create challenges (phases, quotas, ranking metric, a test set whose labels stay on the
server); participants in teams submit predictions or ONNX models; workers score them from a
database queue with leases; leaderboards show the public part live and the private part after
the end. Scores come from :mod:`deepsift.evaluate` only.
"""
