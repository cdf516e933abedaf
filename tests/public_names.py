"""The public names of Diffrax 0.7.2 that jaxdiffeq does not offer yet."""

import types

import diffrax

import jaxdiffeq


def diffrax_public_names() -> list[str]:
    """What `import diffrax` offers: its attributes without a leading
    underscore, less the modules its namespace happens to hold (`importlib`)."""
    return sorted(
        name
        for name in dir(diffrax)
        if not name.startswith("_")
        and not isinstance(getattr(diffrax, name), types.ModuleType)
    )


def missing_names() -> list[str]:
    return [name for name in diffrax_public_names() if not hasattr(jaxdiffeq, name)]
