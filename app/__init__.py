"""lingen's web app (Gradio): ``python -m app``; ``app.main.build_app`` builds it."""
