"""Bot side of counsel-bot: platform adapters, the conversation manager, stores and settings."""
