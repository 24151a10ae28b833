"""The visual workflow editor: document, canvas, interactions, palette, inspector, text view."""
