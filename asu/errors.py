"""The project's errors: one base class, each kind with the exit code the ``asu`` command returns for it.

Every error the product raises on purpose derives from :class:`ASUError`; its message names the file, line, field
or knob at fault and the fix. Anything else that escapes a command is a bug in this project, and the CLI says so
(exit :data:`BUG_EXIT_CODE`, the traceback with ``-v``), never "bad input".

=========================  ====  ==========================================================================
class                      exit  meaning
=========================  ====  ==========================================================================
``Refused``                1     the command ran and the answer is no (a request refused by its contract)
``UsageError``             2     bad input: an option, a config key or value, a file's content
``InputFileMissing``       2     a file or folder the user named does not exist
``NotFoundError``          2     an id that names nothing (request id, model version)
``NoSettingFound``         3     the search found no setting that forgets safely (nothing was changed)
``InfrastructureError``    4     a service or device is unreachable or failing (ledger, MLflow, GPU, a full disk)
``ConflictError``          5     the state changed under the command (another worker, a second submission)
=========================  ====  ==========================================================================

``UsageError`` subclasses ``ValueError`` (and ``InputFileMissing`` ``FileNotFoundError``, ``NotFoundError``
``KeyError``) so that callers that catch the built-in kinds keep working. Torch-free: the intake and the
contracts import it.
"""

from __future__ import annotations

#: What the CLI returns when an exception that is not an ``ASUError`` escapes: a bug (BSD ``EX_SOFTWARE``).
BUG_EXIT_CODE = 70


class ASUError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code: int = 1

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class Refused(ASUError):
    """The command did its job and the answer is no (exit 1)."""

    exit_code = 1


class UsageError(ASUError, ValueError):
    """Bad input: an option, a configuration key or value, the content of a file (exit 2)."""

    exit_code = 2


class InputFileMissing(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist (exit 2)."""


class NotFoundError(UsageError, KeyError):
    """An id that names nothing: an unknown request id, model version or model name (exit 2)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class NoSettingFound(ASUError):
    """The settings search chose nothing (``no_effect`` / ``no_safe_setting``); nothing was changed (exit 3)."""

    exit_code = 3


class InfrastructureError(ASUError, RuntimeError):
    """A service or device is unreachable or failing: the ledger database, MLflow, a GPU (exit 4)."""

    exit_code = 4


class DiskFull(InfrastructureError):
    """No space left (or a file-size limit reached) while writing; what was being written is named (exit 4)."""

    #: errno values that mean "the disk is full" (ENOSPC, EFBIG, EDQUOT on Linux); libraries that wrap OS errors
    #: in their own types (safetensors) still say "os error <n>".
    ERRNOS = (28, 27, 122)

    @classmethod
    def matches(cls, err: BaseException) -> bool:
        if isinstance(err, OSError) and err.errno in cls.ERRNOS:
            return True
        return any(f"os error {n})" in str(err) for n in cls.ERRNOS)


class ConflictError(ASUError, RuntimeError):
    """The state changed under the command: another worker took the request, a duplicate submission (exit 5)."""

    exit_code = 5


__all__ = [
    "BUG_EXIT_CODE",
    "ASUError",
    "ConflictError",
    "DiskFull",
    "InfrastructureError",
    "InputFileMissing",
    "NoSettingFound",
    "NotFoundError",
    "Refused",
    "UsageError",
]
