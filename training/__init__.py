"""Training: counseling data, QLoRA/LoRA SFT recipes, evaluation gate and adapter promotion."""
