"""The self-consuming loop, made measurable: statistical generators for the python backend and what they predict.

A round's generator is a model refit on the previous round's training set and sampled for the next round's
synthetic rows. With a 1-D Gaussian or a linear regression the error of every generation is known in closed form,
so the accumulation policies can be checked against the model-collapse papers:

- gaussian.py / linear.py: fits (vectorized over independent runs carried in a `run` column) and the python
  backend functions that sample from them.
- data.py: the real data and the true parameters.
- theory.py: the published predictions.
- study.py: the collapse_study example (three policies side by side in one pipeline) and its report.
- recipe.py: the study at any parameters: seed, matching spec and profile from one set of options.
- loop.py: rounds through run_round with a given policy, outside Dagster (the benchmark and the tests).
- plot.py: error against round per policy, as PNG bytes for Dagster metadata.
"""
