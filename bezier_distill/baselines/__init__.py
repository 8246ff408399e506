"""Few-step baselines beside the distilled students, each with its loss, training and sampler:

    rfpp      2-RF++ (Lee, Lin and Fanti 2024): a reflow with U-shaped times and the pseudo-Huber loss
    caf       Constant Acceleration Flow (Park et al. 2024): initial-velocity and acceleration models on
              degree-2 Bezier paths
    meanflow  MeanFlow (Geng et al. 2025): an average-velocity network u(z, s, t) trained from scratch
    loop      the training loop they share, and loading their networks back
"""
