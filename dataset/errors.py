"""The error every data reader raises for a user-fixable problem with task data."""
from utils.errors import UserError


class DataError(UserError):
    """A user-fixable problem with task data: names the file or flag and the fix."""
