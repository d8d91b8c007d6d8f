"""Offline studies and fits of a trained model, apart from the evaluators (evaluation/): what the
model computes is read in this process (forward hooks, its checkpoint), nothing is trained.

Studies: the held-out fit of the Gaussians along a run (gmm_fit), candidate anomaly scores from the
same GMM (gmm_scores), what EM did, read from a checkpoint (em_state), and how they reach a head
(head_hooks: `gmm_head`, the one accessor of a model's GMM head, and the forward hooks that read
its internals); their models come from gmmseg/inference.py (build_inference_model). Offline fits,
constants fitted after training on known pixels of a training split: refitting the Gaussians (gmm_refit, tools/refit_gmm.py), Mask2Former's
class temperature (temperature, tools/fit_temperature.py), and the command line, split and pixel
sampling the fit tools share (fit_inputs; tools/fit_scores.py fits the anomaly scores' constants,
whose format lives with the scores in scores/fit.py). Used by tools/ and the scripts under
studies/; they read the anomaly masks the test loader already puts in each batch ("anomaly_mask",
data/mapper.py)."""
