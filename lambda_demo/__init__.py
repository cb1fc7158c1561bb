"""lambda-demo: learn the Lambda Architecture by building one on a stream of tweets."""

__version__ = "0.1.0"
