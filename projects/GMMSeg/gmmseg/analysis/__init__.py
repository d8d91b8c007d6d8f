"""Offline studies of a trained per-pixel GMM model, apart from the evaluators (evaluation/):
the held-out fit of the Gaussians along a run (gmm_fit), candidate anomaly scores computed from
the same GMM (gmm_scores), refitting the Gaussians after training (gmm_refit), and the forward
hooks they read a head's internals with (head_hooks). Used by tools/refit_gmm.py, tools/run_demo.py
and the studies under benchmarks/; they read the anomaly masks the test loader already puts in
each batch ("anomaly_mask", data/mapper.py)."""
