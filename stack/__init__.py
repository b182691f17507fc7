"""The template source and the renderer that writes template.yaml from it."""
