"""The analysis stage: tables, scaling fits, mixing, plots and findings pages."""
