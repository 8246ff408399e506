"""The comparison (`bezier-distill compare`): every method over seeds, measured and costed.

    layout    the name of every directory and file a comparison writes
    plan      the typed plan of one seed (stages, what each makes, each method's runs)
    evaluate  sampling every model, its metrics, and the aggregation over seeds
    figures   sample grids, trajectories and losses of one seed's runs
    report    results.md and the results page, rendered from results.json alone
    runner    run_comparison: plan, run, measure, aggregate, write
"""
