"""The evidence studies: does each E-TSDM / SMD claim hold where the paper says it matters? One command per study.

    python benchmarks/evidence/run.py --config benchmarks/evidence/studies/<study>.yaml   # see run.py

Studies (configs under ``studies/``): ``etsdm_exact`` (Gaussian mixtures with the exact eps*), ``etsdm_digits``
(E-TSDM on a digits UNet), ``smd_fewstep`` (SMD with few backward steps, a capacity-matched baseline, mixture
spread), ``etsdm_cifar10_gpu`` (the GPU twin of etsdm_digits). Modules: config (settings files), studies (the
study kinds), store (resumable units, claims), worker / training / data / mixtureness (image units),
exact_score (the exact-score units), stats (paired CIs and the verdict rule), report / exact_report (JSON,
tables, figures), documents (README and docs/evidence.md blocks). K(t) is :mod:`diffusers_smd.lipschitz`.
"""
