"""The user-fixable errors and what they mean for the exit status.

Every module raises its own error type where the problem is found; each one that a user can fix
subclasses `UserError`, which main.py prints as one line and maps to exit status 2. This module
imports nothing of the project, so any layer can use it.
"""

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143   # 128 + SIGINT, 128 + SIGTERM


class UserError(ValueError):
    """A problem with the user's input or files, with a message that names the input and the fix."""


USER_ERRORS = (UserError,)
