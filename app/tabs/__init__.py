"""One module per capability; each has ``build_tab(demo, settings, registry)`` that adds its ``gr.Tab``."""
