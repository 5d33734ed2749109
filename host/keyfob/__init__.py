"""keyfob: host library for the DIY one-time-password key-ring token.

The library never prints; the command line lives in :mod:`keyfob.cli`.
"""

__version__ = "0.1.0"
