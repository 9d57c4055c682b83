"""What users run on a study: doctor, report, export, retrain, ablate, confirm, predict, dashboard..."""
