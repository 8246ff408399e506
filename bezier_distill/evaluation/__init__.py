"""Measuring samples: metrics against a target sample, the digits classifier behind their Frechet
distance, and the plots of samples, trajectories and losses.

    metrics     energy distance, RBF MMD, sliced and exact W2, Frechet distance, straightness
    classifier  the deterministic, cached digits classifier whose features the digits' Frechet distance uses
    plots       sample scatter and image grids, trajectory panels, loss curves (matplotlib, Agg)
"""
