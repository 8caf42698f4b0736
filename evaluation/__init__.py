"""Face data, face models, privacy attacks, utility metrics, baselines and reports."""
