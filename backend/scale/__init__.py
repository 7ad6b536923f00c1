"""Batch work on Ray (the optional `scale` extra; imported only for `--ray`).

cluster (where Ray runs: a local instance or a cluster by address), bake (manifest lines on a
pool of Ray actors that each load the model once), prepare (dataset clips as Ray tasks),
progress (the bar over lines). The work itself is the single-process code's own:
blender_addon.bake.LineBaker per line, backend.dataset.prepare per clip.
"""
