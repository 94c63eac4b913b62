"""The evidence benchmark: vanilla vs E-TSDM vs SMD vs SMD + E-TSDM, trained and sampled alike.

Run ``python benchmarks/evidence/run.py --config benchmarks/evidence/digits_cpu.yaml``; see run.py.
Modules: config (one settings file), data (train / held-out images), training (the training loop),
sampling (samplers and evaluation cells), lipschitz (K(t) estimator), store (atomic files, work units),
report (JSON aggregation, tables, figures).
"""
