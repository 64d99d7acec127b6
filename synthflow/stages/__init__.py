"""Plain-Python stages over pandas DataFrames. Nothing here imports Dagster.

Why pandas: it is the table type pandera, `datasets`, scikit-learn and Dagster's metadata helpers all speak
natively, and our tables are rows of text (thousands to a few million), where its speed is not the bottleneck;
embeddings travel beside the tables as numpy arrays.
"""
