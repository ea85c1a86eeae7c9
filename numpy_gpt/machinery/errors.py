"""The error a user can fix, and open_input, which turns a file the user named but cannot be read into it."""


class UserError(Exception):
    """Something the user can fix: a bad flag, file or prompt.

    The commands print it as one line, `error: <message>`, and exit non-zero without a traceback.
    """


def open_input(path, what, hint):
    """Open a file the user named (what: "checkpoint", "data file", ...) for reading bytes.

    A missing file, a folder or a file this user may not read is a UserError that names it; hint says
    what to do instead, where the file is missing or a folder.
    """
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; {hint}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder, not a file; {hint}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e.strerror})") from None
