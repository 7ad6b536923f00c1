"""The yardstick behind `dimitra eval`: lip-sync and motion metrics against tracked real video.

`metrics` defines every number of docs/EVAL.md on landmark sequences, `baselines` builds the
static and amplitude (loudness-driven jaw) baselines every result is shown beside, and `report`
runs them over a prepared dataset split and prints the table.
"""
