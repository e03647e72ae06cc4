"""The local web page of ``instance-search serve``: a Flask app over loaded indexes (``app.py``) and its static page."""
