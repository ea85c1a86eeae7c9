"""peek: look inside a trained kid. `python -m peek show` prints what it learned, `export` writes the
data a site is built from, `build` writes the site and `serve` serves it. Computed with numpy_gpt;
never imports torch."""
