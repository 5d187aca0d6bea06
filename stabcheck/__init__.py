"""stabcheck: find the numerical-stability bugs that turn a training loss into NaN.

`import stabcheck` stays cheap and imports no framework: the runtime trap is
loaded on first use of `stabcheck.trap`.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "trap"]


def load_ipython_extension(ipython):
    """`%load_ext stabcheck`: trap every cell run afterwards (stabcheck/ipython.py)."""
    from stabcheck import ipython as extension

    extension.load(ipython)


def unload_ipython_extension(ipython):
    from stabcheck import ipython as extension

    extension.unload(ipython)


def __getattr__(name):
    if name == "trap":
        from stabcheck.runtime.api import trap

        return trap
    raise AttributeError(f"module 'stabcheck' has no attribute {name!r}")
