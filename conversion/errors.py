"""Domain errors of the conversion steps; the CLI maps them to messages and exit codes."""


class ConversionError(Exception):
    """A step cannot go on; the message is one paragraph meant for the user."""

    exit_code = 1


class OutputExistsError(ConversionError):
    """The output path already holds a file and --force was not given."""

    exit_code = 3


class OutputBusyError(ConversionError):
    """Another run is writing the same output path right now."""

    exit_code = 5


class DownloadError(ConversionError):
    """The checkpoint could not be fetched (access, network, not found, disk)."""

    exit_code = 4
