"""Studies: trainings and evaluations of the repository's tools (tools/train_net.py, fit_scores.py,
refit_gmm.py, run_demo.py) in child processes, over variants x seeds, and the tables and plots of
their results (mean +- std over the seeds). The scripts under studies/ are their command lines.

Every run is a child process, so nothing here imports engine/ (the training loop): a study only
writes command lines and reads the JSON files the tools write. Reading a trained model in process
(its held-out fit, candidate scores, EM state) is analysis/.

    processes     how a tool runs as a child: its command line, one thread, a log file
    runs          one run: train it, fit its scores, evaluate a checkpoint (seed_study, settings, refit)
    tables        the metrics kept from a run's results and the Markdown tables over seeds
    curves        learning curves: periodic checkpoints evaluated as they appear (curve_study)
    curve_report  the curves' JSON, Markdown tables and plots
    score_family  every score of every model on several anomaly sets, and the GMM-vs-twin verdict
    refit         trained vs refitted Gaussians of finished runs (refit_study)
    demo_spread   how much `make demo`'s table moves over seeds x thread counts
"""
