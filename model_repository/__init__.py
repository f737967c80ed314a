"""model_repository package."""
