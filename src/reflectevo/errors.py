"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class ReflectEvoError(Exception):
    """Base class: the message is the whole story, shown to the user as is."""


class InputError(ReflectEvoError):
    """A file, line, field or setting given by the user is wrong or missing."""


class BackendError(ReflectEvoError):
    """A model could not be loaded or a server could not be reached."""
