"""streamgen: stream AI-generated video while it is being generated."""

__version__ = "0.1.0"
