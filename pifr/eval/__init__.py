"""Evaluation: dataset readers (LFW, CFP, CMU, Multi-PIE), their protocols and the metrics every
benchmark reports. Used by ``benchmarks/`` and by training-time validation; inference
(``pifr.verify``, ``pifr.Gallery``, ...) never imports it.

* :mod:`pifr.eval.datasets` — LFW, CFP and CMU readers, their pair protocols and identity splits.
* :mod:`pifr.eval.multipie` — the Multi-PIE camera layout and its Setting 1/2 splits.
* :mod:`pifr.eval.metrics` — ROC, TAR@FAR, EER, k-fold accuracy, rank-1, McNemar. ROC and AUC use
  scikit-learn (``pip install 'pifr[eval]'``); without it they raise :class:`pifr.DependencyError`
  naming that command.
"""
